"""Conversions between Scipion objects and the files the localet CLI reads and writes.

Only file formats live here (IMOD .tlt/.xf through :mod:`localet_core.io`, STAR tables, the
safetensors header): everything numerical stays in localet. No torch import.
"""
import json
import os
import shlex
import struct
from typing import Dict, List, Optional

import numpy as np

NONE = "-"  # a missing value in the STAR tables we write


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


def halfName(output: str, half: str) -> str:
    """``OUT.mrc`` -> ``OUT_odd.mrc`` (the names `localet reconstruct --odd/--even` writes)."""
    root, ext = os.path.splitext(output)
    return f"{root}_{half}{ext or '.mrc'}"


# ------------------------------------------------------------------------------ STAR tables
def readStarBlock(path: str, block: str) -> List[Dict[str, str]]:
    """Rows of the loop ``data_<block>`` of a STAR file as dicts of strings (column names
    without the leading ``_``)."""
    from emtable import Table

    table = Table(fileName=path, tableName=block, guessType=False)
    return [row._asdict() for row in table]


def writePairsStar(path: str, pairs: List[Dict[str, Optional[str]]]) -> None:
    """The ``localet train --pairs`` table: columns stack tlt reference xf odd even exclude."""
    columns = ("stack", "tlt", "reference", "xf", "odd", "even", "exclude")
    lines = ["data_pairs", "", "loop_"] + [f"_{c}" for c in columns]
    for pair in pairs:
        lines.append("  ".join(str(pair.get(c) or NONE) for c in columns))
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def fscCurve(starPath: str):
    """(frequencies in 1/A, FSC values) of the whole-volume curve of a `localet fsc` table,
    without the DC term."""
    rows = readStarBlock(starPath, "fsc")
    x, y = [], []
    for row in rows:
        if int(float(row["rlnSpectralIndex"])) == 0:
            continue
        x.append(float(row["rlnResolution"]))
        y.append(float(row["rlnFourierShellCorrelation"]))
    return x, y


def fscResolutions(starPath: str) -> Dict[str, Dict[str, float]]:
    """{region: {criterion: resolution in A}} from the ``resolution`` block (region ``all``,
    ``outside_wedge``, ``inside_wedge``; criterion ``0.143``, ``0.5``, ``half-bit``)."""
    out: Dict[str, Dict[str, float]] = {}
    for row in readStarBlock(starPath, "resolution"):
        out.setdefault(row["locRegion"], {})[row["locCriterion"]] = float(row["rlnAngstromResolution"])
    return out


# ------------------------------------------------------------------------------ model files
def readModelCard(path: str) -> dict:
    """The JSON card stored in a localet ``.safetensors`` file's metadata ({} when it has none).
    Raises ValueError when the file is not a safetensors file."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise ValueError(f"{path} is not a safetensors file (too short)")
        (size,) = struct.unpack("<Q", head)
        if size <= 0 or size > 100 * 1024 * 1024:
            raise ValueError(f"{path} is not a safetensors file (bad header size)")
        try:
            header = json.loads(f.read(size).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ValueError(f"{path} is not a safetensors file (unreadable header)") from None
    meta = header.get("__metadata__") or {}
    card = meta.get("card")
    if card:
        try:
            return json.loads(card)
        except json.JSONDecodeError:
            return {"card": card}
    return {k: v for k, v in meta.items()}
