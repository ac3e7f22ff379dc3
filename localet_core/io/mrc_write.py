"""Writing MRC volumes: float32 (mode 2), block by block, atomically.

Writing always goes through :func:`~localet_core.io.atomic.atomic_output`, so no partial
file ever appears under the final name. Volumes are written in mode 2 (float32) by
:class:`VolumeWriter`, which writes a preallocated file block by block with plain ``pwrite``
calls and keeps the header statistics up to date without ever holding a second full-size copy
of the volume or reading it back. Volumes are
``(nz, ny, nx)``; voxel sizes in Angstrom, origins (x, y, z) in Angstrom.
"""
from __future__ import annotations

import contextlib
import ctypes
import datetime
import errno
import functools
import math
import operator
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence, Tuple, Union

import mrcfile
import numpy as np
from mrcfile import utils as mrc_utils

from localet_core.errors import InputError, PathLike
from localet_core.io.atomic import atomic_output
from localet_core.io.mrc_header import check_size_argument
from localet_core.native import native_enabled, value_stats

__all__ = ["VolumeWriter", "write_volume", "IncompleteVolumeError"]

# Header statistics are accumulated over pieces of at most this many voxels (1 MiB of float32:
# each piece stays in cache for its few passes) however large a written block is.
_STATS_CHUNK = 1 << 18
# The same for the one-pass compiled statistics (no scratch: pieces as large as a block's rows).
_NATIVE_STATS_CHUNK = 1 << 22
# Bytes written between two requests to start writing them back to disk (_start_writeback). 8 MB was
# tried (2026-12-02): an in-process alternation looked faster for `fbp` of 512^2 x 128, but an A/B
# of whole commands (bench_cli.py --baseline, best of 4, 512 and 1024) showed no difference.
_WRITEBACK_BYTES = 64 << 20
_SYNC_FILE_RANGE_WRITE = 2  # <linux/fs.h>
# write_volume hands VolumeWriter slabs of about this many voxels (64 MiB of float32).
_WRITE_SLAB = 1 << 24


class IncompleteVolumeError(RuntimeError):
    """A :class:`VolumeWriter` was closed before every voxel had been written.

    This is a programming error (a gap in the block loop), not bad user input, so it is not an
    :class:`~localet_core.errors.InputError`; no output file is created.
    """


def _as_numpy(value: Any) -> np.ndarray:
    """Accept numpy arrays, scalars, nested lists and CPU/GPU torch tensors (without
    importing torch)."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _normalise_key(key: Any, shape: Tuple[int, int, int]) -> Tuple[Tuple[int, int, int],
                                                                     Tuple[int, int, int],
                                                                     Tuple[int, ...]]:
    """Turn a basic index into a box.

    Returns ``(starts, stops, value_shape)``: the box [start, stop) on each axis, and the shape
    numpy would give ``data[key]`` (int axes dropped), which the value is broadcast against.

    Only ints, ``...`` and slices with step 1 are accepted: anything else (fancy indexing,
    ``None``, strided slices) is rejected, because overlap tracking works on boxes.
    """
    if not isinstance(key, tuple):
        key = (key,)
    n_ellipsis = sum(k is Ellipsis for k in key)
    if n_ellipsis > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    if n_ellipsis:
        i = next(i for i, k in enumerate(key) if k is Ellipsis)
        fill = (slice(None),) * (3 - (len(key) - 1))
        key = key[:i] + fill + key[i + 1:]
    if len(key) > 3:
        raise IndexError(f"too many indices for a 3D volume: {len(key)}")
    key = key + (slice(None),) * (3 - len(key))

    starts, stops, value_shape = [], [], []
    for axis, (k, n) in enumerate(zip(key, shape)):
        if isinstance(k, slice):
            start, stop, step = k.indices(n)
            if step != 1:
                raise IndexError(f"VolumeWriter only takes contiguous slices (step 1); "
                                 f"axis {axis} has step {step}")
            stop = max(stop, start)
            starts.append(start)
            stops.append(stop)
            value_shape.append(stop - start)
        elif isinstance(k, (bool, np.bool_)) or k is None:
            raise IndexError("VolumeWriter takes ints, slices and '...' only")
        else:
            try:
                i = operator.index(k)
            except TypeError:
                raise IndexError(f"VolumeWriter takes ints, slices and '...' only, "
                                 f"got {type(k).__name__}") from None
            if not -n <= i < n:
                raise IndexError(f"index {i} is out of bounds for axis {axis} with size {n}")
            i %= n
            starts.append(i)
            stops.append(i + 1)
    return tuple(starts), tuple(stops), tuple(value_shape)  # type: ignore[return-value]


def _chunks(shape: Tuple[int, int, int], limit: int) -> Iterator[Tuple[slice, slice]]:
    """Cover a (nz, ny, nx) box with (z, y) pieces of at most ``limit`` voxels (or one row)."""
    nz, ny, nx = shape
    plane = ny * nx
    if plane <= limit:
        step = max(1, limit // max(plane, 1))
        for z0 in range(0, nz, step):
            yield slice(z0, min(z0 + step, nz)), slice(0, ny)
    else:
        rows = max(1, limit // max(nx, 1))
        for z in range(nz):
            for y0 in range(0, ny, rows):
                yield slice(z, z + 1), slice(y0, min(y0 + rows, ny))


def _pieces(block: np.ndarray, limit: int) -> Iterator[np.ndarray]:
    """A float32 (bz, by, bx) block as contiguous 1D pieces of at most ``limit`` values: views of
    a contiguous block, copies of the (z, y) pieces of :func:`_chunks` otherwise."""
    if block.flags.c_contiguous:
        flat = block.reshape(-1)
        for i in range(0, flat.size, limit):
            yield flat[i:i + limit]
    else:
        for zs, ys in _chunks(block.shape, limit):
            yield np.ascontiguousarray(block[zs, ys]).reshape(-1)


@dataclass
class _RunningStats:
    """Count, min, max, mean and sum of squared deviations, merged block by block in float64.

    Merging (n, mean, M2) pairs (Chan et al.) avoids the cancellation of sum-of-squares
    formulas when the mean is large compared with the spread.
    """

    n: int = 0
    vmin: float = math.inf
    vmax: float = -math.inf
    mean: float = 0.0
    m2: float = 0.0

    def merge(self, other: "_RunningStats") -> None:
        if other.n == 0:
            return
        n = self.n + other.n
        delta = other.mean - self.mean
        self.mean += delta * other.n / n
        self.m2 += other.m2 + delta * delta * self.n * other.n / n
        self.n = n
        self.vmin = min(self.vmin, other.vmin)
        self.vmax = max(self.vmax, other.vmax)

    @classmethod
    def of_block(cls, block: np.ndarray, scratch: Optional[np.ndarray] = None) -> "_RunningStats":
        """Statistics of a float32 block of shape (bz, by, bx), in pieces of bounded size.

        Each piece (at most :data:`_STATS_CHUNK` voxels, a cache-sized piece of the block, read
        in place when the block is contiguous) is summed in float64, then its deviations from
        its float32-rounded mean are squared in float32 and summed in float64: no float64 copy
        of the data, and no cancellation when the mean is large compared with the spread (the
        deviations of values near the mean are exact in float32). ``scratch``: a float32
        buffer of at least :data:`_STATS_CHUNK` values to reuse (default: a new one).

        With the compiled kernels (:func:`localet_core.native.value_stats`) each piece takes one
        pass instead: min, max and float64 sums of the deviations from a shift near the mean
        (the first value, then the running mean), the same statistics to float64 rounding.

        Raises ValueError on NaN or Inf (NaN propagates into min, Inf shows in min/max).
        """
        total = cls()
        if native_enabled():
            for piece in _pieces(block, _NATIVE_STATS_CHUNK):  # contiguous pieces
                n = piece.size
                shift = float(piece.flat[0]) if total.n == 0 else total.mean
                vmin, vmax, s1, s2 = value_stats(piece, shift)
                part = cls(n=n, vmin=vmin, vmax=vmax, mean=shift + s1 / n)
                part.m2 = max(0.0, s2 - s1 * s1 / n)
                total.merge(part)
            return total
        if scratch is None or scratch.size < _STATS_CHUNK:
            scratch = np.empty(_STATS_CHUNK, dtype=np.float32)
        for piece in _pieces(block, _STATS_CHUNK):
            n = piece.size
            part = cls(n=n, vmin=float(piece.min()), vmax=float(piece.max()))
            if not (math.isfinite(part.vmin) and math.isfinite(part.vmax)):
                raise ValueError("block contains NaN or infinite values (after conversion "
                                 "to float32)")
            part.mean = float(np.add.reduce(piece, dtype=np.float64)) / n
            deviation = np.subtract(piece, np.float32(part.mean), out=scratch[:n])
            s1 = float(np.add.reduce(deviation, dtype=np.float64))
            np.square(deviation, out=deviation)
            part.m2 = max(0.0, float(np.add.reduce(deviation, dtype=np.float64)) - s1 * s1 / n)
            total.merge(part)
        return total

    @property
    def rms(self) -> float:
        """Standard deviation about the mean (what MRC headers call rms)."""
        return math.sqrt(self.m2 / self.n) if self.n else 0.0


def _reserve_disk_space(tmp: Path, final: Path) -> None:
    """Allocate the whole (sparse) memory-mapped file on disk now.

    Writing through a memory map into a sparse file on a full disk kills the process with
    SIGBUS, hours into a reconstruction; reserving the blocks first turns that into a clean
    error before any work is done. Where the file system cannot preallocate, we go on without.
    """
    if not hasattr(os, "posix_fallocate"):  # e.g. macOS
        return
    size = tmp.stat().st_size
    fd = os.open(tmp, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            import shutil

            from localet_core.io.outputs import format_bytes

            free = shutil.disk_usage(tmp.parent).free + os.stat(tmp).st_blocks * 512
            raise InputError(final, f"not enough free disk space: the output needs {format_bytes(size)}, "
                                    f"only {format_bytes(free)} free in {os.fspath(final.parent) or '.'}") from None
        # EOPNOTSUPP, EINVAL...: no preallocation on this file system; not an error.
    finally:
        os.close(fd)


def _pwrite_all(fd: int, data: Any, offset: int) -> None:
    """Write all of ``data`` (bytes, or a C-contiguous array: written in place, not copied)."""
    view = memoryview(data).cast("B")
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


@functools.lru_cache(maxsize=1)
def _sync_file_range() -> Optional[Callable[[int, int, int, int], int]]:
    """Linux's ``sync_file_range`` from the C library, or None (other systems)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


def _start_writeback(fd: int) -> None:
    """Ask the kernel to start writing the file's dirty pages to disk now, without waiting
    and without dropping them from the page cache (Linux ``sync_file_range`` with
    ``SYNC_FILE_RANGE_WRITE``): a large volume then reaches the disk while the next slabs are
    computed, instead of all at once in the final ``fsync`` (which still follows). Elsewhere
    this does nothing."""
    function = _sync_file_range()
    if function is not None:
        function(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)  # offset 0, length 0: the whole file; errors: ignored


class VolumeWriter:
    """Write a float32 (mode 2) MRC volume block by block, atomically.

    Usage::

        with VolumeWriter("tomo.mrc", shape=(nz, ny, nx), voxel_size=10.0) as w:
            for y0, y1, slab in blocks:
                w[:, y0:y1, :] = slab      # any box given by ints / step-1 slices / ...

    The data go into a temporary file next to ``path``, laid out (header, size, disk space
    reserved) by mrcfile and written with ``pwrite`` straight from each block, so its pages
    live in the page cache and not in this process; writing them back to disk starts every
    64 MB (:func:`_start_writeback`), during the computation, not all in the final ``fsync``.
    Header statistics (min, max, mean, rms = standard deviation about the mean) are accumulated
    with float64 sums from each written block (:meth:`_RunningStats.of_block`), so the whole
    volume is never read back or copied. On a clean exit the
    header is completed, the file flushed, closed and renamed onto ``path``; on an exception
    (inside the block or from the writer) the temporary file is removed and ``path`` is left
    as it was.

    Rules, chosen so that the header statistics are exact:

    * every voxel must be written exactly once; writing a region that overlaps an earlier one
      raises ``ValueError`` (the earlier data and statistics stay as they were);
    * if some voxels were never written, leaving the ``with`` block raises
      :class:`IncompleteVolumeError` and no file is created;
    * values are converted to float32; NaN or Inf raise ``ValueError``.

    Args:
        path: the output file.
        shape: (nz, ny, nx) in voxels.
        voxel_size: Angstrom per voxel (isotropic), or None to leave it unset (0 in the header).
        origin: the header origin (x, y, z) in Angstrom.
        label: the header label, or up to 10 labels in order (printable ASCII, at most 80
            characters each; :mod:`localet_core.io.labels` builds IMOD-style ones); by
            default "localet <date>".
        image_stack: a stack of 2D images (a tilt series): space group 0 and ``mz = 1``, as
            MRC2014 and IMOD mark stacks; otherwise a volume (space group 1).
    """

    def __init__(self, path: PathLike, shape: Sequence[int], voxel_size: Optional[float] = None,
                 origin: Sequence[float] = (0.0, 0.0, 0.0), label: Union[None, str, Sequence[str]] = None,
                 image_stack: bool = False) -> None:
        self.path = Path(os.fspath(path)).expanduser()
        shape = tuple(operator.index(n) for n in shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"shape must be three positive sizes (nz, ny, nx), got {shape}")
        self.shape: Tuple[int, int, int] = shape  # type: ignore[assignment]
        self.voxel_size = check_size_argument(voxel_size, "voxel size")
        origin = tuple(float(o) for o in origin)
        if len(origin) != 3 or not all(math.isfinite(o) for o in origin):
            raise ValueError(f"origin must be three finite numbers (x, y, z), got {origin}")
        self.origin: Tuple[float, float, float] = origin  # type: ignore[assignment]
        if label is None:
            label = f"localet {datetime.datetime.now().strftime('%d-%b-%y  %H:%M:%S')}"
        labels = (label,) if isinstance(label, str) else tuple(label)
        if not 1 <= len(labels) <= 10:
            raise ValueError(f"give 1 to 10 header labels, got {len(labels)}")
        for text in labels:
            if len(text) > 80 or not mrc_utils.is_printable_ascii(text):
                raise ValueError("a label must be printable ASCII of at most 80 characters")
        self.labels: Tuple[str, ...] = labels
        self.image_stack = bool(image_stack)
        self._stats = _RunningStats()
        self._scratch = np.empty(_STATS_CHUNK, dtype=np.float32)
        self._unsynced = 0  # bytes written since the last write-back request
        self._boxes = np.empty((0, 6), dtype=np.int64)  # rows: z0, z1, y0, y1, x0, x1
        self._n_boxes = 0
        self._mrc: Any = None
        self._tmp: Optional[Path] = None
        self._fd: Optional[int] = None
        self._data_offset = 1024
        self._exit_stack: Optional[contextlib.ExitStack] = None

    # -- context manager ----------------------------------------------------------------------
    def __enter__(self) -> "VolumeWriter":
        if self._exit_stack is not None or self._n_boxes:
            raise RuntimeError("a VolumeWriter can only be used once")
        with contextlib.ExitStack() as stack:
            tmp = stack.enter_context(atomic_output(self.path))
            # overwrite=True: atomic_output created the (empty) temporary file for us.
            self._mrc = mrcfile.new_mmap(tmp, shape=self.shape, mrc_mode=2, overwrite=True)
            self._tmp = tmp
            stack.callback(self._close_mrc)  # runs before atomic_output renames or deletes
            _reserve_disk_space(tmp, self.path)
            self._exit_stack = stack.pop_all()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        stack, self._exit_stack = self._exit_stack, None
        if stack is None:
            return False
        if exc_type is None:
            try:
                self._finish_header()
            except BaseException as err:
                # Clean up (close, delete the temporary file), then report the real problem.
                stack.__exit__(type(err), err, err.__traceback__)
                raise
        return bool(stack.__exit__(exc_type, exc, tb))

    def _close_mrc(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
        mrc, self._mrc = self._mrc, None
        if mrc is not None:
            mrc.close()  # flushes the memory map and the header

    # -- writing ------------------------------------------------------------------------------
    @property
    def n_written(self) -> int:
        """Number of voxels written so far."""
        return self._stats.n

    @property
    def complete(self) -> bool:
        """True once every voxel has been written."""
        return self._stats.n == math.prod(self.shape)

    def __setitem__(self, key: Any, value: Any) -> None:
        """Write ``value`` (broadcast like numpy) into the box given by ``key``."""
        if self._mrc is None:
            raise RuntimeError("VolumeWriter is not open; use it in a 'with' statement")
        starts, stops, value_shape = _normalise_key(key, self.shape)
        box_shape = tuple(b - a for a, b in zip(starts, stops))
        values = np.asarray(_as_numpy(value), dtype=np.float32)
        try:
            values = np.broadcast_to(values, value_shape)
        except ValueError:
            raise ValueError(f"cannot write an array of shape {values.shape} into a region "
                             f"of shape {value_shape}") from None
        if min(box_shape) == 0:
            return  # an empty region writes nothing
        self._check_overlap(starts, stops)
        # Inserting the dropped (int) axes back as size-1 axes never copies.
        values = values.reshape(box_shape)
        # Statistics first: if they reject the values, nothing has been written.
        block_stats = _RunningStats.of_block(values, self._scratch)
        self._write_box(starts, stops, values)
        self._stats.merge(block_stats)
        self._add_box(starts, stops)

    def _write_box(self, starts: Tuple[int, ...], stops: Tuple[int, ...], values: np.ndarray) -> None:
        """Write a box into the file with ``pwrite``, not through the memory map: the pages
        then live in the page cache (written back and dropped by the kernel as needed) and not
        in this process's resident memory, so writing a volume larger than the RAM needs
        no more memory than one block."""
        _, ny, nx = self.shape
        values = np.ascontiguousarray(values, dtype=self._mrc.data.dtype)
        if self._fd is None:
            self._fd = os.open(self._tmp, os.O_WRONLY)
            self._data_offset = int(self._mrc.data.offset) if hasattr(self._mrc.data, "offset") else \
                1024 + int(self._mrc.header.nsymbt)
        item = values.itemsize
        full_rows = starts[2] == 0 and stops[2] == nx
        for k, z in enumerate(range(starts[0], stops[0])):
            if full_rows:  # rows y0..y1 of slice z are contiguous in the file
                offset = self._data_offset + ((z * ny + starts[1]) * nx) * item
                _pwrite_all(self._fd, values[k], offset)
            else:
                for j, y in enumerate(range(starts[1], stops[1])):
                    offset = self._data_offset + ((z * ny + y) * nx + starts[2]) * item
                    _pwrite_all(self._fd, values[k, j], offset)
        self._unsynced += values.nbytes
        if self._unsynced >= _WRITEBACK_BYTES:
            self._unsynced = 0
            _start_writeback(self._fd)

    def _check_overlap(self, starts: Tuple[int, ...], stops: Tuple[int, ...]) -> None:
        boxes = self._boxes[: self._n_boxes]
        if not len(boxes):
            return
        lo = boxes[:, 0::2]
        hi = boxes[:, 1::2]
        hits = np.all((lo < np.array(stops)) & (np.array(starts) < hi), axis=1)
        if hits.any():
            b = boxes[int(np.argmax(hits))]
            raise ValueError(
                f"region z {starts[0]}:{stops[0]}, y {starts[1]}:{stops[1]}, "
                f"x {starts[2]}:{stops[2]} overlaps an earlier write (z {b[0]}:{b[1]}, "
                f"y {b[2]}:{b[3]}, x {b[4]}:{b[5]}); each voxel may be written only once")

    def _add_box(self, starts: Tuple[int, ...], stops: Tuple[int, ...]) -> None:
        if self._n_boxes == len(self._boxes):  # grow by doubling: O(1) amortised
            grown = np.empty((max(16, 2 * len(self._boxes)), 6), dtype=np.int64)
            grown[: self._n_boxes] = self._boxes[: self._n_boxes]
            self._boxes = grown
        self._boxes[self._n_boxes] = [starts[0], stops[0], starts[1], stops[1],
                                      starts[2], stops[2]]
        self._n_boxes += 1

    # -- closing ------------------------------------------------------------------------------
    def _finish_header(self) -> None:
        """Check completeness and fill in the header (sizes, origin, statistics, label)."""
        total = math.prod(self.shape)
        if self._stats.n != total:
            raise IncompleteVolumeError(
                f"{os.fspath(self.path)}: only {self._stats.n} of {total} voxels were written; "
                "no output file was created")
        mrc = self._mrc
        header = mrc.header
        if self.image_stack:  # before the voxel size, which mrcfile spreads over mx, my, mz
            header.ispg = 0
            header.mz = 1
        # Unset size: 0, which read_volume/read_stack report as None.
        mrc.voxel_size = self.voxel_size if self.voxel_size is not None else 0.0
        header.origin.x, header.origin.y, header.origin.z = self.origin
        header.dmin = np.float32(self._stats.vmin)
        header.dmax = np.float32(self._stats.vmax)
        header.dmean = np.float32(self._stats.mean)
        header.rms = np.float32(self._stats.rms)
        # Ours, in place of the "Created by mrcfile.py" one new_mmap added.
        for i in range(10):
            header.label[i] = self.labels[i].encode("ascii") if i < len(self.labels) else b""
        header.nlabl = len(self.labels)


def write_volume(path: PathLike, data: Any, voxel_size: Optional[float] = None,
                 origin: Sequence[float] = (0.0, 0.0, 0.0), label: Union[None, str, Sequence[str]] = None,
                 image_stack: bool = False) -> None:
    """Write a whole volume as a float32 (mode 2) MRC file, atomically.

    Args:
        path: the output file.
        data: array (numpy, or a torch tensor) of shape (nz, ny, nx).
        voxel_size: Angstrom per voxel, or None to leave it unset.
        origin: the header origin (x, y, z) in Angstrom.
        label, image_stack: as :class:`VolumeWriter` (a tilt series: ``image_stack=True``).

    The volume is passed to :class:`VolumeWriter` in slabs along z, so that a float64 or
    float16 input is never converted to float32 all at once.
    """
    array = _as_numpy(data)
    if array.ndim != 3:
        raise ValueError(f"a volume must be 3D (nz, ny, nx), got shape {array.shape}")
    nz, ny, nx = array.shape
    step = max(1, _WRITE_SLAB // max(ny * nx, 1))
    with VolumeWriter(path, shape=array.shape, voxel_size=voxel_size, origin=origin, label=label,
                      image_stack=image_stack) as w:
        for z0 in range(0, nz, step):
            w[z0:z0 + step] = array[z0:z0 + step]
