"""Context channels (``ModelConfig.context_channels``): linear first-layer channels on a coarse,
wide patch of the low-passed views. The fast form equals the direct (patch) form on every kind
of geometry, the strided sampler equals per-sample ``grid_sample``, a model grown from one
without them computes what that one computes, model files keep them, and both training forms
(random voxels and slabs) train them and resume bit-identically."""
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from forms import assert_fast_equals_direct

from localet_core.config import ModelConfig, TrainConfig
from localet_core.errors import FieldError
from localet_core.network.inference import iter_fast_slabs
from localet_core.network.model import LocalizedNet, grow
from localet_core.network.modelfile import load_model, save_model
from localet_core.network.patches import context_views, prepare_network_views, sample_patches
from localet_core.network.training import train
from localet_core.reconstruction.geometry import TiltGeometry
from localet_core.simulate.blobs import rotation_xf

ANGLES = np.arange(-60.0, 61.0, 6.0)
BASE = ModelConfig(patch_size=5, step=1, channels=4, hidden=(8, 6), n_angle_basis=3)
CONTEXT = dataclasses.replace(BASE, context_channels=3, context_patch=5, context_step=3)
GEOMETRIES = {"plain": {}, "xf": {"xf": rotation_xf(ANGLES.size, -20.0, (3.5, -2.0))},
              "bin2_width": {"binning": 2, "width": 15}, "xaxistilt": {"x_axis_tilt": 5.0}}


def _volume(slabs):
    return np.concatenate([s for _, _, s in slabs], axis=1)


def _model(config: ModelConfig = CONTEXT, seed: int = 0) -> LocalizedNet:
    torch.manual_seed(seed)
    model = LocalizedNet(config)
    with torch.no_grad():
        model.bias0.normal_()
        if config.context_channels:
            model.bias_ctx.normal_()
    return model.eval()


@pytest.mark.parametrize("patch,step", [(5, 3), (3, 5), (7, 2)])
def test_strided_sampler_equals_per_sample_grid_sample(patch, step):
    geometry = TiltGeometry(ANGLES, (17, 21), 8, xf=rotation_xf(ANGLES.size, 30.0, (1.5, 2.0)))
    images = torch.randn(ANGLES.size, 17, 21, dtype=torch.float64)
    # voxels inside, near and far outside the volume: patches wholly or partly off the detector
    voxels = torch.rand(300, 3, dtype=torch.float64) * torch.tensor([40.0, 60.0, 70.0]) - 20.0
    got = sample_patches(images, geometry, voxels, patch, step)
    rows, cols = geometry.detector_coordinates(voxels[:, 0], voxels[:, 1], voxels[:, 2], dtype=torch.float64)
    rows, cols = torch.broadcast_tensors(rows, cols)
    offsets = step * (torch.arange(patch, dtype=torch.float64) - (patch - 1) // 2)
    r = (rows[..., None, None] + offsets[:, None]).expand(-1, -1, patch, patch)
    c = (cols[..., None, None] + offsets[None, :]).expand(-1, -1, patch, patch)
    n, height, width = images.shape
    grid = torch.stack([(2 * c + 1) / width - 1, (2 * r + 1) / height - 1], dim=-1).reshape(n, -1, patch * patch, 2)
    expected = F.grid_sample(images[:, None], grid, align_corners=False, padding_mode="zeros")
    expected = expected.view(n, -1, patch, patch).transpose(0, 1)
    assert float(expected.abs().max()) > 0.5 and float((expected == 0).float().mean()) > 0.05
    assert torch.allclose(got, expected, atol=1e-12)


def test_context_views_are_a_centred_box_average_with_zeros_beyond_the_detector():
    images = torch.randn(3, 9, 11, dtype=torch.float64)
    low = context_views(images, 3)
    padded = F.pad(images, (1, 1, 1, 1))
    expected = sum(padded[:, i:i + 9, j:j + 11] for i in range(3) for j in range(3)) / 9
    assert low.shape == images.shape and torch.allclose(low, expected)
    assert context_views(images, 1) is images


@pytest.mark.parametrize("case", list(GEOMETRIES))
def test_fast_form_equals_direct_form_with_context_channels(case):
    ny, nx, nz = 26, 37, 11
    geometry = TiltGeometry(ANGLES, (ny, nx), nz, **GEOMETRIES[case])
    model = _model()
    stack = np.random.default_rng(1).standard_normal((ANGLES.size, ny, nx)).astype(np.float32)
    images, _ = prepare_network_views(stack, geometry, model.config.ramp(), torch.device("cpu"))
    direct = assert_fast_equals_direct(model, images, geometry)
    # the context channels matter: without their inputs the volume is another one
    with torch.no_grad():
        model.layers[0].weight[:, model.config.channels:] = 0
    fine_only = _volume(iter_fast_slabs(model, images, geometry, 1 << 20))
    assert np.abs(fine_only - direct).max() > 1e-2 * np.ptp(direct)


def test_context_beside_an_encoder_and_wider_than_the_fine_patch():
    config = dataclasses.replace(BASE, encoder=(4,), encoder_channels=2, context_channels=2,
                                 context_patch=7, context_step=5)
    assert config.halo == 15 and config.total_channels == 4 + 1 + 2 + 2
    geometry = TiltGeometry(ANGLES, (19, 23), 9, xf=rotation_xf(ANGLES.size, 12.0, (1.0, -2.5)))
    model = _model(config)
    assert_fast_equals_direct(model, torch.randn(ANGLES.size, 19, 23), geometry)


def test_grown_model_starts_as_its_start_and_round_trips(tmp_path):
    start = _model(BASE)
    grown = grow(start, CONTEXT).eval()
    geometry = TiltGeometry(ANGLES, (12, 15), 6)
    images = torch.randn(ANGLES.size, 12, 15)
    a = _volume(iter_fast_slabs(start, images, geometry, 1 << 20))
    b = _volume(iter_fast_slabs(grown, images, geometry, 1 << 20))
    assert np.abs(a - b).max() <= 1e-6 * np.ptp(a)
    with pytest.raises(ValueError):  # other fine channels: not a growth
        grow(start, dataclasses.replace(CONTEXT, channels=5))
    with pytest.raises(ValueError):  # an encoder's columns would come after the context's
        grow(grown, dataclasses.replace(CONTEXT, encoder=(4,), encoder_channels=2))
    path = save_model(tmp_path / "ctx", grown, {"name": "ctx"})
    loaded, card = load_model(path)
    assert loaded.config == CONTEXT and card["config"]["context_channels"] == 3
    assert np.array_equal(b, _volume(iter_fast_slabs(loaded.eval(), images, geometry, 1 << 20)))
    # a model without context channels writes none of their settings: older readers read it as before
    assert not any(k.startswith("context") for k in BASE.to_dict())
    assert ModelConfig.from_dict(BASE.to_dict()) == BASE
    macs = _model().macs_per_voxel(41)
    assert macs["first_layer_direct"] == 41 * (25 * 5 + 25 * 3)


@pytest.mark.parametrize("field,value", [("context_step", 2), ("context_patch", 4), ("context_channels", -1)])
def test_context_settings_are_validated(field, value):
    with pytest.raises(FieldError, match=field):
        dataclasses.replace(CONTEXT, **{field: value})


@pytest.mark.parametrize("slab_rows", [None, 4])
def test_training_grows_context_channels_and_resumes_bit_identically(tmp_path, slab_rows):
    from test_training import TINY, make_pair  # the training tests' tiny blob pairs

    (tmp_path / "data").mkdir()
    specs = [make_pair(tmp_path / "data", "a", 1),
             dataclasses.replace(make_pair(tmp_path / "data", "b", 2), split="val")]
    first = train(specs, tmp_path / "a", TINY, TrainConfig(steps=30, batch_size=128, lr=1e-2, warmup=5),
                  device="cpu")
    wide = dataclasses.replace(TINY, context_channels=2, context_patch=5, context_step=3)
    tc = TrainConfig(steps=16, batch_size=128, lr=5e-3, warmup=4, val_every=8, checkpoint_every=5,
                     refresh_every=6, slab_rows=slab_rows)
    whole = train(specs, tmp_path / "whole", wide, tc, device="cpu", init_model=first["model_file"])
    # it starts where the model it grew from ended (the new inputs' weights are zero)
    assert whole["final_val_loss"] < 1.05 * first["final_val_loss"]
    train(specs, tmp_path / "split", wide, tc, device="cpu", init_model=first["model_file"], stop_after=7)
    resumed = train(specs, tmp_path / "split", wide, tc, device="cpu", init_model=first["model_file"],
                    resume=True)
    assert resumed["rank_checksums"] == whole["rank_checksums"]
    model, _ = load_model(whole["model_file"])
    assert model.config.context_channels == 2
    # training moved the context channels' weights off zero
    assert float(model.layers[0].weight[:, TINY.channels:].detach().abs().sum()) > 0
