"""Several models scored against ground truth on the first series of each quality test set, in
one run: the quick comparison of training trials (docs/network.md) before a full
`bench_quality.py` of the one worth shipping.

    python benchmarks/compare_models.py --models localet-default,RUN/model.safetensors [--all-seeds] [--mirrors 1,2,4]

The test series are bench_quality.py's own (fixed seeds, never used in training): by default the
first of set (a) (10 A, -60..60/3) and of each scheme of set (b) (the shifted family, 14 A,
-54..54/2 and -45..45/3), scored by the same function (inside the ice slab after an affine fit).
WBP (eTomo's RADIAL) is scored beside them. Prints one table (Pearson, PSNR, SSIM, wedge
correlation over the slab and over the particles, and the seconds each model took per volume on
this machine) and the mean of set (b)'s two series.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_quality import TEST_A, TEST_B, score  # noqa: E402  (the benchmark's own sets and scoring)

from localet_core.methods import WBP, Localet  # noqa: E402
from localet_core.reconstruction.filters import ETOMO_RADIAL  # noqa: E402
from localet_core.reconstruction.geometry import TiltGeometry  # noqa: E402
from localet_core.simulate.forward import simulate_series  # noqa: E402

SHOWN = ("pearson", "psnr", "ssim", "wedge_corr", "wedge_corr_particles")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="localet-default", help="comma-separated names or .safetensors paths")
    ap.add_argument("--all-seeds", action="store_true", help="every series of the sets (bench_quality's full sets)")
    ap.add_argument("--mirrors", default="1", metavar="N[,N]",
                    help="also score each model averaged with its mirror images (2, 4: reconstruct --mirrors)")
    args = ap.parse_args()
    methods = {"WBP": WBP(ramp=ETOMO_RADIAL, device="cpu")}
    for name in args.models.split(","):
        for m in (int(v) for v in args.mirrors.split(",")):
            methods[name if m == 1 else f"{name} --mirrors {m}"] = Localet(name, device="cpu", mirrors=m)
    rows: Dict[str, Dict[str, List[Dict[str, float]]]] = {m: {"a": [], "b": []} for m in methods}
    seconds = {m: 0.0 for m in methods}
    for set_name, sets in (("a", TEST_A), ("b", TEST_B)):
        for config, seeds in sets:
            for seed in list(seeds)[: None if args.all_seeds else 1]:
                series = simulate_series(dataclasses.replace(config, halves=False), seed)
                geometry = TiltGeometry(series.angles, config.shape[1:], config.shape[0],
                                        pixel_size=config.voxel_size)
                for name, method in methods.items():
                    t0 = time.perf_counter()
                    volume = method.volume(series.stack, geometry)
                    seconds[name] += time.perf_counter() - t0
                    rows[name][set_name].append(score(volume, series, geometry))
                print(f"set {set_name} seed {seed}: " + ", ".join(
                    f"{m} {rows[m][set_name][-1]['pearson']:.3f}" for m in methods), flush=True)
    print("\n| model | (a) Pearson / PSNR / SSIM / wedge / wedge (particles) | "
          "(b) Pearson / PSNR / SSIM / wedge / wedge (particles) | seconds (all volumes) |")
    print("|---|---|---|---|")
    for name in methods:
        cells = []
        for s in ("a", "b"):
            means = {k: float(np.mean([r[k] for r in rows[name][s]])) for k in SHOWN}
            cells.append(" / ".join(f"{means[k]:.2f}" if k == "psnr" else f"{means[k]:.3f}" for k in SHOWN))
        print(f"| {name} | {cells[0]} | {cells[1]} | {seconds[name]:.1f} |")


if __name__ == "__main__":
    main()
