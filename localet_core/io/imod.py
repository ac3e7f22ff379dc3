"""IMOD text files: tilt angles (.tlt/.rawtlt), transforms (.xf) and view lists.

Conventions (see ``docs/geometry.md``):

* ``.tlt``: one tilt angle per line, in degrees, in stack order (line k = view k).
* ``.xf``: one line per view, ``a11 a12 a21 a22 dx dy``, mapping raw-image coordinates to
  aligned ones: ``x' = a11*x + a12*y + dx``, ``y' = a21*x + a22*y + dy`` (x = column, y = row,
  both relative to the image centre ((nx-1)/2, (ny-1)/2), shifts in unbinned pixels of the
  stack the transforms were made for).
* view lists (e.g. ``EXCLUDELIST``): 1-based view numbers, as IMOD and users count them.

Every malformed input raises :class:`~localet_core.errors.InputError` naming the file and,
where it helps, the line. Writers go through :func:`~localet_core.io.atomic.atomic_output`.
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from localet_core.errors import InputError, PathLike
from localet_core.io.atomic import atomic_output
from localet_core.io.files import check_readable_file

__all__ = [
    "read_tlt",
    "write_tlt",
    "read_xf",
    "write_xf",
    "parse_view_list",
    "read_exclude_list",
]

# |det| below this marks a transform as singular. Real IMOD transforms are rotations with
# magnifications near 1 (|det| ~ 1); anything this small cannot be inverted meaningfully.
_SINGULAR_DET = 1e-6
# IMOD writes .xf lines as six 12-character Fortran fields; very large shifts fill a field
# completely and glue onto the previous number, so such lines are re-read by column.
_XF_FIELD = 12


# --------------------------------------------------------------------------------------------
# Shared helpers
# --------------------------------------------------------------------------------------------
def _read_text_lines(path: PathLike) -> Tuple[Path, List[str]]:
    """Read a small text file; missing, unreadable and binary files become InputErrors."""
    p = Path(os.fspath(path)).expanduser()
    check_readable_file(p)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(p, "is not a text file") from None
    except OSError as exc:
        raise InputError(p, f"cannot read file ({exc.strerror})") from None
    if "\x00" in text:
        raise InputError(p, "is not a text file")
    return p, text.splitlines()


def _parse_float(p: Path, line_no: int, token: str) -> float:
    """One number of a text file; NaN and infinity are rejected (they would poison a
    reconstruction silently)."""
    try:
        value = float(token)
    except ValueError:
        raise InputError(p, f"line {line_no}: {token!r} is not a number") from None
    if not math.isfinite(value):
        raise InputError(p, f"line {line_no}: {token!r} is not a finite number")
    return value


def _as_finite_array(values: object, name: str) -> np.ndarray:
    """Convert data handed to a writer; NaN/Inf are a programming error, not user input."""
    array = np.asarray(values, dtype=np.float64)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contain NaN or infinite values")
    return array


def _write_lines(path: PathLike, lines: Iterable[str]) -> None:
    """Write text lines atomically with Unix line endings (IMOD reads either)."""
    with atomic_output(path) as tmp:
        with open(tmp, "w", encoding="ascii", newline="\n") as f:
            for line in lines:
                f.write(line + "\n")


# --------------------------------------------------------------------------------------------
# Tilt angles
# --------------------------------------------------------------------------------------------
def read_tlt(path: PathLike) -> np.ndarray:
    """Read tilt angles from a ``.tlt`` or ``.rawtlt`` file.

    One angle per line, in degrees, in stack order; blank lines and extra whitespace are
    ignored.

    Returns:
        float64 array of shape (n_views,), degrees.

    Raises:
        InputError: missing file, no angles, a line that is not exactly one finite number.
    """
    p, lines = _read_text_lines(path)
    angles = []
    for line_no, line in enumerate(lines, start=1):
        tokens = line.split()
        if not tokens:
            continue
        if len(tokens) > 1:
            raise InputError(p, f"line {line_no}: expected one tilt angle, found "
                                f"{len(tokens)} values")
        angles.append(_parse_float(p, line_no, tokens[0]))
    if not angles:
        raise InputError(p, "contains no tilt angles")
    return np.array(angles, dtype=np.float64)


def write_tlt(path: PathLike, angles: Sequence[float]) -> None:
    """Write tilt angles (degrees, shape (n_views,)) one per line as ``%.2f``, like IMOD.

    Note that this rounds to 0.01 degree, as IMOD's own files do.
    """
    array = _as_finite_array(angles, "tilt angles")
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"tilt angles must be a non-empty 1D array, got shape {array.shape}")
    _write_lines(path, (f"{a:.2f}" for a in array))


# --------------------------------------------------------------------------------------------
# Transforms
# --------------------------------------------------------------------------------------------
def _split_xf_line(line: str) -> List[str]:
    """Split an .xf line into its numbers, by whitespace or, failing that, by IMOD's fixed
    12-character columns."""
    tokens = line.split()
    if len(tokens) != 6:
        body = line.rstrip()
        if len(body) == 6 * _XF_FIELD:
            fixed = [body[i:i + _XF_FIELD].strip() for i in range(0, len(body), _XF_FIELD)]
            if all(fixed):
                return fixed
    return tokens


def read_xf(path: PathLike) -> np.ndarray:
    """Read IMOD linear transforms (``.xf``, also ``.prexf``/``.prexg``/``.xg``).

    Each non-blank line is ``a11 a12 a21 a22 dx dy`` for one view, in stack order.

    Returns:
        float64 array of shape (n_views, 2, 3): ``xf[k] = [[a11, a12, dx], [a21, a22, dy]]``,
        so that ``xf[k] @ [x, y, 1]`` is the aligned position of raw position (x, y), both
        relative to the image centre, in pixels.

    Raises:
        InputError: missing/empty file, a line without six numbers (line number), a
            non-number, or a singular 2x2 matrix (view number, 1-based).
    """
    p, lines = _read_text_lines(path)
    rows = []
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        tokens = _split_xf_line(line)
        if len(tokens) != 6:
            raise InputError(p, f"line {line_no}: expected 6 numbers "
                                f"(a11 a12 a21 a22 dx dy), found {len(tokens)}")
        rows.append([_parse_float(p, line_no, t) for t in tokens])
    if not rows:
        raise InputError(p, "contains no transforms")
    values = np.array(rows, dtype=np.float64)
    xf = np.empty((len(rows), 2, 3), dtype=np.float64)
    xf[:, 0, 0], xf[:, 0, 1], xf[:, 1, 0], xf[:, 1, 1] = values[:, 0], values[:, 1], \
        values[:, 2], values[:, 3]
    xf[:, 0, 2], xf[:, 1, 2] = values[:, 4], values[:, 5]
    det = np.linalg.det(xf[:, :, :2])
    singular = np.flatnonzero(np.abs(det) < _SINGULAR_DET)
    if singular.size:
        k = int(singular[0])
        raise InputError(p, f"view {k + 1}: the transform's 2x2 matrix is singular "
                            f"(determinant {det[k]:.3g}), so it cannot be inverted")
    return xf


def write_xf(path: PathLike, xf: np.ndarray) -> None:
    """Write transforms of shape (n_views, 2, 3) in IMOD's ``.xf`` format
    (``%12.7f`` for the matrix, ``%12.3f`` for the shifts, order a11 a12 a21 a22 dx dy)."""
    array = _as_finite_array(xf, "transforms")
    if array.ndim != 3 or array.shape[1:] != (2, 3) or array.shape[0] == 0:
        raise ValueError(f"transforms must have shape (n_views, 2, 3), got {array.shape}")
    _write_lines(path, (
        f"{m[0, 0]:12.7f}{m[0, 1]:12.7f}{m[1, 0]:12.7f}{m[1, 1]:12.7f}"
        f"{m[0, 2]:12.3f}{m[1, 2]:12.3f}" for m in array))


# --------------------------------------------------------------------------------------------
# View lists
# --------------------------------------------------------------------------------------------
_PART = re.compile(r"^(\d+)(?:-(\d+))?$")
# Only these characters can appear in a view list given inline (digits, separators, ranges).
_LIST_CHARS = re.compile(r"^[\d,\s-]*$")


def _parse_views(text: str, source: Optional[PathLike], where: str = "") -> List[int]:
    """Parse one piece of view-list text; ``where`` (e.g. "line 3: ") prefixes messages."""
    # "1 - 3" means the range 1-3: glue the dash to its numbers before splitting on spaces.
    glued = re.sub(r"\s*-\s*", "-", text.strip())
    views: List[int] = []
    for part in re.split(r"[,\s]+", glued):
        if not part:
            continue  # leading/trailing or doubled commas
        match = _PART.match(part)
        if match is None:
            raise InputError(source, f"{where}malformed view list entry {part!r} "
                                     "(expected N or N-M, e.g. '1-3,7')")
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else first
        if first < 1:
            raise InputError(source, f"{where}view numbers start at 1, got {part!r}")
        if last < first:
            raise InputError(source, f"{where}range {part!r} runs backwards")
        views.extend(range(first, last + 1))
    return views


def parse_view_list(text: str, source: Optional[PathLike] = "view list") -> List[int]:
    """Parse IMOD view-list syntax, e.g. ``"1-3,7, 10-12"`` or ``"1-3 7"``.

    Entries are separated by commas and/or whitespace; ``N-M`` is an inclusive range.
    Views are 1-based. An empty text gives an empty list.

    Args:
        text: the list.
        source: what to name in error messages (the setting, such as ``exclude``, or a file).

    Returns:
        Sorted list of distinct 1-based view numbers.

    Raises:
        InputError: a malformed entry, a view number below 1, or a descending range.
    """
    return sorted(set(_parse_views(text, source)))


def read_exclude_list(spec: Union[str, PathLike]) -> List[int]:
    """Read views to exclude from a file or from list text.

    Args:
        spec: a path to a text file holding a view list (several lines allowed; ``#`` starts
            a comment), or the list itself such as ``"1-3,40"``. An existing file of that name
            wins; a :class:`~pathlib.Path` is always a file.

    Returns:
        Sorted list of distinct 1-based view numbers.

    Raises:
        InputError: missing file (when ``spec`` is neither a file nor list text), or a
            malformed list (with the line number for files).
    """
    is_text = isinstance(spec, str) and not os.path.isfile(os.path.expanduser(spec)) \
        and _LIST_CHARS.match(spec) is not None
    if is_text:
        return parse_view_list(str(spec), source="exclude list")
    p, lines = _read_text_lines(spec)
    views: List[int] = []
    for line_no, line in enumerate(lines, start=1):
        views.extend(_parse_views(line.split("#", 1)[0], p, where=f"line {line_no}: "))
    return sorted(set(views))
