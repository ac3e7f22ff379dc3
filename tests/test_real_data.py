"""A real tilt series end to end through the CLI (EMPIAR-10499 from the warpylib 1.1.2 sdist,
fetched into the cache by `make fetch-real`, which .ci/run calls): raw stack + .xf, binned.

Without ground truth, what can be checked: the orientation (gold beads are sharper with the
.xf as given than with its rotation negated, for WBP and for the network), the header (voxel
size, grid, origin) and that the network is at least as consistent with the data as WBP by the
prior-proof estimate. Skips, saying why, only when the data are not in the cache."""
import subprocess
import sys

import mrcfile
import numpy as np
import pytest
import starfile

from localet_core.contracts import fsc_star as star
from localet_core.errors import InputError
from localet_core.io import read_xf, write_xf
from localet_core.realdata import fetch_command, real_series
from localet_core.validation.metrics import bead_contrast

BIN = 4

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    try:
        paths = real_series()
    except InputError as exc:
        pytest.skip(f"real tilt series not in the cache ({exc}); run `make fetch-real` or `{fetch_command()}`")
    work = tmp_path_factory.mktemp("real")
    xf = read_xf(paths["xf"])
    negated = xf.copy()
    negated[:, 0, 1] *= -1  # the rotation turned the other way, shifts kept
    negated[:, 1, 0] *= -1
    write_xf(work / "negated.xf", negated)
    return paths, work


def _cli(*args):
    proc = subprocess.run([sys.executable, "-m", "localet", *map(str, args)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc


def _volume(path):
    with mrcfile.open(path, permissive=True) as m:
        return m.data.copy(), m.voxel_size, m.header.origin


@pytest.mark.parametrize("command", ["fbp", "reconstruct"])
def test_orientation_and_header(real, command):
    paths, work = real
    vols = {}
    for name, xf in (("given", paths["xf"]), ("negated", work / "negated.xf")):
        out = work / f"{command}_{name}.mrc"
        _cli(command, paths["stack"], "--tlt", paths["tlt"], "--xf", xf, "--bin", BIN, "--device", "cpu",
             "--no-progress", "-o", out)
        vols[name] = _volume(out)
    data, voxel, origin = vols["given"]
    # 652 x 630 px at 10 A, bin 4: 163 x 157 voxels of 40 A, 300 nm thick by default
    assert data.shape == (75, 157, 163)
    assert float(voxel.x) == pytest.approx(40.0) and float(voxel.z) == pytest.approx(40.0)
    assert vols["negated"][2] == origin
    sharp, smeared = bead_contrast(data), bead_contrast(vols["negated"][0])
    assert sharp > 1.2 * smeared, (command, sharp, smeared)


def test_network_at_least_as_consistent_as_wbp(real):
    paths, work = real
    c = {}
    for method in ("wbp", "localet"):
        out = work / f"pp_{method}.star"
        proc = _cli("fsc-halves", paths["stack"], "--tlt", paths["tlt"], "--xf", paths["xf"], "--bin", BIN,
                    "--method", method, "--estimate", "prior-proof", "--device", "cpu", "-o", out)
        assert "better than Nyquist" not in proc.stdout.split("prior-proof resolution")[-1]
        tables = starfile.read(out, always_dict=True)
        c[method] = tables[star.BLOCK_PRIOR_PROOF][star.C_EST].to_numpy(dtype=float)
    both = np.isfinite(c["wbp"]) & np.isfinite(c["localet"])
    assert both.sum() >= 5
    # the network's halves correlate at least as well with the signal in the data as WBP's
    assert np.mean(c["localet"][both]) >= np.mean(c["wbp"][both]) - 0.02, (c["localet"][both], c["wbp"][both])


def test_specimen_fine_tune_copies_the_real_acquisition(real):
    """`localet finetune`'s acquisition from the real series' own files, as a user gives them:
    the header's 10 A x bin 2 = 20 A, and the recorded angles (-60.01 ... 59.98 by about 3)
    simulated as 41 views over the same range, not one less."""
    from localet_core.specimen import read_acquisition, specimen_simulation

    paths, _ = real
    acq = read_acquisition(tlt=paths["tlt"], stack=paths["stack"], binning=2, exclude="1")
    assert acq.voxel_size == pytest.approx(20.0) and acq.angles.size == 40
    settings = specimen_simulation(["4v5d"], read_acquisition(tlt=paths["tlt"], stack=paths["stack"], binning=2))
    recorded = np.loadtxt(paths["tlt"])
    assert settings.angles.size == recorded.size == 41
    np.testing.assert_allclose(settings.angles[[0, -1]], [recorded.min(), recorded.max()], atol=1e-9)
