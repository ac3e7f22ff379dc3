"""SIRT: the simultaneous iterative reconstruction technique, a quality baseline for WBP.

    x <- x + relaxation * C * Bp( R * (b - Pj(x)) )

with ``Pj`` the projector (the exact adjoint of the unweighted back-projection ``Bp`` of
:mod:`localet_core.reconstruction.backprojection`, so both share one interpolation model), ``R`` the inverse
ray sums ``1 / Pj(1)`` and ``C`` the inverse voxel sums ``1 / Bp(1)``. Each view is mean-subtracted
first: a constant offset per view is inconsistent with any finite slab and would leave streaks.

Separable geometries run slab by slab along Y (every row is an independent 2D problem); others
(``.xf``, X-axis tilt) iterate on the whole volume.
"""
from __future__ import annotations

from typing import Callable, Iterator, Optional, Tuple, Union

import numpy as np
import torch

from localet_core.config import SIRT_ITERATIONS, SIRT_RELAXATION
from localet_core.device import memory_budget, resolve_device
from localet_core.errors import FieldError
from localet_core.pipeline import Slab, assemble_slabs
from localet_core.reconstruction.backprojection import backproject_grid_sample, choose_kernel, to_separable_layout
from localet_core.reconstruction.geometry import TiltGeometry
from localet_core.reconstruction.projector import SeparableOperators, project_general
from localet_core.reconstruction.wbp import prepare_views, rows_per_slab


def _safe_reciprocal(t: torch.Tensor) -> torch.Tensor:
    return torch.where(t > 1e-6, 1.0 / t.clamp(min=1e-6), torch.zeros_like(t))


def _sirt_separable(
    images: torch.Tensor, geometry: TiltGeometry, iterations: int, relaxation: float, budget: int
) -> Iterator[Tuple[int, int, torch.Tensor]]:
    nz, ny, nxo = geometry.output_shape
    ops = SeparableOperators(geometry, images.device)
    inv_ray = _safe_reciprocal(ops.project(torch.ones(ops.back_matrix.shape[0], 1, device=images.device)))
    inv_vox = _safe_reciprocal(ops.back(torch.ones(ops.back_matrix.shape[1], 1, device=images.device)))
    layout = to_separable_layout(images)[..., 0]  # (views * nx_det, ny)
    rows = max(1, rows_per_slab(geometry, budget) // 2)
    for y0 in range(0, ny, rows):
        y1 = min(ny, y0 + rows)
        b = layout[:, y0:y1].contiguous()
        x = torch.zeros(ops.back_matrix.shape[0], y1 - y0, device=images.device)
        for _ in range(iterations):
            x += relaxation * inv_vox * ops.back(inv_ray * (b - ops.project(x)))
        yield y0, y1, x.view(nz, nxo, y1 - y0).permute(0, 2, 1)


def _sirt_general(
    images: torch.Tensor, geometry: TiltGeometry, iterations: int, relaxation: float
) -> torch.Tensor:
    ny = geometry.output_shape[1]
    ones_w = torch.ones(images.shape[0], device=images.device)

    def back(img: torch.Tensor) -> torch.Tensor:
        return backproject_grid_sample(geometry, img, ones_w, (0, ny))[..., 0]

    inv_ray = _safe_reciprocal(project_general(torch.ones(geometry.output_shape, device=images.device), geometry))
    inv_vox = _safe_reciprocal(back(torch.ones_like(images)))
    x = torch.zeros(geometry.output_shape, device=images.device)
    for _ in range(iterations):
        x += relaxation * inv_vox * back(inv_ray * (images - project_general(x, geometry)))
    return x


def iter_sirt_slabs(
    stack: Union[np.ndarray, torch.Tensor],
    geometry: TiltGeometry,
    iterations: int = SIRT_ITERATIONS,
    relaxation: float = SIRT_RELAXATION,
    device: Union[str, torch.device] = "auto",
    budget: Optional[int] = None,
) -> Iterator[Slab]:
    """SIRT reconstruction yielded as ``(y0, y1, slab)`` numpy float32 slabs ``(nz, rows, nx)``.

    Args:
        stack: ``(n_views, ny, nx)`` raw stack (all views, stack order).
        iterations: number of SIRT iterations (more: sharper and noisier).
        relaxation: step in (0, 2); 1 is the classic choice.
    """
    if iterations < 1:
        raise FieldError("iterations", f"must be at least 1, got {iterations}")
    if not 0 < relaxation < 2:
        raise FieldError("relaxation", f"must lie between 0 and 2, got {relaxation:g}")
    device = resolve_device(device)
    images = prepare_views(stack, geometry, None, device)
    images = images - images.mean(dim=(1, 2), keepdim=True)
    with torch.no_grad():
        if choose_kernel(geometry, device) == "sparse":
            for y0, y1, slab in _sirt_separable(images, geometry, iterations, relaxation,
                                                memory_budget(device, budget)):
                yield y0, y1, slab.cpu().numpy()
        else:
            volume = _sirt_general(images, geometry, iterations, relaxation).cpu().numpy()
            yield 0, volume.shape[1], volume


def sirt(
    stack: Union[np.ndarray, torch.Tensor],
    geometry: TiltGeometry,
    iterations: int = SIRT_ITERATIONS,
    relaxation: float = SIRT_RELAXATION,
    device: Union[str, torch.device] = "auto",
    budget: Optional[int] = None,
    on_slab: Optional[Callable[[int, int], None]] = None,
) -> np.ndarray:
    """Whole-volume SIRT: ``(nz, ny_b, nx_out)`` float32, same grid as :func:`weighted_backprojection`."""
    return assemble_slabs(geometry.output_shape,
                          iter_sirt_slabs(stack, geometry, iterations, relaxation, device, budget), on_slab)
