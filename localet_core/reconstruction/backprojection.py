"""Back-projection: the adjoint of projection, with linear interpolation, for 1 or C channels.

Two kernels compute the same sum (each voxel gets, from every used view, the image value
linearly interpolated at the voxel's projection, times the view's weight):

* ``sparse`` (separable geometries: no ``.xf``, no X-axis tilt). Output row ``y`` then reads only
  detector row ``y``, and the interpolation weights depend on (z, x, view) alone. They form a
  sparse matrix ``B`` of shape ``(nz * nx_out, n_views * nx_det)`` with two entries per view and
  row, built once and shared by every row and channel; the back-projection of a slab of rows is
  one sparse-dense product ``B @ images[(view, u), (y, channel)]``: each entry adds a contiguous
  run of values, the access pattern IMOD's ``tilt`` gets by stretching lines.
* ``grid_sample`` (any geometry, and CUDA): bilinear sampling of each view at the voxels'
  projections (``.xf`` and X-axis tilt included), summed over views.

Out-of-detector neighbours count as zero in both (``grid_sample``'s ``padding_mode="zeros"``).
"""
from __future__ import annotations

import warnings
from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from localet_core.device import empty
from localet_core.reconstruction.geometry import TiltGeometry

KERNELS = ("auto", "sparse", "grid_sample")

#: Matrix entries (voxel columns x views) built at a time by :func:`separable_matrix`: bounds its
#: float64 temporaries (about 40 bytes per entry) to a few tens of MB.
_MATRIX_CHUNK = 1 << 20


def choose_kernel(geometry: TiltGeometry, device: torch.device, kernel: str = "auto") -> str:
    """The kernel ``auto`` resolves to: ``sparse`` for separable geometries on CPU, else
    ``grid_sample``. Asking for ``sparse`` on a non-separable geometry is an error."""
    if kernel not in KERNELS:
        raise ValueError(f"kernel must be one of {KERNELS}, got {kernel!r}")
    if kernel == "sparse" and not geometry.is_separable:
        raise ValueError("the sparse kernel needs a separable geometry (no .xf, no X-axis tilt)")
    if kernel == "auto":
        return "sparse" if geometry.is_separable and device.type == "cpu" else "grid_sample"
    return kernel


def separable_matrix(
    geometry: TiltGeometry,
    weights: torch.Tensor,
    z_range: Optional[Tuple[int, int]] = None,
    device: torch.device = torch.device("cpu"),
    dtype: torch.dtype = torch.float32,
    z_block: int = 1,
    col_origin: int = 0,
    n_cols: Optional[int] = None,
) -> torch.Tensor:
    """The sparse back-projection matrix of a separable geometry.

    Args:
        geometry: a separable :class:`TiltGeometry`.
        weights: ``(n_used,)`` per-view weights folded into the matrix (e.g. radians).
        z_range: ``(z0, z1)`` output slices to cover (default all).
        z_block: rows are ordered (z block, x, z within the block): consecutive rows then
            read nearby detector columns, so one sweep over the images serves ``z_block``
            slices (large detectors would otherwise stream every image once per slice). The
            slices are padded to whole blocks; :func:`backproject_separable` drops the extras.
        col_origin: detector column of the images' first column (negative for images extended
            beyond the detector, as the fast network form uses); default 0.
        n_cols: image width (default: the binned detector width).

    Returns:
        CSR tensor ``(nz_padded * nx_out, n_used * n_cols)``: rows ``(z block, x, z in block)``
        (plain ``(z, x)`` for ``z_block = 1``), columns ``(view, u)``.
    """
    nz, _, nxo = geometry.output_shape
    z0, z1 = z_range if z_range is not None else (0, nz)
    z1 = z0 + -(-(z1 - z0) // z_block) * z_block  # pad to whole blocks
    n_views = len(geometry.used_views)
    nxd = geometry.binned_detector_shape[1] if n_cols is None else int(n_cols)
    # u = c0 ix + c1 iy + c2 iz + c3 (the detector column, TiltGeometry.detector_coordinates' sums
    # in its order, so the matrix is bit-identical to evaluating them voxel by voxel); iy = 0,
    # and separable geometries have c1 = 0.
    m = geometry.detector_affine().to(device)[:, 0]  # (views, 4) float64
    n_blocks = (z1 - z0) // z_block
    # rows (z block, x, z in block), entries (view, neighbour): built a few blocks at a time in
    # this final order, so the float64 temporaries stay small and nothing is permuted
    cols = empty((n_blocks, nxo, z_block, n_views, 2), torch.int32, device)
    vals = empty((n_blocks, nxo, z_block, n_views, 2), dtype, device)
    ix = torch.arange(nxo, dtype=torch.float64, device=device).view(1, nxo, 1, 1)
    x_part = m[:, 0] * ix + m[:, 1] * 0.0  # (1, nxo, 1, views)
    w = weights.to(device=device, dtype=dtype)
    view_base = torch.arange(n_views, device=device, dtype=torch.int32) * nxd
    step = max(1, _MATRIX_CHUNK // max(1, nxo * z_block * n_views))
    for b0 in range(0, n_blocks, step):
        b1 = min(n_blocks, b0 + step)
        iz = torch.arange(z0 + b0 * z_block, z0 + b1 * z_block, dtype=torch.float64, device=device)
        u = (x_part + m[:, 2] * iz.view(b1 - b0, 1, z_block, 1)) + m[:, 3]
        if col_origin:
            u = u - col_origin
        i0f = torch.floor(u)
        frac = (u - i0f).to(dtype)
        i0 = i0f.to(torch.int32)
        del u, i0f
        vals[b0:b1, ..., 0] = (1 - frac) * w * ((i0 >= 0) & (i0 < nxd))
        vals[b0:b1, ..., 1] = frac * w * ((i0 >= -1) & (i0 < nxd - 1))
        # Out-of-range neighbours get weight 0; clamp their column into the view's own block.
        cols[b0:b1, ..., 0] = view_base + i0.clamp(0, nxd - 1)
        cols[b0:b1, ..., 1] = view_base + (i0 + 1).clamp(0, nxd - 1)
    n_rows = (z1 - z0) * nxo
    per_row = 2 * n_views
    crow = torch.arange(0, n_rows * per_row + 1, per_row, device=device, dtype=torch.int32)
    with warnings.catch_warnings():  # "sparse CSR support is in beta": CSR @ dense is stable
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, cols.view(-1), vals.view(-1),
                                       size=(n_rows, n_views * nxd), check_invariants=False)


def backproject_separable(
    matrix: torch.Tensor,
    images_t: torch.Tensor,
    y_range: Tuple[int, int],
    nz: int,
    z_block: int = 1,
    transposed: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Apply a :func:`separable_matrix` to rows ``y0:y1``.

    Args:
        matrix: ``(nz_padded * nx_out, n_views * nx_det)`` CSR matrix built with ``z_block``.
        images_t: ``(n_views * nx_det, ny, C)`` filtered images, (view, u)-major: the layout
            :func:`to_separable_layout` makes once per reconstruction.
        y_range: ``(y0, y1)`` detector rows = output rows.
        nz: number of output slices wanted (the matrix may cover a few more: block padding).
        transposed: the matrix's transpose as CSR (:func:`transpose_csr`), for a gradient
            w.r.t. ``images_t``: without it torch transposes the matrix at every backward pass.

    Returns:
        ``(nz, y1 - y0, nx_out, C)`` back-projected slab.
    """
    y0, y1 = y_range
    rows = images_t[:, y0:y1].reshape(images_t.shape[0], -1)
    if transposed is not None and rows.requires_grad:
        out = _SparseApply.apply(matrix, transposed, rows)
    else:
        out = torch.sparse.mm(matrix, rows)  # (nz_padded * nx_out, (y1 - y0) * C)
    nzp = -(-nz // z_block) * z_block
    nxo = matrix.shape[0] // nzp
    if z_block == 1:
        return out.view(nz, nxo, y1 - y0, -1).permute(0, 2, 1, 3)
    blocks = out.view(nzp // z_block, nxo, z_block, y1 - y0, -1).permute(0, 2, 3, 1, 4)
    return blocks.reshape(nzp, y1 - y0, nxo, -1)[:nz]


def transpose_csr(matrix: torch.Tensor) -> torch.Tensor:
    """The transpose of a CSR matrix, as CSR (for :func:`backproject_separable`'s gradient)."""
    return matrix.to_sparse_coo().t().coalesce().to_sparse_csr()


class _SparseApply(torch.autograd.Function):
    """``matrix @ dense`` with the gradient ``transposed @ grad`` (no per-step transpose)."""

    @staticmethod
    def forward(ctx, matrix, transposed, dense):  # noqa: D102
        ctx.save_for_backward(transposed)
        return torch.sparse.mm(matrix, dense)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        (transposed,) = ctx.saved_tensors
        return None, None, torch.sparse.mm(transposed, grad.contiguous())


class SeparableSlabs:
    """:func:`backproject_separable` of one channel, slab after slab, straight from the images'
    own layout into contiguous slabs: the same values, without a re-ordered copy of the whole
    stack, with the result re-ordered by cache-friendly 2D transposes, and with its scratch
    buffers reused from slab to slab.

    For each slab the rows ``y0:y1`` of every view are transposed into the kernel's
    ``(view, u)``-major layout (a few MB for a few tens of rows: where the sparse product runs
    fastest, :data:`localet_core.reconstruction.wbp.KERNEL_ROWS`), multiplied, and each z block
    of the product, ``(nx_out, z_block * rows)``, is one transpose away from
    ``(z_block, rows, nx_out)``.

    Args:
        matrix: ``(nz_padded * nx_out, n_views * nx_det)`` CSR matrix built with ``z_block``.
        images: ``(n_views, ny, nx_det)`` filtered images.
        nz: number of output slices wanted (the matrix may cover a few more: block padding).
        max_rows: the most rows a slab will have (sizes the scratch buffers).
    """

    def __init__(self, matrix: torch.Tensor, images: torch.Tensor, nz: int, z_block: int = 1,
                 max_rows: int = 32) -> None:
        self.matrix = matrix
        self.images = images.contiguous()
        self.nz = nz
        self.z_block = z_block
        n, _, nxd = self.images.shape
        self.nzp = -(-nz // z_block) * z_block
        self.nxo = matrix.shape[0] // self.nzp
        device, dtype = self.images.device, self.images.dtype
        self._layout = empty((n * nxd * max_rows,), dtype, device)
        self._product = empty((self.nzp * self.nxo * max_rows,), dtype, device)
        self.max_rows = max_rows

    def __call__(self, y0: int, y1: int, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``(nz, y1 - y0, nx_out)`` back-projected rows ``y0:y1``, written into ``out`` (a
        contiguous tensor of that shape) when given."""
        rows = y1 - y0
        if rows > self.max_rows:
            raise ValueError(f"a slab of {rows} rows; at most {self.max_rows} were planned")
        n, _, nxd = self.images.shape
        nz, nxo, zb = self.nz, self.nxo, self.z_block
        layout = self._layout[:n * nxd * rows].view(n, nxd, rows)
        for v in range(n):  # (rows, nx_det) -> (nx_det, rows): a blocked transpose each
            layout[v].copy_(self.images[v, y0:y1].t())
        product = self._product[:self.nzp * nxo * rows].view(self.nzp * nxo, rows)
        # addmm with beta = 0 writes into product without a temporary (mm(out=) zero-fills a
        # fresh one per call: 32 MB of page faults per slab); product's old values are ignored
        torch.addmm(product, self.matrix, layout.view(n * nxd, rows), beta=0, out=product)
        blocks = product.view(self.nzp // zb, nxo, zb * rows)
        if out is None:
            out = empty((nz, rows, nxo), product.dtype, product.device)
        for b in range(self.nzp // zb):
            za, zc = b * zb, min(nz, (b + 1) * zb)
            if zc - za == zb:
                out[za:zc].view(zb * rows, nxo).copy_(blocks[b].t())
            else:  # the padded last block
                out[za:zc].copy_(blocks[b].t()[:(zc - za) * rows].view(zc - za, rows, nxo))
        return out


def backproject_separable_slab(
    matrix: torch.Tensor,
    images: torch.Tensor,
    y_range: Tuple[int, int],
    nz: int,
    z_block: int = 1,
) -> torch.Tensor:
    """One slab of :class:`SeparableSlabs`: ``(nz, y1 - y0, nx_out)`` from ``(n_views, ny,
    nx_det)`` images, the values of :func:`backproject_separable`."""
    y0, y1 = y_range
    return SeparableSlabs(matrix, images, nz, z_block, max_rows=y1 - y0)(y0, y1)


def to_separable_layout(images: torch.Tensor) -> torch.Tensor:
    """``(n_views, ny, nx[, C])`` -> contiguous ``(n_views * nx, ny, C)`` for the sparse kernel."""
    if images.dim() == 3:
        images = images.unsqueeze(-1)
    n, ny, nx, c = images.shape
    return images.permute(0, 2, 1, 3).reshape(n * nx, ny, c).contiguous()


def backproject_grid_sample(
    geometry: TiltGeometry,
    images: torch.Tensor,
    weights: torch.Tensor,
    y_range: Tuple[int, int],
    z_range: Optional[Tuple[int, int]] = None,
    max_elements: int = 1 << 25,
    detector_origin: Tuple[int, int] = (0, 0),
) -> torch.Tensor:
    """Back-project with bilinear sampling (any geometry, any device).

    Args:
        images: ``(n_used, ny, nx[, C])`` filtered images (binned raw frame).
        weights: ``(n_used,)`` per-view weights.
        y_range, z_range: output rows and slices to compute.
        max_elements: bound on the temporary (views x voxels x channels) per chunk.
        detector_origin: (row, column) detector index of ``images[:, 0, 0]``: images may be a
            band of rows, or extend beyond the detector (the fast network form); default (0, 0).

    Returns:
        ``(nz, y1 - y0, nx_out, C)`` slab on the images' device, images' dtype.
    """
    if images.dim() == 3:
        images = images.unsqueeze(-1)
    n, ny, nx, c = images.shape
    device, dtype = images.device, images.dtype
    nz_all, _, nxo = geometry.output_shape
    z0, z1 = z_range if z_range is not None else (0, nz_all)
    y0, y1 = y_range
    source = images.permute(0, 3, 1, 2)  # (N, C, H, W) for grid_sample
    out = torch.zeros(z1 - z0, y1 - y0, nxo, c, device=device, dtype=dtype)
    w = weights.to(device=device, dtype=dtype)
    # Normalised sampling coordinates (align_corners=False: pixel i spans [i - 0.5, i + 0.5])
    # are affine in the voxel index too: fold the normalisation into each view's matrix (float64),
    # then one float32 matmul per chunk makes the whole grid.
    affine = geometry.detector_affine()  # (views, 2, 4) -> (col, row)
    affine[:, 0, 3] -= detector_origin[1]  # images may start off the detector's first pixel
    affine[:, 1, 3] -= detector_origin[0]
    scale = torch.tensor([2.0 / nx, 2.0 / ny], dtype=torch.float64).view(1, 2, 1)
    affine = affine * scale
    affine[:, :, 3] += torch.tensor([1.0 / nx - 1, 1.0 / ny - 1], dtype=torch.float64)
    affine = affine.to(device=device, dtype=torch.float32)
    per_slice = max(1, n * (y1 - y0) * nxo * c)
    step = max(1, min(z1 - z0, max_elements // per_slice))
    view_step = n if per_slice <= max_elements else max(1, max_elements // ((y1 - y0) * nxo * c))
    iy, ix = torch.meshgrid(torch.arange(y0, y1, device=device, dtype=torch.float32),
                            torch.arange(nxo, device=device, dtype=torch.float32), indexing="ij")
    for za in range(z0, z1, step):
        zb = min(z1, za + step)
        iz = torch.arange(za, zb, device=device, dtype=torch.float32).view(-1, 1, 1).expand(-1, y1 - y0, nxo)
        base = torch.stack([ix.expand_as(iz), iy.expand_as(iz), iz, torch.ones_like(iz)], dim=-1)
        acc = out[za - z0:zb - z0]
        for va in range(0, n, view_step):
            vb = min(n, va + view_step)
            # (views, z*y*x, 4) @ (views, 4, 2) -> (views, z*y, x, 2) in (col, row) = grid (x, y)
            grid = torch.matmul(base.reshape(1, -1, 4), affine[va:vb].transpose(1, 2))
            grid = grid.view(vb - va, -1, nxo, 2).to(dtype)
            sampled = F.grid_sample(source[va:vb], grid, mode="bilinear", padding_mode="zeros",
                                    align_corners=False)  # (views, C, z*y, x)
            sampled = torch.einsum("v,vcpx->cpx", w[va:vb], sampled)
            acc += sampled.view(c, zb - za, y1 - y0, nxo).permute(1, 2, 3, 0)
    return out
