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
