"""AreTomo2 / AreTomo3 ``.aln`` alignment files: the global alignment, as IMOD ``.xf`` transforms.

What an ``.aln`` holds (written by ``CSaveAlnFile`` in AreTomo2, ``CSaveAlignFile`` in AreTomo3)::

    # AreTomo Alignment / Priims bprmMn
    # RawSize = NX NY NZ                       raw stack size (pixels, pixels, views)
    # NumPatches = P                           local-alignment patches (0: none)
    # DarkFrame =  IFRM  ISEC  TILT            one line per dark (removed) view
    # AlphaOffset = ... / BetaOffset = ... / Thickness = ...   (AreTomo3; informative only)
    # SEC     ROT   GMAG   TX   TY   SMEAN   SFIT   SCALE   BASE   TILT
       SEC  ROT  GMAG  TX  TY  ...  TILT        one line per aligned (not dark) view
    # Local Alignment
       ...                                      P lines per view (ignored, see below)

Sign conventions, pinned to AreTomo's own conversion to IMOD (``CSaveXF::mSaveForRelion``, the
same in AreTomo2 and AreTomo3, and in teamtomo's ``alnfile.df_to_xf``): for each aligned view,
with ``phi = -ROT`` (degrees -> radians) and ``R = [[cos phi, -sin phi], [sin phi, cos phi]]``,

    A = R,   (dx, dy) = R @ (-TX, -TY)        i.e.  aligned = R (raw - T)

in IMOD's ``.xf`` sense (x = column, y = row, relative to the image centre, unbinned raw pixels).
``TILT`` is the tilt angle as a ``.tlt`` holds it (AreTomo writes it to its ``.tlt`` unchanged).
Lines are placed in raw-stack order by ``SEC``; dark views get the identity (as AreTomo writes) and
are excluded. ``SEC`` counts from 0 in AreTomo2 and from 1 in AreTomo3 (AreTomo3's writer uses
``SEC - 1`` as the raw index); the base is recognised from the file itself: the ``SEC`` values of
the aligned views and the dark views' section numbers together must be ``0..NZ-1`` or ``1..NZ``.

``GMAG`` is written as 1.0 by both AreTomo versions and ignored by their own readers; a value other
than 1 is applied here as an isotropic magnification of the aligned image (``A = GMAG R``, shifts
scaled alike), an interpretation AreTomo never exercises. ``SMEAN``, ``SFIT``, ``SCALE``, ``BASE``
are fit statistics and are ignored. **The local-alignment section (``# Local Alignment``, the
per-patch shifts used by AreTomo's own local reconstruction) is ignored**: localet applies the
global alignment only, like an IMOD ``.xf``. Alpha/beta offsets are informative only (AreTomo has
already folded them into ``TILT`` when it applied them).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Tuple

import numpy as np

from localet_core.errors import InputError, PathLike
from localet_core.io.imod import _parse_float, _read_text_lines

__all__ = ["AreTomoAlignment", "read_aln", "aln_to_xf", "write_aln"]


@dataclass(frozen=True)
class AreTomoAlignment:
    """The global alignment of an ``.aln``, in raw-stack order.

    Attributes:
        xf: ``(n_views, 2, 3)`` IMOD transforms ``[[a11, a12, dx], [a21, a22, dy]]`` (raw -> aligned,
            unbinned raw pixels); identity for dark views.
        angles: ``(n_views,)`` tilt angles in degrees (dark views: the angle on their DarkFrame line).
        excluded: 0-based raw indices of the dark views.
        raw_size: ``(nx, ny, n_views)`` from ``# RawSize``.
        num_patches: local-alignment patches in the file (ignored).
    """

    xf: np.ndarray
    angles: np.ndarray
    excluded: Tuple[int, ...]
    raw_size: Tuple[int, int, int]
    num_patches: int = 0


def aln_to_xf(rot_deg: np.ndarray, tx: np.ndarray, ty: np.ndarray, gmag: np.ndarray) -> np.ndarray:
    """``(n, 2, 3)`` IMOD ``.xf`` transforms of AreTomo's ROT (degrees), TX, TY (pixels) and GMAG:
    ``aligned = GMAG R(-ROT) (raw - T)`` (see module doc)."""
    phi = -np.deg2rad(np.asarray(rot_deg, dtype=np.float64))
    c, s = np.cos(phi), np.sin(phi)
    g = np.asarray(gmag, dtype=np.float64)
    xf = np.zeros((phi.size, 2, 3))
    xf[:, 0, 0], xf[:, 0, 1] = g * c, -g * s
    xf[:, 1, 0], xf[:, 1, 1] = g * s, g * c
    tx, ty = -np.asarray(tx, dtype=np.float64), -np.asarray(ty, dtype=np.float64)
    xf[:, 0, 2] = xf[:, 0, 0] * tx + xf[:, 0, 1] * ty
    xf[:, 1, 2] = xf[:, 1, 0] * tx + xf[:, 1, 1] * ty
    return xf


def _header_value(p, line_no: int, line: str) -> str:
    if "=" not in line:
        raise InputError(p, f"line {line_no}: expected 'NAME = VALUE', got {line.strip()!r}")
    return line.split("=", 1)[1]


def read_aln(path: PathLike) -> AreTomoAlignment:
    """Read the global alignment of an AreTomo2/3 ``.aln`` (see module doc).

    Raises:
        InputError: missing/binary file, no ``RawSize``, malformed or missing lines, section
            numbers that do not cover the raw stack exactly once, a singular transform.
    """
    p, lines = _read_text_lines(path)
    raw_size = None
    num_patches = 0
    darks: List[Tuple[int, float]] = []  # (raw section as written, tilt)
    rows: List[Tuple[int, float, float, float, float, float]] = []  # sec, rot, gmag, tx, ty, tilt
    section = "header"
    seen_aretomo = False
    for line_no, line in enumerate(lines, start=1):
        text = line.strip()
        if not text:
            continue
        if text.startswith("#"):
            body = text[1:].strip()
            key = body.split("=", 1)[0].strip().lower()
            if body.startswith("AreTomo"):
                seen_aretomo = True
            elif key == "rawsize":
                tokens = _header_value(p, line_no, body).split()
                if len(tokens) != 3:
                    raise InputError(p, f"line {line_no}: RawSize needs 3 numbers (nx ny views)")
                try:
                    raw_size = tuple(int(t) for t in tokens)
                except ValueError:
                    raise InputError(p, f"line {line_no}: RawSize {' '.join(tokens)!r} is not 3 whole "
                                        "numbers") from None
            elif key == "numpatches":
                try:
                    num_patches = int(_header_value(p, line_no, body).split()[0])
                except (ValueError, IndexError):
                    raise InputError(p, f"line {line_no}: NumPatches is not a whole number") from None
            elif key == "darkframe":
                tokens = _header_value(p, line_no, body).split()
                if len(tokens) != 3:
                    raise InputError(p, f"line {line_no}: DarkFrame needs 3 values (frame, section, tilt)")
                try:
                    sec = int(tokens[1])
                except ValueError:
                    raise InputError(p, f"line {line_no}: DarkFrame section {tokens[1]!r} is not a whole "
                                        "number") from None
                darks.append((sec, _parse_float(p, line_no, tokens[2])))
            elif body.upper().startswith("SEC"):
                section = "global"
            elif body.lower().startswith("local alignment"):
                section = "local"
            continue
        if section == "global":
            tokens = text.split()
            if len(tokens) != 10:
                raise InputError(p, f"line {line_no}: a global alignment line needs 10 values "
                                    f"(SEC ROT GMAG TX TY SMEAN SFIT SCALE BASE TILT), found {len(tokens)}")
            try:
                sec = int(tokens[0])
            except ValueError:
                raise InputError(p, f"line {line_no}: SEC {tokens[0]!r} is not a whole number") from None
            rot, gmag, tx, ty = (_parse_float(p, line_no, t) for t in tokens[1:5])
            tilt = _parse_float(p, line_no, tokens[9])
            if not gmag > 0:
                raise InputError(p, f"line {line_no}: GMAG must be positive, got {gmag:g}")
            rows.append((sec, rot, gmag, tx, ty, tilt))
        elif section == "header":
            raise InputError(p, f"line {line_no}: data before the '# SEC ...' column header; "
                                "not an AreTomo .aln file")
        # section == "local": per-patch local alignment, ignored (module doc)
    if raw_size is None:
        what = "has no '# RawSize' line" if seen_aretomo else "is not an AreTomo .aln file (no '# RawSize' line)"
        raise InputError(p, what)
    if not rows:
        raise InputError(p, "has no global alignment lines")
    n = raw_size[2]
    secs = [r[0] for r in rows] + [d[0] for d in darks]
    if len(secs) != n:
        raise InputError(p, f"has {len(rows)} aligned and {len(darks)} dark views but RawSize says {n} views")
    if sorted(secs) == list(range(n)):
        base = 0  # AreTomo2
    elif sorted(secs) == list(range(1, n + 1)):
        base = 1  # AreTomo3
    else:
        raise InputError(p, f"section numbers do not cover the {n} raw views exactly once "
                            "(expected 0..N-1 or 1..N)")
    xf = np.tile(np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]), (n, 1, 1))
    angles = np.zeros(n)
    idx = np.array([r[0] - base for r in rows])
    values = np.array([r[1:] for r in rows])
    xf[idx] = aln_to_xf(values[:, 0], values[:, 2], values[:, 3], values[:, 1])
    angles[idx] = values[:, 4]
    excluded = tuple(sorted(sec - base for sec, _ in darks))
    for sec, tilt in darks:
        angles[sec - base] = tilt
    if not all(math.isfinite(a) for a in angles):  # pragma: no cover - _parse_float rejects these
        raise InputError(p, "contains non-finite tilt angles")
    return AreTomoAlignment(xf=xf, angles=angles, excluded=excluded, raw_size=tuple(raw_size),
                            num_patches=num_patches)


def write_aln(path: PathLike, rot_deg, tx, ty, angles, raw_size: Tuple[int, int, int],
              dark: Tuple[int, ...] = (), base: int = 1) -> None:
    """Write a global-only ``.aln`` the way AreTomo does (AreTomo3 layout with ``base = 1``,
    AreTomo2's with ``base = 0``), for tests and simulations: one line per view not in ``dark``
    (0-based raw indices), in raw order; ``rot_deg``, ``tx``, ``ty``, ``angles`` per raw view."""
    from localet_core.io.imod import _write_lines

    n = raw_size[2]
    lines = ["# AreTomo Alignment / Priims bprmMn", f"# RawSize = {raw_size[0]} {raw_size[1]} {n}",
             "# NumPatches = 0"]
    kept = [v for v in range(n) if v not in set(dark)]
    for k, v in enumerate(dark):
        lines.append(f"# DarkFrame =  {k:4d} {v + base:4d} {angles[v]:8.2f}")
    if base == 1:
        lines += ["# AlphaOffset =     0.00", "# BetaOffset =     0.00", "# Thickness = 0"]
    lines.append("# SEC     ROT         GMAG       TX          TY      SMEAN     SFIT    SCALE     BASE     TILT")
    for v in kept:
        lines.append(f"{v + base:5d}  {rot_deg[v]:9.4f}  {1.0:9.5f}  {tx[v]:9.3f}  {ty[v]:9.3f}  "
                     f"{1.0:7.2f}  {1.0:7.2f}  {1.0:7.2f}  {0.0:7.2f}  {angles[v]:8.2f}")
    _write_lines(path, lines)
