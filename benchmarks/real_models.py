"""Models compared on the real tilt series (EMPIAR-10499 from the warpylib 1.1.2 sdist; `make
fetch-real` first), without ground truth: WBP and each model on the raw stack + .xf at bin 2, the
prior-proof resolution (docs/fsc.md), the plain half-set FSC (optimistic for a learned method),
gold-bead contrast and the time of the whole volume, in one run.

    python benchmarks/real_models.py [--models localet-default,localet-linear] [--out DIR] [--per-view-mean]

--per-view-mean divides each aligned view by its own mean (times the stack's mean) before the
methods see it: a probe of whether the views' attenuation (their intensity change with tilt)
is what a model trained on simulations reads wrongly.

Writes DIR/real_models.tsv and DIR/real_models.png (the same central XY slice and XZ section of
each method, each scaled to its own 1-99 % range).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from localet_core.config import OutputOptions
from localet_core.demo_real import REAL_BINNING
from localet_core.methods import WBP, Localet
from localet_core.realdata import real_series
from localet_core.reconstruction.filters import ETOMO_RADIAL
from localet_core.tiltseries import load_tilt_series
from localet_core.validation.halfset import validate_halves
from localet_core.validation.metrics import bead_contrast


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="localet-default,localet-linear")
    ap.add_argument("--out", type=Path, default=Path("real_models_out"))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--per-view-mean", action="store_true",
                    help="divide each view by its own mean first (a probe; see the docstring)")
    args = ap.parse_args()
    paths = real_series(None)
    series = load_tilt_series(paths["stack"], tlt=paths["tlt"], xf=paths["xf"],
                              output=OutputOptions(binning=REAL_BINNING))
    g = series.geometry
    data = series.data
    if args.per_view_mean:
        data = np.asarray(data, dtype=np.float32)
        means = data.reshape(len(data), -1).mean(axis=1)
        data = data / means[:, None, None] * means.mean()
    methods = {"WBP": WBP(ramp=ETOMO_RADIAL, device=args.device)}
    for name in args.models.split(","):
        methods[name] = Localet(name, device=args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    rows, volumes = [], {}
    for name, method in methods.items():
        t0 = time.perf_counter()
        volume = method.volume(data, g)
        seconds = time.perf_counter() - t0
        check = validate_halves(data, g, method, estimate="prior-proof")
        res = check.prior_proof.resolution
        plain = check.half_set.resolutions[("all", "0.143")]
        row = (name, seconds, res.describe(), plain.describe(), bead_contrast(volume))
        rows.append(row)
        volumes[name] = volume
        print(f"{name:16s} {seconds:6.1f} s  prior-proof {row[2]:28s} plain half-set 0.143 {row[3]:28s} "
              f"bead contrast {row[4]:.1f}", flush=True)
    (args.out / "real_models.tsv").write_text(
        "method\tseconds\tprior_proof\tplain_half_set_0.143\tbead_contrast\n"
        + "".join(f"{n}\t{s:.1f}\t{p}\t{h}\t{b:.2f}\n" for n, s, p, h, b in rows))
    _figure(args.out / "real_models.png", volumes)
    print(f"wrote {args.out / 'real_models.tsv'} and real_models.png")


def _figure(path: Path, volumes) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(volumes), figsize=(4 * len(volumes), 6), squeeze=False,
                             gridspec_kw={"height_ratios": [3, 1]})
    for i, (name, v) in enumerate(volumes.items()):
        nz, ny, nx = v.shape
        for row, img in enumerate((v[nz // 2], v[:, ny // 2])):
            lo, hi = np.percentile(img, [1, 99])
            axes[row, i].imshow(img, cmap="gray", vmin=lo, vmax=hi)
            axes[row, i].set_axis_off()
        axes[0, i].set_title(name)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
