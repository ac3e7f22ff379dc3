"""Reading MRC tilt-series stacks and volumes.

Every file is checked against its own header first (:func:`~localet_core.io.mrc_header.inspect_mrc`),
then memory-mapped with :mod:`mrcfile` in permissive mode and copied to float32 one section at a
time, rejecting NaN/Inf. Every problem is one :class:`~localet_core.errors.InputError` line that
names the file.

Array conventions (see ``docs/geometry.md``):

* a tilt series is ``float32`` of shape ``(n_views, ny, nx)`` = (view, row, column), in stack
  order (the order of the ``.tlt`` file);
* a volume is ``float32`` of shape ``(nz, ny, nx)``, written as IMOD's ``tilt -RotateBy90``;
* pixel and voxel sizes are in Angstrom per pixel; origins are the MRC header ``origin``
  field in Angstrom, as IMOD writes it (IMOD places voxel index ``i`` at ``i * size - origin``).
"""
from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Tuple

import mrcfile
import numpy as np

from localet_core.errors import InputError, PathLike
from localet_core.io.labels import decode_labels
from localet_core.io.mrc_header import HeaderFacts, check_size_argument, float32_value, header_voxel_size, inspect_mrc

__all__ = ["TiltStack", "Volume", "VolumeHeader", "read_stack", "read_volume", "read_volume_header",
           "iter_volume_slabs"]


@dataclass
class TiltStack:
    """A tilt series as read from an MRC file.

    Attributes:
        data: float32 array of shape (n_views, ny, nx) = (view, row, column), in stack order.
        pixel_size: Angstrom per pixel, or None when neither the header nor the caller set it.
        path: the file it was read from, or None for an in-memory stack.
        labels: the header's labels (its history, :mod:`localet_core.io.labels`), which the
            outputs made from it keep.
    """

    data: np.ndarray
    pixel_size: Optional[float] = None
    path: Optional[Path] = None
    labels: Tuple[str, ...] = ()

    @property
    def n_views(self) -> int:
        """Number of views (images) in the stack."""
        return int(self.data.shape[0])


@dataclass
class Volume:
    """A 3D map as read from an MRC file.

    Attributes:
        data: float32 array of shape (nz, ny, nx).
        voxel_size: Angstrom per voxel (the header's x size), or None when unset.
        origin: the header ``origin`` field (x, y, z) in Angstrom.
    """

    data: np.ndarray
    voxel_size: Optional[float] = None
    origin: Tuple[float, float, float] = field(default=(0.0, 0.0, 0.0))


@contextlib.contextmanager
def _open_mrc(path: Path) -> Iterator[Tuple[Any, HeaderFacts]]:
    """Open a checked MRC file as a read-only memory map; yields (mrcfile object, facts)."""
    facts = inspect_mrc(path)
    # Permissive: our checks above are the strict part; mrcfile's warnings about quirks we
    # accept on purpose (old MAP ID, wrong machine stamp, trailing bytes) would only be noise.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            mrc = mrcfile.mmap(path, mode="r", permissive=True)
        except (ValueError, OSError, OverflowError, ZeroDivisionError) as exc:
            raise InputError(path, f"cannot be read as an MRC file ({exc})") from None
    try:
        if mrc.data is None:
            reason = "; ".join(str(w.message) for w in caught) or "unknown reason"
            raise InputError(path, f"cannot read the data block ({reason})")
        yield mrc, facts
    finally:
        mrc.close()


def _to_float32_checked(path: Path, src: np.ndarray, what: str) -> np.ndarray:
    """Copy a 3D memory-mapped array to float32 one section at a time, rejecting NaN/Inf.

    Converting section by section keeps the peak memory at one float32 copy. ``what`` names
    the section in messages ("view" or "Z slice"); numbers are 1-based, as in IMOD.
    """
    out = np.empty(src.shape, dtype=np.float32)
    check = np.issubdtype(src.dtype, np.floating)  # integer modes cannot hold NaN or Inf
    bad = []
    for k in range(src.shape[0]):
        out[k] = src[k]
        if check and not np.isfinite(out[k]).all():
            bad.append(k + 1)
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise InputError(path, f"contains NaN or infinite values in {what} {bad[0]}{more}")
    return out


def read_stack(path: PathLike, pixel_size: Optional[float] = None) -> TiltStack:
    """Read a tilt series (.st, .mrc, .mrcs, .ali: the content decides, not the extension).

    Args:
        path: the MRC file.
        pixel_size: Angstrom per pixel; overrides the header. When None, the header's x voxel
            size is used, and a header size of 0 (unset) gives None. A header value of 1.0 is
            kept as 1.0 (it may be real; IMOD also writes it when it knows nothing).

    Returns:
        A :class:`TiltStack` with float32 data of shape (n_views, ny, nx). Integer and
        float16 modes are converted to float32 without rescaling.

    Raises:
        InputError: missing file, not an MRC file, truncated data, complex or unsupported mode,
            a single 2D image, a 4D volume stack, NaN/Inf values, a bad ``pixel_size``, or
            (without ``pixel_size``) a negative pixel size in the header.
    """
    p = Path(os.fspath(path)).expanduser()
    override = check_size_argument(pixel_size, "pixel size")
    with _open_mrc(p) as (mrc, facts):
        if facts.nz == 1:
            raise InputError(p, "is a single 2D image, not a tilt-series stack "
                                f"({facts.nx} x {facts.ny} pixels, 1 section)")
        if facts.zyx_order is not None:
            raise InputError(p, f"has permuted axes in its header ({facts.axes_text()}); a tilt series "
                                "is stored view by view (1, 2, 3): is it a volume?")
        data = mrc.data
        if data.ndim == 4:  # a volume stack holding exactly one volume (mz == nz)
            data = data[0]
        stack = _to_float32_checked(p, data, "view")
        header_size = header_voxel_size(mrc)
        cella_x = float(mrc.header.cella.x)
        if override is None and int(mrc.header.mx) > 0 and cella_x < 0:
            raise InputError(p, f"has a negative pixel size in its header ({cella_x / int(mrc.header.mx):g} A); "
                                "give the pixel size explicitly (--pixel-size)")
        labels = decode_labels(mrc.header)
    return TiltStack(data=stack, pixel_size=override if override is not None else header_size,
                     path=p, labels=labels)


def read_volume(path: PathLike) -> Volume:
    """Read a 3D map, e.g. a tomogram. A single 2D image is accepted as a volume with nz = 1.

    A map stored with permuted axes (the header's MAPC, MAPR, MAPS not 1, 2, 3, as some EMDB
    maps are) is transposed into ``(nz, ny, nx)`` of its own X, Y, Z axes.

    Returns:
        A :class:`Volume` with float32 data of shape (nz, ny, nx), the header voxel size in
        Angstrom (None when unset) and the header origin (x, y, z) in Angstrom.

    Raises:
        InputError: as :func:`read_stack`, except that nz = 1 is allowed.
    """
    p = Path(os.fspath(path)).expanduser()
    with _open_mrc(p) as (mrc, facts):
        data = mrc.data.reshape(facts.nz, facts.ny, facts.nx)  # 2D or 4D-with-one -> 3D
        volume = _to_float32_checked(p, data, "section" if facts.zyx_order else "Z slice")
        if facts.zyx_order is not None:
            volume = np.ascontiguousarray(volume.transpose(facts.zyx_order))
        origin = mrc.header.origin
        return Volume(
            data=volume,
            voxel_size=header_voxel_size(mrc),
            origin=(float32_value(origin.x), float32_value(origin.y),
                    float32_value(origin.z)),
        )


@dataclass(frozen=True)
class VolumeHeader:
    """What a volume's header says, without reading its data.

    Attributes:
        shape: ``(nz, ny, nx)`` voxels, in the map's own axes (after the permutation below).
        voxel_size: Angstrom per voxel, or None when unset.
        dtype: the data's numpy dtype (byte order included).
        offset: bytes before the data (1024 + the extended header).
        stored_order: how the stored array (sections, rows, columns) is transposed into
            ``(z, y, x)``; None when stored that way (MAPC, MAPR, MAPS = 1, 2, 3).
        axes: the header's MAPC, MAPR, MAPS.
    """

    shape: Tuple[int, int, int]
    voxel_size: Optional[float]
    dtype: np.dtype
    offset: int
    stored_order: Optional[Tuple[int, int, int]] = None
    axes: Tuple[int, int, int] = (1, 2, 3)


def read_volume_header(path: PathLike) -> VolumeHeader:
    """The checked header of a 3D map (as :func:`read_volume` checks it, data not read).

    Raises:
        InputError: as :func:`read_volume`, except for NaN/Inf in the data (found when read).
    """
    p = Path(os.fspath(path)).expanduser()
    with _open_mrc(p) as (mrc, facts):
        return VolumeHeader(shape=facts.zyx_shape, voxel_size=header_voxel_size(mrc),
                            dtype=np.dtype(mrc.data.dtype), offset=1024 + int(facts.nsymbt),
                            stored_order=facts.zyx_order, axes=facts.axes)


def iter_volume_slabs(path: PathLike, rows: int) -> Iterator[Tuple[int, int, np.ndarray]]:
    """A 3D map's Y-slabs ``(y0, y1, float32 (nz, y1 - y0, nx))``, ``rows`` rows at a time.

    Plain reads (``preadv``), no memory map: nothing of the file stays in the process's
    resident memory, so a volume larger than the memory can be streamed. Any real-valued
    mode is converted to float32 without rescaling, as :func:`read_volume` does.

    Raises:
        InputError: the file's problems (see :func:`read_volume_header`), a truncated data
            block, NaN or infinite values (naming the first Y row where they are).
    """
    p = Path(os.fspath(path)).expanduser()
    header = read_volume_header(p)
    if header.stored_order is not None:
        yield from _permuted_slabs(p, header, rows)
        return
    nz, ny, nx = header.shape
    item = header.dtype.itemsize
    check = np.issubdtype(header.dtype, np.floating)
    rows = max(1, int(rows))
    try:
        f = open(p, "rb", buffering=0)
    except OSError as exc:
        raise InputError(p, f"cannot be read ({exc.strerror or exc})") from None
    with f:
        for y0 in range(0, ny, rows):
            y1 = min(ny, y0 + rows)
            raw = np.empty((nz, y1 - y0, nx), header.dtype)
            for z in range(nz):
                view = memoryview(raw[z]).cast("B")
                got = os.preadv(f.fileno(), [view], header.offset + item * nx * (z * ny + y0))
                if got != len(view):
                    raise InputError(p, "is truncated (the data block ends early)")
            slab = raw if raw.dtype == np.dtype(np.float32) else raw.astype(np.float32)
            del raw
            if check and not np.isfinite(slab).all():
                raise InputError(p, f"contains NaN or infinite values (Y rows {y0 + 1}-{y1})")
            yield y0, y1, slab


def _permuted_slabs(p: Path, header: VolumeHeader, rows: int) -> Iterator[Tuple[int, int, np.ndarray]]:
    """:func:`iter_volume_slabs` of a map stored with permuted axes: each slab gathered from a
    memory map of the stored array, which is closed after each slab (rare files; no row is
    contiguous on disk there)."""
    order = header.stored_order
    assert order is not None
    stored = tuple(header.shape[order.index(k)] for k in range(3))
    check = np.issubdtype(header.dtype, np.floating)
    ny, rows = header.shape[1], max(1, int(rows))
    for y0 in range(0, ny, rows):
        y1 = min(ny, y0 + rows)
        mm = np.memmap(p, dtype=header.dtype, mode="r", offset=header.offset, shape=stored)
        try:
            slab = np.array(mm.transpose(order)[:, y0:y1, :], dtype=np.float32, order="C")  # a copy
        finally:
            del mm
        if check and not np.isfinite(slab).all():
            raise InputError(p, f"contains NaN or infinite values (Y rows {y0 + 1}-{y1})")
        yield y0, y1, slab
