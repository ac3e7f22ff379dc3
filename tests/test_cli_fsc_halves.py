"""`localet fsc-halves` as users run it: the prior-proof estimate by default for the network,
the plain half-set FSC for WBP, both through real files and the real CLI."""
import subprocess
import sys

import numpy as np
import pytest
import starfile

from localet_core.contracts import fsc_star as star


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    proc = subprocess.run([sys.executable, "-m", "localet", "simulate", "-o", str(out), "--count", "1",
                           "--shape", "64,96,96", "--seed", "4242"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return out


def _run(*args):
    return subprocess.run([sys.executable, "-m", "localet", *map(str, args)], capture_output=True, text=True)


def test_network_gets_the_prior_proof_estimate(series, tmp_path):
    stack = series / "sim_4242.st"
    out, plot = tmp_path / "fsc.star", tmp_path / "fsc.png"
    proc = _run("fsc-halves", stack, "--tlt", series / "sim_4242.tlt", "--odd", series / "sim_4242_odd.st",
                "--even", series / "sim_4242_even.st", "-o", out, "--plot", plot, "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    assert "prior-proof resolution" in proc.stdout and "optimistic for learned methods" in proc.stdout
    tables = starfile.read(out, always_dict=True)
    general = tables[star.BLOCK_GENERAL].iloc[0]
    assert general[star.ESTIMATE] == "prior-proof"
    shells = tables[star.BLOCK_PRIOR_PROOF]
    c = shells[star.C_EST].to_numpy(dtype=float)
    assert np.isfinite(c).sum() >= 3
    # the reported resolution is a real number no finer than Nyquist and no coarser than the box
    px = float(general[star.PIXEL_SIZE])
    assert general[star.LIMIT] != "none"
    assert 2 * px <= float(general[star.FINAL_RESOLUTION]) <= 96 * px
    assert plot.stat().st_size > 10_000


def test_wbp_gets_the_plain_half_set_fsc(series, tmp_path):
    out = tmp_path / "wbp.star"
    proc = _run("fsc-halves", series / "sim_4242.st", "--tlt", series / "sim_4242.tlt", "--method", "wbp",
                "-o", out, "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    assert "prior-proof" not in proc.stdout
    assert star.BLOCK_FSC in starfile.read(out, always_dict=True)
    # and the estimate can be asked for explicitly
    proc = _run("fsc-halves", series / "sim_4242.st", "--tlt", series / "sim_4242.tlt", "--method", "wbp",
                "--estimate", "prior-proof", "-o", out, "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    assert starfile.read(out, always_dict=True)[star.BLOCK_GENERAL].iloc[0][star.ESTIMATE] == "prior-proof"


def test_mirror_averaged_network_is_validated_as_reconstructed(series, tmp_path):
    """`--mirrors 2` validates the network a user reconstructs with `reconstruct --mirrors 2`:
    its saved halves are those half tomograms (the same odd/even reconstructions, to float
    rounding), the report says so, and --mirrors is refused for WBP in one line."""
    import mrcfile

    s = series / "sim_4242"
    halves = ["--odd", f"{s}_odd.st", "--even", f"{s}_even.st"]
    proc = _run("fsc-halves", f"{s}.st", "--tlt", f"{s}.tlt", *halves, "--mirrors", "2", "--device", "cpu",
                "-o", tmp_path / "fsc.star", "--save-halves", tmp_path / "val")
    assert proc.returncode == 0, proc.stderr
    assert "localet (2 mirrors) half tomograms" in proc.stdout
    rec = _run("reconstruct", f"{s}.st", "--tlt", f"{s}.tlt", *halves, "--mirrors", "2", "--device", "cpu",
               "--no-validate", "-o", tmp_path / "rec.mrc")
    assert rec.returncode == 0, rec.stderr
    plain = _run("reconstruct", f"{s}.st", "--tlt", f"{s}.tlt", "--odd", f"{s}_odd.st", "--device", "cpu",
                 "--no-validate", "-o", tmp_path / "plain.mrc")
    assert plain.returncode == 0, plain.stderr
    with mrcfile.open(tmp_path / "val_half1.mrc") as a, mrcfile.open(tmp_path / "rec_odd.mrc") as b, \
            mrcfile.open(tmp_path / "plain_odd.mrc") as c:
        scale = float(np.abs(b.data).max())
        np.testing.assert_allclose(a.data, b.data, atol=1e-5 * scale)
        assert float(np.abs(c.data - b.data).max()) > 1e-3 * scale  # the mirrors change the halves
    proc = _run("fsc-halves", f"{s}.st", "--tlt", f"{s}.tlt", "--method", "wbp", "--mirrors", "2",
                "-o", tmp_path / "wbp.star")
    assert proc.returncode == 2 and "--mirrors applies to --method localet, not wbp" in proc.stderr
    assert not (tmp_path / "wbp.star").exists()
