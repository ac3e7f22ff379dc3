"""`localet demo` runs end to end from a subprocess and writes what it promises."""
import subprocess
import sys

import mrcfile


def test_demo_runs_and_writes_outputs(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run([sys.executable, "-m", "localet", "demo", "-o", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    for name in ("tilt_series_truth.mrc", "wbp.mrc", "sirt.mrc", "tilt_series.st", "tilt_series.tlt",
                 "scores.tsv", "demo.png"):
        assert (out / name).stat().st_size > 0, name
    with mrcfile.open(str(out / "wbp.mrc")) as m, mrcfile.open(str(out / "tilt_series_truth.mrc")) as t:
        assert m.data.shape == t.data.shape
    rows = (out / "scores.tsv").read_text().splitlines()
    assert rows[0].startswith("method") and len(rows) >= 3
    pearson = {r.split("\t")[0]: float(r.split("\t")[2]) for r in rows[1:]}
    assert all(0.1 < p < 1 for p in pearson.values())
    # the shipped model must beat both classical methods on the demo's held-out specimen
    assert pearson["localet"] > max(pearson["WBP"], pearson["SIRT"]) + 0.1, pearson
