"""Quality benchmark with ground truth: WBP, SIRT, the learned linear filter and localet.

    python benchmarks/bench_quality.py [--model localet-default] [--out docs/quality] [--quick] [--record-card]

Test sets (fixed seeds, never used in training; see scripts/train_pretrained.py for those):
  (a) the training family with new seeds: 10 A, -60..60 step 3, 100 e/A^2;
  (b) a shifted family: other templates (6Z6U apoferritin, 6QT9 virus) and object types, thicker
      ice (110-160 nm), lower dose (60 e/A^2), another pixel size (14 A) and other tilt schemes
      (-54..54 step 2 and -45..45 step 3).
Methods: WBP (eTomo's RADIAL 0.35,0.035), SIRT (20 iterations), the learned linear filter (a
least-squares linear map from the same patches: the best FBP-like filter, fitted here on
series of the training distribution) and localet (the shipped model unless --model).
Scores, inside the ice-slab mask after a least-squares affine fit (float64): Pearson, PSNR, SSIM;
FSC against the truth inside the slab (0.5 and 0.143; metrics.resolution_against_truth); and the correlation inside the missing
wedge, over the slab and over the particles alone (a "nothing outside the ice" prior cannot
raise the latter). Writes OUT.md (table + floors), OUT.json and OUT.png.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np
import torch

from localet_core.config import SimulationConfig
from localet_core.methods import SIRT, WBP, Localet
from localet_core.network.linear_filter import fit_linear_filter, linear_config
from localet_core.network.modelfile import load_model
from localet_core.network.training import PairSpec
from localet_core.reconstruction.filters import ETOMO_RADIAL
from localet_core.reconstruction.geometry import TiltGeometry
from localet_core.simulate.forward import simulate_series, write_series
from localet_core.validation.metrics import pearson, psnr, resolution_against_truth, ssim, wedge_correlation

REPO = Path(__file__).resolve().parents[1]

TEST_A = [(SimulationConfig(shape=(96, 128, 128), voxel_size=10.0, tilt_range=(-60, 60), tilt_step=3,
                            dose=100.0), range(900000, 900006))]
SHIFTED = dict(shape=(128, 128, 128), voxel_size=14.0, dose=60.0, family="shifted", thickness_nm=(110.0, 160.0))
TEST_B = [(SimulationConfig(tilt_range=(-54, 54), tilt_step=2, **SHIFTED), range(910000, 910003)),
          (SimulationConfig(tilt_range=(-45, 45), tilt_step=3, **SHIFTED), range(920000, 920003))]
# the linear filter is fitted on the training distribution: the first seeds of each group of
# scripts/train_pretrained.py (the same simulate options, here as configs)
LINEAR_TRAIN = [
    (SimulationConfig(shape=(96, 128, 128), voxel_size=10.0, tilt_range=(-60, 60), tilt_step=3, dose=100.0), range(1000, 1004)),
    (SimulationConfig(shape=(160, 128, 128), voxel_size=8.0, tilt_range=(-57, 57), tilt_step=3, dose=120.0,
                      thickness_nm=(60.0, 110.0), family="diverse"), range(2000, 2004)),
    (SimulationConfig(shape=(160, 128, 128), voxel_size=12.0, tilt_range=(-63, 63), tilt_step=3, dose=70.0,
                      thickness_nm=(100.0, 180.0), family="diverse"), range(3000, 3004)),
    (SimulationConfig(shape=(128, 128, 128), voxel_size=10.0, tilt_range=(-60, 60), tilt_step=2, dose=140.0,
                      thickness_nm=(70.0, 120.0)), range(4000, 4004)),
    # the broad preset of the fine-tuning stage (group gb12), so the filter sees what localet saw
    (SimulationConfig(shape=(128, 128, 128), voxel_size=12.0, tilt_range=(-51, 51), tilt_step=2, dose=60.0,
                      thickness_nm=(100.0, 170.0), family="broad"), range(13000, 13004)),
]
FLOORS = {"a": dict(pearson_x_wbp=1.8, pearson_over_linear=0.08, wedge=0.25),
          "b": dict(pearson_x_wbp=1.6, pearson_over_linear=0.05, wedge=0.15)}
METRICS = ["pearson", "psnr", "ssim", "wedge_corr", "wedge_corr_particles", "fsc_0.5_A", "fsc_0.143_A"]


def score(volume: np.ndarray, series, geometry: TiltGeometry) -> Dict[str, float]:
    truth, slab = series.truth, series.slab_mask
    angles = geometry.used_angles
    tilt = (float(angles.min()), float(angles.max()))
    particles = torch.nn.functional.max_pool3d(torch.from_numpy(series.particle_mask[None].astype(np.float32)),
                                               3, 1, 1)[0].numpy()  # one voxel of margin
    px, slab_f = geometry.voxel_size, slab.astype(np.float32)
    return {"pearson": pearson(volume, truth, slab), "psnr": psnr(volume, truth, slab),
            "ssim": ssim(volume, truth, slab), "wedge_corr": wedge_correlation(volume, truth, tilt, slab),
            "wedge_corr_particles": wedge_correlation(volume, truth, tilt, particles),
            "fsc_0.5_A": resolution_against_truth(volume, truth, px, 0.5, slab_f),
            "fsc_0.143_A": resolution_against_truth(volume, truth, px, 0.143, slab_f)}


def fit_linear(quick: bool) -> torch.nn.Module:
    with tempfile.TemporaryDirectory() as tmp:
        specs = []
        for config, seeds in LINEAR_TRAIN:
            for seed in list(seeds)[: 1 if quick else None]:
                series = simulate_series(dataclasses.replace(config, halves=False), seed)
                paths = write_series(series, Path(tmp), f"lin{seed}", config.voxel_size)
                specs.append(PairSpec(stack=str(paths["stack"]), tlt=str(paths["tlt"]), reference=str(paths["reference"])))
        return fit_linear_filter(specs, linear_config(patch_size=9, n_angle_basis=6), voxels_per_pair=30000)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="localet-default", help="model name or .safetensors path")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "quality")
    ap.add_argument("--quick", action="store_true", help="one series per set (a smoke run)")
    ap.add_argument("--record-card", action="store_true",
                    help="write the means into the model file's card (its 'benchmark' entry)")
    ap.add_argument("--mirrors", type=int, default=1, help="localet reconstruct --mirrors N for the model (1, 2, 4)")
    args = ap.parse_args()
    if args.record_card and args.mirrors != 1:
        ap.error("--record-card records the model's own scores: leave --mirrors at 1")
    torch.manual_seed(0)
    t0 = time.time()
    model, card = load_model(args.model)
    methods: Dict[str, Callable] = {
        "WBP": WBP(ramp=ETOMO_RADIAL, device="cpu").volume,
        "SIRT": SIRT(iterations=20, device="cpu").volume,
        "linear filter": Localet(fit_linear(args.quick), device="cpu").volume,
        "localet": Localet(model, device="cpu", mirrors=args.mirrors).volume,
    }
    results: Dict[str, Dict[str, List[Dict[str, float]]]] = {}
    examples = {}
    for set_name, sets in (("a", TEST_A), ("b", TEST_B)):
        results[set_name] = {m: [] for m in methods}
        for config, seeds in sets:
            for seed in list(seeds)[: 1 if args.quick else None]:
                series = simulate_series(dataclasses.replace(config, halves=False), seed)
                geometry = TiltGeometry(series.angles, config.shape[1:], config.shape[0], pixel_size=config.voxel_size)
                for name, method in methods.items():
                    volume = method(series.stack, geometry)
                    results[set_name][name].append(score(volume, series, geometry))
                    if set_name not in examples or examples[set_name][0] == seed:
                        examples.setdefault(set_name, (seed, series.truth, {}))[2][name] = volume
                print(f"set {set_name} seed {seed}: " + ", ".join(
                    f"{m} {results[set_name][m][-1]['pearson']:.3f}" for m in methods), flush=True)
    means = {s: {m: {k: float(np.mean([r[k] for r in rows])) for k in METRICS} for m, rows in per.items()}
             for s, per in results.items()}
    checks = floors(means)
    write_report(args.out, means, checks, card, time.time() - t0, args.quick, args.mirrors)
    plot(args.out.with_suffix(".png"), means, examples)
    if args.record_card and not args.quick:
        record_in_card(args.model, means)
    print(args.out.with_suffix(".md").read_text())
    if not all(ok for _, ok in checks):
        sys.exit(1)


def floors(means) -> List[tuple]:
    checks = []
    for s in ("a", "b"):
        loc, wbp, lin, sirt_ = (means[s][m] for m in ("localet", "WBP", "linear filter", "SIRT"))
        f = FLOORS[s]
        for metric in ("pearson", "ssim", "psnr", "wedge_corr"):
            best = max(m[metric] for m in (wbp, lin, sirt_))
            checks.append((f"({s}) localet beats WBP, SIRT and the linear filter on {metric}: "
                           f"{loc[metric]:.3f} vs best {best:.3f}", loc[metric] > best))
        checks.append((f"({s}) FSC-0.143 no coarser than WBP: {loc['fsc_0.143_A']:.1f} A vs {wbp['fsc_0.143_A']:.1f} A",
                       loc["fsc_0.143_A"] <= wbp["fsc_0.143_A"] + 1e-6))
        checks.append((f"({s}) Pearson >= {f['pearson_x_wbp']}x WBP: {loc['pearson']:.3f} vs "
                       f"{f['pearson_x_wbp'] * wbp['pearson']:.3f}", loc["pearson"] >= f["pearson_x_wbp"] * wbp["pearson"]))
        checks.append((f"({s}) Pearson >= linear filter + {f['pearson_over_linear']}: {loc['pearson']:.3f} vs "
                       f"{lin['pearson'] + f['pearson_over_linear']:.3f}", loc["pearson"] >= lin["pearson"] + f["pearson_over_linear"]))
        checks.append((f"({s}) missing-wedge correlation >= {f['wedge']}: {loc['wedge_corr']:.3f}", loc["wedge_corr"] >= f["wedge"]))
    return checks


def record_in_card(model_name: str, means) -> None:
    """Store the benchmark means in the model file's card (what `localet reconstruct` users see)."""
    from localet_core.network.modelfile import resolve_model_path, save_model

    path = resolve_model_path(model_name)
    model, card = load_model(path)
    entry = {"command": "python benchmarks/bench_quality.py",
             "note": "simulated test sets never used in training; inside the ice slab after an affine fit"}
    for s in ("a", "b"):
        for metric in ("pearson", "ssim", "psnr", "wedge_corr", "wedge_corr_particles", "fsc_0.143_A"):
            entry[f"set_{s}_{metric}"] = round(means[s]["localet"][metric], 4)
        entry[f"set_{s}_wbp_pearson"] = round(means[s]["WBP"]["pearson"], 4)
    card["benchmark"] = entry
    save_model(path, model, card)
    print(f"recorded the means in {path}")


def write_report(out: Path, means, checks, card, seconds: float, quick: bool, mirrors: int = 1) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    averaged = f", averaged with its mirror images (`--mirrors {mirrors}`)" if mirrors > 1 else ""
    lines = [f"# Quality benchmark ({'quick smoke run' if quick else 'full'}; `python benchmarks/bench_quality.py`)", "",
             f"Model: `{card.get('name')}`{averaged} (trained on simulated data only). Scores inside the ice slab after a "
             "least-squares affine fit; FSC against the ground truth; wedge = correlation inside the missing wedge "
             "(over the slab, and over the particles alone).", ""]
    for s, title in (("a", "(a) training family, new seeds"), ("b", "(b) shifted family (other templates, objects, "
                                                                      "thicker ice, lower dose, 14 A, -54..54/2 and -45..45/3)")):
        lines += [f"## {title}", "", "| method | Pearson | PSNR (dB) | SSIM | wedge corr | wedge corr, particles | FSC 0.5 (A) | FSC 0.143 (A) |",
                  "|---|---|---|---|---|---|---|---|"]
        for m, v in means[s].items():
            lines.append(f"| {m} | {v['pearson']:.3f} | {v['psnr']:.2f} | {v['ssim']:.3f} | {v['wedge_corr']:.3f} | "
                         f"{v['wedge_corr_particles']:.3f} | {v['fsc_0.5_A']:.1f} | {v['fsc_0.143_A']:.1f} |")
        lines.append("")
    lines += ["## Floors", ""] + [f"- {'PASS' if ok else 'FAIL'}: {text}" for text, ok in checks]
    lines += ["", f"Run time {seconds / 60:.1f} min on {__import__('os').cpu_count()} CPU cores."]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps({"means": means, "floors": checks}, indent=1))


def plot(path: Path, means, examples) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(next(iter(means.values())))
    fig = plt.figure(figsize=(14, 8))
    for i, (s, metric) in enumerate([(s, m) for s in ("a", "b") for m in ("pearson", "ssim", "wedge_corr", "wedge_corr_particles")]):
        ax = fig.add_subplot(4, 4, i + 1)
        ax.bar(range(len(methods)), [means[s][m][metric] for m in methods], color=["gray", "tab:blue", "tab:orange", "tab:green"])
        ax.set_xticks(range(len(methods)))
        ax.set_xticklabels(methods, fontsize=7)
        ax.set_title(f"({s}) {metric}", fontsize=9)
    for row, s in enumerate(("a", "b")):
        seed, truth, vols = examples[s]
        panels = {"truth": truth, **vols}
        for col, (name, vol) in enumerate(panels.items()):
            ax = fig.add_subplot(4, 5, 11 + 5 * row + col)
            xz = vol[:, vol.shape[1] // 2]
            lo, hi = np.percentile(xz, [1, 99])
            ax.imshow(xz, cmap="gray", vmin=lo, vmax=hi, origin="lower")
            ax.set_title(f"({s}) {name}, XZ", fontsize=8)
            ax.axis("off")
    fig.subplots_adjust(hspace=0.6, wspace=0.35, left=0.04, right=0.98, top=0.95, bottom=0.03)
    fig.savefig(path, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
