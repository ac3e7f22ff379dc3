"""Reporting an :class:`~localet_core.validation.fsc.FSCResult`: STAR table, PNG plot, text summary.

These take a finished result, so any way of getting two volumes (two files, or two half
reconstructions from odd/even stacks or alternate tilts) reports the same way::

    result = compute_fsc(a, b, mask=m, pixel_size=px, tilt_range=(lo, hi))
    write_fsc_star("fsc.star", result, names=("odd.mrc", "even.mrc"))
    plot_fsc("fsc.png", result)
    print(format_fsc_summary(result))

Every file is written under a temporary name in the destination directory and renamed onto
the requested name only when complete, so a failure never leaves a partial file.

STAR file: three blocks (``data_general``, ``data_fsc``, ``data_resolution``), laid out in
:mod:`localet_core.contracts.fsc_star`, which names every block and column (the Scipion plugin
reads the table back through the same names).
"""
from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np

from localet_core.contracts import fsc_star as star
from localet_core.errors import InputError, PathLike
from localet_core.validation.fsc import CRITERIA, REGIONS, FSCResult

if TYPE_CHECKING:
    from localet_core.validation.prior_proof import PriorProofResult
from localet_core.io.atomic import atomic_output

__all__ = ["fsc_tables", "write_fsc_star", "plot_fsc", "format_fsc_summary", "prior_proof_tables",
           "write_prior_proof_star", "plot_prior_proof"]

_REGION_LABEL = {"all": "whole volume", "outside_wedge": "outside wedge",
                 "inside_wedge": "inside wedge"}


def _require_pixel_size(result: FSCResult) -> float:
    if result.pixel_size is None:
        raise InputError("pixel size", "is needed to report resolutions in Angstrom")
    return result.pixel_size


def _regions(result: FSCResult) -> Sequence[str]:
    return [r for r in REGIONS if r in result.curves]


def _shell_columns(freq: np.ndarray, px: float) -> dict:
    """The per-shell index and frequency columns every table starts with."""
    with np.errstate(divide="ignore"):
        angstrom = np.where(freq > 0, px / np.where(freq > 0, freq, 1.0), np.inf)
    return {star.SHELL: np.arange(len(freq), dtype=np.int64), star.FREQUENCY: freq,
            star.SPATIAL_FREQUENCY: freq / px, star.ANGSTROM: angstrom}


def _write_star(path: PathLike, tables: dict) -> None:
    import starfile

    with atomic_output(path) as tmp:
        starfile.write(tables, tmp, float_format="%.6g", na_rep="nan")


def _figure(px: float, ylabel: str):
    """A figure with one axis over 0..Nyquist in 1/Angstrom; returns ``(fig, ax)``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.0, 4.5), dpi=120)
    ax = fig.add_subplot(1, 1, 1)
    ax.axhline(0.0, color="black", lw=0.5)
    ax.set_xlim(0, 0.5 / px)
    ax.set_ylim(-0.2, 1.05)
    ax.set_xlabel("spatial frequency (1/\u00c5)")
    ax.set_ylabel(ylabel)
    return fig, ax


def _finish(path: PathLike, fig, ax, px: float) -> None:
    """Y range that holds every curve, top axis in Angstrom, legend, grid; save the PNG
    atomically."""
    lows = [np.nanmin(y) for y in (np.asarray(line.get_ydata(), dtype=float) for line in ax.get_lines())
            if np.isfinite(y).any()]
    ax.set_ylim(min([-0.2] + [lo - 0.05 for lo in lows]), 1.05)
    top = ax.twiny()  # the same frequency axis, labelled in Angstrom
    top.set_xlim(ax.get_xlim())
    ticks = [t for t in ax.get_xticks() if 0 < t <= 0.5 / px * (1 + 1e-9)]
    top.set_xticks(ticks)
    top.set_xticklabels([f"{1.0 / t:.3g}" for t in ticks], fontsize=8)
    top.set_xlabel("resolution (\u00c5)")
    ax.legend(fontsize=7, loc="upper right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png")


def fsc_tables(result: FSCResult, names: Optional[Sequence[str]] = None) -> dict:
    """The STAR blocks as pandas DataFrames: ``{"general", "fsc", "resolution"}`` (see the
    columns in :mod:`localet_core.contracts.fsc_star`). Needs ``result.pixel_size``."""
    import pandas as pd

    px = _require_pixel_size(result)
    fsc = {**_shell_columns(result.frequency.numpy(), px),
           star.FSC: result.fsc.numpy(),
           star.SHELL_VOXELS: result.n_voxels.numpy().round().astype(np.int64),
           star.HALF_BIT: result.threshold("half-bit").numpy()}
    for region in _regions(result)[1:]:
        curve, count = result.curves[region]
        fsc[star.region_fsc_column(region)] = curve.numpy()
        fsc[star.region_voxels_column(region)] = count.numpy().round().astype(np.int64)
    rows = [{star.REGION: r.region, star.CRITERION: r.criterion, star.FREQUENCY: r.frequency,
             star.ANGSTROM: r.angstrom, star.CROSSED: int(r.crossed)}
            for r in (result.resolutions[(reg, c)] for reg in _regions(result) for c in CRITERIA)]
    tilt = result.tilt_range or (math.nan, math.nan)
    general = {star.FINAL_RESOLUTION: result.resolutions[("all", "0.143")].angstrom,
               star.PIXEL_SIZE: px,
               star.BOX_Z: result.shape[0], star.BOX_Y: result.shape[1], star.BOX_X: result.shape[2],
               star.MASKED: int(result.masked),
               star.TILT_MIN: tilt[0], star.TILT_MAX: tilt[1]}
    if names is not None:
        general[star.VOLUME_A], general[star.VOLUME_B] = (os.fspath(n) for n in names)
    return {star.BLOCK_GENERAL: pd.DataFrame([general]), star.BLOCK_FSC: pd.DataFrame(fsc),
            star.BLOCK_RESOLUTION: pd.DataFrame(rows)}


def write_fsc_star(path: PathLike, result: FSCResult,
                   names: Optional[Sequence[str]] = None) -> None:
    """Write the FSC result as a STAR file (three blocks, see :mod:`localet_core.contracts.fsc_star`),
    atomically. ``names``: the two volumes' file names, recorded in ``data_general``."""
    _write_star(path, fsc_tables(result, names))


def plot_fsc(path: PathLike, result: FSCResult, title: Optional[str] = None) -> None:
    """Draw the FSC curves (whole volume; outside and inside the wedge when present) with the
    0.143, 0.5 and half-bit criteria as a PNG, atomically. X axis: spatial frequency in
    1/Angstrom (top axis: Angstrom)."""
    px = _require_pixel_size(result)
    freq = result.frequency.numpy() / px
    fig, ax = _figure(px, "Fourier shell correlation")
    styles = {"all": dict(color="black", lw=1.8),
              "outside_wedge": dict(color="tab:blue", lw=1.3),
              "inside_wedge": dict(color="tab:orange", lw=1.3, ls="--")}
    for region in _regions(result):
        res = result.resolutions[(region, "0.143")]
        ax.plot(freq[1:], result.curves[region][0].numpy()[1:], **styles[region],
                label=f"{_REGION_LABEL[region]} (0.143: {res.describe()})")
    ax.axhline(0.143, color="grey", lw=0.8, ls=":", label="0.143")
    ax.axhline(0.5, color="grey", lw=0.8, ls="-.", label="0.5")
    ax.plot(freq[1:], result.threshold("half-bit").numpy()[1:], color="tab:green", lw=0.8,
            ls=":", label="half-bit (whole volume)")
    note = " (masked: FSC inflated by the mask)" if result.masked else ""
    ax.set_title((title or "FSC") + note, fontsize=10)
    _finish(path, fig, ax, px)


def format_fsc_summary(result: FSCResult) -> str:
    """The resolutions as a small text table, one row per region, one column per criterion,
    plus a note when a mask was used or a resolution is beyond Nyquist."""
    head = f"{'':16s}" + "".join(f"{c:>16s}" for c in CRITERIA)
    lines = [head]
    beyond = False
    for region in _regions(result):
        cells = []
        for crit in CRITERIA:
            r = result.resolutions[(region, crit)]
            if r.crossed:
                cells.append(r.describe())
            else:
                beyond = True
                cells.append("< " + r.describe().split("(")[1].rstrip(")") + " *")
        lines.append(f"{_REGION_LABEL[region]:16s}" + "".join(f"{c:>16s}" for c in cells))
    if beyond:
        lines.append("* better than Nyquist: the curve never drops below the criterion")
    if result.masked:
        lines.append("note: a mask was applied; masks inflate the FSC")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# The prior-proof estimate (localet_core.validation.prior_proof)
# --------------------------------------------------------------------------------------------
def prior_proof_tables(result: "PriorProofResult", names: Optional[Sequence[str]] = None) -> dict:
    """The prior-proof STAR blocks (``general``, ``prior_proof``; columns in
    :mod:`localet_core.contracts.fsc_star`) as pandas DataFrames."""
    import pandas as pd

    if result.pixel_size is None:
        raise InputError("pixel size", "is needed to report resolutions in Angstrom")
    px, c = result.pixel_size, result.curve
    res = result.resolution
    general = {star.FINAL_RESOLUTION: res.angstrom if res.angstrom is not None else math.nan,
               star.ESTIMATE: "prior-proof", star.LIMIT: res.limit, star.PIXEL_SIZE: px,
               star.TILT_MIN: result.tilt_range[0], star.TILT_MAX: result.tilt_range[1]}
    if names is not None:
        general[star.VOLUME_A], general[star.VOLUME_B] = (os.fspath(n) for n in names)
    shells = {**_shell_columns(result.frequency, px),
              star.SHELL_VOXELS: c.n_voxels.round().astype(np.int64),
              star.C_EST: c.c_est, star.C_SIGMA: c.sigma, star.C_1: c.c_1, star.C_2: c.c_2,
              star.REFERENCE_FSC: c.reference_fsc, star.HALF_SET_FSC: c.half_set_fsc}
    return {star.BLOCK_GENERAL: pd.DataFrame([general]), star.BLOCK_PRIOR_PROOF: pd.DataFrame(shells)}


def write_prior_proof_star(path: PathLike, result: "PriorProofResult",
                           names: Optional[Sequence[str]] = None) -> None:
    """Write the prior-proof estimate as a STAR file, atomically."""
    _write_star(path, prior_proof_tables(result, names))


def plot_prior_proof(path: PathLike, result: "PriorProofResult", title: Optional[str] = None) -> None:
    """Draw ``C_est`` with its uncertainty band, the 0.5 criterion, the WBP halves' FSC and,
    dashed, the plain half-set FSC of the method (optimistic for learned methods), outside the
    missing wedge, as a PNG, atomically."""
    if result.pixel_size is None:
        raise InputError("pixel size", "is needed to report resolutions in Angstrom")
    px, c = result.pixel_size, result.curve
    freq = result.frequency / px
    fig, ax = _figure(px, "correlation (outside the missing wedge)")
    ok = c.estimable
    ax.fill_between(freq, np.where(ok, c.c_est - c.sigma, np.nan), np.where(ok, c.c_est + c.sigma, np.nan),
                    color="tab:blue", alpha=0.25, lw=0)
    ax.plot(freq, c.c_est, color="tab:blue", lw=1.8,
            label=f"prior-proof C_est (resolution {result.resolution.describe()})")
    ax.plot(freq[1:], c.half_set_fsc[1:], color="tab:red", lw=1.0, ls="--",
            label="plain half-set FSC (optimistic for learned methods)")
    ax.plot(freq[1:], c.reference_fsc[1:], color="grey", lw=1.0, label="WBP half-set FSC (reference)")
    from localet_core.validation.prior_proof import THRESHOLD

    ax.axhline(THRESHOLD, color="black", lw=0.8, ls="-.", label=f"criterion {THRESHOLD:g} on C_est - sigma")
    ax.set_title(title or "prior-proof validation", fontsize=10)
    _finish(path, fig, ax, px)
