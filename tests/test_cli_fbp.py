"""`localet fbp` as users run it: a subprocess, real files, clear one-line errors."""
import subprocess
import sys
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from localet_core.io import write_tlt, write_xf
from localet_core.simulate.blobs import blob_projections, rotation_xf

ANGLES = np.arange(-60.0, 61.0, 6.0)
BLOBS = [(8.0, -4.0, 5.0, 1.0), (-9.0, 6.0, -4.0, 0.7)]


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "localet", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=120)


def write_stack(path: Path, data: np.ndarray, pixel_size: float = 10.0) -> Path:
    with mrcfile.new(str(path), overwrite=True) as m:
        m.set_data(data.astype(np.float32))
        m.voxel_size = pixel_size
    return path


@pytest.fixture()
def series(tmp_path):
    stack = write_stack(tmp_path / "ts.st", blob_projections(BLOBS, ANGLES, (24, 36)))
    tlt = tmp_path / "ts.tlt"
    write_tlt(tlt, ANGLES)
    return stack, tlt


def test_fbp_writes_a_valid_volume_with_voxel_size(series, tmp_path):
    stack, tlt = series
    out = tmp_path / "out.mrc"
    result = run_cli("fbp", stack, "--tlt", tlt, "--thickness", 15, "-o", out)
    assert result.returncode == 0, result.stderr
    assert mrcfile.validate(str(out), print_file=open("/dev/null", "w"))
    with mrcfile.open(str(out)) as m:
        assert m.data.shape == (15, 24, 36)
        assert float(m.voxel_size.x) == pytest.approx(10.0)
        assert float(m.header.dmax) == pytest.approx(float(m.data.max()))
    assert not list(tmp_path.glob(".*tmp*"))


def test_fbp_cli_equals_api_and_sirt_bin_exclude_run(series, tmp_path):
    from localet_core.io import read_stack
    from localet_core.reconstruction.geometry import TiltGeometry
    from localet_core.reconstruction.wbp import weighted_backprojection

    stack, tlt = series
    out = tmp_path / "out.mrc"
    assert run_cli("fbp", stack, "--tlt", tlt, "--thickness", 15, "--exclude", "1,21", "-o", out).returncode == 0
    api = weighted_backprojection(read_stack(stack).data, TiltGeometry(ANGLES, (24, 36), 15, excluded=(0, 20)),
                                  device="cpu")
    with mrcfile.open(str(out)) as m:
        np.testing.assert_allclose(m.data, api, atol=1e-5 * np.abs(api).max())
    result = run_cli("fbp", stack, "--tlt", tlt, "--thickness", 9, "--bin", 2, "--method", "sirt",
                     "--iterations", 5, "-o", tmp_path / "sirt.mrc")
    assert result.returncode == 0, result.stderr
    with mrcfile.open(str(tmp_path / "sirt.mrc")) as m:
        assert m.data.shape == (9, 12, 18)
        assert float(m.voxel_size.x) == pytest.approx(20.0)


def test_fbp_with_xf_file(tmp_path):
    xf = rotation_xf(ANGLES.size, 10.0, (2.0, -1.0))
    stack = write_stack(tmp_path / "raw.st", blob_projections(BLOBS, ANGLES, (24, 36), xf=xf))
    write_tlt(tmp_path / "raw.tlt", ANGLES)
    write_xf(tmp_path / "raw.xf", xf)
    result = run_cli("fbp", stack, "--tlt", tmp_path / "raw.tlt", "--xf", tmp_path / "raw.xf",
                     "--thickness", 15, "-o", tmp_path / "out.mrc")
    assert result.returncode == 0, result.stderr


def _bad_inputs(tmp_path: Path, stack: Path, tlt: Path):
    """(name, args, text the message must contain) for each kind of bad input."""
    short_tlt = tmp_path / "short.tlt"
    write_tlt(short_tlt, ANGLES[:-1])
    steep_tlt = tmp_path / "steep.tlt"
    write_tlt(steep_tlt, np.r_[ANGLES[:-1], 90.0])
    nan_data = blob_projections(BLOBS, ANGLES, (24, 36))
    nan_data[3, 5, 5] = np.nan
    nan_stack = write_stack(tmp_path / "nan.st", nan_data)
    truncated = tmp_path / "truncated.st"
    truncated.write_bytes(stack.read_bytes()[:-5000])
    not_mrc = tmp_path / "notes.st"
    not_mrc.write_text("this is not an MRC file\n" * 100)
    image = write_stack(tmp_path / "image.mrc", blob_projections(BLOBS, ANGLES, (24, 36))[0])
    bad_xf = tmp_path / "bad.xf"
    bad_xf.write_text("1 0 0 1 0\n" * ANGLES.size)
    short_xf = tmp_path / "short.xf"
    write_xf(short_xf, rotation_xf(ANGLES.size - 2, 0.0, (0.0, 0.0)))
    missing = tmp_path / "missing.st"
    return [
        ("angle count", [stack, "--tlt", short_tlt], "short.tlt"),
        ("angle >= 90", [stack, "--tlt", steep_tlt], "steep.tlt"),
        ("NaN in stack", [nan_stack, "--tlt", tlt], "nan.st"),
        ("truncated", [truncated, "--tlt", tlt], "truncated.st"),
        ("not MRC", [not_mrc, "--tlt", tlt], "notes.st"),
        ("2D image", [image, "--tlt", tlt], "image.mrc"),
        ("malformed xf", [stack, "--tlt", tlt, "--xf", bad_xf], "bad.xf"),
        ("xf count", [stack, "--tlt", tlt, "--xf", short_xf], "short.xf"),
        ("missing stack", [missing, "--tlt", tlt], "missing.st"),
        ("missing tlt", [stack, "--tlt", tmp_path / "nope.tlt"], "nope.tlt"),
        ("bad exclude", [stack, "--tlt", tlt, "--exclude", "3-x"], "exclude"),
        ("exclude out of range", [stack, "--tlt", tlt, "--exclude", "40"], "40"),
        ("bad binning", [stack, "--tlt", tlt, "--bin", "0"], "--bin"),
    ]


def test_bad_inputs_give_one_line_errors_and_no_output(series, tmp_path):
    stack, tlt = series
    for name, args, needle in _bad_inputs(tmp_path, stack, tlt):
        out = tmp_path / f"out_{name.replace(' ', '_')}.mrc"
        result = run_cli("fbp", *args, "--thickness", 8, "-o", out)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode != 0, name
        assert "Traceback" not in result.stderr, (name, result.stderr)
        assert len(lines) == 1, (name, result.stderr)
        assert needle in lines[0], (name, lines[0])
        assert not out.exists(), name
    assert not list(tmp_path.glob(".*tmp*"))


def test_help_has_examples():
    result = run_cli("fbp", "--help")
    assert result.returncode == 0
    for word in ("--tlt", "--xf", "--exclude", "--thickness", "--bin", "--device", "Examples"):
        assert word in result.stdout
