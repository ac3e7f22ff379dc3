"""`localet finetune`: the acquisition read from the user's files, the simulation that copies it,
and the whole command (simulate + fine-tune) as a user runs it, resumed, and refusing bad input."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from localet_core.errors import FieldError, InputError
from localet_core.specimen import Acquisition, read_acquisition, specimen_simulation

ANGLES = np.arange(-60.0, 60.01, 3.0)


def _stack(path: Path, views: int = 41, pixel: float = 3.5) -> Path:
    with mrcfile.new(str(path), overwrite=True) as m:
        m.set_data(np.zeros((views, 16, 16), np.float32))
        m.voxel_size = pixel
    return path


def _tlt(path: Path, angles=ANGLES) -> Path:
    path.write_text("".join(f"{a:.2f}\n" for a in angles))
    return path


def _mdoc(path: Path, angles, dose_per_view: float, pixel: float = 2.2) -> Path:
    text = f"PixelSpacing = {pixel}\nVoltage = 300\nImageFile = TS.mrc\n\n"
    order = np.argsort(np.abs(angles), kind="stable")  # dose-symmetric acquisition
    for rank, z in enumerate(order):
        text += (f"[ZValue = {z}]\nTiltAngle = {angles[z]}\nExposureDose = {dose_per_view}\n"
                 f"DateTime = 24-Nov-26  10:{15 + rank // 60:02d}:{rank % 60:02d}\n\n")
    path.write_text(text)
    return path


def _run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "localet", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=600)


def test_acquisition_from_tlt_stack_header_binning_and_exclusions(tmp_path):
    stack, tlt = _stack(tmp_path / "TS.st"), _tlt(tmp_path / "TS.tlt")
    acq = read_acquisition(tlt=tlt, stack=stack, binning=4)
    assert acq.voxel_size == pytest.approx(14.0) and acq.dose is None
    assert acq.tilt_scheme == ((-60.0, 60.0), pytest.approx(3.0))
    # excluded views (the two highest tilts) are not part of the scheme; a pixel size overrides the header
    acq = read_acquisition(tlt=tlt, stack=stack, exclude="1,41", pixel_size=2.0, binning=5)
    assert acq.voxel_size == pytest.approx(10.0) and acq.angles.size == 39
    assert acq.tilt_scheme == ((-57.0, 57.0), pytest.approx(3.0))
    # a lamella's asymmetric, pre-tilted range in dose-symmetric stack order
    lamella = np.concatenate([np.arange(10.0, 64.01, 3.0), np.arange(7.0, -50.01, -3.0)])
    acq = read_acquisition(tlt=_tlt(tmp_path / "lamella.tlt", lamella), stack=_stack(tmp_path / "L.st", lamella.size))
    assert acq.tilt_scheme == ((-50.0, 64.0), pytest.approx(3.0))


def test_acquisition_from_mdoc_gives_angles_pixel_and_dose(tmp_path):
    angles = np.arange(-45.0, 45.01, 3.0)
    mdoc = _mdoc(tmp_path / "TS.mrc.mdoc", angles, 3.5)
    acq = read_acquisition(mdoc=mdoc, binning=6)
    np.testing.assert_allclose(acq.angles, angles)
    assert acq.voxel_size == pytest.approx(13.2)
    assert acq.dose == pytest.approx(3.5 * angles.size)
    acq = read_acquisition(mdoc=mdoc, exclude=[1, 2], binning=6)
    assert acq.dose == pytest.approx(3.5 * (angles.size - 2))


def test_acquisition_errors_name_the_field_or_file(tmp_path):
    tlt = _tlt(tmp_path / "TS.tlt")
    with pytest.raises(FieldError, match="tilt angles are needed") as info:
        read_acquisition(stack=_stack(tmp_path / "TS.st"))
    assert info.value.field == "tilt_angles"
    with pytest.raises(FieldError, match="pixel size is unknown") as info:
        read_acquisition(tlt=tlt, stack=_stack(tmp_path / "nopix.st", pixel=0.0))
    assert info.value.field == "pixel_size"
    with pytest.raises(InputError, match="has 30 views but there are 41 tilt angles"):
        read_acquisition(tlt=tlt, stack=_stack(tmp_path / "short.st", views=30))
    with pytest.raises(FieldError, match="view 42 is outside 1..41"):
        read_acquisition(tlt=tlt, stack=_stack(tmp_path / "TS.st"), exclude="42")
    with pytest.raises(FieldError, match="must be a whole number >= 1"):
        read_acquisition(tlt=tlt, stack=_stack(tmp_path / "TS.st"), binning=0)


def test_simulation_copies_the_acquisition():
    acq = Acquisition(angles=np.concatenate([np.arange(0, 61, 2.0), np.arange(-2, -55, -2.0)]), voxel_size=14.0,
                      dose=120.0)
    settings = specimen_simulation(["4v1w"], acq, defocus_um=(3.0, 4.0), thickness_nm=(110, 160))
    assert settings.templates == ("4v1w",) and settings.family == "diverse"
    assert settings.voxel_size == 14.0 and settings.tilt_range == (-54.0, 60.0)
    assert settings.tilt_step == pytest.approx(2.0)
    np.testing.assert_allclose(settings.angles, np.arange(-54, 60.01, 2.0))
    assert settings.dose == 120.0 and settings.defocus_um == (3.0, 4.0) and settings.thickness_nm == (110, 160)
    plain = specimen_simulation(["4v1w"], Acquisition(angles=acq.angles, voxel_size=14.0))
    assert plain.dose == 100.0 and plain.defocus_um == (2.0, 5.0)  # the simulator's defaults
    assert specimen_simulation(["4v1w"], acq, dose=60.0).dose == 60.0
    # angles as recorded (EMPIAR-10499's .tlt: -60.01, -57.00, ..., 56.99, 59.98): as many views
    recorded = np.round(np.arange(-60.0, 60.01, 3.0) + np.random.default_rng(0).uniform(-0.02, 0.02, 41), 2)
    settings = specimen_simulation(["4v1w"], Acquisition(angles=recorded, voxel_size=20.0))
    assert settings.angles.size == 41
    np.testing.assert_allclose(settings.angles[[0, -1]], [recorded.min(), recorded.max()], atol=1e-9)
    with pytest.raises(FieldError, match="templates"):
        specimen_simulation(["nope"], acq)


def test_finetune_command_simulates_the_acquisition_trains_and_resumes(tmp_path):
    """The whole command on a tiny field of view: the series are simulated at the user's voxel
    size (pixel x binning) and tilt scheme with the molecule given, the model is fine-tuned from
    the shipped one and its card says where it fits; a resumed run keeps the series; the user's
    files are never written."""
    from localet_core.network.modelfile import load_model

    stack, tlt = _stack(tmp_path / "TS.st", views=39), _tlt(tmp_path / "TS.tlt", np.arange(-57.0, 57.01, 3.0))
    before = {p: p.read_bytes() for p in (stack, tlt)}
    args = ["finetune", stack, "--tlt", tlt, "--bin", 4, "--templates", "4v1w", "--shape", "24,32,32",
            "--count", 2, "--steps", 6, "--dose", 80, "--device", "cpu", "--no-progress", "-o", tmp_path / "run"]
    proc = _run(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 series of 4v1w at 14 A, -57..57 by 3 degrees, 80 e/A^2" in proc.stderr
    record = json.loads((tmp_path / "run" / "simulations" / "specimen_0.json").read_text())["config"]
    assert record["templates"] == ["4v1w"] and record["voxel_size"] == 14.0 and record["family"] == "diverse"
    assert record["tilt_range"] == [-57.0, 57.0] and record["tilt_step"] == 3.0 and record["dose"] == 80.0
    model, card = load_model(tmp_path / "run" / "model.safetensors")
    assert card["initialised_from"] == "localet-default" and card["steps"] == 6
    assert card["pixel_size_A"] == [14.0] and card["tilt_schemes"][0]["min_deg"] == -57.0
    assert model.config == load_model("localet-default")[0].config
    specimen = card["specimen"]  # what the model is for: the simulation, as the series' JSON says
    assert specimen["simulation"] == record and specimen["series"] == 2 and specimen["first_seed"] == 0
    series = sorted((tmp_path / "run" / "simulations").glob("specimen_*.st"))
    stamps = {p: p.stat().st_mtime_ns for p in series}
    proc = _run(*args, "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "kept 2 complete series" in proc.stderr
    assert {p: p.stat().st_mtime_ns for p in series} == stamps
    assert {p: p.read_bytes() for p in (stack, tlt)} == before


def test_finetune_refuses_bad_input_in_one_line_and_writes_nothing(tmp_path):
    stack, tlt = _stack(tmp_path / "TS.st"), _tlt(tmp_path / "TS.tlt")
    cases = [
        (["--templates", str(tmp_path / "missing.mrc")], "missing.mrc"),
        (["--templates", "4v1w", "--count", "1"], "--count: must be at least 2"),
        (["--templates", "4v1w", "--bin", "0"], "--bin: must be a whole number >= 1"),
        (["--templates", "4v1w", "--exclude", "50"], "--exclude: view 50 is outside 1..41"),
    ]
    for extra, message in cases:
        proc = _run("finetune", stack, "--tlt", tlt, *extra, "--shape", "24,32,32", "-o", tmp_path / "run")
        assert proc.returncode == 2, (extra, proc.stderr[-2000:])
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], (extra, proc.stderr)
        assert not (tmp_path / "run").exists()
    proc = _run("finetune", stack, "--templates", "4v1w", "-o", tmp_path / "run")
    assert proc.returncode == 2 and "--tlt: tilt angles are needed" in proc.stderr
