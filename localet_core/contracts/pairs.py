"""The ``pairs.star`` table: the training pairs that ``localet train --pairs`` reads.

Written by ``localet simulate`` (:func:`localet_core.simulate.forward.write_pairs_star`) and by
the Scipion 'train' box; read by ``localet train``. One data block (``data_pairs``), one row per
pair (tilt series, reference volume), with the columns of :data:`COLUMNS`:

``stack``, ``tlt``, ``reference`` (required)
    the tilt-series stack (MRC), its IMOD .tlt angles, and the reference volume (MRC) on the
    grid the tilt series reconstructs to (see :mod:`localet_core.network.training`);
``xf``, ``odd``, ``even`` (optional)
    IMOD .xf alignment, odd/even half stacks (same shape as ``stack``);
``aln`` (optional)
    an AreTomo .aln alignment instead of ``xf``;
``exclude`` (optional)
    views to leave out, an IMOD EXCLUDELIST string of 1-based views (``3,17`` or ``1-4,40``);
``split`` (optional, default ``train``)
    ``train`` or ``val`` (held out, for the validation loss).

A missing value is written ``-`` (``None`` and empty cells are read as missing too). Relative
paths are relative to the STAR file's folder. Column names may carry RELION's ``rln`` prefix.
No torch here; starfile (pandas) is imported when a table is read or written.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from localet_core.errors import InputError, PathLike

#: the data block name
BLOCK = "pairs"
#: every column, in the order they are written
COLUMNS = ("stack", "tlt", "reference", "xf", "odd", "even", "exclude", "split", "aln")
#: the columns every table needs
REQUIRED = ("stack", "tlt", "reference")
#: the values of the ``split`` column
SPLITS = ("train", "val")
#: how a missing value is written
MISSING = "-"
_MISSING_READ = ("", "None", MISSING)
#: columns that hold something other than a path (never made relative to the table's folder)
_NOT_PATHS = ("split", "exclude")


@dataclass(frozen=True)
class PairSpec:
    """Files of one training pair (paths as given; ``split`` is ``train`` or ``val``).

    ``exclude`` is an IMOD EXCLUDELIST string of 1-based views (``"3,17"``), or None.
    """

    stack: str
    tlt: str
    reference: str
    xf: Optional[str] = None
    odd: Optional[str] = None
    even: Optional[str] = None
    exclude: Optional[str] = None
    split: str = "train"
    aln: Optional[str] = None


def read_pairs_star(path: PathLike) -> List[PairSpec]:
    """Pairs from a STAR table with columns ``stack tlt reference`` and optional ``xf odd even
    exclude split aln`` (a leading ``_`` or ``rln`` prefix is accepted). Relative paths are relative
    to the STAR file's folder. :class:`InputError` naming the file when it cannot be read, lacks
    a required column, has a bad ``split`` or lists no pairs."""
    import pandas as pd
    import starfile

    from localet_core.io.files import check_readable_file

    p = Path(os.fspath(path))
    check_readable_file(p)
    try:
        table = starfile.read(p, always_dict=True)
    except Exception as exc:
        raise InputError(p, f"cannot be read as a STAR file ({exc})") from None
    if not table:
        raise InputError(p, "holds no data block")
    df = next(iter(table.values()))
    if isinstance(df, dict):  # a block without loop_: one pair
        df = pd.DataFrame([df])
    cols = {c.lower().lstrip("_").removeprefix("rln"): c for c in getattr(df, "columns", [])}
    missing = [c for c in REQUIRED if c not in cols]
    if missing:
        raise InputError(p, f"lacks the column(s) {', '.join(missing)} (needs {', '.join(REQUIRED)})")
    pairs = []
    for _, row in df.iterrows():
        values: Dict[str, Any] = {}
        for name in COLUMNS:
            if name in cols:
                v = row[cols[name]]
                if v is None or (isinstance(v, float) and math.isnan(v)) or str(v) in _MISSING_READ:
                    continue
                v = str(v)
                if name not in _NOT_PATHS and not os.path.isabs(v):
                    v = str(p.parent / v)
                values[name] = v
        split = values.get("split", "train").lower()
        if split not in SPLITS:
            raise InputError(p, f"split must be train or val, got {split!r}")
        values["split"] = split
        pairs.append(PairSpec(**values))
    if not pairs:
        raise InputError(p, "lists no pairs")
    return pairs


def write_pairs_star(path: PathLike, pairs: Sequence[PairSpec]) -> Path:
    """Write ``pairs`` as a ``pairs.star`` table, atomically; returns the path.

    Paths are written as given (relative ones are read back relative to the table's folder).
    The required columns and ``split`` are always written, an optional column only when some
    pair has a value for it (``-`` in the rows that have none). :func:`read_pairs_star` reads
    the table back into equal :class:`PairSpec` objects (relative paths joined to the folder).
    """
    import pandas as pd
    import starfile

    from localet_core.io.atomic import atomic_output

    if not pairs:
        raise ValueError("write_pairs_star needs at least one pair")
    used = [c for c in COLUMNS if c in REQUIRED or c == "split"
            or any(getattr(pair, c) is not None for pair in pairs)]
    rows = []
    for pair in pairs:
        if pair.split not in SPLITS:
            raise ValueError(f"split must be train or val, got {pair.split!r}")
        rows.append({c: MISSING if getattr(pair, c) is None else os.fspath(getattr(pair, c)) for c in used})
    p = Path(os.fspath(path))
    with atomic_output(p) as tmp:
        starfile.write({BLOCK: pd.DataFrame(rows, columns=used)}, tmp, overwrite=True)
    return p
