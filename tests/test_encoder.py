"""The per-view encoder: its fast form (whole views, back-projected channels) equals its direct
form (windows around every voxel's projection), training's whole-view path equals both, and a
model grown from a linear-first-layer one computes what that one computes."""
import numpy as np
import pytest
import torch
from forms import assert_fast_equals_direct

from localet_core.config import ModelConfig
from localet_core.errors import FieldError
from localet_core.network import inference
from localet_core.network.encoder import encode_at_voxels, sample_points
from localet_core.network.inference import iter_fast_slabs
from localet_core.network.model import LocalizedNet, angular_basis, grow
from localet_core.network.modelfile import load_model, save_model
from localet_core.network.patches import prepare_network_views
from localet_core.reconstruction.geometry import TiltGeometry
from localet_core.simulate.blobs import rotation_xf

ANGLES = np.arange(-60.0, 61.0, 6.0)
CONFIG = ModelConfig(patch_size=5, step=2, channels=4, hidden=(8,), n_angle_basis=3,
                     encoder=(6, 5), encoder_channels=3)


def _volume(slabs):
    return np.concatenate([s for _, _, s in slabs], axis=1)


def _model(config: ModelConfig = CONFIG, seed: int = 0) -> LocalizedNet:
    """Random weights everywhere, the FiLM conditioning included (zero at initialisation)."""
    torch.manual_seed(seed)
    model = LocalizedNet(config)
    with torch.no_grad():
        model.bias0.normal_()
        if model.encoder is not None:
            model.bias_enc.normal_()
            model.encoder.out.weight.mul_(10.0)  # channels that visibly change the volume
            for film in model.encoder.films:
                film.weight.normal_(std=0.5)
                film.bias.normal_(std=0.5)
    return model.eval()


GEOMETRIES = {"plain": {}, "xf": {"xf": rotation_xf(ANGLES.size, -20.0, (3.5, -2.0))},
              "bin2_width": {"binning": 2, "width": 15}, "xaxistilt": {"x_axis_tilt": 5.0}}


@pytest.mark.parametrize("case", list(GEOMETRIES))
def test_fast_form_equals_direct_form_with_an_encoder(case, monkeypatch):
    ny, nx, nz = 26, 37, 11
    geometry = TiltGeometry(ANGLES, (ny, nx), nz, **GEOMETRIES[case])
    model = _model()
    stack = np.random.default_rng(1).standard_normal((ANGLES.size, ny, nx)).astype(np.float32)
    images, _ = prepare_network_views(stack, geometry, model.config.ramp(), torch.device("cpu"))
    # small encoder blocks: the cache is refilled several times across the slabs
    monkeypatch.setattr(inference, "ENCODER_BLOCK", 5)
    direct = assert_fast_equals_direct(model, images, geometry)
    # the encoder matters: without its channels the volume is another one
    with torch.no_grad():
        model.layers[0].weight[:, model.config.channels:] = 0
    linear = _volume(iter_fast_slabs(model, images, geometry, 1 << 20))
    assert np.abs(linear - direct).max() > 1e-2 * np.ptp(direct)


def test_whole_view_encoding_sampled_equals_windows():
    """Training's path (encode whole views or a band of rows, sample bilinearly) equals the
    direct windows, also for voxels near and far off the detector."""
    ny, nx, nz = 20, 27, 9
    geometry = TiltGeometry(ANGLES, (ny, nx), nz, xf=rotation_xf(ANGLES.size, 7.0, (2.5, -1.0)))
    model = _model()
    images = torch.randn(ANGLES.size, ny, nx, dtype=torch.float64)
    model = model.double()
    gen = torch.Generator().manual_seed(3)
    voxels = torch.rand(80, 3, generator=gen, dtype=torch.float64) * torch.tensor([nz, ny, nx]) * 1.4 - 3
    voxels[:2] = torch.tensor([[4.0, -100.0, 5.0], [4.0, 3.0, 300.0]])
    basis = angular_basis(torch.as_tensor(ANGLES), 3).double()
    with torch.no_grad():
        windows = encode_at_voxels(model.encoder, images, basis, geometry, voxels)
        whole = sample_points(model.encode(images, torch.as_tensor(ANGLES)), geometry, voxels)
        band = sample_points(model.encode(images, torch.as_tensor(ANGLES), (-4, ny + 3)), geometry,
                             voxels, row_origin=-4)
    assert windows.shape == (80, ANGLES.size, 3)
    assert float((windows - whole).abs().max()) < 1e-10
    assert float((band - whole).abs().max()) < 1e-10
    assert float(windows[:2].abs().max()) == 0.0
    assert float(windows.abs().max()) > 0.1


def test_grown_model_computes_what_its_start_computes(tmp_path):
    base = ModelConfig(patch_size=5, step=1, channels=4, hidden=(8, 8), n_angle_basis=3)
    start = _model(base)
    grown = grow(start, ModelConfig(**{**base.to_dict(), "encoder": (4,), "encoder_channels": 2}))
    geometry = TiltGeometry(ANGLES, (16, 20), 7)
    images = torch.randn(ANGLES.size, 16, 20)
    a = _volume(iter_fast_slabs(start, images, geometry, 1 << 20))
    b = _volume(iter_fast_slabs(grown.eval(), images, geometry, 1 << 20))
    assert np.abs(a - b).max() <= 1e-6 * np.ptp(a)
    with pytest.raises(ValueError):
        grow(start, ModelConfig(patch_size=7, encoder=(4,), encoder_channels=2))
    # a model file with an encoder round-trips
    path = save_model(tmp_path / "enc", grown, {"name": "enc"})
    loaded, card = load_model(path)
    assert loaded.config == grown.config and card["config"]["encoder"] == [4]
    c = _volume(iter_fast_slabs(loaded.eval(), images, geometry, 1 << 20))
    assert np.array_equal(b, c)


def test_encoder_settings_are_validated():
    with pytest.raises(FieldError, match="encoder_channels"):
        ModelConfig(encoder=(8,))
    with pytest.raises(FieldError, match="encoder_channels"):
        ModelConfig(encoder_channels=4)
    with pytest.raises(FieldError, match="encoder_kernel"):
        ModelConfig(encoder=(8,), encoder_channels=2, encoder_kernel=4)
    # a model card written before the encoder existed reads as "no encoder"
    old = ModelConfig().to_dict()
    for key in ("encoder", "encoder_channels", "encoder_kernel"):
        old.pop(key)
    assert ModelConfig.from_dict(old).encoder == ()
    assert ModelConfig(encoder=(8, 8), encoder_channels=4).encoder_radius == 2
