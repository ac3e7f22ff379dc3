"""Hostile runs of the real CLI (issue 16): every case runs `python -m localet ...` as a
subprocess and checks the exit code, a one-line error naming the file or flag, no traceback, no
temporary file left (``.NAME.tmp-*``, :mod:`localet_core.io.atomic`) and inputs unchanged.

A full disk is simulated by ``tests/faults/sitecustomize.py`` (fsync fails with ENOSPC for the
named files: no tmpfs can be mounted without root); the free-space check is tested with outputs
larger than the disk's free space.
"""
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from localet_core.io import write_tlt
from localet_core.simulate.blobs import blob_projections

ANGLES = np.arange(-60.0, 61.0, 6.0)
BLOBS = [(8.0, -4.0, 5.0, 1.0), (-9.0, 6.0, -4.0, 0.7)]
FAULTS = Path(__file__).parent / "faults"
NY, NX = 24, 36


def run_cli(*args, cwd=None, enospc=None, timeout=180):
    env = dict(os.environ)
    if enospc:
        env["PYTHONPATH"] = os.pathsep.join([str(FAULTS)] + [p for p in [env.get("PYTHONPATH")] if p])
        env["LOCALET_TEST_ENOSPC"] = ",".join(enospc)
    return subprocess.run([sys.executable, "-m", "localet", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)


def write_mrc(path: Path, data: np.ndarray, voxel: float = 10.0) -> Path:
    with mrcfile.new(str(path), overwrite=True) as m:
        m.set_data(np.asarray(data, dtype=np.float32))
        m.voxel_size = voxel
    return path


def snapshot(folder: Path):
    """Every file under ``folder``: bytes and mtime (inputs must come out unchanged)."""
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(folder: Path):
    return sorted(str(p) for p in folder.rglob("*") if ".tmp-" in p.name or ".tmp" in p.name)


def assert_refused(result, *words, code=2):
    """Exit ``code``, exactly one ``Error:`` line that contains ``words``, no traceback."""
    assert result.returncode == code, (result.returncode, result.stderr[-3000:])
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    for word in words:
        assert str(word) in errors[0], errors[0]
    return errors[0]


@pytest.fixture()
def series(tmp_path):
    data = blob_projections(BLOBS, ANGLES, (NY, NX))
    stack = write_mrc(tmp_path / "ts.st", data)
    tlt = tmp_path / "ts.tlt"
    write_tlt(tlt, ANGLES)
    write_mrc(tmp_path / "ts_odd.st", data * 0.5)
    write_mrc(tmp_path / "ts_even.st", data * 0.5)
    return stack, tlt


# ------------------------------------------------------------------ 1. no input is ever overwritten

@pytest.mark.parametrize("target", ["ts.st", "ts.tlt", "symlink.mrc", "hardlink.mrc", "./sub/../ts.st"])
def test_fbp_refuses_to_write_over_an_input(series, tmp_path, target):
    stack, tlt = series
    (tmp_path / "sub").mkdir()
    os.symlink("ts.st", tmp_path / "symlink.mrc")
    os.link(stack, tmp_path / "hardlink.mrc")
    before = snapshot(tmp_path)
    result = run_cli("fbp", "ts.st", "--tlt", "ts.tlt", "--thickness", 8, "-o", target, cwd=tmp_path)
    assert_refused(result, target.split("/")[-1], "never overwrites an input")
    assert snapshot(tmp_path) == before
    assert not leftovers(tmp_path)


def test_reconstruct_refuses_half_outputs_that_are_its_half_inputs(series, tmp_path):
    shutil.copy(tmp_path / "ts_odd.st", tmp_path / "rec_odd.mrc")
    shutil.copy(tmp_path / "ts_even.st", tmp_path / "rec_even.mrc")
    before = snapshot(tmp_path)
    result = run_cli("reconstruct", "ts.st", "--tlt", "ts.tlt", "--odd", "rec_odd.mrc", "--even", "rec_even.mrc",
                     "--thickness", 8, "-o", "rec.mrc", cwd=tmp_path)
    assert_refused(result, "rec_odd.mrc", "never overwrites an input")
    assert snapshot(tmp_path) == before and not (tmp_path / "rec.mrc").exists()


def test_fsc_halves_refuses_saved_halves_named_like_an_input(series, tmp_path):
    shutil.copy(tmp_path / "ts_odd.st", tmp_path / "P_half1.mrc")
    before = snapshot(tmp_path)
    result = run_cli("fsc-halves", "ts.st", "--tlt", "ts.tlt", "--odd", "P_half1.mrc", "--even", "ts_even.st",
                     "--method", "wbp", "--thickness", 8, "--save-halves", "P", "-o", "f.star", cwd=tmp_path)
    assert_refused(result, "P_half1.mrc", "never overwrites an input")
    assert snapshot(tmp_path) == before


def test_fsc_refuses_an_output_hard_linked_to_an_input(tmp_path):
    vol = np.random.default_rng(0).normal(size=(8, 16, 16))
    write_mrc(tmp_path / "a.mrc", vol)
    write_mrc(tmp_path / "b.mrc", vol + 0.1)
    os.link(tmp_path / "a.mrc", tmp_path / "a.star")
    before = snapshot(tmp_path)
    result = run_cli("fsc", "a.mrc", "b.mrc", "-o", "a.star", cwd=tmp_path)
    assert_refused(result, "a.star", "never overwrites an input")
    assert snapshot(tmp_path) == before


def test_train_refuses_an_output_that_is_a_training_input(series, tmp_path):
    (tmp_path / "run").mkdir()
    write_mrc(tmp_path / "run" / "model.safetensors", np.zeros((8, NY, NX)))  # a reference, oddly named
    before = snapshot(tmp_path)
    result = run_cli("train", "--pair", "ts.st", "ts.tlt", "run/model.safetensors", "-o", "run", "--steps", 1,
                     cwd=tmp_path)
    assert_refused(result, "model.safetensors", "never overwrites an input")
    assert snapshot(tmp_path) == before


def test_an_existing_output_is_kept_as_name_tilde(series, tmp_path):
    """IMOD's habit: the previous output becomes NAME~ (replacing an older NAME~)."""
    assert run_cli("fbp", "ts.st", "--tlt", "ts.tlt", "--thickness", 8, "-o", "out.mrc", cwd=tmp_path).returncode == 0
    first = (tmp_path / "out.mrc").read_bytes()
    result = run_cli("fbp", "ts.st", "--tlt", "ts.tlt", "--thickness", 6, "-o", "out.mrc", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out.mrc~").read_bytes() == first
    with mrcfile.open(str(tmp_path / "out.mrc")) as m:
        assert m.data.shape == (6, NY, NX)
    # ... unless NAME~ is itself an input: then the command refuses
    shutil.move(tmp_path / "out.mrc~", tmp_path / "keep.mrc")
    os.link(tmp_path / "ts.st", tmp_path / "out.mrc~")
    before = snapshot(tmp_path)
    result = run_cli("fbp", "ts.st", "--tlt", "ts.tlt", "--thickness", 8, "-o", "out.mrc", cwd=tmp_path)
    assert_refused(result, "out.mrc", "previous version")
    assert snapshot(tmp_path) == before


# ------------------------------------------------------ 3. every way a job ends leaves no temporary

@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 128 + 15), (signal.SIGHUP, 128 + 1),
                                          (signal.SIGINT, 130)])
def test_signals_mid_write_leave_no_temporary_and_no_output(series, tmp_path, signum, code):
    before = snapshot(tmp_path)
    child = subprocess.Popen([sys.executable, "-m", "localet", "fbp", "ts.st", "--tlt", "ts.tlt", "--method", "sirt",
                              "--iterations", "100000", "--thickness", "16", "-o", "slow.mrc"],
                             cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             # a background pytest (nohup, CI) ignores SIGINT, and its children inherit that
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob(".slow.mrc.tmp-*")):  # the writer is open: mid-write
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.3)
        child.send_signal(signum)
        _, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == code, err
    assert "Traceback" not in err and ("Terminated" in err or "Interrupted" in err), err
    assert not leftovers(tmp_path)
    assert not (tmp_path / "slow.mrc").exists()
    assert snapshot(tmp_path) == before


def test_too_little_free_space_is_refused_before_any_work(series, tmp_path):
    free = shutil.disk_usage(tmp_path).free
    thickness = int(2 * free / (4 * NY * NX)) + 1
    result = run_cli("fbp", "ts.st", "--tlt", "ts.tlt", "--thickness", thickness, "-o", "big.mrc", cwd=tmp_path)
    error = assert_refused(result, "big.mrc", "not enough free disk space", "free in")
    assert "GiB" in error
    assert not leftovers(tmp_path) and not (tmp_path / "big.mrc").exists()


def test_reconstruct_checks_the_space_of_all_three_volumes_at_once(series, tmp_path):
    """Each volume alone fits, the three together do not: refused before any is written."""
    free = shutil.disk_usage(tmp_path).free
    thickness = int(0.5 * free / (4 * NY * NX))
    result = run_cli("reconstruct", "ts.st", "--tlt", "ts.tlt", "--odd", "ts_odd.st", "--even", "ts_even.st",
                     "--thickness", thickness, "-o", "rec.mrc", cwd=tmp_path)
    # the validation's out-of-core FSC scratch (four half volumes' transforms) counts too
    assert_refused(result, "rec.mrc and 2 other output(s) with", "of temporary files need", "free in")
    assert not leftovers(tmp_path) and not list(tmp_path.glob("rec*"))


def test_fsc_halves_checks_the_space_of_its_scratch_files_before_any_work(series, tmp_path):
    """Halves too large for --memory go through a scratch file: no room for it is refused first."""
    free = shutil.disk_usage(tmp_path).free
    thickness = int(0.6 * free / (8 * NY * (NX // 2 + 1)))  # two halves' transforms: 1.2 x the free space
    result = run_cli("fsc-halves", "ts.st", "--tlt", "ts.tlt", "--method", "wbp", "--thickness", thickness,
                     "--memory", "64M", "-o", "f.star", cwd=tmp_path)
    assert_refused(result, "not enough free disk space: temporary files need", "free in")
    assert not leftovers(tmp_path) and not (tmp_path / "f.star").exists()


def test_simulate_checks_the_space_of_every_series_before_starting(tmp_path):
    from localet_core.config import SimulationConfig
    from localet_core.simulate.forward import series_bytes

    shape = (128, 1024, 1024)
    per_series = sum(series_bytes(SimulationConfig(shape=shape)).values())
    count = int(2 * shutil.disk_usage(tmp_path).free / per_series) + 1
    result = run_cli("simulate", "-o", tmp_path / "sim", "--count", count, "--shape", "128,1024,1024")
    assert_refused(result, "not enough free disk space", "free in")
    assert not (tmp_path / "sim").exists()


def test_full_disk_while_writing_a_plot_leaves_neither_plot_nor_table(tmp_path):
    vol = np.random.default_rng(0).normal(size=(8, 16, 16))
    write_mrc(tmp_path / "a.mrc", vol)
    write_mrc(tmp_path / "b.mrc", vol + 0.1)
    write_mrc(tmp_path / "f.star", vol)  # a previous table of that name: restored
    before = snapshot(tmp_path)
    result = run_cli("fsc", "a.mrc", "b.mrc", "-o", "f.star", "--plot", "f.png", cwd=tmp_path, enospc=["f.png"])
    assert_refused(result, "f.png", "disk is full")
    assert snapshot(tmp_path) == before
    assert not leftovers(tmp_path) and not (tmp_path / "f.png").exists()


def test_full_disk_on_one_half_leaves_none_of_the_volumes(series, tmp_path):
    write_mrc(tmp_path / "rec.mrc", np.ones((2, 2, 2)))  # a previous result of that name: restored
    before = snapshot(tmp_path)
    result = run_cli("reconstruct", "ts.st", "--tlt", "ts.tlt", "--odd", "ts_odd.st", "--even", "ts_even.st",
                     "--thickness", 8, "-o", "rec.mrc", cwd=tmp_path, enospc=["rec_even.mrc"])
    assert_refused(result, "rec_even.mrc", "disk is full")
    assert snapshot(tmp_path) == before
    assert not leftovers(tmp_path)


def test_full_disk_on_a_saved_half_leaves_neither_half_nor_table(series, tmp_path):
    before = snapshot(tmp_path)
    result = run_cli("fsc-halves", "ts.st", "--tlt", "ts.tlt", "--method", "wbp", "--thickness", 8,
                     "--save-halves", "P", "-o", "f.star", cwd=tmp_path, enospc=["P_half2.mrc"])
    assert_refused(result, "P_half2.mrc", "disk is full")
    assert snapshot(tmp_path) == before and not leftovers(tmp_path)


def test_full_disk_in_simulate_leaves_no_partial_series_and_no_folder(tmp_path):
    result = run_cli("simulate", "-o", tmp_path / "sim", "--count", 2, "--shape", "8,32,32", "--tilt-step", 20,
                     enospc=["sim_0_truth.mrc"], timeout=300)
    assert_refused(result, "sim_0_truth.mrc", "disk is full")
    assert not (tmp_path / "sim").exists()


def test_full_disk_in_simulate_keeps_the_complete_series_only(tmp_path):
    """The disk fills while series 1 is written: series 0, complete, stays for --resume (its
    files and record intact); nothing of series 1, no pairs.star, no temporary file."""
    out = tmp_path / "sim"
    common = ["--count", 2, "--shape", "8,32,32", "--tilt-step", 20]
    fresh = run_cli("simulate", "-o", tmp_path / "fresh", *common, timeout=300)
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    result = run_cli("simulate", "-o", out, *common, enospc=["sim_1_truth.mrc"], timeout=300)
    assert_refused(result, "sim_1_truth.mrc", "disk is full")
    assert "1 of 2 series complete" in result.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in (tmp_path / "fresh").iterdir()
                                                           if p.name.startswith("sim_0"))
    for name in ("sim_0.json", "sim_0.tlt"):   # the record and angles as a complete run writes them
        assert (out / name).read_bytes() == (tmp_path / "fresh" / name).read_bytes()
    for name in ("sim_0.st", "sim_0_truth.mrc", "sim_0_odd.st"):  # headers carry the date: compare data
        with mrcfile.open(out / name) as a, mrcfile.open(tmp_path / "fresh" / name) as b:
            np.testing.assert_array_equal(a.data, b.data)
    assert leftovers(out) == []


def _training_pair(tmp_path: Path) -> Path:
    ref = np.random.default_rng(0).normal(size=(8, NY, NX))
    return write_mrc(tmp_path / "ref.mrc", ref)


def test_full_disk_while_writing_a_checkpoint(series, tmp_path):
    _training_pair(tmp_path)
    before = snapshot(tmp_path)
    result = run_cli("train", "--pair", "ts.st", "ts.tlt", "ref.mrc", "-o", "run", "--steps", 2, "--batch-size", 64,
                     "--checkpoint-every", 1, "--device", "cpu", cwd=tmp_path, enospc=["checkpoint.pt"])
    assert_refused(result, "checkpoint.pt", "disk is full")
    assert not leftovers(tmp_path)
    assert snapshot(tmp_path) == before  # nothing was written: the empty run folder is gone too


def test_a_failed_train_run_leaves_no_empty_output_folder(series, tmp_path):
    write_mrc(tmp_path / "flat.mrc", np.zeros((8, NY, NX)))
    result = run_cli("train", "--pair", "ts.st", "ts.tlt", "flat.mrc", "-o", "run", "--steps", 1, cwd=tmp_path)
    assert_refused(result, "flat.mrc", "constant")
    assert not (tmp_path / "run").exists()


def test_resume_without_a_checkpoint_warns_and_a_checkpoint_survives_a_failure(series, tmp_path):
    _training_pair(tmp_path)
    result = run_cli("train", "--pair", "ts.st", "ts.tlt", "ref.mrc", "-o", "run", "--steps", 2, "--batch-size", 64,
                     "--checkpoint-every", 1, "--device", "cpu", "--resume", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Warning: --resume: no run/checkpoint.pt yet; starting from step 0" in result.stderr
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "checkpoint.pt", "log.csv", "model.safetensors", "summary.json"]  # no NAME~ of the run's own files
    # the final model fails to be written: the checkpoint stays for --resume
    result = run_cli("train", "--pair", "ts.st", "ts.tlt", "ref.mrc", "-o", "run2", "--steps", 2, "--batch-size", 64,
                     "--checkpoint-every", 1, "--device", "cpu", cwd=tmp_path, enospc=["model.safetensors"])
    assert_refused(result, "model.safetensors", "disk is full")
    assert (tmp_path / "run2" / "checkpoint.pt").is_file() and not leftovers(tmp_path)


# ------------------------------------------------------------------ 4. no traceback for bad values

@pytest.mark.parametrize("command", ["fbp", "reconstruct", "fsc-halves"])
def test_bin_zero_is_one_line(series, tmp_path, command):
    out = "f.star" if command == "fsc-halves" else "out.mrc"
    before = snapshot(tmp_path)
    result = run_cli(command, "ts.st", "--tlt", "ts.tlt", "--bin", 0, "-o", out, cwd=tmp_path)
    assert_refused(result, "--bin", "whole number >= 1")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("args, flag", [(["--voxel", 0], "--voxel"), (["--voxel", -3], "--voxel"),
                                        (["--dose", -5], "--dose"), (["--defocus", "-1"], "--defocus"),
                                        (["--shape", "100000,100000,100000"], "--shape")])
def test_simulate_bad_values_are_one_line(tmp_path, args, flag):
    result = run_cli("simulate", "-o", tmp_path / "sim", *args)
    assert_refused(result, flag)
    assert not (tmp_path / "sim").exists()


def test_the_engine_settings_validate_themselves():
    """Every entry point (CLI, Python API, Scipion) gets the checks: they live in the config."""
    from localet_core.config import OutputOptions, SimulationConfig
    from localet_core.errors import FieldError

    for kwargs, field in [({"binning": 0}, "binning"), ({"thickness": 0}, "thickness"), ({"width": -2}, "width")]:
        with pytest.raises(FieldError) as info:
            OutputOptions(**kwargs)
        assert info.value.field == field
    for kwargs, field in [({"voxel_size": 0}, "voxel_size"), ({"dose": -5}, "dose"),
                          ({"shape": (10**5,) * 3}, "shape")]:
        with pytest.raises(FieldError) as info:
            SimulationConfig(**kwargs)
        assert info.value.field == field


# ------------------------------------------------------ 5. inputs that are accepted but wrong

def test_a_2d_reference_is_refused(series, tmp_path):
    write_mrc(tmp_path / "ref2d.mrc", np.ones((NY, NX)))
    result = run_cli("train", "--pair", "ts.st", "ts.tlt", "ref2d.mrc", "-o", "run", "--steps", 1, cwd=tmp_path)
    assert_refused(result, "ref2d.mrc", "2D")
    assert not (tmp_path / "run").exists()


def test_a_negative_header_pixel_size_is_an_error_not_unknown(series, tmp_path):
    with mrcfile.open(str(tmp_path / "ts.st")) as m:
        data = m.data.copy()
    with mrcfile.new(str(tmp_path / "neg.st")) as m:
        m.set_data(data)
        m.header.cella.x = -10.0 * NX
    result = run_cli("fbp", "neg.st", "--tlt", "ts.tlt", "--thickness", 8, "-o", "out.mrc", cwd=tmp_path)
    assert_refused(result, "neg.st", "negative pixel size", "--pixel-size")
    result = run_cli("fbp", "neg.st", "--tlt", "ts.tlt", "--thickness", 8, "--pixel-size", 10, "-o", "out.mrc",
                     cwd=tmp_path)
    assert result.returncode == 0 and "voxel 10.000 A" in result.stderr, result.stderr


def test_equal_tilt_angles_are_refused(series, tmp_path):
    write_tlt(tmp_path / "flat.tlt", np.full(ANGLES.size, 12.0))
    result = run_cli("fbp", "ts.st", "--tlt", "flat.tlt", "-o", "out.mrc", cwd=tmp_path)
    assert_refused(result, "flat.tlt", "all 21 tilt angles are 12 degrees")


def test_a_missing_exclude_file_is_reported_as_missing(series, tmp_path):
    result = run_cli("fbp", "ts.st", "--tlt", "ts.tlt", "--exclude", "list.txt", "-o", "out.mrc", cwd=tmp_path)
    assert_refused(result, "list.txt", "file not found")
    result = run_cli("fbp", "ts.st", "--tlt", "ts.tlt", "--exclude", "1-3,x", "-o", "out.mrc", cwd=tmp_path)
    assert result.returncode == 2 and "--exclude" in result.stderr  # a malformed list stays a list error


def test_a_missing_pairs_star_is_reported_as_missing(tmp_path):
    result = run_cli("train", "--pairs", "nope.star", "-o", "run", cwd=tmp_path)
    assert_refused(result, "nope.star", "file not found")
    assert not (tmp_path / "run").exists()


def test_voxel_size_warning_names_a_single_training_size_and_fires_at_20_A():
    from localet_core.contracts.model_card import fit_warnings, read_model_card, shipped_model_path

    (warning,) = fit_warnings({"pixel_size_A": [10.0]}, 20.0)
    assert "training range (10 A only)" in warning and "10-10" not in warning
    assert fit_warnings(read_model_card(shipped_model_path()), 20.0)  # shipped: 8-16 A
    assert fit_warnings(read_model_card(shipped_model_path()), 16.0) == []


def test_reconstruct_warns_at_20_A_with_the_shipped_model(series, tmp_path):
    result = run_cli("reconstruct", "ts.st", "--tlt", "ts.tlt", "--thickness", 8, "--pixel-size", 20, "-o", "r.mrc",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Warning: voxel size 20 A is outside the model's training range 8-16 A" in result.stderr


# ------------------------------------------------------------------ 7. help and packaging

@pytest.mark.parametrize("command", ["fbp", "reconstruct", "train", "simulate", "fsc", "fsc-halves", "demo"])
def test_every_help_has_examples(command):
    result = run_cli(command, "--help")
    assert result.returncode == 0 and "Examples:" in result.stdout and f"localet {command} " in result.stdout


def test_train_defaults_are_the_shipped_recipe():
    from localet_core.config import ModelConfig, TrainConfig
    from localet_core.contracts.model_card import read_model_card, shipped_model_path

    card = read_model_card(shipped_model_path())
    assert TrainConfig().loss == card["train_config"]["loss"] == "l2"
    assert TrainConfig().reference_clip == card["train_config"]["reference_clip"]
    assert TrainConfig().drop_tilts == card["train_config"]["drop_tilts"]
    assert ModelConfig().patch_size == card["config"]["patch_size"]
    text = run_cli("train", "--help").stdout
    assert "shipped model's recipe" in " ".join(text.split())


@pytest.mark.slow
def test_building_the_wheel_gives_no_packaging_warnings(tmp_path):
    """`pip install` used to warn that package data lived in folders not declared as packages."""
    root = Path(__file__).resolve().parents[1]
    src = tmp_path / "src"
    shutil.copytree(root, src, ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__",
                                                             "demo_out", "*.mrc", "*.st"))
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
                             "-w", str(tmp_path / "wheel"), "-v"], capture_output=True, text=True, timeout=600)
    if result.returncode != 0 and "No module named" in result.stderr:
        pytest.skip("pip or setuptools missing here")
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    for phrase in ("is absent from the `packages` configuration", "Package would be ignored",
                   "_IncludePackageDataAbuse"):
        assert phrase not in log
    import zipfile

    (wheel,) = (tmp_path / "wheel").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "localet_core/data/templates.npz" in names
    assert "localet_core/data/models/localet-default.safetensors" in names
    assert "localet_core/data/models/localet-encoder.safetensors" in names


# ------------------------------------------------------------------------- 2. memory is bounded

def _peak_rss_mb(args, cwd, env=None):
    """Run the CLI and return (exit code, stderr, peak resident memory of that child in MB)."""
    child = subprocess.Popen([sys.executable, "-m", "localet", *map(str, args)], cwd=cwd,
                             env=None if env is None else {**os.environ, **env},
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = child.stderr.read().decode()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    return child.returncode, err, usage.ru_maxrss / 1024  # Linux: kilobytes


@pytest.mark.slow
def test_fbp_peak_memory_follows_the_budget_not_the_volume(tmp_path):
    """A 0.5 GB volume under --memory 64M: the peak stays within the process's own footprint
    (torch loaded, a tiny run) + the budget + 160 MB, far below what holding the volume takes."""
    ny, nx = 256, 64
    write_mrc(tmp_path / "big.st", blob_projections(BLOBS, ANGLES, (ny, nx)))
    write_tlt(tmp_path / "big.tlt", ANGLES)
    # the large run's matrix does not fit 64M: it takes the torch path (grid_sample), so the tiny
    # run does too (a tiny run on the CPU otherwise takes the torch-free path: a smaller footprint)
    rc, err, base = _peak_rss_mb(["fbp", "big.st", "--tlt", "big.tlt", "--thickness", 8, "-o", "small.mrc"],
                                 tmp_path, env={"LOCALET_FBP_ENGINE": "torch"})
    assert rc == 0, err
    thickness = 8000
    volume_mb = 4 * ny * nx * thickness / 2**20  # 500 MB
    budget_mb, constant_mb = 64, 160
    rc, err, peak = _peak_rss_mb(["fbp", "big.st", "--tlt", "big.tlt", "--thickness", thickness,
                                  "--memory", f"{budget_mb}M", "-o", "large.mrc"], tmp_path)
    assert rc == 0, err
    assert volume_mb > 2 * (budget_mb + constant_mb)
    assert peak < base + budget_mb + constant_mb, (peak, base)
    assert (tmp_path / "large.mrc").stat().st_size == 1024 + 4 * ny * nx * thickness


@pytest.mark.slow
def test_reconstruct_peak_memory_follows_the_budget_and_the_result_does_not_change(series, tmp_path):
    """The network's first layer for a very thick volume is computed a few slices at a time
    under a small budget: the same volume, within the memory bound."""
    rc, err, base = _peak_rss_mb(["reconstruct", "ts.st", "--tlt", "ts.tlt", "--thickness", 8, "-o", "s.mrc"],
                                 tmp_path)
    assert rc == 0, err
    thickness, budget_mb, constant_mb = 40000, 64, 160  # one row of 17 channels: 290 MB
    rc, err, peak = _peak_rss_mb(["reconstruct", "ts.st", "--tlt", "ts.tlt", "--thickness", thickness,
                                  "--memory", f"{budget_mb}M", "-o", "big.mrc"], tmp_path)
    assert rc == 0, err
    assert peak < base + budget_mb + constant_mb, (peak, base)
    # chunked (a tiny budget) and whole (a large one) give the same volume
    for memory, name in (("4M", "a.mrc"), ("2G", "b.mrc")):
        result = run_cli("reconstruct", "ts.st", "--tlt", "ts.tlt", "--thickness", 600, "--memory", memory,
                         "-o", name, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
    with mrcfile.open(str(tmp_path / "a.mrc")) as a, mrcfile.open(str(tmp_path / "b.mrc")) as b:
        np.testing.assert_allclose(a.data, b.data, atol=1e-4 * float(np.ptp(b.data)))


@pytest.mark.slow
def test_sirt_peak_memory_follows_the_budget_not_the_volume(tmp_path):
    """SIRT of a 0.45 GB volume under --memory 8M: its operators (12 MB) do not fit, so they
    go to a scratch file read back at every iteration; the peak stays within the process's own
    footprint + the budget + 160 MB, the volume is the one a large budget gives, and no scratch
    file is left."""
    ny, nx, angles = 4096, 48, np.arange(-60.0, 61.0, 12.0)
    write_mrc(tmp_path / "big.st", blob_projections(BLOBS, angles, (ny, nx)))
    write_tlt(tmp_path / "big.tlt", angles)
    sirt = ["--method", "sirt", "--iterations", 2]
    rc, err, base = _peak_rss_mb(["fbp", "big.st", "--tlt", "big.tlt", "--thickness", 8, *sirt, "-o", "small.mrc"],
                                 tmp_path)
    assert rc == 0, err
    thickness, budget_mb, constant_mb = 600, 8, 160
    volume_mb = 4 * ny * nx * thickness / 2**20  # 450 MB
    rc, err, peak = _peak_rss_mb(["fbp", "big.st", "--tlt", "big.tlt", "--thickness", thickness, *sirt,
                                  "--memory", f"{budget_mb}M", "-o", "large.mrc"], tmp_path)
    assert rc == 0, err
    assert volume_mb > 2 * (budget_mb + constant_mb)
    assert peak < base + budget_mb + constant_mb, (peak, base)
    assert leftovers(tmp_path) == []
    result = run_cli("fbp", "big.st", "--tlt", "big.tlt", "--thickness", thickness, *sirt, "--memory", "2G",
                     "-o", "ref.mrc", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    with mrcfile.mmap(str(tmp_path / "large.mrc")) as a, mrcfile.mmap(str(tmp_path / "ref.mrc")) as b:
        rows = np.r_[0:64, ny // 2 - 32:ny // 2 + 32, ny - 64:ny]  # the edges and the blobs
        ref = np.asarray(b.data[:, rows])
        np.testing.assert_allclose(a.data[:, rows], ref, atol=1e-5 * float(np.ptp(ref)))


def test_sirt_with_an_x_axis_tilt_is_refused_in_one_line_when_the_volume_does_not_fit(series, tmp_path):
    result = run_cli("fbp", "ts.st", "--tlt", "ts.tlt", "--method", "sirt", "--x-axis-tilt", 3, "--thickness", 16,
                     "--memory", "1M", "-o", "x.mrc", cwd=tmp_path)
    assert_refused(result, "--memory", "X-axis tilt")
    assert not (tmp_path / "x.mrc").exists() and leftovers(tmp_path) == []


@pytest.mark.slow
def test_fsc_halves_peak_memory_follows_the_budget_not_the_volumes(tmp_path):
    """Two 250 MB WBP halves under --memory 64M: each is transformed as its slabs arrive and the
    FSC finished from a scratch file; the peak stays within the process's own footprint + the
    budget + 160 MB, and no scratch file is left (the in-memory path held both halves and two
    transforms: over 1 GB)."""
    from localet_core.validation.streamed import in_memory_bytes

    ny, nx = 256, 64
    write_mrc(tmp_path / "mid.st", blob_projections(BLOBS, ANGLES, (ny, nx)))
    write_tlt(tmp_path / "mid.tlt", ANGLES)
    args = ["fsc-halves", "mid.st", "--tlt", "mid.tlt", "--method", "wbp"]
    rc, err, base = _peak_rss_mb([*args, "--thickness", 8, "-o", "small.star"], tmp_path)
    assert rc == 0, err
    thickness, budget_mb, constant_mb = 4000, 64, 160
    assert in_memory_bytes((thickness, ny, nx), 2) / 2**20 > 4 * (budget_mb + constant_mb)
    rc, err, peak = _peak_rss_mb([*args, "--thickness", thickness, "--memory", f"{budget_mb}M",
                                  "--save-halves", "h", "-o", "large.star"], tmp_path)
    assert rc == 0, err
    assert peak < base + budget_mb + constant_mb, (peak, base)
    assert (tmp_path / "large.star").stat().st_size > 0
    assert (tmp_path / "h_half1.mrc").stat().st_size == 1024 + 4 * ny * nx * thickness
    assert leftovers(tmp_path) == []


@pytest.mark.slow
def test_fsc_peak_memory_follows_the_budget_not_the_volumes(tmp_path):
    """`localet fsc` of two 128 MB volumes under --memory 32M: read a few rows at a time and
    transformed into a scratch file, within the process's own footprint + the budget + 160 MB
    (the in-memory FSC holds over 700 MB), the curve of the in-memory run, no scratch left."""
    import starfile

    from localet_core.io import write_volume
    from localet_core.validation.streamed import in_memory_bytes

    shape = (128, 512, 512)
    rng = np.random.default_rng(5)
    common = rng.standard_normal(shape, dtype=np.float32)
    for name in ("a", "b"):
        write_volume(tmp_path / f"{name}.mrc", common + rng.standard_normal(shape, dtype=np.float32), 10.0)
    del common
    small = np.random.default_rng(6).standard_normal((8, 16, 16), dtype=np.float32)
    write_volume(tmp_path / "s1.mrc", small, 10.0)
    write_volume(tmp_path / "s2.mrc", small + 1, 10.0)
    rc, err, base = _peak_rss_mb(["fsc", "s1.mrc", "s2.mrc", "-o", "small.star"], tmp_path)
    assert rc == 0, err
    budget_mb, constant_mb = 32, 160
    assert in_memory_bytes(shape, 2) / 2**20 > 4 * (budget_mb + constant_mb)
    rc, err, peak = _peak_rss_mb(["fsc", "a.mrc", "b.mrc", "--memory", f"{budget_mb}M", "-o", "large.star"],
                                 tmp_path)
    assert rc == 0, err
    assert peak < base + budget_mb + constant_mb, (peak, base)
    assert leftovers(tmp_path) == []
    rc, err, _ = _peak_rss_mb(["fsc", "a.mrc", "b.mrc", "--memory", "4G", "-o", "whole.star"], tmp_path)
    assert rc == 0, err
    streamed, whole = (starfile.read(tmp_path / n)["fsc"] for n in ("large.star", "whole.star"))
    np.testing.assert_allclose(streamed["rlnFourierShellCorrelation"], whole["rlnFourierShellCorrelation"],
                               atol=1e-5)


@pytest.mark.slow
def test_reconstruct_validation_peak_memory_follows_the_budget(series, tmp_path):
    """reconstruct --odd --even of a thick volume under --memory 64M: three network volumes
    written slab by slab, then the prior-proof validation reads its halves back slab by slab,
    computes the halves' WBP slab by slab and the four FSCs out of core."""
    from localet_core.validation.streamed import in_memory_bytes

    args = ["reconstruct", "ts.st", "--tlt", "ts.tlt", "--odd", "ts_odd.st", "--even", "ts_even.st"]
    rc, err, base = _peak_rss_mb([*args, "--thickness", 8, "-o", "s.mrc"], tmp_path)
    assert rc == 0, err
    thickness, budget_mb, constant_mb = 12000, 64, 160
    assert in_memory_bytes((thickness, NY, NX), 4) / 2**20 > budget_mb + constant_mb
    rc, err, peak = _peak_rss_mb([*args, "--thickness", thickness, "--memory", f"{budget_mb}M", "-o", "big.mrc"],
                                 tmp_path)
    assert rc == 0, err
    assert peak < base + budget_mb + constant_mb, (peak, base)
    assert "prior-proof resolution" in err and (tmp_path / "big_prior_proof.star").exists()
    assert leftovers(tmp_path) == []


def test_simulate_stopped_by_sigterm_keeps_its_complete_series_for_resume(tmp_path):
    """A scheduler's wall time (SIGTERM) in the middle of `localet simulate`: the series already
    complete stay (with their records), the one being written and pairs.star do not, no
    temporary file is left, and --resume finishes the run as an uninterrupted one would."""
    common = ["--count", 40, "--shape", "16,24,24", "--seed", 3, "--name", "s", "--no-halves", "--no-progress"]
    out = tmp_path / "sim"
    proc = subprocess.Popen([sys.executable, "-m", "localet", "simulate", "-o", str(out), *map(str, common)],
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while len(list(out.glob("s_*.json"))) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be stopped: make it longer"
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 128 + 15, err[-2000:]
    assert "Traceback" not in err
    records = sorted(out.glob("s_*.json"))
    assert len(records) >= 2
    stacks = sorted(out.glob("s_*.st"))
    assert [p.with_suffix(".json") for p in stacks] == records   # no stack without its record
    assert not (out / "pairs.star").exists() and leftovers(out) == []
    assert f"{len(records)} of 40 series complete" in err and "--resume" in err
    kept = snapshot(out)

    resumed = run_cli("simulate", "-o", out, *common, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"kept {len(records)} complete series" in resumed.stderr
    after = snapshot(out)
    assert all(after[p] == v for p, v in kept.items())   # not rewritten
    assert len(list(out.glob("s_*.json"))) == 40 and (out / "pairs.star").exists()


def test_simulate_resume_keeps_complete_series_and_refuses_other_settings(tmp_path):
    """An interrupted `localet simulate` (series 3's record missing) is resumed: the complete
    series are kept byte for byte and untouched, the rest is simulated as a fresh run would, and
    pairs.star lists them all; a resume with other settings is refused before any work."""
    common = ["--count", 3, "--shape", "24,32,32", "--seed", 5, "--name", "s", "--no-halves"]
    fresh, resumed = tmp_path / "fresh", tmp_path / "resumed"
    assert run_cli("simulate", "-o", fresh, *common).returncode == 0
    shutil.copytree(fresh, resumed)
    (resumed / "s_7.json").unlink()            # the interruption: series 7 was not finished
    (resumed / "s_7.st").write_bytes(b"partial")
    (resumed / "pairs.star").unlink()
    kept = {p: v for p, v in snapshot(resumed).items() if not p.name.startswith("s_7")}
    time.sleep(0.01)
    result = run_cli("simulate", "-o", resumed, *common, "--resume")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "kept 2 complete series" in result.stderr
    after = snapshot(resumed)
    assert all(after[p] == v for p, v in kept.items())   # same bytes, same mtime: not rewritten
    with mrcfile.open(fresh / "s_7.st") as a, mrcfile.open(resumed / "s_7.st") as b:
        np.testing.assert_array_equal(a.data, b.data)    # the seed decides the series
    table = lambda folder: [line for line in (folder / "pairs.star").read_text().splitlines()
                            if not line.startswith("#")]   # starfile's first line is a time stamp
    assert table(resumed) == table(fresh)

    before = snapshot(resumed)
    other = run_cli("simulate", "-o", resumed, *common, "--dose", 77, "--resume")
    assert_refused(other, "s_5.json", "other settings")
    assert snapshot(resumed) == before
