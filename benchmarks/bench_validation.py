"""Honest validation, checked against ground truth: the prior-proof resolution estimate against
the true resolution of the same half maps, for WBP, SIRT and the network, on the simulated
held-out sets of bench_quality.py (family (a) and the shifted family (b)).

    python benchmarks/bench_validation.py [--model localet-default] [--quick] [--out docs/validation]

Per series: the odd and even half stacks are reconstructed by each method; the estimate
(localet_core.validation.prior_proof) uses the other half's WBP; the *true* resolution is the
same criterion (correlation 0.5, same crossing rules) on each half map's FSC against the ground
truth outside the missing wedge; the plain half-set FSC at 0.143 is shown beside (the figure a
learned prior inflates). "optimism" = estimated frequency / true frequency - 1 (> 0: the
estimate claims more than the truth supports). Writes OUT.md and OUT.json; exits 1 when the
network's estimate is optimistic by more than 10 %.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from bench_quality import TEST_A, TEST_B

from localet_core.methods import SIRT, WBP, Localet
from localet_core.reconstruction.filters import ETOMO_RADIAL
from localet_core.reconstruction.geometry import TiltGeometry
from localet_core.simulate.forward import simulate_series
from localet_core.validation.fsc import compute_fsc
from localet_core.validation.prior_proof import curve_resolution, prior_proof_fsc

REPO = Path(__file__).resolve().parents[1]
TOLERANCE = 0.10


def angstrom(res) -> str:
    return "-" if res.angstrom is None else f"{res.angstrom:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="localet-default")
    ap.add_argument("--quick", action="store_true", help="one series per set")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "validation")
    args = ap.parse_args()
    t0 = time.time()
    methods = {"WBP": WBP(ramp=ETOMO_RADIAL, device="cpu"), "SIRT": SIRT(device="cpu"),
               "localet": Localet(args.model, device="cpu")}
    rows = []
    for set_name, sets in (("a", TEST_A), ("b", TEST_B)):
        for config, seeds in sets:
            for seed in list(seeds)[: 1 if args.quick else 2]:
                series = simulate_series(dataclasses.replace(config, halves=True), seed)
                px = config.voxel_size
                geometry = TiltGeometry(series.angles, config.shape[1:], config.shape[0], pixel_size=px)
                tilt = (float(series.angles.min()), float(series.angles.max()))
                wbp = methods["WBP"]
                ref = [wbp.volume(s, geometry) for s in (series.odd, series.even)]
                for name, method in methods.items():
                    halves = ref if name == "WBP" else [method.volume(s, geometry) for s in (series.odd, series.even)]
                    est = prior_proof_fsc(*halves, *ref, tilt, pixel_size=px)
                    true_c = np.mean([compute_fsc(torch.from_numpy(h), torch.from_numpy(series.truth),
                                                  tilt_range=tilt).curves["outside_wedge"][0].numpy()
                                      for h in halves], axis=0)
                    true_res = curve_resolution(est.frequency, true_c, est.curve.n_voxels, px)
                    plain = compute_fsc(torch.from_numpy(halves[0]), torch.from_numpy(halves[1]), pixel_size=px,
                                        tilt_range=tilt).resolutions[("all", "0.143")]
                    optimism = est.resolution.frequency / true_res.frequency - 1
                    rows.append(dict(set=set_name, seed=seed, scheme=f"{tilt[0]:g}..{tilt[1]:g}", method=name,
                                     learned=method.learned,
                                     estimated_A=est.resolution.angstrom, estimate_limit=est.resolution.limit,
                                     true_A=true_res.angstrom, plain_half_set_0143_A=plain.angstrom,
                                     plain_crossed=plain.crossed, optimism=optimism))
                    print(f"({set_name}) seed {seed} {name:8s} estimated {angstrom(est.resolution):>6s} A "
                          f"({est.resolution.limit}), true {angstrom(true_res):>6s} A, plain half-set 0.143 "
                          f"{plain.describe()}, optimism {100 * optimism:+.0f} %", flush=True)
    worst = max(r["optimism"] for r in rows if r["learned"])
    worst_linear = max(r["optimism"] for r in rows if not r["learned"])
    lines = ["| set | seed | tilts | method | estimated (A) | true (A) | plain half-set FSC 0.143 (A) | optimism |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        plain = f"{r['plain_half_set_0143_A']:.1f}" + ("" if r["plain_crossed"] else " (never crosses)")
        note = "" if r["estimate_limit"] == "crossed" else f" ({r['estimate_limit']})"
        lines.append(f"| ({r['set']}) | {r['seed']} | {r['scheme']} | {r['method']} | {r['estimated_A']:.1f}{note} | "
                     f"{r['true_A']:.1f} | {plain} | {100 * r['optimism']:+.0f} % |")
    lines += ["", f"Worst optimism of the network {100 * worst:+.0f} % (floor: at most {100 * TOLERANCE:.0f} %); "
              f"of WBP and SIRT {100 * worst_linear:+.0f} % (against the specimen; see docs/fsc.md); "
              f"{time.time() - t0:.0f} s on {__import__('os').cpu_count()} CPU cores."]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    print("\n".join(lines))
    if worst > TOLERANCE:
        sys.exit(1)


if __name__ == "__main__":
    main()
