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
