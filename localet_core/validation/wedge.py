"""The missing wedge of a single-axis tilt series, as a mask on a Fourier grid.

Grids and frequencies follow :mod:`localet_core.validation.fourier` (volumes ``V[z, y, x]``,
Z along the beam, the tilt axis along Y; frequencies in cycles/pixel; angles in degrees).
"""
from __future__ import annotations

import math
from typing import Sequence, Tuple

import torch

from localet_core.errors import InputError
from localet_core.validation.fourier import Shape3, axis_freqs, check_shape3

__all__ = ["missing_wedge_mask", "check_tilt_range", "wedge_mask_xz"]


def check_tilt_range(tilt_min: float, tilt_max: float) -> Tuple[float, float]:
    """``(tilt_min, tilt_max)`` in degrees as floats, ``-90 < min <= max < 90`` (else
    :class:`InputError`)."""
    lo, hi = float(tilt_min), float(tilt_max)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise InputError("tilt range", f"angles must be finite numbers, got [{lo}, {hi}]")
    if not (-90.0 < lo <= hi < 90.0):
        raise InputError("tilt range", f"need -90 < min <= max < 90 degrees, got [{lo:g}, {hi:g}]")
    return lo, hi


def wedge_mask_xz(shape: Shape3, tilt_min: float, tilt_max: float, rfft: bool) -> torch.Tensor:
    """:func:`missing_wedge_mask` on the (kz, kx) plane only: bool ``(nz, 1, nkx)``."""
    lo, hi = check_tilt_range(tilt_min, tilt_max)
    fz, _, fx = axis_freqs(shape, rfft)
    fz, fx = fz.view(-1, 1), fx.view(1, -1)
    measured = torch.zeros(fz.shape[0], fx.shape[1], dtype=torch.bool)
    # A Nyquist frequency (-0.5 along an even axis) is also +0.5: a voxel there counts as
    # measured if either alias is, which keeps the mask Friedel-symmetric on the full grid
    # and Hermitian-consistent on the rfft grid.
    for gz in (fz, torch.where(fz == -0.5, -fz, fz)):
        for gx in (fx, torch.where(fx.abs() == 0.5, -fx, fx)):
            # A view at angle theta measures the (kx, kz) directions +-(cos theta, -sin theta),
            # the line through the origin at angle -theta from the kx axis. The tilt angle
            # whose plane holds (kx, kz) is thus theta = -atan(kz / kx), folded into (-90, 90].
            theta = torch.rad2deg(torch.atan2(-gz, gx))  # in (-180, 180]
            theta = torch.where(theta > 90.0, theta - 180.0, theta)
            theta = torch.where(theta <= -90.0, theta + 180.0, theta)
            eps = 1e-9
            measured |= (theta >= lo - eps) & (theta <= hi + eps)
    measured |= (fx == 0) & (fz == 0)  # the ky axis lies in every view's plane
    return (~measured).unsqueeze(1)


def missing_wedge_mask(shape: Sequence[int], tilt_min: float, tilt_max: float,
                       rfft: bool = True) -> torch.Tensor:
    """Fourier voxels that a single-axis tilt series over ``[tilt_min, tilt_max]`` never measures.

    Geometry: the volume is ``V[z, y, x]`` with Z along the beam and the tilt axis along Y. A
    view at tilt angle ``theta`` (degrees) projects along the beam direction
    ``(sin theta, 0, cos theta)`` in (x, y, z); by the Fourier slice theorem it measures the
    central plane perpendicular to it, spanned by ``(cos theta, 0, -sin theta)`` and
    ``(0, 1, 0)`` in (kx, ky, kz). A frequency ``(kz, ky, kx)`` is thus measured iff the tilt
    angle ``-atan(kz / kx)`` of the plane through it (folded into (-90, 90]; the direction,
    not its sign, matters by Friedel symmetry) lies in ``[tilt_min, tilt_max]``. For a
    symmetric range ``+-a`` this is ``|atan2(kz, |kx|)| <= a``. Directions use physical
    frequencies ``kz/nz`` and ``kx/nx``, so non-cubic boxes are handled. The whole ky axis
    (``kx = kz = 0``, origin included) is measured; ``ky`` itself never matters. Boundaries
    are inclusive. A Nyquist frequency of an even axis stands for both +0.5 and -0.5; such a
    voxel is measured if either alias is, so the mask is Friedel-symmetric (full grid) and
    consistent with the Hermitian symmetry of the rfft grid.

    Args:
        shape: real-space shape ``(nz, ny, nx)``.
        tilt_min, tilt_max: tilt range in degrees, ``-90 < tilt_min <= tilt_max < 90``.
        rfft: return the ``rfftn`` half grid ``(nz, ny, nx//2+1)`` (default) or the full
            ``fftn`` grid ``(nz, ny, nx)``.

    Returns:
        bool tensor on that grid, True inside the missing wedge (not measured).

    Raises:
        InputError: the tilt range is not finite or not within (-90, 90) with min <= max.
    """
    shape = check_shape3(shape)
    xz = wedge_mask_xz(shape, tilt_min, tilt_max, rfft)
    return xz.expand(shape[0], shape[1], xz.shape[2]).clone()
