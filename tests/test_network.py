"""The localized network: patch operator, fast form == direct form, the golden link with FBP,
model files, and `localet reconstruct`."""
import subprocess
import sys

import mrcfile
import numpy as np
import pytest
import torch

from localet_core.config import ModelConfig
from localet_core.errors import InputError
from localet_core.io import write_tlt, write_volume
from localet_core.network.inference import iter_direct_slabs, iter_fast_slabs
from localet_core.network.model import LocalizedNet
from localet_core.network.modelfile import load_model, save_model
from localet_core.network.patches import prepare_network_views, sample_patches
from localet_core.reconstruction.geometry import TiltGeometry
from localet_core.reconstruction.wbp import prepare_views, weighted_backprojection
from localet_core.simulate.blobs import blob_projections, rotation_xf

ANGLES = np.arange(-60.0, 61.0, 6.0)


def _volume(slabs):
    return np.concatenate([s for _, _, s in slabs], axis=1)


def fbp_model() -> LocalizedNet:
    """P = 1, one channel, constant kernel 1, linear output: the quadrature-weighted sum of the
    centre pixels over tilts, i.e. weighted back-projection."""
    cfg = ModelConfig(patch_size=1, step=1, channels=1, hidden=(), n_angle_basis=1,
                      activation="identity", fbp_residual=False)
    model = LocalizedNet(cfg)
    with torch.no_grad():
        model.coeffs.fill_(1.0)
        model.bias0.zero_()
        model.layers[0].weight.fill_(1.0)
        model.layers[0].bias.zero_()
    return model


def test_patch_centre_is_the_backprojection_sample():
    ny, nx, nz = 16, 24, 9
    geometry = TiltGeometry(ANGLES, (ny, nx), nz, xf=rotation_xf(ANGLES.size, 10.0, (1.5, -0.5)))
    images = torch.randn(ANGLES.size, ny, nx)
    voxels = torch.tensor([[4.0, 7.0, 11.0], [0.0, 0.0, 23.0]])
    patches = sample_patches(images, geometry, voxels, patch_size=3, step=2)
    assert patches.shape == (2, ANGLES.size, 3, 3)
    # centre sample summed with view weights == grid_sample back-projection at those voxels
    w = torch.as_tensor(geometry.view_weights(), dtype=torch.float32)
    from localet_core.reconstruction.backprojection import backproject_grid_sample

    slab = backproject_grid_sample(geometry, images, w, (7, 8))[..., 0]
    assert float((patches[0, :, 1, 1] * w).sum()) == pytest.approx(float(slab[4, 0, 11]), abs=1e-5)
    # the offset samples are whole-step shifts along rows (i) and columns (j)
    rows, cols = geometry.detector_coordinates(torch.tensor(4.0), torch.tensor(7.0), torch.tensor(11.0))
    v = 3
    r, c = float(rows.expand_as(cols)[v]), float(cols[v])
    from torch.nn.functional import grid_sample

    g = torch.tensor([[[[(2 * (c + 2) + 1) / nx - 1, (2 * (r - 2) + 1) / ny - 1]]]], dtype=torch.float32)
    ref = grid_sample(images[v][None, None], g, align_corners=False)
    assert float(patches[0, v, 0, 2]) == pytest.approx(float(ref), abs=1e-5)


@pytest.mark.parametrize("patch_size,step,dtype", [(1, 1, torch.float32), (3, 2, torch.float64),
                                                    (9, 1, torch.float32), (5, 3, torch.float32)])
def test_patches_equal_per_sample_grid_sample(patch_size, step, dtype):
    """Every patch sample is plain bilinear sampling with zeros outside the detector (what
    grid_sample gives sample by sample), also for voxels projecting near or far off the edges."""
    ny, nx, nz = 20, 27, 9
    geometry = TiltGeometry(ANGLES, (ny, nx), nz, xf=rotation_xf(ANGLES.size, 7.0, (2.5, -1.0)))
    images = torch.randn(ANGLES.size, ny, nx, dtype=dtype)
    gen = torch.Generator().manual_seed(3)
    voxels = torch.rand(64, 3, generator=gen, dtype=torch.float64) * torch.tensor([nz, ny, nx]) * 1.6 - 5
    voxels[:3] = torch.tensor([[4.0, -100.0, 5.0], [4.0, 200.0, 3.0], [4.0, 3.0, -300.0]])
    patches = sample_patches(images, geometry, voxels, patch_size, step)
    rows, cols = geometry.detector_coordinates(voxels[:, 0], voxels[:, 1], voxels[:, 2])
    rows, cols = torch.broadcast_tensors(rows, cols)  # (n, B)
    off = step * (torch.arange(patch_size, dtype=torch.float64) - (patch_size - 1) / 2)
    r = (rows[:, :, None, None] + off.view(-1, 1)).expand(-1, -1, patch_size, patch_size)
    c = (cols[:, :, None, None] + off.view(1, -1)).expand(-1, -1, patch_size, patch_size)
    grid = torch.stack([(2 * c + 1) / nx - 1, (2 * r + 1) / ny - 1], dim=-1).reshape(ANGLES.size, 64, -1, 2)
    ref = torch.nn.functional.grid_sample(images.double().unsqueeze(1), grid, align_corners=False)
    ref = ref.view(ANGLES.size, 64, patch_size, patch_size).permute(1, 0, 2, 3)
    assert patches.dtype == dtype and patches.shape == ref.shape
    assert float((patches.double() - ref).abs().max()) < (1e-5 if dtype == torch.float32 else 1e-12)
    assert float(patches[:3].abs().max()) == 0.0  # wholly off the detector


@pytest.mark.parametrize("case", ["plain", "xf", "bin2_width", "xaxistilt"])
def test_fast_form_equals_direct_form(case):
    ny, nx, nz = 26, 37, 11
    kw = {"plain": {}, "xf": {"xf": rotation_xf(ANGLES.size, -20.0, (3.5, -2.0))},
          "bin2_width": {"binning": 2, "width": 15}, "xaxistilt": {"x_axis_tilt": 5.0}}[case]
    geometry = TiltGeometry(ANGLES, (ny, nx), nz, **kw)
    torch.manual_seed(0)
    model = LocalizedNet(ModelConfig(patch_size=5, step=2, channels=4, hidden=(8,), n_angle_basis=3))
    with torch.no_grad():
        model.bias0.normal_()
    stack = np.random.default_rng(0).standard_normal((ANGLES.size, ny, nx)).astype(np.float32)
    images, _ = prepare_network_views(stack, geometry, model.config.ramp(), torch.device("cpu"))
    direct = _volume(iter_direct_slabs(model, images, geometry, 1 << 20))
    fast = _volume(iter_fast_slabs(model, images, geometry, 1 << 20))
    assert fast.shape == geometry.output_shape
    assert np.abs(fast - direct).max() <= 1e-4 * np.ptp(direct)
    # the other back-projection kernel too (separable cases use the sparse one by default)
    if geometry.is_separable:
        other = _volume(iter_fast_slabs(model, images, geometry, 1 << 20, kernel="grid_sample"))
        assert np.abs(other - direct).max() <= 1e-4 * np.ptp(direct)
    # bf16 per-voxel layers: close, not exact
    bf16 = _volume(iter_fast_slabs(model, images, geometry, 1 << 20, precision="bf16"))
    assert np.abs(bf16 - direct).max() <= 3e-2 * np.ptp(direct)


def test_p1_averaging_network_reproduces_fbp():
    ny, nx, nz = 24, 40, 14
    geometry = TiltGeometry(ANGLES, (ny, nx), nz, xf=rotation_xf(ANGLES.size, 5.0, (1.0, 0.5)))
    stack = blob_projections([(6.0, -3.0, 4.0, 1.0), (-9.0, 5.0, -3.0, 0.6)], ANGLES, (ny, nx))
    fbp = weighted_backprojection(stack, geometry, device="cpu")
    model = fbp_model()
    # the network sees the normalised stack: (stack - mean) / std
    images, stats = prepare_network_views(stack, geometry, model.config.ramp(), torch.device("cpu"))
    expected = weighted_backprojection((stack - stats.mean) / stats.std, geometry, device="cpu")
    for form in (iter_fast_slabs, iter_direct_slabs):
        net = _volume(form(model, images, geometry, 1 << 20))
        assert np.abs(net - expected).max() <= 1e-5 * np.ptp(expected)
    # and the scale is the only difference from plain FBP for a zero-mean stack
    zero_mean = stack - prepare_views(stack, geometry, None, torch.device("cpu")).double().mean().item()
    images, stats = prepare_network_views(zero_mean, geometry, model.config.ramp(), torch.device("cpu"))
    net = _volume(iter_fast_slabs(model, images, geometry, 1 << 20)) * stats.std
    ref = weighted_backprojection(zero_mean, geometry, device="cpu")
    assert np.abs(net - ref).max() <= 1e-4 * np.ptp(ref)
    assert np.corrcoef(fbp.ravel(), net.ravel())[0, 1] > 0.99


# ------------------------------------------------------------------------- model files
def test_model_file_round_trip(tmp_path):
    model = LocalizedNet(ModelConfig(patch_size=3, channels=2, hidden=(4,)))
    path = save_model(tmp_path / "m", model, {"name": "m", "trained_on": {"angles": [-60, 60]}})
    assert path.name == "m.safetensors"
    loaded, card = load_model(tmp_path / "m")
    assert card["config"]["patch_size"] == 3 and card["name"] == "m" and card["format_version"] == 1
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k


def test_bad_model_files_are_refused(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(InputError, match="junk.safetensors: is not a readable model file"):
        load_model(junk)
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other))
    with pytest.raises(InputError, match="not a localet model"):
        load_model(other)
    good = save_model(tmp_path / "good", LocalizedNet(ModelConfig(patch_size=3, channels=2, hidden=(4,))), {})
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:-40])
    with pytest.raises(InputError, match="truncated.safetensors"):
        load_model(truncated)
    # a card whose architecture does not match the tensors
    import json

    from safetensors import safe_open

    with safe_open(str(good), "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    card = json.loads(meta["card"])
    card["config"]["channels"] = 5
    save_file(tensors, str(tmp_path / "mismatch.safetensors"), metadata={**meta, "card": json.dumps(card)})
    with pytest.raises(InputError, match="do not match"):
        load_model(tmp_path / "mismatch.safetensors")
    save_file(tensors, str(tmp_path / "future.safetensors"), metadata={**meta, "format_version": "99"})
    with pytest.raises(InputError, match="format version"):
        load_model(tmp_path / "future.safetensors")
    model, card = load_model("localet-default")  # the shipped model loads without unpickling
    assert card["name"] == "localet-default" and "simulated" in card["training_data"]["source"]
    with pytest.raises(InputError, match="no model file or shipped model named 'no-such-model'"):
        load_model("no-such-model")


# ------------------------------------------------------------------------- CLI
def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "localet", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd)


@pytest.fixture
def series(tmp_path):
    ny, nx = 20, 32
    stack = blob_projections([(5.0, -2.0, 3.0, 1.0)], ANGLES, (ny, nx))
    stack -= stack.mean()  # zero mean: the P = 1 network then equals FBP up to the std
    write_volume(tmp_path / "ts.mrc", stack, voxel_size=2.5)
    write_tlt(tmp_path / "ts.tlt", ANGLES)
    rng = np.random.default_rng(3)
    for half in ("odd", "even"):
        write_volume(tmp_path / f"{half}.mrc", stack + 0.1 * rng.standard_normal(stack.shape).astype(np.float32),
                     voxel_size=2.5)
    save_model(tmp_path / "fbp1", fbp_model(), {"name": "fbp1"})
    return tmp_path, stack


def test_reconstruct_cli_matches_fbp_grid_and_values(series):
    d, stack = series
    common = [d / "ts.mrc", "--tlt", d / "ts.tlt", "--thickness", 12, "--bin", 2, "--no-progress"]
    r = _cli("fbp", *common, "-o", d / "fbp.mrc")
    assert r.returncode == 0, r.stderr
    r = _cli("reconstruct", *common, "--model", d / "fbp1.safetensors", "--odd", d / "odd.mrc",
             "--even", d / "even.mrc", "--memory", "64M", "-o", d / "net.mrc")
    assert r.returncode == 0, r.stderr
    with mrcfile.open(d / "fbp.mrc") as a, mrcfile.open(d / "net.mrc") as b:
        assert a.data.shape == b.data.shape == (12, 10, 16)
        assert a.voxel_size == b.voxel_size and float(a.voxel_size.x) == pytest.approx(5.0)
        assert a.header.origin == b.header.origin
        binned = stack[:, :, :].reshape(stack.shape[0], 10, 2, 16, 2).mean(axis=(2, 4))
        std = binned.std(dtype=np.float64)
        assert np.abs(b.data * std - a.data).max() <= 1e-4 * np.ptp(a.data)
    for half in ("odd", "even"):
        with mrcfile.open(d / f"net_{half}.mrc") as h:
            assert h.data.shape == (12, 10, 16)
    # the halves are validated by the prior-proof estimate (docs/fsc.md)
    assert "prior-proof resolution" in r.stderr
    assert (d / "net_prior_proof.star").is_file() and (d / "net_prior_proof.png").is_file()


def test_reconstruct_cli_errors_leave_no_output(series):
    d, _ = series
    common = [d / "ts.mrc", "--tlt", d / "ts.tlt", "--thickness", 8, "--no-progress"]
    r = _cli("reconstruct", *common, "--model", "no-such-model", "-o", d / "a.mrc")
    assert r.returncode == 2 and "no model file or shipped model named" in r.stderr
    assert "Traceback" not in r.stderr and not (d / "a.mrc").exists()
    (d / "bad.safetensors").write_bytes(b"not a model")
    r = _cli("reconstruct", *common, "--model", d / "bad.safetensors", "-o", d / "b.mrc")
    assert r.returncode == 2 and "bad.safetensors" in r.stderr and "Traceback" not in r.stderr
    write_volume(d / "short.mrc", np.zeros((ANGLES.size - 1, 20, 32), np.float32))
    r = _cli("reconstruct", *common, "--model", d / "fbp1", "--odd", d / "short.mrc", "-o", d / "c.mrc")
    assert r.returncode == 2 and "short.mrc" in r.stderr and "Traceback" not in r.stderr
    write_tlt(d / "few.tlt", ANGLES[:-2])
    r = _cli("reconstruct", d / "ts.mrc", "--tlt", d / "few.tlt", "--model", d / "fbp1", "-o", d / "e.mrc")
    assert r.returncode == 2 and "few.tlt" in r.stderr
    assert not any((d / n).exists() for n in ("a.mrc", "b.mrc", "c.mrc", "e.mrc"))
    assert not list(d.glob(".*tmp*"))


def test_reconstruct_under_torchrun_splits_slabs_and_matches(series):
    d, _ = series
    common = [d / "ts.mrc", "--tlt", d / "ts.tlt", "--thickness", 10, "--model", d / "fbp1",
              "--memory", "1M", "--no-progress", "--device", "cpu"]
    r = _cli("reconstruct", *common, "-o", d / "one.mrc")
    assert r.returncode == 0, r.stderr
    import os

    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        "-m", "localet", "reconstruct", *map(str, common), "-o", str(d / "two.mrc")],
                       capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    with mrcfile.open(d / "one.mrc") as a, mrcfile.open(d / "two.mrc") as b:
        # equal up to float rounding (the single run uses 2 threads, the ranks 1 each)
        assert np.abs(a.data - b.data).max() <= 1e-5 * np.ptp(a.data)


def test_fit_warnings_for_pixel_sizes_the_model_never_saw():
    from localet_core.network.modelfile import fit_warnings

    card = {"pixel_size_A": [8.0, 10.0, 12.0]}
    assert fit_warnings(card, 10.0) == [] and fit_warnings(card, 14.0) == []
    (warning,) = fit_warnings(card, 2.5)
    assert "2.5 A" in warning and "--bin 4" in warning
    assert fit_warnings(card, None) and fit_warnings({}, 3.0) == []


def test_grown_config_adds_only_what_the_starting_model_lacks():
    """A fine-tune's architecture (`localet train --init M [--encoder ...]`) is the starting
    model's, plus an encoder, 3D head or context channels it lacks; the rest of the request
    (patch size, widths) is the starting model's."""
    import dataclasses

    from localet_core.config import ModelConfig
    from localet_core.network.model import grown_config

    start = ModelConfig(patch_size=13, hidden=(32, 32))
    asked = ModelConfig(patch_size=9, hidden=(64,), encoder=(8, 8), encoder_channels=4, encoder_kernel=5,
                        volume_head=(8,), context_channels=4, context_patch=7, context_step=3)
    grown = grown_config(start, asked)
    assert grown == dataclasses.replace(start, encoder=(8, 8), encoder_channels=4, encoder_kernel=5, volume_head=(8,),
                                        context_channels=4, context_patch=7, context_step=3)
    assert grown_config(start, ModelConfig(patch_size=9)) == start
    has_all = grown
    assert grown_config(has_all, dataclasses.replace(asked, encoder=(16,), volume_head=(16,))) == has_all
