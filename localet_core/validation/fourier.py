"""Fourier grids of a real volume: frequencies, radii, shells and Hermitian weights.

Conventions (shared by :mod:`localet_core.validation.fsc`, :mod:`~localet_core.validation.wedge`
and :mod:`~localet_core.validation.metrics`):

* Volumes are real tensors ``V[z, y, x]`` of any shape ``(nz, ny, nx)`` (not necessarily a
  cube), oriented as IMOD's ``tilt -RotateBy90``: Z along the beam, the tilt axis along Y.
* Fourier grids are the ``torch.fft.rfftn`` half grid, shape ``(nz, ny, nx // 2 + 1)``, unless
  a function says otherwise. Frequencies are in cycles per pixel along each axis,
  ``kz / nz``, ``ky / ny``, ``kx / nx`` with integer ``k`` from ``torch.fft.fftfreq`` order,
  so the radius ``|k| = sqrt((kz/nz)^2 + (ky/ny)^2 + (kx/nx)^2)`` is physical for an
  isotropic pixel, whatever the box shape.
* Shells have width ``1 / N`` cycles/pixel with ``N = max(nz, ny, nx)``: shell ``i`` holds the
  frequencies with ``round(|k| N) == i``, for ``i = 0 .. N // 2`` (shell ``N // 2`` is the one
  at Nyquist, 0.5 cycles/pixel); the corners of the box beyond it are left out.
* Each rfft coefficient stands for itself and its Friedel mate, so it is weighted 2, except the
  self-conjugate planes ``kx = 0`` and (even ``nx``) ``kx = nx / 2``, weighted 1
  (:func:`hermitian_weights`). Voxel counts per shell are therefore those of the full Fourier
  sphere.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import torch

from localet_core.errors import InputError

__all__ = ["Shape3", "check_shape3", "axis_freqs", "fourier_radius", "n_shells", "shell_index",
           "hermitian_weights"]

Shape3 = Tuple[int, int, int]


def check_shape3(shape: Sequence[int], source: str = "shape") -> Shape3:
    """``shape`` as three positive ints ``(nz, ny, nx)``; :class:`InputError` naming ``source``."""
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 1:
        raise InputError(source, f"expected a 3-D shape (nz, ny, nx), got {shape}")
    return shape  # type: ignore[return-value]


def axis_freqs(shape: Shape3, rfft: bool = True) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Frequencies (cycles/pixel, float64) along z, y, x, broadcastable to the Fourier grid."""
    nz, ny, nx = shape
    fz = torch.fft.fftfreq(nz, dtype=torch.float64).view(nz, 1, 1)
    fy = torch.fft.fftfreq(ny, dtype=torch.float64).view(1, ny, 1)
    fx = (torch.fft.rfftfreq(nx, dtype=torch.float64) if rfft
          else torch.fft.fftfreq(nx, dtype=torch.float64))
    return fz, fy, fx.view(1, 1, -1)


def fourier_radius(shape: Sequence[int], rfft: bool = True) -> torch.Tensor:
    """Radial spatial frequency of every Fourier voxel.

    Args:
        shape: real-space shape ``(nz, ny, nx)``.
        rfft: the ``rfftn`` half grid ``(nz, ny, nx//2+1)`` (default) or the full ``fftn`` grid.

    Returns:
        float64 tensor on the Fourier grid, ``sqrt((kz/nz)^2 + (ky/ny)^2 + (kx/nx)^2)`` in
        cycles/pixel (0 at the origin, 0.5 at Nyquist along an axis).
    """
    fz, fy, fx = axis_freqs(check_shape3(shape), rfft)
    return torch.sqrt(fz * fz + fy * fy + fx * fx)


def n_shells(shape: Sequence[int]) -> int:
    """Number of shells, ``max(shape) // 2 + 1`` (shell 0 is the origin)."""
    return max(check_shape3(shape)) // 2 + 1


def shell_index(shape: Sequence[int], rfft: bool = True) -> torch.Tensor:
    """Shell of every Fourier voxel: ``round(|k| * max(shape))`` (int64).

    Values run from 0 (origin) to beyond ``max(shape) // 2`` in the corners of the box; the
    FSC uses only shells ``0 .. max(shape) // 2`` (up to Nyquist).
    """
    shape = check_shape3(shape)
    return torch.floor(fourier_radius(shape, rfft) * max(shape) + 0.5).to(torch.int64)


def hermitian_weights(shape: Sequence[int]) -> torch.Tensor:
    """Weight of each ``rfftn`` column for sums over the full Fourier sphere.

    Returns:
        float64 tensor of shape ``(1, 1, nx//2+1)``: 2 for columns whose Friedel mates are
        missing from the half grid, 1 for ``kx = 0`` and, for even ``nx``, ``kx = nx/2``.
    """
    nx = check_shape3(shape)[2]
    w = torch.full((nx // 2 + 1,), 2.0, dtype=torch.float64)
    w[0] = 1.0
    if nx % 2 == 0:
        w[-1] = 1.0
    return w.view(1, 1, -1)
