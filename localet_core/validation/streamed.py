"""Out-of-core FSC: shell sums of volumes larger than the memory budget.

The FSC needs each volume's 3D Fourier transform. Here the volumes arrive as Y-slabs (the
reconstruction methods' slabs, or rows read from a file) and are never held whole:

1. for every output row ``y``, the 2D transform over ``(z, x)`` (``rfft`` along x, ``fft``
   along z) is written to a scratch file (:class:`localet_core.io.atomic.ScratchFile`: plain
   writes, unlinked as soon as it is opened, so nothing is left whatever ends the job);
2. blocks of ``(z, kx)`` columns are read back across all ``y`` and transformed along y, which
   completes the 3D ``rfftn``; each block's shell sums are added
   (:func:`localet_core.validation.fsc.add_shell_sums`), region by region.

The sums, hence the curves, equal :func:`~localet_core.validation.fsc.compute_fsc`'s to float
rounding (tested). Scratch space: ``8 * nz * ny * (nx // 2 + 1)`` bytes per volume
(:func:`spectra_bytes`), which a command's free-space check includes.
"""
from __future__ import annotations

import os
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from localet_core.errors import InputError, PathLike
from localet_core.pipeline import Slab
from localet_core.validation.fourier import Shape3, n_shells
from localet_core.validation.fsc import FSCResult, add_shell_sums, fsc_regions, fsc_result

__all__ = ["Spectra", "spectra_bytes", "in_memory_bytes", "file_slabs", "fsc_files", "fsc_files_plan"]


def spectra_bytes(shape: Shape3, count: int) -> int:
    """Scratch bytes of :class:`Spectra` for ``count`` volumes of ``shape``."""
    nz, ny, nx = shape
    return 8 * nz * ny * (nx // 2 + 1) * count


def in_memory_bytes(shape: Shape3, count: int) -> int:
    """About the peak bytes of the in-memory FSC of ``count`` volumes held at once: the volumes,
    two of their transforms (complex64) and their float copies."""
    nz, ny, nx = shape
    voxels = nz * ny * nx
    return 4 * voxels * count + 2 * 8 * nz * ny * (nx // 2 + 1) + 8 * voxels


class Spectra:
    """The 3D rfft of ``count`` volumes of ``shape``, out of core (see the module).

    ``feed(k, slabs)`` passes volume ``k``'s slabs through (each is transformed and written on
    the way); ``consume(k, slabs)`` only records them. Then :meth:`fsc` gives the FSC of any
    pair. ``budget`` bounds the read-back blocks and their temporaries.
    """

    def __init__(self, shape: Shape3, count: int, budget: int) -> None:
        from localet_core.io.atomic import ScratchFile

        self.shape = tuple(int(s) for s in shape)
        nz, ny, nx = self.shape
        self.nkx = nx // 2 + 1
        self.count = count
        self.budget = int(budget)
        self.plane = nz * self.nkx * 8  # bytes of one row's 2D transform
        self.rows_seen = [0] * count
        self.lo = [np.inf] * count
        self.hi = [-np.inf] * count
        self.file = ScratchFile("fsc-spectra")

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> "Spectra":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------------------- writing
    def feed(self, k: int, slabs: Iterable[Slab], source: object = "volume") -> Iterator[Slab]:
        """Volume ``k``'s slabs, passed through after each is transformed and written."""
        nz, ny, nx = self.shape
        for y0, y1, slab in slabs:
            block = np.asarray(slab, dtype=np.float32)
            if block.shape != (nz, y1 - y0, nx):
                raise ValueError(f"slab of shape {block.shape} for rows {y0}:{y1} of a {self.shape} volume")
            if not np.isfinite(block).all():
                raise InputError(source, "contains NaN or infinite value(s)")
            self.lo[k] = min(self.lo[k], float(block.min()))
            self.hi[k] = max(self.hi[k], float(block.max()))
            # a few rows at a time: the transform and its re-ordered copy within a sixth of the budget
            step = max(1, self.budget // 6 // (2 * self.plane))
            for r0 in range(0, y1 - y0, step):
                r1 = min(y1 - y0, r0 + step)
                spectrum = torch.fft.rfft2(torch.from_numpy(block[:, r0:r1]), dim=(0, 2))  # (nz, rows, nkx)
                planes = spectrum.permute(1, 0, 2).contiguous().numpy()  # (rows, nz, nkx)
                del spectrum
                self.file.write(planes, (k * ny + y0 + r0) * self.plane)
                del planes
            self.rows_seen[k] += y1 - y0
            yield y0, y1, slab

    def consume(self, k: int, slabs: Iterable[Slab], source: object = "volume") -> None:
        for _ in self.feed(k, slabs, source):
            pass

    def check(self, k: int, source: object) -> None:
        """Raise :class:`InputError` if volume ``k`` is incomplete or has no variance."""
        if self.rows_seen[k] != self.shape[1]:
            raise ValueError(f"volume {k} has {self.rows_seen[k]} of {self.shape[1]} rows")
        if not self.hi[k] > self.lo[k]:
            raise InputError(source, "has no variance (every voxel is the same): there is nothing to correlate")

    # ------------------------------------------------------------------------------- reading
    def _blocks(self, volumes: int) -> List[Tuple[int, int, int, int]]:
        """``(z0, z1, k0, k1)`` column blocks whose read-back (a buffer and its transform, per
        volume) takes at most a third of the budget."""
        nz, ny, _ = self.shape
        per_column = 2 * 8 * ny * volumes  # bytes of one (z, kx) column, all volumes
        columns = max(1, self.budget // 3 // per_column)
        if columns >= self.nkx:
            zb = max(1, min(nz, columns // self.nkx))
            return [(z0, min(nz, z0 + zb), 0, self.nkx) for z0 in range(0, nz, zb)]
        return [(z, z + 1, k0, min(self.nkx, k0 + columns)) for z in range(nz) for k0 in range(0, self.nkx, columns)]

    def _read(self, k: int, z0: int, z1: int, k0: int, k1: int) -> torch.Tensor:
        """Columns ``z0:z1, k0:k1`` of volume ``k`` for every y, transformed along y:
        ``(z1 - z0, ny, k1 - k0)`` complex64, the rfftn's values there."""
        nz, ny, _ = self.shape
        buf = np.empty((ny, z1 - z0, k1 - k0), np.complex64)
        for y in range(ny):
            base = (k * ny + y) * self.plane
            if k0 == 0 and k1 == self.nkx:
                self.file.read_into(buf[y], base + z0 * self.nkx * 8)
            else:
                for z in range(z0, z1):
                    self.file.read_into(buf[y, z - z0], base + (z * self.nkx + k0) * 8)
        out = torch.fft.fft(torch.from_numpy(buf), dim=0)
        del buf
        return out.permute(1, 0, 2)

    def fsc(self, pairs: Sequence[Tuple[int, int]], pixel_size: Optional[float] = None,
            tilt_range: Optional[Tuple[float, float]] = None, masked: bool = False) -> List[FSCResult]:
        """The FSC (:func:`~localet_core.validation.fsc.compute_fsc`'s result) of each pair of
        volumes ``(i, j)``, in one pass over the scratch file."""
        shape: Shape3 = self.shape  # type: ignore[assignment]
        rng, regions = fsc_regions(shape, tilt_range)
        volumes = sorted({i for pair in pairs for i in pair})
        sums = [[tuple(torch.zeros(n_shells(shape), dtype=torch.float64) for _ in range(4)) for _ in regions]
                for _ in pairs]
        chunk = max(1 << 12, self.budget // 3 // 96)  # complex128 temporaries of the sums
        for z0, z1, k0, k1 in self._blocks(len(volumes)):
            spectra = {k: self._read(k, z0, z1, k0, k1) for k in volumes}
            selectors = [None if r is None else r[:, :, k0:k1] for _, r in regions]
            for (i, j), acc in zip(pairs, sums):
                add_shell_sums(acc, spectra[i], spectra[j], shape, selectors, z0, kx_offset=k0,
                               chunk_voxels=chunk)
            del spectra
        return [fsc_result(shape, pixel_size, rng, [name for name, _ in regions], s, masked) for s in sums]


def file_slabs(path: PathLike, rows: int) -> Iterator[Slab]:
    """A volume's Y-slabs ``(nz, rows, nx)`` read with plain reads (no memory map: nothing of the
    file stays in the process's resident memory); :func:`localet_core.io.iter_volume_slabs`."""
    from localet_core.io import iter_volume_slabs

    return iter_volume_slabs(path, rows)


def slab_rows(shape: Shape3, budget: int) -> int:
    """Rows per read slab so that a slab, its transform and the copy written take a sixth of
    ``budget`` bytes."""
    nz, _, nx = shape
    return max(1, int(budget) // 6 // (24 * nz * nx))


def fsc_files_plan(shape: Shape3, masked: bool, budget: int) -> Tuple[bool, int]:
    """``(streamed, scratch bytes)`` of :func:`fsc_files` for volumes of ``shape``."""
    streamed = in_memory_bytes(shape, 3 if masked else 2) > int(budget)
    return streamed, spectra_bytes(shape, 2) if streamed else 0


def fsc_files(a: PathLike, b: PathLike, mask: Optional[PathLike] = None, pixel_size: Optional[float] = None,
              tilt_range: Optional[Tuple[float, float]] = None, budget: Optional[int] = None) -> FSCResult:
    """:func:`~localet_core.validation.fsc.compute_fsc` of two MRC volumes (and a mask), within
    ``budget`` bytes of memory (default: half the free RAM, capped; see
    :func:`localet_core.device.memory_budget`).

    When the volumes fit (:func:`fsc_files_plan`) they are read whole; otherwise they are read
    a few Y rows at a time, masked, transformed on the way into a scratch file (in
    :func:`localet_core.io.atomic.scratch_folder`) and the FSC finished out of core. Both give
    the same curves to float rounding.

    Raises:
        InputError: a bad file (named), different shapes, a mask outside [0, 1] or zero
            everywhere, a volume without variance, a bad pixel size or tilt range.
    """
    from localet_core.device import memory_budget
    from localet_core.io import read_volume_header
    from localet_core.validation.fsc import compute_fsc

    budget = memory_budget("cpu", budget)
    shape = read_volume_header(a).shape
    for path, reference in ((b, os.fspath(a)), (mask, "the volumes'")):
        if path is not None:
            other = read_volume_header(path).shape
            if other != shape:
                raise InputError(path, f"shape {other} (z, y, x) differs from {reference} {shape}")
    streamed, _ = fsc_files_plan(shape, mask is not None, budget)
    if not streamed:
        volumes = [torch.from_numpy(_read_whole(p, shape, budget)) for p in (a, b)]
        m = None if mask is None else torch.from_numpy(_read_whole(mask, shape, budget))
        try:
            return compute_fsc(volumes[0], volumes[1], mask=m, pixel_size=pixel_size, tilt_range=tilt_range)
        except InputError as exc:
            raise _named(exc, a, b, mask) from None
    rows = slab_rows(shape, budget)
    with Spectra(shape, 2, budget) as spectra:
        for k, path in enumerate((a, b)):
            spectra.consume(k, _masked_slabs(file_slabs(path, rows), mask, rows), path)
            spectra.check(k, path)
        (result,) = spectra.fsc([(0, 1)], pixel_size, tilt_range, masked=mask is not None)
    return result


def _read_whole(path: PathLike, shape: Shape3, budget: int) -> np.ndarray:
    """A whole volume read with plain reads (a memory map's pages would stay resident beside
    the copy)."""
    out = np.empty(shape, np.float32)
    for y0, y1, slab in file_slabs(path, slab_rows(shape, budget)):
        out[:, y0:y1] = slab
    return out


def _named(exc: InputError, a: PathLike, b: PathLike, mask: Optional[PathLike]) -> InputError:
    """``compute_fsc``'s error about "volume A"/"volume B"/"mask", naming the file instead."""
    names = {"volume A": a, "volume B": b, "mask": mask}
    source = getattr(exc, "source", None)
    if isinstance(source, str) and source in names and names[source] is not None:
        return InputError(names[source], exc.problem)
    return exc


def _masked_slabs(slabs: Iterable[Slab], mask: Optional[PathLike], rows: int) -> Iterator[Slab]:
    """``slabs`` multiplied by the mask's, whose values are checked (in [0, 1], not all zero)."""
    if mask is None:
        yield from slabs
        return
    top = -np.inf
    for (y0, y1, slab), (_, _, m) in zip(slabs, file_slabs(mask, rows)):
        lo, hi = float(m.min()), float(m.max())
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise InputError(mask, f"values must lie in [0, 1] (a soft mask), found {lo:g} .. {hi:g} "
                                   f"in Y rows {y0 + 1}-{y1}")
        top = max(top, hi)
        yield y0, y1, np.asarray(slab, np.float32) * m
    if not top > 0:
        raise InputError(mask, "is zero everywhere")
