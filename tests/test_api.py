"""The public Python API: every exported name resolves, importing the package stays torch-free
until a name is used, and the README's example runs as written."""
import subprocess
import sys

import numpy as np

import localet_core


def test_every_exported_name_resolves():
    for name in localet_core.__all__:
        assert getattr(localet_core, name) is not None, name
    assert localet_core.__version__ and localet_core.__version__[0].isdigit()


def test_import_is_lazy():
    code = "import sys, localet_core, localet_core.errors; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_readme_example(tmp_path):
    from localet_core import Localet, load_tilt_series, read_volume, write_slabs, write_tlt
    from localet_core.io import write_volume
    from localet_core.simulate.blobs import blob_projections

    angles = np.arange(-60, 61, 6.0)
    stack = blob_projections([(3.0, -2.0, 4.0, 1.0)], angles, (24, 32))
    write_volume(tmp_path / "TS_01.st", stack, 10.0)
    write_tlt(tmp_path / "TS_01.tlt", angles)
    # the README's example, with the paths of this test
    series = load_tilt_series(tmp_path / "TS_01.st", tlt=tmp_path / "TS_01.tlt")
    network = Localet("localet-default", device="cpu")
    write_slabs(tmp_path / "TS_01_rec.mrc", series.geometry, network.slabs(series.data, series.geometry))
    volume = read_volume(tmp_path / "TS_01_rec.mrc")
    assert volume.data.shape == series.geometry.output_shape
    assert volume.voxel_size == 10.0
    assert np.isfinite(volume.data).all() and volume.data.std() > 0


def test_simulate_folder_is_the_command_s_engine(tmp_path):
    """`localet simulate`'s rules are the core's: the Python call names the series by seed
    (zero-padded to one width), writes pairs.star with the last series held out, reports each
    series through ``log``, keeps complete series when resumed, and names a bad count by its
    field (the command by its flag)."""
    import pytest

    from localet_core import SimulationConfig, read_pairs_star, simulate_folder
    from localet_core.errors import FieldError

    settings = SimulationConfig(shape=(8, 24, 24), tilt_step=20.0, halves=False)
    lines = []
    rows = simulate_folder(tmp_path / "sim", settings, count=3, seed=8, name="s", progress=False,
                           log=lines.append)
    assert [r["stack"].name for r in rows] == ["s_08.st", "s_09.st", "s_10.st"]
    pairs = read_pairs_star(tmp_path / "sim" / "pairs.star")
    assert [p.split for p in pairs] == ["train", "train", "val"]
    assert len(lines) == 4 and lines[-1].startswith("wrote 3 series")
    (tmp_path / "sim" / "s_10.json").unlink()
    before = (tmp_path / "sim" / "s_08.st").stat().st_mtime_ns
    lines.clear()
    simulate_folder(tmp_path / "sim", settings, count=3, seed=8, name="s", resume=True, progress=False,
                    log=lines.append)
    assert lines[0] == f"kept 2 complete series already in {tmp_path / 'sim'}"
    assert lines[-1] == f"wrote 1 series and {tmp_path / 'sim' / 'pairs.star'}"
    assert (tmp_path / "sim" / "s_08.st").stat().st_mtime_ns == before
    with pytest.raises(FieldError, match="count: must be at least 1, got 0"):
        simulate_folder(tmp_path / "none", settings, count=0)
    assert not (tmp_path / "none").exists()
    out = subprocess.run([sys.executable, "-m", "localet", "simulate", "-o", str(tmp_path / "none"), "--count", "0"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and out.stderr.strip() == "Error: --count: must be at least 1, got 0"
