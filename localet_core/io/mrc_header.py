"""MRC header decoding and validation, independent of mrcfile's permissive guesses.

Reading is done with :mod:`mrcfile` in permissive mode (:mod:`localet_core.io.mrc_read`),
because IMOD and SerialEM files often carry small header quirks (a wrong machine stamp, a
missing ``MAP`` ID in very old files, labels with odd bytes). Permissive mode alone would also
accept broken files silently, so every file is first checked here against its own header: the
mode must be a real-valued one, the dimensions positive, and the file at least as long as the
header says. Every problem becomes one :class:`~localet_core.errors.InputError` line that names
the file.

Sizes are in Angstrom per pixel (voxel); the header's x size is ``cella.x / mx``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Tuple

import numpy as np
from mrcfile import utils as mrc_utils
from mrcfile.dtypes import HEADER_DTYPE

from localet_core.errors import InputError
from localet_core.io.files import check_readable_file

_HEADER_BYTES = 1024
# Bytes per voxel of the real-valued modes we read. Mode 0 is int8 or uint8 (IMOD's flag),
# mode 6 uint16, mode 12 float16; all are converted to float32.
_REAL_MODE_ITEMSIZE = {0: 1, 1: 2, 2: 4, 6: 2, 12: 2}
_COMPLEX_MODES = {3: "complex int16", 4: "complex float32"}
_OTHER_MODES = {16: "RGB colour", 101: "4-bit packed"}
# Space groups 401..630 mark a "volume stack" (4D data) in MRC2014.
_VOLUME_STACK_ISPG = range(401, 631)


@dataclass(frozen=True)
class HeaderFacts:
    """What the first 1024 bytes say, decoded with the right byte order."""

    nx: int
    ny: int
    nz: int
    mode: int
    mz: int
    ispg: int
    nsymbt: int
    has_map_id: bool
    axes: Tuple[int, int, int] = (1, 2, 3)

    @property
    def zyx_order(self) -> Optional[Tuple[int, int, int]]:
        """How to transpose the stored array (sections, rows, columns) into ``[z, y, x]``; None
        when it is stored that way.

        ``axes`` are the header's MAPC, MAPR, MAPS: the axis (1 = X, 2 = Y, 3 = Z) along the
        columns, rows and sections. IMOD, SerialEM, Warp and mrcfile always write 1, 2, 3; EMDB
        maps and some crystallographic programs may not, and reading such a map as stored would
        transpose it (a volume's mirror image). Values that are not an order of 1, 2, 3 (old
        writers leave 0, 0, 0) mean the stored order, as IMOD reads them.
        """
        mapc, mapr, maps = self.axes
        stored = (maps, mapr, mapc)  # the axis along each stored dimension
        if sorted(stored) != [1, 2, 3] or stored == (3, 2, 1):
            return None
        return (stored.index(3), stored.index(2), stored.index(1))

    @property
    def zyx_shape(self) -> Tuple[int, int, int]:
        """``(nz, ny, nx)`` of the map in its own axes (X, Y, Z), after :attr:`zyx_order`."""
        stored = (self.nz, self.ny, self.nx)
        order = self.zyx_order
        return stored if order is None else tuple(stored[i] for i in order)  # type: ignore[return-value]

    def axes_text(self) -> str:
        """``MAPC, MAPR, MAPS = c, r, s`` for messages."""
        return "MAPC, MAPR, MAPS = {}, {}, {}".format(*self.axes)


def float32_value(x: Any) -> float:
    """A header float32 as the Python float a person typed (1.35, not 1.3500000238...)."""
    return float(str(np.float32(x)))


def decode_header(raw: bytes) -> Optional[HeaderFacts]:
    """Decode a 1024-byte header, trying the stamped byte order first, then the other one.

    Returns None when neither byte order gives a known mode and positive dimensions: then the
    file is not an MRC file (or its header is destroyed).
    """
    header = np.frombuffer(raw, dtype=HEADER_DTYPE).reshape(())
    try:
        stamped = mrc_utils.byte_order_from_machine_stamp(header["machst"])
    except ValueError:
        stamped = "<"  # unknown stamp: little-endian is by far the most common
    other = ">" if stamped == "<" else "<"
    known_modes = set(_REAL_MODE_ITEMSIZE) | set(_COMPLEX_MODES) | set(_OTHER_MODES)
    for order in (stamped, other):
        h = header.view(HEADER_DTYPE.newbyteorder(order))
        facts = HeaderFacts(
            nx=int(h["nx"]), ny=int(h["ny"]), nz=int(h["nz"]), mode=int(h["mode"]),
            mz=int(h["mz"]), ispg=int(h["ispg"]), nsymbt=int(h["nsymbt"]),
            has_map_id=bytes(h["map"])[:3] == b"MAP",
            axes=(int(h["mapc"]), int(h["mapr"]), int(h["maps"])),
        )
        if facts.mode in known_modes and min(facts.nx, facts.ny, facts.nz) >= 1 \
                and facts.nsymbt >= 0:
            return facts
    return None


def inspect_mrc(path: Path) -> HeaderFacts:
    """Check that ``path`` is a complete MRC file of a real-valued mode; return its header.

    The order of the checks matters for the message: "not an MRC file" before "complex
    mode" before "truncated".
    """
    size = check_readable_file(path)
    if size < _HEADER_BYTES:
        raise InputError(path, f"not an MRC file (only {size} bytes, shorter than an MRC header)")
    try:
        with open(path, "rb") as f:
            raw = f.read(_HEADER_BYTES)
    except OSError as exc:
        raise InputError(path, f"cannot read file ({exc.strerror})") from None
    facts = decode_header(raw)
    if facts is None:
        raise InputError(path, "not an MRC file (no valid mode and dimensions in the header)")
    if facts.mode in _COMPLEX_MODES:
        raise InputError(path, f"has complex data (MRC mode {facts.mode}, "
                               f"{_COMPLEX_MODES[facts.mode]}); a real-valued image is needed")
    if facts.mode in _OTHER_MODES:
        raise InputError(path, f"MRC mode {facts.mode} ({_OTHER_MODES[facts.mode]}) is not "
                               "supported; convert it with IMOD's newstack -mode 2")
    # Python ints: nx*ny*nz overflows int32 for large tomograms.
    n_data = facts.nx * facts.ny * facts.nz * _REAL_MODE_ITEMSIZE[facts.mode]
    expected = _HEADER_BYTES + facts.nsymbt + n_data
    if not facts.has_map_id and size != expected:
        # Without the MAP ID only an exact size match makes us believe the dimensions.
        raise InputError(path, "not an MRC file (no 'MAP' ID, and the size does not match "
                               "the header dimensions)")
    if size < expected:
        raise InputError(path, f"is truncated: the header ({facts.nx} x {facts.ny} x "
                               f"{facts.nz}, mode {facts.mode}) needs {expected} bytes but "
                               f"the file has {size}")
    if facts.ispg in _VOLUME_STACK_ISPG and facts.mz != facts.nz:
        raise InputError(path, f"is a volume stack (4D data, space group {facts.ispg}, "
                               f"nz={facts.nz}, mz={facts.mz}); a single 3D image is needed")
    return facts


def header_voxel_size(mrc: Any) -> Optional[float]:
    """The x voxel size in Angstrom from cella/mx; None when unset (0), negative or absurd.

    IMOD writes 1.0 when it knows nothing; that is kept as 1.0 (only 0 means "unset").
    """
    mx = int(mrc.header.mx)
    cella_x = float(mrc.header.cella.x)
    if mx <= 0 or not math.isfinite(cella_x) or cella_x <= 0:
        return None
    return float32_value(cella_x / mx)


def check_size_argument(value: Optional[float], name: str) -> Optional[float]:
    """Validate a pixel/voxel size given by the caller (Angstrom); None passes through."""
    if value is None:
        return None
    try:
        size = float(value)
    except (TypeError, ValueError):
        raise InputError(name, f"must be a number of Angstrom, got {value!r}") from None
    if not math.isfinite(size) or size <= 0:
        raise InputError(name, f"must be a positive number of Angstrom, got {value!r}")
    return size
