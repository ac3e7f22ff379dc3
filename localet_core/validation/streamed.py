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
from pathlib import Path
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from localet_core.errors import InputError, PathLike
from localet_core.pipeline import Slab
from localet_core.validation.fourier import Shape3, n_shells
from localet_core.validation.fsc import FSCResult, add_shell_sums, fsc_regions, fsc_result

__all__ = ["Spectra", "spectra_bytes", "in_memory_bytes", "file_slabs"]


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
            tilt_range: Optional[Tuple[float, float]] = None) -> List[FSCResult]:
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
        return [fsc_result(shape, pixel_size, rng, [name for name, _ in regions], s) for s in sums]


def file_slabs(path: PathLike, rows: int) -> Iterator[Slab]:
    """A float32 MRC volume's Y-slabs ``(nz, rows, nx)`` read with plain reads (no memory map:
    nothing of the file stays in the process's resident memory)."""
    import mrcfile

    p = Path(os.fspath(path))
    with mrcfile.open(str(p), header_only=True, permissive=True) as m:
        nx, ny, nz = int(m.header.nx), int(m.header.ny), int(m.header.nz)
        mode, offset = int(m.header.mode), 1024 + int(m.header.nsymbt)
    if mode != 2:
        raise InputError(p, f"expected a float32 (mode 2) volume, got mode {mode}")
    rows = max(1, int(rows))
    with open(p, "rb", buffering=0) as f:
        for y0 in range(0, ny, rows):
            y1 = min(ny, y0 + rows)
            slab = np.empty((nz, y1 - y0, nx), np.float32)
            for z in range(nz):
                view = memoryview(slab[z]).cast("B")
                got = os.preadv(f.fileno(), [view], offset + 4 * nx * (z * ny + y0))
                if got != len(view):
                    raise InputError(p, "is truncated")
            yield y0, y1, slab
