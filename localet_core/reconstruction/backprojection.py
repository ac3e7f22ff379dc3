"""Back-projection: the adjoint of projection, with linear interpolation, for 1 or C channels.

Two kernels compute the same sum (each voxel gets, from every used view, the image value
linearly interpolated at the voxel's projection, times the view's weight):

* ``sparse`` (separable geometries: no ``.xf``, no X-axis tilt; the matrix and the slab loop are
  :mod:`localet_core.reconstruction.separable`'s, shared with the torch-free WBP). Output row ``y`` then reads only
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

from localet_core.reconstruction.geometry import TiltGeometry
from localet_core.reconstruction.separable import SeparableSlabs, separable_matrix_arrays

__all__ = ["KERNELS", "choose_kernel", "separable_matrix", "backproject_separable", "transpose_csr",
           "SeparableSlabs", "backproject_separable_slab", "to_separable_layout", "backproject_grid_sample"]

KERNELS = ("auto", "sparse", "grid_sample")

_NUMPY_DTYPES = {torch.float32: "float32", torch.float64: "float64"}


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
    """The sparse back-projection matrix of a separable geometry, as a torch CSR tensor
    (:func:`~localet_core.reconstruction.separable.separable_matrix_arrays`, built on the CPU).

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
    if dtype not in _NUMPY_DTYPES:
        raise ValueError(f"the matrix is float32 or float64, not {dtype}")
    w = weights.detach().cpu().numpy() if isinstance(weights, torch.Tensor) else weights
    indptr, indices, data, shape = separable_matrix_arrays(
        geometry, w, z_range=z_range, dtype=_NUMPY_DTYPES[dtype], z_block=z_block,
        col_origin=col_origin, n_cols=n_cols, threads=torch.get_num_threads())
    device = torch.device(device)
    with warnings.catch_warnings():  # "sparse CSR support is in beta": CSR @ dense is stable
        warnings.simplefilter("ignore", UserWarning)
        matrix = torch.sparse_csr_tensor(torch.from_numpy(indptr), torch.from_numpy(indices),
                                         torch.from_numpy(data), size=shape, check_invariants=False)
        return matrix if device.type == "cpu" else matrix.to(device)


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
