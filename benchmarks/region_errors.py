"""Where a reconstruction's error lies, by what the ground truth holds there: on the first series
of each scheme of bench_quality.py's shifted set (b) (and, with --set a, of set (a)), each
method's output is fitted to the truth inside the ice slab (least-squares affine, as the
benchmark scores it) and its squared error is split by the object each voxel belongs to: plain
ice, each particle template, membranes, filaments, gold.

    python benchmarks/region_errors.py --models localet-default,RUN/model.safetensors [--set a] [--all-seeds]

Columns, as shares of the truth's variance inside the slab (so the error columns of a method add
up to 1 - R^2, and R^2 is its Pearson squared): the truth's share per region (and the fraction of
slab voxels), then each method's error per region. A model's gain over another shows which
objects it renders better. docs/network.md, "Which objects set (b)'s score", shows a use.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_quality import TEST_A, TEST_B  # noqa: E402  (the benchmark's own sets)

from localet_core.methods import WBP, Localet  # noqa: E402
from localet_core.reconstruction.filters import ETOMO_RADIAL  # noqa: E402
from localet_core.reconstruction.geometry import TiltGeometry  # noqa: E402
from localet_core.simulate.forward import SimulatedSeries, simulate_series  # noqa: E402


def region_names(series: SimulatedSeries) -> "tuple[np.ndarray, List[str]]":
    """``(nz, ny, nx)`` region index of every voxel and the regions' names: 0 is ice (or
    vacuum), then one region per particle template and per other object type."""
    names = ["ice"]
    kinds = [0]
    for obj in series.params["phantom"]["objects"]:
        name = obj.get("template") or obj["type"]
        if name not in names:
            names.append(name)
        kinds.append(names.index(name))
    return np.asarray(kinds, dtype=np.int64)[series.labels.astype(np.int64)], names


def error_shares(volume: np.ndarray, series: SimulatedSeries, regions: np.ndarray, n: int) -> Dict[str, object]:
    """R^2 of the affine fit inside the slab and the squared error per region over the truth's
    variance."""
    slab = series.slab_mask.astype(bool)
    t = series.truth[slab].astype(np.float64)
    t -= t.mean()
    v = volume[slab].astype(np.float64)
    v -= v.mean()
    gain = float((v * t).sum() / max((v * v).sum(), 1e-30))
    err = (gain * v - t) ** 2
    total = float((t * t).sum())
    per = np.bincount(regions[slab], weights=err, minlength=n) / total
    return {"r2": 1.0 - float(err.sum()) / total, "per": per}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="localet-default", help="comma-separated names or .safetensors paths")
    ap.add_argument("--set", choices=("a", "b"), default="b", help="bench_quality's test set")
    ap.add_argument("--all-seeds", action="store_true", help="every series of the set, not only the first of each scheme")
    args = ap.parse_args()
    methods = {"WBP": WBP(ramp=ETOMO_RADIAL, device="cpu")}
    for name in args.models.split(","):
        methods[name] = Localet(name, device="cpu")
    for config, seed in [(c, s) for c, seeds in (TEST_A if args.set == "a" else TEST_B)
                         for s in (list(seeds) if args.all_seeds else list(seeds)[:1])]:
        series = simulate_series(dataclasses.replace(config, halves=False), seed)
        geometry = TiltGeometry(series.angles, config.shape[1:], config.shape[0], pixel_size=config.voxel_size)
        regions, names = region_names(series)
        slab = series.slab_mask.astype(bool)
        t = series.truth[slab].astype(np.float64)
        t -= t.mean()
        truth_share = np.bincount(regions[slab], weights=t * t, minlength=len(names)) / float((t * t).sum())
        voxels = np.bincount(regions[slab], minlength=len(names)) / float(slab.sum())
        tilt = f"{series.angles.min():.0f}..{series.angles.max():.0f}"
        print(f"\nset {args.set}, seed {seed} ({tilt}, {config.voxel_size:g} A): shares of the truth's variance in the slab")
        print("| | R^2 (Pearson) | " + " | ".join(names) + " |")
        print("|---|---|" + "---|" * len(names))
        print("| truth (fraction of voxels) | | " + " | ".join(
            f"{s:.3f} ({f:.3f})" for s, f in zip(truth_share, voxels)) + " |")
        for name, method in methods.items():
            r = error_shares(method.volume(series.stack, geometry), series, regions, len(names))
            print(f"| {name}: error | {r['r2']:.3f} ({np.sqrt(max(r['r2'], 0)):.3f}) | "
                  + " | ".join(f"{e:.3f}" for e in r["per"]) + " |", flush=True)


if __name__ == "__main__":
    main()
