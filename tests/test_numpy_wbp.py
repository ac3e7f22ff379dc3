"""The torch-free WBP (`localet fbp` on the CPU, issue 17): the torch path's volume, the same
file header, no torch imported, and a memory bound that follows --memory."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from localet_core.io import write_tlt, write_xf
from localet_core.pipeline import assemble_slabs
from localet_core.reconstruction.filters import RampFilter
from localet_core.reconstruction.geometry import TiltGeometry
from localet_core.reconstruction.wbp_numpy import ENGINE_VARIABLE, iter_wbp_slabs_array, numpy_wbp_applies
from localet_core.simulate.blobs import blob_projections, rotation_xf

ANGLES = np.arange(-60.0, 61.0, 6.0)
BLOBS = [(8.0, -4.0, 5.0, 1.0), (-9.0, 6.0, -4.0, 0.7)]


def _torch_volume(stack, geometry, ramp):
    from localet_core.reconstruction.wbp import weighted_backprojection

    return weighted_backprojection(stack, geometry, ramp, device="cpu")


@pytest.mark.parametrize("shape, options", [
    ((37, 53, 40), {}),  # odd sizes, z blocks of 16 with a padded last block
    ((30, 48, 7), {}),  # too thin for z blocks
    ((37, 53, 40), {"binning": 2}),  # binning with a cropped remainder
    ((36, 52, 33), {"binning": 3, "width": 11}),
    ((37, 53, 40), {"shift_x": 1.3, "shift_z": -2.1, "angle_offset": 1.5, "axis_offset": 0.7, "width": 45}),
    ((24, 36, 15), {"excluded": (0, 5, 20)}),
])
@pytest.mark.parametrize("ramp", [RampFilter(), RampFilter(window="hann", cutoff=0.3, falloff=0.05), None])
@pytest.mark.parametrize("threads", [1, 2])
def test_the_numpy_path_gives_the_torch_paths_volume(shape, options, ramp, threads):
    ny, nx, nz = shape
    angles = np.linspace(-60, 60, 21)
    geometry = TiltGeometry(angles=angles, detector_shape=(ny, nx), thickness=nz, **options)
    stack = np.random.default_rng(ny * nx + nz).standard_normal((len(angles), ny, nx)).astype(np.float32)
    before = stack.copy()
    budget = 4 * 4 * nz * geometry.output_shape[2] * 7 + 20 * nz * geometry.output_shape[2] * 21  # slabs of a few rows
    ours = assemble_slabs(geometry.output_shape, iter_wbp_slabs_array(stack, geometry, ramp, budget, threads))
    theirs = _torch_volume(stack, geometry, ramp)
    assert ours.shape == theirs.shape == geometry.output_shape and ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5 * float(np.ptp(theirs)))
    np.testing.assert_array_equal(stack, before)  # the caller's stack is never written


def test_held_slabs_are_never_overwritten():
    angles = ANGLES[::4]  # few views: a small matrix, so a budget of a few rows per slab holds it
    geometry = TiltGeometry(angles=angles, detector_shape=(50, 30), thickness=20)
    stack = np.random.default_rng(2).standard_normal((len(angles), 50, 30)).astype(np.float32)
    budget = 100_000  # 10 rows by rows_per_slab: 6 per slab with 2 threads
    kept = [s for _, _, s in iter_wbp_slabs_array(stack, geometry, budget=budget, threads=2)]
    views = [s[:, 1:, ::2] for _, _, s in iter_wbp_slabs_array(stack, geometry, budget=budget, threads=2)]
    assert len({k.__array_interface__["data"][0] for k in kept}) == len(kept) > 4
    for a, v in zip(kept, views):
        np.testing.assert_array_equal(a[:, 1:, ::2], v)
    whole = _torch_volume(stack, geometry, RampFilter())
    np.testing.assert_allclose(np.concatenate(kept, axis=1), whole, rtol=0, atol=1e-5 * float(np.ptp(whole)))


def test_which_geometries_it_takes():
    g = TiltGeometry(angles=ANGLES, detector_shape=(24, 36), thickness=15)
    assert numpy_wbp_applies(g)
    assert not numpy_wbp_applies(TiltGeometry(angles=ANGLES, detector_shape=(24, 36), thickness=15, x_axis_tilt=3))
    assert not numpy_wbp_applies(g, budget=1000)  # its matrix does not fit: the torch path's grid_sample
    with pytest.raises(ValueError, match="separable"):
        next(iter_wbp_slabs_array(np.zeros((len(ANGLES), 24, 36), np.float32),
                                  TiltGeometry(angles=ANGLES, detector_shape=(24, 36), thickness=15, x_axis_tilt=3)))


def test_size_limit_applies_only_without_the_compiled_product(monkeypatch):
    from localet_core.native import NATIVE_VARIABLE, native_available
    from localet_core.reconstruction import wbp_numpy

    g = TiltGeometry(angles=ANGLES, detector_shape=(24, 36), thickness=15)
    monkeypatch.setattr(wbp_numpy, "NUMPY_MAX_UPDATES", 10)  # this volume is "too large" for scipy
    monkeypatch.setenv(NATIVE_VARIABLE, "0")
    assert not numpy_wbp_applies(g)
    monkeypatch.setenv(NATIVE_VARIABLE, "1")
    assert numpy_wbp_applies(g) == native_available()
    assert not numpy_wbp_applies(g, budget=1000)  # the matrix must still fit


# ------------------------------------------------------------------------- the command

def _run(args, cwd, engine=None, importtime=False):
    env = dict(os.environ)
    env.pop(ENGINE_VARIABLE, None)
    if engine is not None:
        env[ENGINE_VARIABLE] = engine
    flags = ["-X", "importtime"] if importtime else []
    return subprocess.run([sys.executable, *flags, "-m", "localet", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=180)


def _imported(stderr: str) -> set:
    return {line.split("|")[-1].strip() for line in stderr.splitlines() if line.startswith("import time:")}


@pytest.fixture()
def series(tmp_path):
    data = blob_projections(BLOBS, ANGLES, (25, 37)).astype(np.float32)  # odd sizes
    with mrcfile.new(str(tmp_path / "ts.st")) as m:
        m.set_data(data)
        m.voxel_size = 7.5
    write_tlt(tmp_path / "ts.tlt", ANGLES)
    return tmp_path


def _header_facts(path: Path):
    with mrcfile.open(str(path), permissive=False) as m:
        h = m.header
        labels = [bytes(label).decode().rstrip() for label in h.label[:int(h.nlabl)]]
        # the history label ends with its date and time: compare up to them
        facts = {"voxel": tuple(float(v) for v in m.voxel_size.tolist()),
                 "origin": tuple(float(v) for v in h.origin.tolist()),
                 "shape": m.data.shape, "mode": int(h.mode), "map": bytes(h.map), "exttyp": bytes(h.exttyp),
                 "nversion": int(h.nversion), "ispg": int(h.ispg), "nlabl": int(h.nlabl),
                 "labels": labels[:-1] + [labels[-1][:60]] if labels else labels,
                 "stats": (float(h.dmin), float(h.dmax), float(h.dmean), float(h.rms))}
        return facts, np.array(m.data)


@pytest.mark.parametrize("options", [
    [],
    ["--bin", 2],
    ["--width", 31, "--shift", "1.5,-2", "--offset", "2,0.5", "--exclude", "1,3"],
    ["--radial", "0.3,0.05", "--filter", "hamming", "--memory", "300k"],
])
def test_fbp_on_the_cpu_imports_no_torch_and_writes_the_torch_paths_file(series, options):
    args = ["fbp", "ts.st", "--tlt", "ts.tlt", "--thickness", 19, *options, "--no-progress"]
    ours = _run([*args, "-o", "numpy.mrc"], series, importtime=True)
    assert ours.returncode == 0, ours.stderr
    imported = _imported(ours.stderr)
    assert "localet_core.reconstruction.wbp_numpy" in imported
    assert not {name for name in imported if name == "torch" or name.startswith("torch.")}
    theirs = _run([*args, "-o", "torch.mrc"], series, engine="torch", importtime=True)
    assert theirs.returncode == 0, theirs.stderr
    assert "torch" in _imported(theirs.stderr)
    (facts_a, a), (facts_b, b) = _header_facts(series / "numpy.mrc"), _header_facts(series / "torch.mrc")
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * float(np.ptp(b)))
    stats_a, stats_b = facts_a.pop("stats"), facts_b.pop("stats")
    assert facts_a == facts_b
    np.testing.assert_allclose(stats_a, stats_b, rtol=1e-5, atol=1e-6 * float(np.ptp(b)))


def test_fbp_with_sirt_or_an_x_axis_tilt_still_takes_the_torch_path(series):
    for extra in (["--method", "sirt", "--iterations", 2], ["--x-axis-tilt", 2]):
        result = _run(["fbp", "ts.st", "--tlt", "ts.tlt", "--thickness", 9, *extra, "-o", "v.mrc"], series,
                      importtime=True)
        assert result.returncode == 0, result.stderr
        assert "torch" in _imported(result.stderr), extra
        (series / "v.mrc").unlink()
        (series / "v.mrc~").unlink(missing_ok=True)


def test_fbp_of_a_raw_stack_with_an_xf_is_torch_free_with_the_compiled_resampler(series, monkeypatch):
    from localet_core.native import NATIVE_VARIABLE, native_available

    write_xf(series / "ts.xf", rotation_xf(len(ANGLES), 37.0, (1.5, -2.3)))
    args = ["fbp", "ts.st", "--tlt", "ts.tlt", "--thickness", 9, "--xf", "ts.xf", "--bin", 1]
    ours = _run([*args, "-o", "xf_ours.mrc"], series, importtime=True)
    assert ours.returncode == 0, ours.stderr
    torch_imported = "torch" in _imported(ours.stderr)
    assert torch_imported == (not native_available())
    # torch's resampler (grid_sample) and MKL's product: no compiled kernel at all
    monkeypatch.setenv(NATIVE_VARIABLE, "0")
    theirs = _run([*args, "-o", "xf_torch.mrc"], series, engine="torch", importtime=True)
    assert theirs.returncode == 0, theirs.stderr
    assert "torch" in _imported(theirs.stderr)
    (facts_a, a), (facts_b, b) = _header_facts(series / "xf_ours.mrc"), _header_facts(series / "xf_torch.mrc")
    facts_a.pop("stats"), facts_b.pop("stats")
    assert facts_a == facts_b
    # torch's affine_grid rounds the source positions to float32; ours are float64
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-4 * float(np.ptp(b)))


def _peak_rss_mb(args, cwd, engine=None):
    env = dict(os.environ)
    if engine is not None:
        env[ENGINE_VARIABLE] = engine
    child = subprocess.Popen([sys.executable, "-m", "localet", *map(str, args)], cwd=cwd, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = child.stderr.read().decode()
    _, status, usage = os.wait4(child.pid, 0)
    return os.waitstatus_to_exitcode(status), err, usage.ru_maxrss / 1024


@pytest.mark.slow
def test_the_numpy_paths_peak_memory_follows_the_budget_not_the_volume(tmp_path):
    """A 0.5 GB volume (tall: its matrix is small) under --memory 64M, on the numpy path: the
    peak stays within a tiny run's footprint + the stack and its filtered copy + the budget +
    100 MB."""
    ny, nx, nz = 4096, 64, 512
    data = np.random.default_rng(0).standard_normal((len(ANGLES), ny, nx)).astype(np.float32)
    with mrcfile.new(str(tmp_path / "tall.st")) as m:
        m.set_data(data)
    write_tlt(tmp_path / "tall.tlt", ANGLES)
    stack_mb = 2 * data.nbytes / 2**20
    rc, err, base = _peak_rss_mb(["fbp", "tall.st", "--tlt", "tall.tlt", "--thickness", 4, "--no-progress",
                                  "-o", "small.mrc"], tmp_path, engine="numpy")
    assert rc == 0, err
    volume_mb = 4 * ny * nx * nz / 2**20  # 512 MB
    budget_mb, constant_mb = 64, 100
    rc, err, peak = _peak_rss_mb(["fbp", "tall.st", "--tlt", "tall.tlt", "--thickness", nz, "--no-progress",
                                  "--memory", f"{budget_mb}M", "-o", "large.mrc"], tmp_path)
    assert rc == 0, err
    assert volume_mb > 2 * (stack_mb + budget_mb + constant_mb)
    assert peak < base + stack_mb + budget_mb + constant_mb, (peak, base)
    assert (tmp_path / "large.mrc").stat().st_size == 1024 + 4 * ny * nx * nz
