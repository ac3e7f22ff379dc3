"""The 3D head (``ModelConfig.volume_head``): slab by slab, the fast form equals the direct
(patch) form and both equal zero-padded 3D convolutions over the whole volume of per-voxel
features; a model grown from one without a head computes what that one computes; slab training
trains it, resumes bit-identically, and random-voxel training refuses it."""
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from localet_core.config import ModelConfig, TrainConfig
from localet_core.errors import FieldError
from localet_core.network.inference import iter_direct_slabs, iter_fast_slabs
from localet_core.network.model import LocalizedNet, grow
from localet_core.network.modelfile import load_model, save_model
from localet_core.network.patches import prepare_network_views, sample_patches
from localet_core.network.training import train
from localet_core.reconstruction.geometry import TiltGeometry
from localet_core.simulate.blobs import rotation_xf

ANGLES = np.arange(-60.0, 61.0, 6.0)
BASE = ModelConfig(patch_size=5, step=1, channels=4, hidden=(8, 6), n_angle_basis=3)
HEADED = dataclasses.replace(BASE, volume_head=(5, 4))


def _volume(slabs):
    return np.concatenate([s for _, _, s in slabs], axis=1)


def _model(config=HEADED, seed=0):
    torch.manual_seed(seed)
    model = LocalizedNet(config)
    with torch.no_grad():
        model.bias0.normal_()
        if config.volume_head:  # a head that visibly changes the volume (it starts at zero)
            model.volume_out.weight.normal_(std=2.0)
            model.volume_out.bias.normal_()
    return model.eval()


def _reference(model, images, geometry):
    """Per-voxel predictions and features of every voxel (patches), then the head as plain
    zero-padded 3D convolutions over the whole volume."""
    nz, ny, nx = geometry.output_shape
    cfg = model.config
    grid = torch.stack(torch.meshgrid(torch.arange(nz), torch.arange(ny), torch.arange(nx), indexing="ij"),
                       dim=-1).reshape(-1, 3)
    with torch.no_grad():
        patches = sample_patches(images, geometry, grid, cfg.patch_size, cfg.step)
        out, z = model.head_features(model.first_layer(patches, torch.as_tensor(geometry.used_angles),
                                                       torch.as_tensor(geometry.view_weights())))
        x = z.view(nz, ny, nx, -1).permute(3, 0, 1, 2).unsqueeze(0)
        for conv in model.volume:
            x = F.gelu(F.conv3d(x, conv.weight, conv.bias, padding=1))
        x = F.conv3d(x, model.volume_out.weight, model.volume_out.bias)[0, 0]
    return (out.view(nz, ny, nx) + x).numpy()


@pytest.mark.parametrize("case", ["plain", "xf"])
def test_fast_form_equals_direct_form_and_whole_volume_convolutions(case):
    ny, nx, nz = 17, 21, 8
    xf = rotation_xf(ANGLES.size, -15.0, (2.5, -1.0)) if case == "xf" else None
    geometry = TiltGeometry(ANGLES, (ny, nx), nz, xf=xf)
    model = _model()
    stack = np.random.default_rng(2).standard_normal((ANGLES.size, ny, nx)).astype(np.float32)
    images, _ = prepare_network_views(stack, geometry, model.config.ramp(), torch.device("cpu"))
    reference = _reference(model, images, geometry)
    span = np.ptp(reference)
    ranges = [(0, 3), (3, 9), (9, 10), (10, 17)]  # slabs thinner than the head's reach, and edges
    direct = _volume(iter_direct_slabs(model, images, geometry, 1 << 20, ranges=ranges))
    fast = _volume(iter_fast_slabs(model, images, geometry, 1 << 22, ranges=ranges))
    auto = _volume(iter_fast_slabs(model, images, geometry, 1 << 22))
    assert fast.shape == geometry.output_shape
    for got in (direct, fast, auto):
        assert np.abs(got - reference).max() <= 1e-4 * span
    # the head matters: without it the volume is another one
    with torch.no_grad():
        model.volume_out.weight.zero_()
        model.volume_out.bias.zero_()
    plain = _volume(iter_fast_slabs(model, images, geometry, 1 << 22))
    assert np.abs(plain - reference).max() > 1e-2 * span


def test_grown_model_starts_as_its_start_and_round_trips(tmp_path):
    start = _model(BASE)
    grown = grow(start, HEADED).eval()
    geometry = TiltGeometry(ANGLES, (12, 15), 6)
    images = torch.randn(ANGLES.size, 12, 15)
    a = _volume(iter_fast_slabs(start, images, geometry, 1 << 20))
    b = _volume(iter_fast_slabs(grown, images, geometry, 1 << 20))
    assert np.abs(a - b).max() <= 1e-6 * np.ptp(a)
    with pytest.raises(ValueError):
        grow(start, dataclasses.replace(HEADED, channels=5))
    with pytest.raises(ValueError):  # a head of other widths cannot be grown into
        grow(grow(start, HEADED), dataclasses.replace(HEADED, volume_head=(3,)))
    path = save_model(tmp_path / "head", grown, {"name": "head"})
    loaded, card = load_model(path)
    assert loaded.config == HEADED and card["config"]["volume_head"] == [5, 4]
    assert np.array_equal(b, _volume(iter_fast_slabs(loaded.eval(), images, geometry, 1 << 20)))
    # a model without a head writes no volume_head setting: older readers read it as before
    assert "volume_head" not in BASE.to_dict() and ModelConfig.from_dict(BASE.to_dict()).volume_head == ()
    with pytest.raises(FieldError, match="volume_head"):
        ModelConfig(volume_head=(0,))
    assert HEADED.volume_radius == 2 and "volume_head" in _model().macs_per_voxel(41)


def test_slab_training_of_a_head_grown_from_a_model(tmp_path):
    from test_training import TINY, make_pair  # the training tests' tiny blob pairs

    (tmp_path / "data").mkdir()
    specs = [make_pair(tmp_path / "data", "a", 1),
             dataclasses.replace(make_pair(tmp_path / "data", "b", 2), split="val")]
    first = train(specs, tmp_path / "a", TINY, TrainConfig(steps=30, batch_size=128, lr=1e-2, warmup=5),
                  device="cpu")
    headed = dataclasses.replace(TINY, volume_head=(4,))
    tc = TrainConfig(steps=16, lr=5e-3, warmup=4, val_every=8, checkpoint_every=5, refresh_every=6, slab_rows=4)
    whole = train(specs, tmp_path / "whole", headed, tc, device="cpu", init_model=first["model_file"])
    assert whole["final_val_loss"] < 1.05 * first["final_val_loss"]
    train(specs, tmp_path / "split", headed, tc, device="cpu", init_model=first["model_file"], stop_after=7)
    resumed = train(specs, tmp_path / "split", headed, tc, device="cpu", init_model=first["model_file"],
                    resume=True)
    assert resumed["rank_checksums"] == whole["rank_checksums"]
    model, _ = load_model(whole["model_file"])
    assert model.config.volume_head == (4,) and float(model.volume_out.weight.detach().abs().sum()) > 0
    with pytest.raises(FieldError, match="slab_rows"):
        train(specs, tmp_path / "c", headed, dataclasses.replace(tc, slab_rows=None), device="cpu")
