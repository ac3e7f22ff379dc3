"""Conversions between Scipion objects and the files the localet CLI reads and writes.

Only conversions live here: the file formats and names are localet's contracts
(:mod:`localet_core.contracts`: pairs.star, model cards, output names, the FSC table) and IMOD
.tlt/.xf go through :mod:`localet_core.io`; everything numerical stays in localet. No torch
import.
"""
import os
import shlex
from typing import Dict, List, Optional

import numpy as np

from localet_core.contracts import fsc_star


def quote(path) -> str:
    return shlex.quote(str(path))


def stackFileName(fileName: str) -> str:
    """'3@stack.mrcs' / 'stack.st:mrc' -> an absolute path of the stack file."""
    name = fileName.split("@")[-1]
    if name.endswith(":mrc") or name.endswith(":mrcs"):
        name = name.rsplit(":", 1)[0]
    return os.path.abspath(name)


def stackViews(path: str) -> Optional[int]:
    """Number of images in an MRC stack (from its header), None if it cannot be read."""
    try:
        import mrcfile
        with mrcfile.open(path, header_only=True, permissive=True) as mrc:
            return int(mrc.header.nz)
    except Exception:
        return None


def stackPixelSize(path: str) -> Optional[float]:
    """Pixel size (A) in an MRC header, None when unset or unreadable."""
    try:
        import mrcfile
        with mrcfile.open(path, header_only=True, permissive=True) as mrc:
            size = float(mrc.voxel_size.x)
        return size if size > 0 else None
    except Exception:
        return None


def tiltSeriesFiles(ts, folder: str) -> Dict[str, object]:
    """Write ``TSID.tlt`` (and ``TSID.xf`` for an aligned, not interpolated series) in
    ``folder`` for the tilt series ``ts`` and return what the CLI needs: absolute paths of
    ``stack``, ``tlt``, ``xf`` (or None), ``odd``/``even`` (or None), ``exclude`` (a 1-based
    EXCLUDELIST string, or None), ``excluded`` (list) and ``nViews``.

    Views are written in stack order (the tilt images' indices). A view of the stack that has no
    tilt image, or whose tilt image is disabled (an excluded view), goes to the exclude list.
    """
    from localet_core.io import write_tlt, write_xf

    tsId = ts.getTsId()
    images = [ti.clone() for ti in ts.iterItems(orderBy="_index")]
    if not images:
        raise ValueError(f"tilt series {tsId} has no tilt images")
    stacks = {stackFileName(ti.getFileName()) for ti in images}
    if len(stacks) != 1:
        raise ValueError(f"tilt series {tsId}: tilt images come from {len(stacks)} files; "
                         "localet needs one stack per tilt series")
    stack = stacks.pop()
    indices = [ti.getIndex() for ti in images]
    nViews = max(max(indices), stackViews(stack) or 0)
    angles = np.zeros(nViews)
    xf = np.tile(np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), (nViews, 1, 1))
    enabled = set()
    useXf = ts.hasAlignment() and not ts.interpolated()
    for ti, index in zip(images, indices):
        angles[index - 1] = ti.getTiltAngle()
        if ti.isEnabled():
            enabled.add(index)
        if useXf and ti.hasTransform():
            xf[index - 1] = np.asarray(ti.getTransform().getMatrix(), dtype=float)[:2, :3]
    excluded = [v for v in range(1, nViews + 1) if v not in enabled]
    os.makedirs(folder, exist_ok=True)
    tlt = os.path.abspath(os.path.join(folder, f"{tsId}.tlt"))
    write_tlt(tlt, angles)
    xfPath = None
    if useXf:
        xfPath = os.path.abspath(os.path.join(folder, f"{tsId}.xf"))
        write_xf(xfPath, xf)
    odd = even = None
    if ts.hasOddEven():
        first = next(ti for ti in images if ti.hasOddEven())
        odd, even = stackFileName(first.getOdd()), stackFileName(first.getEven())
    return {"tsId": tsId, "stack": stack, "tlt": tlt, "xf": xfPath, "odd": odd, "even": even,
            "exclude": ",".join(str(v) for v in excluded) or None, "excluded": excluded,
            "nViews": nViews, "samplingRate": ts.getSamplingRate()}


def tiltSeriesArgs(files: Dict[str, object], stack: Optional[str] = None) -> str:
    """``STACK --tlt T [--xf XF] [--exclude LIST] --pixel-size A`` for the CLI."""
    args = f"{quote(stack or files['stack'])} --tlt {quote(files['tlt'])}"
    if files.get("xf"):
        args += f" --xf {quote(files['xf'])}"
    if files.get("exclude"):
        args += f" --exclude {files['exclude']}"
    if files.get("samplingRate"):
        args += f" --pixel-size {files['samplingRate']:g}"
    return args


# ------------------------------------------------------------------------------ STAR tables
def readStarBlock(path: str, block: str) -> List[Dict[str, str]]:
    """Rows of the loop ``data_<block>`` of a STAR file as dicts of strings (column names
    without the leading ``_``)."""
    from emtable import Table

    table = Table(fileName=path, tableName=block, guessType=False)
    return [row._asdict() for row in table]


def fscCurve(starPath: str):
    """(frequencies in 1/A, FSC values) of the whole-volume curve of a `localet fsc` table,
    without the DC term."""
    rows = readStarBlock(starPath, fsc_star.BLOCK_FSC)
    x, y = [], []
    for row in rows:
        if int(float(row[fsc_star.SHELL])) == 0:
            continue
        x.append(float(row[fsc_star.SPATIAL_FREQUENCY]))
        y.append(float(row[fsc_star.FSC]))
    return x, y


def isPriorProofTable(starPath: str) -> bool:
    """Whether a table is a prior-proof estimate (``localet reconstruct --odd --even``,
    ``localet fsc-halves``) rather than a plain FSC table."""
    try:
        return bool(readStarBlock(starPath, fsc_star.BLOCK_PRIOR_PROOF))
    except Exception:
        return False


def priorProofCurve(starPath: str):
    """(frequencies in 1/A, C_est) of a prior-proof table, only the shells that have an
    estimate (none where WBP sees no signal)."""
    x, y = [], []
    for row in readStarBlock(starPath, fsc_star.BLOCK_PRIOR_PROOF):
        value = float(row[fsc_star.C_EST])
        if int(float(row[fsc_star.SHELL])) == 0 or value != value:  # nan: no estimate
            continue
        x.append(float(row[fsc_star.SPATIAL_FREQUENCY]))
        y.append(value)
    return x, y


def priorProofResolution(starPath: str) -> str:
    """The estimate's resolution as text: ``"41.2 A"`` or ``"no estimate"``, with the limit
    when it is not a crossing."""
    general = readStarBlock(starPath, fsc_star.BLOCK_GENERAL)[0]
    value, limit = float(general[fsc_star.FINAL_RESOLUTION]), general[fsc_star.LIMIT]
    if value != value:
        return "no estimate"
    return f"{value:.1f} A" + ("" if limit == "crossed" else f" ({limit})")


def fscResolutions(starPath: str) -> Dict[str, Dict[str, float]]:
    """{region: {criterion: resolution in A}} from the ``resolution`` block (region ``all``,
    ``outside_wedge``, ``inside_wedge``; criterion ``0.143``, ``0.5``, ``half-bit``)."""
    out: Dict[str, Dict[str, float]] = {}
    for row in readStarBlock(starPath, fsc_star.BLOCK_RESOLUTION):
        out.setdefault(row[fsc_star.REGION], {})[row[fsc_star.CRITERION]] = float(row[fsc_star.ANGSTROM])
    return out

