"""ModelConfig.view_norm = "view": each view divided by its own mean before the stack's z-score,
so the views' intensity change with tilt never reaches the network; the default ("stack") is
unchanged and not written into model files."""
import dataclasses

import numpy as np
import pytest
import torch

from localet_core.config import ModelConfig
from localet_core.errors import FieldError, LocaletError
from localet_core.methods import Localet
from localet_core.network.model import LocalizedNet
from localet_core.network.modelfile import load_model, save_model
from localet_core.network.patches import normalise_views
from localet_core.reconstruction.geometry import TiltGeometry

ANGLES = np.arange(-60.0, 61.0, 15.0)


def _views(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return 10.0 + torch.rand((len(ANGLES), 12, 16), generator=gen, dtype=torch.float64)


def test_per_view_normalisation_removes_each_views_scale():
    views = _views()
    scales = torch.linspace(0.4, 1.7, len(ANGLES), dtype=torch.float64)[:, None, None]  # attenuation-like
    a, _ = normalise_views(views, per_view=True)
    b, _ = normalise_views(views * scales, per_view=True)
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    plain_a, _ = normalise_views(views)
    plain_b, _ = normalise_views(views * scales)
    assert (plain_a - plain_b).abs().max() > 0.1   # the stack's z-score keeps the change
    assert abs(float(a.mean())) < 1e-9 and abs(float(a.std(correction=0)) - 1) < 1e-9


def test_per_view_normalisation_refuses_mean_subtracted_views():
    views = _views()
    views[3] -= float(views[3].mean()) + 1.0  # one view mean-subtracted (and a little below)
    with pytest.raises(LocaletError, match="view 3 has a mean"):
        normalise_views(views, per_view=True)


def test_config_round_trip_and_validation(tmp_path):
    assert "view_norm" not in ModelConfig().to_dict()   # older readers read default files as before
    cfg = ModelConfig(patch_size=3, channels=2, hidden=(4,), view_norm="view")
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(FieldError, match="view_norm"):
        ModelConfig(view_norm="slice")
    torch.manual_seed(0)
    path = save_model(tmp_path / "m", LocalizedNet(cfg), {"name": "m"})
    assert load_model(path)[0].config.view_norm == "view"


def test_reconstruction_follows_the_models_view_norm():
    """The same weights with view_norm 'view' are blind to a per-view scale of the stack; with
    'stack' they are not."""
    torch.manual_seed(0)
    cfg = ModelConfig(patch_size=3, channels=2, hidden=(4,), view_norm="view")
    model = LocalizedNet(cfg)
    stack = _views(1).float().numpy()
    scaled = stack * np.linspace(0.5, 1.5, len(ANGLES), dtype=np.float32)[:, None, None]
    geometry = TiltGeometry(ANGLES, (12, 16), 6)
    a = Localet(model, device="cpu").volume(stack, geometry)
    b = Localet(model, device="cpu").volume(scaled, geometry)
    np.testing.assert_allclose(a, b, atol=1e-4 * float(np.ptp(a)))
    plain = LocalizedNet(dataclasses.replace(cfg, view_norm="stack"))
    plain.load_state_dict(model.state_dict())
    c = Localet(plain, device="cpu").volume(stack, geometry)
    d = Localet(plain, device="cpu").volume(scaled, geometry)
    assert np.abs(c - d).max() > 1e-2 * float(np.ptp(c))
