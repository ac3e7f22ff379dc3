"""Reporting an :class:`~localet_core.validation.fsc.FSCResult`: STAR table, PNG plot, text summary.

These take a finished result, so any way of getting two volumes (two files, or two half
reconstructions from odd/even stacks or alternate tilts) reports the same way::

    result = compute_fsc(a, b, mask=m, pixel_size=px, tilt_range=(lo, hi))
    write_fsc_star("fsc.star", result, names=("odd.mrc", "even.mrc"))
    plot_fsc("fsc.png", result)
    print(format_fsc_summary(result))

Every file is written under a temporary name in the destination directory and renamed onto
the requested name only when complete, so a failure never leaves a partial file.

STAR file (read it with ``starfile.read``; RELION-style labels where RELION has one, labels
starting with ``loc`` are localet's own):

``data_general`` (one row)
    ``rlnFinalResolution`` (Angstrom, whole volume at 0.143), ``locPixelSize`` (Angstrom),
    ``locBoxZ``, ``locBoxY``, ``locBoxX`` (voxels), ``locMasked`` (0/1), ``locTiltMin``,
    ``locTiltMax`` (degrees, nan without a tilt range), ``locVolumeA``, ``locVolumeB``
    (names, when given).
``data_fsc`` (one row per shell)
    ``rlnSpectralIndex`` (shell i), ``locFrequency`` (cycles/pixel, i / max box size),
    ``rlnResolution`` (spatial frequency in 1/Angstrom, as in RELION),
    ``rlnAngstromResolution`` (Angstrom, inf for shell 0), ``rlnFourierShellCorrelation``
    (whole volume), ``locShellVoxels`` (Fourier voxels in the shell, full sphere),
    ``locHalfBitThreshold``; with a tilt range also ``locFscOutsideWedge``,
    ``locShellVoxelsOutsideWedge``, ``locFscInsideWedge``, ``locShellVoxelsInsideWedge``
    (FSC is nan in a shell with no voxel of that region).
``data_resolution`` (one row per region and criterion)
    ``locRegion`` (all, outside_wedge, inside_wedge), ``locCriterion`` (0.143, 0.5,
    half-bit), ``locFrequency`` (cycles/pixel), ``rlnAngstromResolution`` (Angstrom),
    ``locCrossed`` (1; 0 when the curve never drops below the criterion: the resolution is
    better than Nyquist and the value given is the Nyquist bound, 2 x pixel size).
"""
from __future__ import annotations

import math
import os
from typing import Optional, Sequence

import numpy as np

from localet_core.errors import InputError, PathLike
from localet_core.validation.fsc import CRITERIA, REGIONS, FSCResult
from localet_core.io.atomic import atomic_output

__all__ = ["fsc_tables", "write_fsc_star", "plot_fsc", "format_fsc_summary"]

_REGION_LABEL = {"all": "whole volume", "outside_wedge": "outside wedge",
                 "inside_wedge": "inside wedge"}
_STAR_SUFFIX = {"all": "", "outside_wedge": "OutsideWedge", "inside_wedge": "InsideWedge"}


def _require_pixel_size(result: FSCResult) -> float:
    if result.pixel_size is None:
        raise InputError("pixel size", "is needed to report resolutions in Angstrom")
    return result.pixel_size


def _regions(result: FSCResult) -> Sequence[str]:
    return [r for r in REGIONS if r in result.curves]


def fsc_tables(result: FSCResult, names: Optional[Sequence[str]] = None) -> dict:
    """The STAR blocks as pandas DataFrames: ``{"general", "fsc", "resolution"}`` (see the
    module docstring for the columns). Needs ``result.pixel_size``."""
    import pandas as pd

    px = _require_pixel_size(result)
    freq = result.frequency.numpy()
    with np.errstate(divide="ignore"):
        angstrom = np.where(freq > 0, px / np.where(freq > 0, freq, 1.0), np.inf)
    fsc = {"rlnSpectralIndex": np.arange(len(freq), dtype=np.int64),
           "locFrequency": freq,
           "rlnResolution": freq / px,
           "rlnAngstromResolution": angstrom,
           "rlnFourierShellCorrelation": result.fsc.numpy(),
           "locShellVoxels": result.n_voxels.numpy().round().astype(np.int64),
           "locHalfBitThreshold": result.threshold("half-bit").numpy()}
    for region in _regions(result)[1:]:
        curve, count = result.curves[region]
        fsc[f"locFsc{_STAR_SUFFIX[region]}"] = curve.numpy()
        fsc[f"locShellVoxels{_STAR_SUFFIX[region]}"] = count.numpy().round().astype(np.int64)
    rows = [{"locRegion": r.region, "locCriterion": r.criterion, "locFrequency": r.frequency,
             "rlnAngstromResolution": r.angstrom, "locCrossed": int(r.crossed)}
            for r in (result.resolutions[(reg, c)] for reg in _regions(result) for c in CRITERIA)]
    tilt = result.tilt_range or (math.nan, math.nan)
    general = {"rlnFinalResolution": result.resolutions[("all", "0.143")].angstrom,
               "locPixelSize": px,
               "locBoxZ": result.shape[0], "locBoxY": result.shape[1], "locBoxX": result.shape[2],
               "locMasked": int(result.masked),
               "locTiltMin": tilt[0], "locTiltMax": tilt[1]}
    if names is not None:
        general["locVolumeA"], general["locVolumeB"] = (os.fspath(n) for n in names)
    return {"general": pd.DataFrame([general]), "fsc": pd.DataFrame(fsc),
            "resolution": pd.DataFrame(rows)}


def write_fsc_star(path: PathLike, result: FSCResult,
                   names: Optional[Sequence[str]] = None) -> None:
    """Write the FSC result as a STAR file (three blocks, see the module docstring),
    atomically. ``names``: the two volumes' file names, recorded in ``data_general``."""
    import starfile

    tables = fsc_tables(result, names)
    with atomic_output(path) as tmp:
        starfile.write(tables, tmp, float_format="%.6g", na_rep="nan")


def plot_fsc(path: PathLike, result: FSCResult, title: Optional[str] = None) -> None:
    """Draw the FSC curves (whole volume; outside and inside the wedge when present) with the
    0.143, 0.5 and half-bit criteria as a PNG, atomically. X axis: spatial frequency in
    1/Angstrom (top axis: Angstrom)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    px = _require_pixel_size(result)
    freq = result.frequency.numpy() / px
    fig = Figure(figsize=(7.0, 4.5), dpi=120)
    ax = fig.add_subplot(1, 1, 1)
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
    ax.axhline(0.0, color="black", lw=0.5)
    ax.set_xlim(0, 0.5 / px)
    ax.set_ylim(-0.2, 1.05)
    ax.set_xlabel("spatial frequency (1/\u00c5)")
    ax.set_ylabel("Fourier shell correlation")
    note = " (masked: FSC inflated by the mask)" if result.masked else ""
    ax.set_title((title or "FSC") + note, fontsize=10)

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
