"""The sparse separable back-projection, in numpy: its matrix, its slab-by-slab application and
the recycled output slabs. Importing this module does not import torch.

A separable geometry (no ``.xf``, no X-axis tilt) maps output row ``y`` to detector row ``y``, and
its interpolation weights depend on (z, x, view) alone: they form one sparse matrix ``B`` of shape
``(nz * nx_out, n_views * nx_det)`` with two entries per view and row (:func:`separable_matrix_arrays`),
shared by every row; the back-projection of a slab of rows is one sparse-dense product
``B @ images[(view, u), y]``. This module holds the one implementation of that matrix, of the
order of its rows and of the slab loop (:class:`SeparableSlabs`); it runs on numpy arrays
(localet's compiled CSR product, or scipy's where it is not built:
:mod:`localet_core.native`; the torch-free WBP,
:mod:`localet_core.reconstruction.wbp_numpy`) and on
torch tensors (MKL's CSR product, CPU or CUDA: :mod:`localet_core.reconstruction.backprojection`
turns the same arrays into a torch CSR tensor).
"""
from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any, NamedTuple, Optional, Tuple

import numpy as np

from localet_core.native import csr_product

if TYPE_CHECKING:
    from localet_core.reconstruction.geometry import TiltGeometry

#: Slices per block of the sparse kernel's row order (see :func:`separable_matrix_arrays`): measured
#: on 1024^2 detectors, blocks of 16 cut the image traffic 16-fold.
Z_BLOCK = 16
#: Output rows per slab of the sparse kernel (at most; fewer under a small memory budget): its
#: product then reads a few MB of images per slab, which stay in cache (measured on 1024^2
#: detectors: 32 rows ran the product 1.3-1.6x faster than 256), and slabs are small enough for
#: writing one while the next is computed.
KERNEL_ROWS = 32

#: Matrix entries (voxel columns x views) built at a time by :func:`separable_matrix_arrays`:
#: bounds its float64 temporaries (about 40 bytes per entry) to a few tens of MB.
_MATRIX_CHUNK = 1 << 20


def rows_per_slab(geometry: "TiltGeometry", budget: int, channels: int = 1, bytes_per_value: int = 4) -> int:
    """How many output rows fit in ``budget`` bytes (output slab, its re-ordered copy and the
    temporaries of the sampling step: about 4 copies of the slab)."""
    nz, ny, nx = geometry.output_shape
    per_row = 4 * nz * nx * channels * bytes_per_value
    return int(max(1, min(ny, budget // max(1, per_row))))


def sparse_matrix_bytes(geometry: "TiltGeometry", n_views: int) -> int:
    """About how much memory the sparse kernel's matrix takes: it covers the whole volume (two
    interpolation weights and two column indices, 4 bytes each, per voxel column and view; built
    in chunks of bounded size, :func:`separable_matrix_arrays`), plus 25 % for the chunks' temporaries
    and the row pointers."""
    nz, _, nx = geometry.output_shape
    return 20 * nz * nx * n_views


def separable_matrix_arrays(
    geometry: "TiltGeometry",
    weights: np.ndarray,
    z_range: Optional[Tuple[int, int]] = None,
    dtype: Any = np.float32,
    z_block: int = 1,
    col_origin: int = 0,
    n_cols: Optional[int] = None,
    threads: int = 1,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray, Tuple[int, int]]:
    """The CSR arrays of the sparse back-projection matrix of a separable geometry.

    Args:
        geometry: a separable :class:`TiltGeometry`.
        weights: ``(n_used,)`` per-view weights folded into the matrix (e.g. radians).
        z_range: ``(z0, z1)`` output slices to cover (default all).
        dtype: numpy dtype of the values (float32 or float64).
        z_block: rows are ordered (z block, x, z within the block): consecutive rows then
            read nearby detector columns, so one sweep over the images serves ``z_block``
            slices (large detectors would otherwise stream every image once per slice). The
            slices are padded to whole blocks; the slab loops drop the extras.
        col_origin: detector column of the images' first column (negative for images extended
            beyond the detector, as the fast network form uses); default 0.
        n_cols: image width (default: the binned detector width).
        threads: chunks built at a time (threads; the values do not depend on it).

    Returns:
        ``(indptr, indices, data, shape)``: int32 row pointers and column indices, ``dtype``
        values, ``shape = (nz_padded * nx_out, n_used * n_cols)``; rows ``(z block, x, z in
        block)`` (plain ``(z, x)`` for ``z_block = 1``), columns ``(view, u)``. Out-of-detector
        neighbours have weight 0 (and a column inside their view's block).
    """
    nz, _, nxo = geometry.output_shape
    z0, z1 = z_range if z_range is not None else (0, nz)
    z1 = z0 + -(-(z1 - z0) // z_block) * z_block  # pad to whole blocks
    n_views = len(geometry.used_views)
    nxd = geometry.binned_detector_shape[1] if n_cols is None else int(n_cols)
    # u = c0 ix + c1 iy + c2 iz + c3 (the detector column, TiltGeometry.detector_coordinates' sums
    # in its order, so the matrix is bit-identical to evaluating them voxel by voxel); iy = 0,
    # and separable geometries have c1 = 0.
    m = geometry.detector_affine_array()[:, 0]  # (views, 4) float64
    n_blocks = (z1 - z0) // z_block
    # rows (z block, x, z in block), entries (view, neighbour): built a few blocks at a time in
    # this final order, so the float64 temporaries stay small and nothing is permuted
    cols = np.empty((n_blocks, nxo, z_block, n_views, 2), np.int32)
    vals = np.empty((n_blocks, nxo, z_block, n_views, 2), dtype)
    ix = np.arange(nxo, dtype=np.float64).reshape(1, nxo, 1, 1)
    x_part = m[:, 0] * ix + m[:, 1] * 0.0  # (1, nxo, 1, views)
    w = np.asarray(weights).astype(dtype)
    view_base = np.arange(n_views, dtype=np.int32) * np.int32(nxd)
    step = max(1, _MATRIX_CHUNK // max(1, nxo * z_block * n_views))

    def build(b0: int) -> None:
        b1 = min(n_blocks, b0 + step)
        iz = np.arange(z0 + b0 * z_block, z0 + b1 * z_block, dtype=np.float64)
        u = (x_part + m[:, 2] * iz.reshape(b1 - b0, 1, z_block, 1)) + m[:, 3]
        if col_origin:
            u = u - col_origin
        i0f = np.floor(u)
        frac = (u - i0f).astype(dtype)
        i0 = i0f.astype(np.int32)
        del u, i0f
        vals[b0:b1, ..., 0] = (1 - frac) * w * ((i0 >= 0) & (i0 < nxd))
        vals[b0:b1, ..., 1] = frac * w * ((i0 >= -1) & (i0 < nxd - 1))
        # Out-of-range neighbours get weight 0; clamp their column into the view's own block.
        cols[b0:b1, ..., 0] = view_base + np.clip(i0, 0, nxd - 1)
        cols[b0:b1, ..., 1] = view_base + np.clip(i0 + 1, 0, nxd - 1)

    starts = range(0, n_blocks, step)
    if threads > 1 and len(starts) > 1:  # numpy's loops release the GIL: chunks side by side
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(threads, len(starts))) as pool:
            list(pool.map(build, starts))
    else:
        for b0 in starts:
            build(b0)
    n_rows = (z1 - z0) * nxo
    per_row = 2 * n_views
    indptr = np.arange(0, n_rows * per_row + 1, per_row, dtype=np.int32)
    return indptr, cols.reshape(-1), vals.reshape(-1), (n_rows, n_views * nxd)


class CsrMatrix(NamedTuple):
    """A CSR matrix as plain numpy arrays (no scipy object: the torch-free path needs no
    ``scipy.sparse`` import); ``indptr`` and ``indices`` int32, ``data`` float32."""

    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray
    shape: Tuple[int, int]


def separable_matrix_numpy(geometry: "TiltGeometry", weights: np.ndarray, z_block: int = 1,
                           dtype: Any = np.float32, threads: int = 1) -> CsrMatrix:
    """:func:`separable_matrix_arrays` as a :class:`CsrMatrix` (no copy)."""
    indptr, indices, data, shape = separable_matrix_arrays(geometry, weights, dtype=dtype, z_block=z_block,
                                                           threads=threads)
    return CsrMatrix(indptr, indices, data, tuple(shape))


class SeparableSlabs:
    """The separable back-projection of one channel, slab after slab, straight from the images'
    own layout into contiguous slabs, with its scratch buffers reused from slab to slab; for
    numpy arrays (a :class:`CsrMatrix`) or torch tensors (a torch CSR tensor, CPU or CUDA).

    For each slab the rows ``y0:y1`` of every view are transposed into the kernel's
    ``(view, u)``-major layout (a few MB for a few tens of rows: where the sparse product runs
    fastest, :data:`localet_core.reconstruction.wbp.KERNEL_ROWS`), multiplied, and each z block
    of the product, ``(nx_out, z_block * rows)``, is one transpose away from
    ``(z_block, rows, nx_out)``. An instance is not thread-safe (its buffers); threads each use
    their own, sharing the matrix and the images.

    Args:
        matrix: ``(nz_padded * nx_out, n_views * nx_det)`` CSR matrix built with ``z_block``.
        images: ``(n_views, ny, nx_det)`` filtered images.
        nz: number of output slices wanted (the matrix may cover a few more: block padding).
        max_rows: the most rows a slab will have (sizes the scratch buffers).
    """

    def __init__(self, matrix: Any, images: Any, nz: int, z_block: int = 1, max_rows: int = 32) -> None:
        self.numpy = isinstance(images, np.ndarray)
        if self.numpy:
            self.images = np.ascontiguousarray(images, dtype=np.float32)
            self._empty = lambda shape: np.empty(shape, dtype=np.float32)
        else:
            from localet_core.device import empty

            self.images = images.contiguous()
            device, dtype = self.images.device, self.images.dtype
            self._empty = lambda shape: empty(shape, dtype, device)
        self.matrix = matrix
        self.nz = nz
        self.z_block = z_block
        n, _, nxd = self.images.shape
        self.nzp = -(-nz // z_block) * z_block
        self.nxo = matrix.shape[0] // self.nzp
        self._layout = self._empty((n * nxd * max_rows,))
        self._product = self._empty((self.nzp * self.nxo * max_rows,))
        self.max_rows = max_rows

    def _multiply(self, layout: Any, product: Any) -> None:
        if self.numpy:
            m = self.matrix
            csr_product(m.indptr, m.indices, m.data, m.shape, layout, product)
        else:
            import torch

            # addmm with beta = 0 writes into product without a temporary (mm(out=) zero-fills a
            # fresh one per call: 32 MB of page faults per slab); product's old values are ignored
            torch.addmm(product, self.matrix, layout, beta=0, out=product)

    def __call__(self, y0: int, y1: int, out: Any = None) -> Any:
        """``(nz, y1 - y0, nx_out)`` back-projected rows ``y0:y1``, written into ``out`` (a
        contiguous array or tensor of that shape, like the images) when given."""
        rows = y1 - y0
        if rows > self.max_rows:
            raise ValueError(f"a slab of {rows} rows; at most {self.max_rows} were planned")
        n, _, nxd = self.images.shape
        nz, nxo, zb = self.nz, self.nxo, self.z_block
        layout = self._layout[:n * nxd * rows].reshape(n, nxd, rows)
        for v in range(n):  # (rows, nx_det) -> (nx_det, rows): a blocked transpose each
            layout[v] = self.images[v, y0:y1].T
        product = self._product[:self.nzp * nxo * rows].reshape(self.nzp * nxo, rows)
        self._multiply(layout.reshape(n * nxd, rows), product)
        blocks = product.reshape(self.nzp // zb, nxo, zb * rows)
        if out is None:
            out = self._empty((nz, rows, nxo))
        for b in range(self.nzp // zb):
            za, zc = b * zb, min(nz, (b + 1) * zb)
            if zc - za == zb:
                out[za:zc].reshape(zb * rows, nxo)[...] = blocks[b].T
            else:  # the padded last block
                out[za:zc] = blocks[b].T[:(zc - za) * rows].reshape(zc - za, rows, nxo)
        return out


class SlabBuffers:
    """Output slabs recycled once their consumer is done with them.

    A slab is written into a buffer (:meth:`take`: a float32 numpy array; wrap it with
    ``torch.from_numpy`` to write it from torch) and handed out as a numpy array (:meth:`lend`);
    a buffer is taken again only when that array is gone, i.e. neither it nor any view of it,
    nor anything holding one (a torch tensor made with ``from_numpy``, a ``memoryview``), is
    alive: the arrays :meth:`take` returns (over a :class:`_Lease`) and those :meth:`lend` makes
    of tensors are the base of every view made of them (numpy's chain of bases stops at an array
    over an object that is not an array). A
    consumer that writes each slab to disk, or copies it into a volume, so reuses one to three
    buffers, and a fresh buffer's page faults (about a third of the cost of filling it) are
    paid once, not per slab.
    """

    def __init__(self) -> None:
        self._buffers: list = []  # [flat float32 array, weak reference to the array lent from it, or _TAKEN]

    def take(self, shape: Tuple[int, ...]) -> np.ndarray:
        """A contiguous float32 array of ``shape`` that no lent array uses any more."""
        size = int(np.prod(shape))
        for entry in self._buffers:
            buffer, lent = entry
            if (lent is None or lent() is None) and buffer.size >= size:
                entry[1] = _TAKEN
                return np.asarray(_Lease(buffer, shape))
        buffer = np.empty((size,), dtype=np.float32)
        self._buffers.append([buffer, _TAKEN])
        return np.asarray(_Lease(buffer, shape))

    def lend(self, slab: Any) -> np.ndarray:
        """``slab`` (from :meth:`take`, or a tensor over it, or any CPU tensor or array) as a numpy
        array; its buffer is taken again once that array is gone."""
        if isinstance(slab, np.ndarray):
            array = slab if isinstance(slab.base, _Lease) else np.asarray(slab)
        else:
            array = slab.cpu().numpy()
        pointer = array.__array_interface__["data"][0]
        for entry in self._buffers:
            if entry[1] is _TAKEN and entry[0].__array_interface__["data"][0] == pointer:
                entry[1] = weakref.ref(array)
        return array


class _Lease:
    """A buffer's first ``prod(shape)`` values, seen as an array of ``shape`` through
    ``__array_interface__``: the array numpy makes of it is the base of its views, and keeps the
    buffer alive."""

    __slots__ = ("buffer", "__array_interface__")

    def __init__(self, buffer: np.ndarray, shape: Tuple[int, ...]) -> None:
        self.buffer = buffer
        self.__array_interface__ = {"shape": tuple(int(s) for s in shape), "typestr": buffer.dtype.str,
                                    "data": (buffer.__array_interface__["data"][0], False), "version": 3}


def _TAKEN() -> bool:
    """Stands for the weak reference of a buffer taken but not lent yet: never free."""
    return True
