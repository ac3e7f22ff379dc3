"""The real-data demo: a real tilt series (:mod:`localet_core.realdata`) from its raw stack and
``.xf``, reconstructed with WBP and with the shipped network, validated without ground truth.

For each method: the volume, the time, the prior-proof resolution of alternate-tilt halves
(:mod:`localet_core.validation.prior_proof`; the series has no odd/even frame stacks) beside the
plain half-set FSC, and the gold-bead contrast (:func:`~localet_core.validation.metrics.bead_contrast`).
Writes ``wbp.mrc``, ``localet.mrc``, ``real.png`` (XY, XZ and YZ slices and a zoomed XY crop, both
methods side by side, with a scale bar), ``<method>_prior_proof.star/.png`` and ``real.tsv``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

from localet_core.errors import PathLike

#: bin 2 of the 10 A series: 20 A voxels, what users reconstruct whole cells at
REAL_BINNING = 2


@dataclass
class RealScore:
    """One method's figures on the real series (resolutions in Angstrom; None: no estimate)."""

    name: str
    seconds: float
    prior_proof_A: Optional[float]
    prior_proof_limit: str
    plain_half_set_0143_A: float
    plain_crossed: bool
    bead_contrast: float


@dataclass
class RealDemoResult:
    out_dir: Path
    voxel_size: float
    scores: List[RealScore] = field(default_factory=list)
    files: List[Path] = field(default_factory=list)


def run_real_demo(out_dir: PathLike, cache: Optional[PathLike] = None, device: str = "auto",
                  binning: int = REAL_BINNING, log: Callable[[str], None] = print) -> RealDemoResult:
    """Reconstruct the real series with WBP and the shipped model and validate both.

    Args:
        out_dir: folder for the volumes, figures and table (created).
        cache: where the data were fetched (default :func:`localet_core.realdata.cache_dir`).
        binning: of the 10 A raw views.

    Raises:
        InputError: the data are not in the cache (the message says how to fetch them).
    """
    from localet_core.config import OutputOptions
    from localet_core.contracts.naming import plot_name
    from localet_core.io import write_volume
    from localet_core.methods import WBP, Localet
    from localet_core.realdata import DESCRIPTION, real_series
    from localet_core.reconstruction.filters import ETOMO_RADIAL
    from localet_core.tiltseries import load_tilt_series
    from localet_core.validation.fsc_report import plot_prior_proof, write_prior_proof_star
    from localet_core.validation.halfset import validate_halves
    from localet_core.validation.metrics import bead_contrast

    paths = real_series(cache)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    series = load_tilt_series(paths["stack"], tlt=paths["tlt"], xf=paths["xf"], output=OutputOptions(binning=binning))
    g = series.geometry
    nz, ny, nx = g.output_shape
    log(f"{DESCRIPTION}\n  raw stack + .xf at bin {binning}: {nx} x {ny} x {nz} voxels of {g.voxel_size:g} A")
    result = RealDemoResult(out, g.voxel_size)
    methods = {"WBP": WBP(ramp=ETOMO_RADIAL, device=device), "localet": Localet(device=device)}
    volumes: Dict[str, np.ndarray] = {}
    for name, method in methods.items():
        t0 = time.perf_counter()
        volume = method.volume(series.data, g)
        seconds = time.perf_counter() - t0
        path = out / f"{name.lower()}.mrc"
        write_volume(path, volume, g.voxel_size)
        volumes[name] = volume
        check = validate_halves(series.data, g, method, estimate="prior-proof")
        table = out / f"{name.lower()}_prior_proof.star"
        write_prior_proof_star(table, check.prior_proof, names=(f"{name} half 1", f"{name} half 2"))
        plot_prior_proof(plot_name(table), check.prior_proof, title=f"real series, {name}: alternate-tilt halves")
        plain = check.half_set.resolutions[("all", "0.143")]
        res = check.prior_proof.resolution
        score = RealScore(name, seconds, res.angstrom, res.limit, plain.angstrom, plain.crossed,
                          bead_contrast(volume))
        result.scores.append(score)
        result.files += [path, table, Path(plot_name(table))]
        log(f"  {name:8s} {seconds:6.1f} s   prior-proof {res.describe():28s} plain half-set FSC 0.143 "
            f"{plain.describe():28s} bead contrast {score.bead_contrast:.1f}")
    tsv = out / "real.tsv"
    tsv.write_text("method\tseconds\tvoxel_A\tprior_proof_A\tprior_proof_limit\tplain_half_set_0.143_A\t"
                   "plain_crossed\tbead_contrast\n" + "".join(
                       f"{s.name}\t{s.seconds:.1f}\t{g.voxel_size:g}\t"
                       f"{'' if s.prior_proof_A is None else f'{s.prior_proof_A:.1f}'}\t{s.prior_proof_limit}\t"
                       f"{s.plain_half_set_0143_A:.1f}\t{int(s.plain_crossed)}\t{s.bead_contrast:.2f}\n"
                       for s in result.scores))
    figure = out / "real.png"
    _figure(figure, volumes, g.voxel_size)
    result.files += [tsv, figure]
    return result


def _figure(path: Path, volumes: Dict[str, np.ndarray], voxel: float) -> None:
    """Rows: methods; columns: XY (centre), XZ, YZ, and an XY crop (the central third, zoomed),
    each with a 100 nm scale bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(volumes)
    nz, ny, nx = next(iter(volumes.values())).shape
    cy, cx = ny // 2, nx // 2
    crop = (slice(cy - ny // 6, cy + ny // 6), slice(cx - nx // 6, cx + nx // 6))
    fig, axes = plt.subplots(len(names), 4, figsize=(16, 4.2 * len(names)),
                             gridspec_kw={"width_ratios": [nx, nx, ny, nx]})
    for row, name in enumerate(names):
        v = volumes[name]
        lo, hi = np.percentile(v, [0.5, 99.5])
        panels = [("XY slice", v[nz // 2], False), ("XZ slice (Z up = beam)", v[:, cy], True),
                  ("YZ slice (Z up = beam)", v[:, :, cx], True), ("XY, central third (zoom)", v[nz // 2][crop], False)]
        for col, (title, image, z_up) in enumerate(panels):
            ax = axes[row, col]
            ax.imshow(image, cmap="gray", vmin=lo, vmax=hi, origin="lower" if z_up else "upper")
            ax.set_title(f"{name}: {title}", fontsize=10)
            ax.set_xticks([])
            ax.set_yticks([])
            h, w = image.shape
            y = 0.08 * h if z_up else 0.92 * h  # near the bottom edge either way
            ax.plot([0.05 * w, 0.05 * w + 1000.0 / voxel], [y, y], color="yellow", lw=3)  # 100 nm
            ax.text(0.05 * w, y + (0.05 if z_up else -0.05) * h, "100 nm", color="yellow", fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    tmp.replace(path)
