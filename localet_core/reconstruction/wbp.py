"""Weighted (filtered) back-projection of a tilt series, slab by slab under a memory budget.

    volume = sum over used views of  weight(view) * backproject(ramp_filter(view))

Output slabs run along Y (the tilt axis): each is ``(nz, rows, nx)`` and can be written to disk
as soon as it is done, so the whole volume never has to sit in memory.
"""
from __future__ import annotations

from typing import Callable, Iterator, Optional, Tuple, Union

import numpy as np
import torch

from localet_core.device import memory_budget, resolve_device
from localet_core.pipeline import Slab, assemble_slabs, slab_ranges
from localet_core.reconstruction.backprojection import (
    SeparableSlabs,
    backproject_grid_sample,
    backproject_separable,
    choose_kernel,
    separable_matrix,
    to_separable_layout,
)
from localet_core.reconstruction.filters import RampFilter, bin_images, ramp_filter_oblique, ramp_filter_rows
from localet_core.reconstruction.geometry import TiltGeometry
from localet_core.reconstruction.separable import KERNEL_ROWS, Z_BLOCK, SlabBuffers, rows_per_slab, sparse_matrix_bytes

__all__ = ["Z_BLOCK", "KERNEL_ROWS", "SlabBuffers", "prepare_views", "filter_views", "rows_per_slab",
           "sparse_matrix_bytes", "iter_backprojection_slabs", "iter_wbp_slabs", "weighted_backprojection"]

# The last sparse matrix built, by (geometry, weights, device, dtype, z_block): a command that
# reconstructs several stacks of one geometry (a series and its odd/even halves) builds it once.
_MATRIX_CACHE: dict = {}


def prepare_views(
    stack: Union[np.ndarray, torch.Tensor],
    geometry: TiltGeometry,
    ramp: Optional[RampFilter],
    device: torch.device,
) -> torch.Tensor:
    """Select the used views, bin them, and ramp-filter them in the aligned frame.

    Args:
        stack: ``(n_views, ny, nx)`` raw stack (all views, stack order), any real dtype.
        ramp: filter settings, or ``None`` to skip filtering (plain back-projection).

    Returns:
        ``(n_used, ny_b, nx_b)`` float32 images on ``device``.
    """
    geometry.check_stack(tuple(stack.shape))
    used = list(geometry.used_views)
    if len(used) == stack.shape[0]:  # every view: no copy of the stack just to select them
        views = torch.as_tensor(np.asarray(stack) if isinstance(stack, np.ndarray) else stack)
    else:
        views = torch.as_tensor(np.asarray(stack[used]) if isinstance(stack, np.ndarray) else stack[used])
    shared = views
    views = views.to(device=device, dtype=torch.float32)
    views = bin_images(views, geometry.binning, geometry.crop_offsets)
    views = filter_views(views, geometry, ramp)
    if views.device == shared.device and views.untyped_storage().data_ptr() == shared.untyped_storage().data_ptr():
        views = views.clone()  # never hand back the caller's stack itself
    return views


def filter_views(views: torch.Tensor, geometry: TiltGeometry, ramp: Optional[RampFilter]) -> torch.Tensor:
    """Ramp-filter binned used views ``(n_used, ny_b, nx_b)`` along the aligned frame's X
    (``None``: returned unchanged)."""
    if ramp is None:
        return views
    used = list(geometry.used_views)
    if geometry.xf is None:
        return ramp_filter_rows(views, ramp)
    linear = torch.as_tensor(geometry.xf[used, :, :2], device=views.device)
    return ramp_filter_oblique(views, linear, ramp)


def _cached_matrix(geometry: TiltGeometry, weights: torch.Tensor, device: torch.device,
                   dtype: torch.dtype, z_block: int) -> torch.Tensor:
    """:func:`separable_matrix` of ``geometry``, reused when the last one was for the same
    geometry, weights, device, dtype and block (one is kept: building a new one drops it first)."""
    key = (geometry, tuple(float(w) for w in weights.tolist()), str(device), dtype, z_block)
    matrix = _MATRIX_CACHE.get(key)
    if matrix is None:
        _MATRIX_CACHE.clear()
        matrix = separable_matrix(geometry, weights, device=device, dtype=dtype, z_block=z_block)
        _MATRIX_CACHE[key] = matrix
    return matrix


def iter_backprojection_slabs(
    images: torch.Tensor,
    geometry: TiltGeometry,
    weights: torch.Tensor,
    kernel: str = "auto",
    budget: Optional[int] = None,
    buffers: Optional["SlabBuffers"] = None,
) -> Iterator[Tuple[int, int, torch.Tensor]]:
    """Back-project prepared images slab by slab.

    Args:
        images: ``(n_used, ny_b, nx_b[, C])`` images from :func:`prepare_views` (or channels).
        weights: ``(n_used,)`` per-view weights.
        kernel: ``auto``, ``sparse`` or ``grid_sample`` (see :mod:`localet_core.reconstruction.backprojection`).
        budget: bytes for the working set (default: half the free memory of the device).
        buffers: where the sparse kernel's one-channel slabs are written (:class:`SlabBuffers`,
            CPU); default: a new tensor per slab.

    Yields:
        ``(y0, y1, slab)`` with ``slab`` of shape ``(nz, y1 - y0, nx_out, C)`` on the device.
    """
    device = images.device
    requested = kernel
    kernel = choose_kernel(geometry, device, kernel)
    nz, ny, _ = geometry.output_shape
    channels = images.shape[-1] if images.dim() == 4 else 1
    budget = memory_budget(device, budget)
    if requested == "auto" and kernel == "sparse" and sparse_matrix_bytes(geometry, images.shape[0]) > budget:
        kernel = "grid_sample"  # the whole-volume matrix would not fit the memory budget
    rows = rows_per_slab(geometry, budget, channels)
    if kernel == "sparse":
        z_block = Z_BLOCK if nz >= 2 * Z_BLOCK else 1
        matrix = _cached_matrix(geometry, weights, device, images.dtype, z_block)
        if channels == 1:
            rows = min(rows, KERNEL_ROWS)
            kernel_slabs = SeparableSlabs(matrix, images if images.dim() == 3 else images[..., 0], nz, z_block, rows)
            for y0, y1 in slab_ranges(ny, rows):
                out = None if buffers is None else torch.from_numpy(buffers.take((nz, y1 - y0, kernel_slabs.nxo)))
                yield y0, y1, kernel_slabs(y0, y1, out).unsqueeze(-1)
            return
        layout = to_separable_layout(images)
        for y0, y1 in slab_ranges(ny, rows):
            yield y0, y1, backproject_separable(matrix, layout, (y0, y1), nz, z_block)
    else:
        for y0, y1 in slab_ranges(ny, rows):
            # the sampling temporaries (grid, samples: ~32 bytes per view x voxel) within the budget
            yield y0, y1, backproject_grid_sample(geometry, images, weights, (y0, y1),
                                                  max_elements=min(1 << 25, max(1 << 16, budget // 32)))


def iter_wbp_slabs(
    stack: Union[np.ndarray, torch.Tensor],
    geometry: TiltGeometry,
    ramp: Optional[RampFilter] = RampFilter(),
    device: Union[str, torch.device] = "auto",
    kernel: str = "auto",
    budget: Optional[int] = None,
) -> Iterator[Slab]:
    """Weighted back-projection of ``stack``, yielded as ``(y0, y1, slab)`` numpy float32 slabs
    ``(nz, y1 - y0, nx_out)`` in output order. See :func:`weighted_backprojection`."""
    device = resolve_device(device)
    images = prepare_views(stack, geometry, ramp, device)
    weights = torch.as_tensor(geometry.view_weights(), dtype=torch.float32)
    buffers = SlabBuffers() if device.type == "cpu" else None
    with torch.no_grad():
        for y0, y1, slab in iter_backprojection_slabs(images, geometry, weights, kernel, budget, buffers):
            slab = slab[..., 0]
            yield y0, y1, buffers.lend(slab) if buffers is not None else slab.cpu().numpy()


def weighted_backprojection(
    stack: Union[np.ndarray, torch.Tensor],
    geometry: TiltGeometry,
    ramp: Optional[RampFilter] = RampFilter(),
    device: Union[str, torch.device] = "auto",
    kernel: str = "auto",
    budget: Optional[int] = None,
    on_slab: Optional[Callable[[int, int], None]] = None,
) -> np.ndarray:
    """Reconstruct a whole volume in memory by weighted back-projection.

    Args:
        stack: ``(n_views, ny, nx)`` raw stack, all views in stack order.
        geometry: the tilt geometry (angles, alignment, output size, binning...).
        ramp: ramp filter settings; ``None`` for an unfiltered back-projection.
        device: ``auto``, ``cpu`` or ``cuda:N``.
        kernel: back-projection kernel (``auto`` picks the fastest that applies).
        budget: working-memory bound in bytes.
        on_slab: called with ``(y0, y1)`` after each slab (progress).

    Returns:
        ``(nz, ny_b, nx_out)`` float32 volume, ``V[z, y, x]`` in IMOD's RotateBy90 orientation,
        in density units (for a complete tilt range the reconstruction of a density is itself).
    """
    return assemble_slabs(geometry.output_shape,
                          iter_wbp_slabs(stack, geometry, ramp, device, kernel, budget), on_slab)
