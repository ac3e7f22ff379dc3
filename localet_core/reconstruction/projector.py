"""Forward projection: the exact adjoint of :mod:`localet_core.reconstruction.backprojection` (unit weights).

Sharing one interpolation model between projector and back-projector keeps SIRT consistent and
lets the simulator make data in the very geometry the reconstruction assumes. The projector is
voxel-driven (each voxel splats into its two, or four, nearest detector pixels), so it
approximates line integrals in voxel units, including the 1/cos(theta) path lengthening.
"""
from __future__ import annotations

import functools
from typing import Union

import numpy as np
import torch

from localet_core.reconstruction.backprojection import backproject_grid_sample, choose_kernel, separable_matrix
from localet_core.reconstruction.geometry import TiltGeometry


class SeparableOperators:
    """Back-projection ``B`` and projection ``B^T`` matrices of a separable geometry (unit view
    weights), built once and applied to any set of rows.

    ``back(images_rows)``: ``(n_used * nx_det, R)`` -> ``(nz * nx_out, R)``;
    ``project(volume_rows)``: ``(nz * nx_out, R)`` -> ``(n_used * nx_det, R)``, where ``R`` runs
    over detector rows = output rows (times channels).
    """

    def __init__(self, geometry: TiltGeometry, device: torch.device = torch.device("cpu")) -> None:
        n_used = len(geometry.used_views)
        self.geometry = geometry
        self.back_matrix = separable_matrix(geometry, torch.ones(n_used), device=device)
        self.project_matrix = self.back_matrix.t().to_sparse_csr()

    def back(self, images_rows: torch.Tensor) -> torch.Tensor:
        return torch.sparse.mm(self.back_matrix, images_rows)

    def project(self, volume_rows: torch.Tensor) -> torch.Tensor:
        return torch.sparse.mm(self.project_matrix, volume_rows)


@functools.lru_cache(maxsize=2)
def _cached_operators(geometry: TiltGeometry, device: torch.device) -> SeparableOperators:
    """Operators of the last geometries used: simulations project many volumes through one
    geometry, and building the transposed matrix costs several times the projection itself.
    Only separable geometries come here (no .xf: TiltGeometry equality does not compare it)."""
    return SeparableOperators(geometry, device)


def project_general(volume: torch.Tensor, geometry: TiltGeometry) -> torch.Tensor:
    """Adjoint of :func:`backproject_grid_sample` (any geometry) by reverse-mode differentiation.

    Args:
        volume: ``(nz, ny, nx)`` on the output grid.

    Returns:
        ``(n_used, ny_b, nx_b)`` projections.
    """
    n_used = len(geometry.used_views)
    ny_b, nx_b = geometry.binned_detector_shape
    probe = torch.zeros(n_used, ny_b, nx_b, device=volume.device, dtype=volume.dtype, requires_grad=True)
    ones = torch.ones(n_used, device=volume.device)
    with torch.enable_grad():
        back = backproject_grid_sample(geometry, probe, ones, (0, geometry.output_shape[1]))[..., 0]
        (grad,) = torch.autograd.grad((back * volume).sum(), probe)
    return grad


def forward_project(
    volume: Union[np.ndarray, torch.Tensor],
    geometry: TiltGeometry,
) -> torch.Tensor:
    """Project ``volume`` (``(nz, ny, nx)`` = ``geometry.output_shape``) onto every used view.

    Returns:
        ``(n_used, ny_b, nx_b)`` float32 projections on the volume's device (binned raw frame:
        with an ``.xf`` the result is the raw, unaligned image the alignment maps back).
    """
    vol = torch.as_tensor(volume, dtype=torch.float32)
    if tuple(vol.shape) != geometry.output_shape:
        raise ValueError(f"volume shape {tuple(vol.shape)} differs from the geometry's output "
                         f"shape {geometry.output_shape}")
    with torch.no_grad():
        if choose_kernel(geometry, vol.device) != "sparse":
            return project_general(vol, geometry)
        nz, ny, nx = vol.shape
        ops = _cached_operators(geometry, vol.device)
        rows = vol.permute(0, 2, 1).reshape(nz * nx, ny)
        proj = ops.project(rows)  # (n_used * nx_det, ny)
        n_used = len(geometry.used_views)
        return proj.view(n_used, -1, ny).permute(0, 2, 1).contiguous()
