"""Benchmark: the Scipion reconstruct box on a raw tilt series carrying transforms against the
same tilt series already aligned, in a real temporary Scipion project (headless, offline).

    python benchmarks/bench_scipion.py                   # 512 x 512 x 128, WBP, best of 3
    python benchmarks/bench_scipion.py --halves --check  # + odd/even halves and the FSC box

Inputs (in the Scipion scratch folder of ``localet_scipion/tests/scipion_env.py``):

* the raw series: ``bench_cli.make_inputs``' stack (41 views of N^2, -60..60 step 3, random
  float32, 10 A pixels) with ``bench_backprojection.bench_xf``'s transforms (an 85-degree rotation
  and per-view shifts of 5 pixels std), imported by the plugin's own import box, which attaches
  them to the tilt images as Scipion transforms;
* the aligned series: that stack resampled into the aligned frame by
  ``localet_core.alignment.align_stack`` (what ``localet fbp --xf`` does inside), imported as an
  interpolated series: no transforms.

With ``--halves`` both series also get odd/even stacks (random, resampled the same way), the
reconstruct box makes half tomograms too, and the FSC box (half maps) runs on its output.

Then, run by run alternated (both see the same machine load), best of ``--repeat``: the wall time
of ``launchProtocol`` of a new reconstruct box (``--method wbp``: ``localet fbp``, or
``pretrained``: the shipped network, slow on CPU) on each series, from the launch to the
protocol's end (Scipion's step process, the CLI child, the output set), and of the FSC box. The
ratio raw / aligned is the price of the transforms in the box: one resampling of the stack.
It checks that the raw series' box ran the CLI with ``--xf`` (its log) and the aligned one
without, and that both tomograms agree within 1e-4 of the aligned one's range (the same volume:
the box's path is resample-once, then the aligned path). ``--check`` exits 1 when the ratio of
the reconstruct box exceeds 1.5 or the tomograms disagree. The load average is printed before
and after: other jobs on the machine change the figures, the ratio of alternated runs much less.
(``localet_scipion/tests/simulate.py``'s blob series are not used here: simulating 512 x 512 x 128
took 130 s and 13 GiB; the timings do not depend on the content.)

Needs the ``scipion`` extra (scipion-pyworkflow, scipion-em, scipion-em-tomo).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
N_VIEWS = 41
LIMIT = 1.5  # the bound on raw-with-transforms / aligned
TOLERANCE = 1e-4  # of the aligned tomogram's range


def _scipion_environment() -> str:
    """``scipion_env.setup()``, loaded by its path before pyworkflow is imported (importing the
    plugin package would import pyworkflow first; see conftest.py)."""
    spec = importlib.util.spec_from_file_location(
        "_localet_scipion_env", ROOT / "localet_scipion" / "tests" / "scipion_env.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.setup()


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def write_series(folder: Path, n: int, halves: bool) -> dict:
    """``folder/raw`` (stack, .tlt, .xf, optional halves) and ``folder/aligned`` (the same views
    resampled once into the aligned frame, .tlt): one tilt series TS each."""
    import mrcfile
    import numpy as np

    sys.path.insert(0, str(HERE))
    from bench_cli import make_inputs

    from localet_core.alignment import align_stack
    from localet_core.io import read_tlt, read_xf, write_tlt, write_xf
    from localet_core.reconstruction.geometry import TiltGeometry

    folder.mkdir(parents=True, exist_ok=True)
    inputs = make_inputs(folder, n)
    raw, aligned = folder / "raw", folder / "aligned"
    for sub in (raw, aligned):
        sub.mkdir(exist_ok=True)
    angles = read_tlt(inputs["tlt"])
    xf = read_xf(inputs["xf"])
    # the .xf as the box writes it back from Scipion's transforms (write_xf's rounding), so the
    # aligned stack below is exactly what the box's `localet fbp --xf` resamples
    write_xf(raw / "TS.xf", xf)
    xf = read_xf(raw / "TS.xf")
    geometry = TiltGeometry(angles=tuple(angles), detector_shape=(n, n), thickness=n // 4, xf=xf,
                            pixel_size=10.0)
    stacks = {"TS": mrcfile.read(str(inputs["stack"]))}
    if halves:
        rng = np.random.default_rng(2)
        for half in ("odd", "even"):
            stacks[f"TS_{half}"] = rng.standard_normal(stacks["TS"].shape).astype(np.float32)
    for name, data in stacks.items():
        for sub, values in ((raw, data), (aligned, align_stack(data, geometry))):
            with mrcfile.new(str(sub / f"{name}.mrc"), overwrite=True) as mrc:
                mrc.set_data(values)
                mrc.voxel_size = 10.0
    inputs["stack"].unlink()
    for sub in (raw, aligned):
        write_tlt(sub / "TS.tlt", angles)
    return {"raw": raw, "aligned": aligned}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=512, help="detector size N: an N x N x N/4 tomogram")
    ap.add_argument("--repeat", type=int, default=3, help="best of this many launches of each box")
    ap.add_argument("--method", choices=("wbp", "pretrained"), default="wbp",
                    help="the reconstruct box's method (pretrained: the shipped network, slow on CPU)")
    ap.add_argument("--halves", action="store_true",
                    help="odd/even stacks too: half tomograms, and the FSC box on them")
    ap.add_argument("--check", action="store_true",
                    help=f"exit 1 when the reconstruct box with transforms takes over {LIMIT}x the "
                         "aligned one, or their tomograms differ")
    args = ap.parse_args()

    scratch = Path(_scipion_environment())
    import mrcfile
    import numpy as np
    from pyworkflow.tests import BaseTest, setupTestProject

    from localet_scipion.constants import METHOD_PRETRAINED, METHOD_WBP
    from localet_scipion.protocols import ProtLocaletFsc, ProtLocaletImportTs, ProtLocaletReconstruct

    n = args.size
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    print(f"load average at start: {_load()} (1, 5, 15 min)")
    print(f"reconstruct box ({args.method}{', odd/even' if args.halves else ''}): {n} x {n} x {n // 4} "
          f"from {N_VIEWS} views of {n}^2; best of {args.repeat}, raw and aligned alternated")
    t0 = time.perf_counter()
    folders = write_series(scratch / "bench", n, args.halves)
    print(f"inputs written in {time.perf_counter() - t0:.1f} s")

    class BenchLocaletScipion(BaseTest):
        """Only for its project and launch helpers (pyworkflow.tests)."""

    setupTestProject(BenchLocaletScipion)
    run = BenchLocaletScipion

    imports = {}
    for kind, folder in folders.items():
        prot = run.newProtocol(ProtLocaletImportTs, objLabel=f"import {kind}", filesPath=str(folder),
                               filesPattern="*.mrc", interpolated=kind == "aligned", dosePerTilt=3.0)
        run.launchProtocol(prot)
        imports[kind] = prot
    assert imports["raw"].TiltSeries.hasAlignment() and not imports["aligned"].TiltSeries.hasAlignment()

    def timed(prot):
        start = time.perf_counter()
        run.launchProtocol(prot)
        return time.perf_counter() - start

    method = METHOD_WBP if args.method == "wbp" else METHOD_PRETRAINED
    walls = {("reconstruct", k): [] for k in folders}
    if args.halves:
        walls.update({("fsc", k): [] for k in folders})
    first = {}
    for i in range(args.repeat):
        for kind in (("aligned", "raw") if i % 2 == 0 else ("raw", "aligned")):
            rec = run.newProtocol(ProtLocaletReconstruct, objLabel=f"reconstruct {kind} {i}", method=method,
                                  thickness=n // 4, doOddEven=args.halves, useGpu=False)
            rec.inputSetOfTiltSeries.set(imports[kind])
            rec.inputSetOfTiltSeries.setExtended("TiltSeries")
            walls[("reconstruct", kind)].append(timed(rec))
            first.setdefault(kind, rec)
            if args.halves:
                fsc = run.newProtocol(ProtLocaletFsc, objLabel=f"fsc {kind} {i}", mode=0)
                fsc.inputTomograms.set(rec)
                fsc.inputTomograms.setExtended("Tomograms")
                walls[("fsc", kind)].append(timed(fsc))
            if rec is not first[kind]:  # keep the disk use of a large N bounded
                shutil.rmtree(rec._getExtraPath(), ignore_errors=True)

    failures = []
    for box in ("reconstruct", "fsc") if args.halves else ("reconstruct",):
        best = {k: min(walls[(box, k)]) for k in folders}
        ratio = best["raw"] / best["aligned"]
        print(f"  {box} box")
        for kind, label in (("aligned", "aligned series, no transforms"),
                            ("raw", "raw series + 85-degree transforms")):
            runs = ", ".join(f"{w:.2f}" for w in walls[(box, kind)])
            print(f"    {label:34s} {best[kind]:6.2f} s   runs: {runs} s")
        print(f"    ratio raw / aligned: {ratio:.2f}x (limit {LIMIT}x)")
        if box == "reconstruct" and ratio > LIMIT:
            failures.append(f"the reconstruct box with transforms took {ratio:.2f}x the aligned one")

    logs = {k: open(first[k].getStdoutLog()).read() for k in folders}
    commands = {k: [line for line in log.splitlines() if " -m localet " in line or "localet fbp" in line
                    or "localet reconstruct" in line] for k, log in logs.items()}
    xf_passed = any("--xf" in line for line in commands["raw"])
    xf_absent = not any("--xf" in line for line in commands["aligned"])
    print(f"  the raw series' box ran the CLI with --xf: {xf_passed}; the aligned one without: {xf_absent}")
    if not (xf_passed and xf_absent):
        failures.append("the --xf option did not reach (only) the raw series' command")
    outputs = {k: mrcfile.read(first[k].Tomograms.getFirstItem().getFileName()) for k in folders}
    a, b = outputs["aligned"], outputs["raw"]
    diff = float(np.abs(a - b).max() / np.ptp(a))
    print(f"  tomograms, raw + transforms against aligned: max difference {diff:.1e} of the range "
          f"({'OK' if diff <= TOLERANCE else 'FAIL'} at {TOLERANCE:g})")
    if diff > TOLERANCE:
        failures.append(f"the tomograms differ by {diff:.1e} of the range")
    print(f"load average at end: {_load()} (1, 5, 15 min)")
    for failure in failures:
        print(f"FAIL: {failure}")
    return 1 if (args.check and failures) else 0


if __name__ == "__main__":
    sys.exit(main())
