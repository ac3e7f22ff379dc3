"""Analytic phantoms: 3D Gaussian blobs and their exact projections, written straight from
IMOD's conventions (docs/geometry.md) and independent of localet_core's geometry code, so tests
and benchmarks can check the geometry against them."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import numpy as np

Blob = Tuple[float, float, float, float]  # (x, y, z, amplitude), centred specimen pixels


def blob_projections(blobs: Sequence[Blob], angles: Sequence[float], shape: Tuple[int, int],
                     sigma: float = 2.0, xf: Optional[np.ndarray] = None) -> np.ndarray:
    """Exact line integrals ``(n_views, ny, nx)`` float32.

    Aligned view: u = x cos(theta) + z sin(theta), v = y (relative to ((nx-1)/2, (ny-1)/2)).
    With ``xf`` (n, 2, 3) raw->aligned, the raw image is ``raw(r) = aligned(A r + d)``.
    """
    ny, nx = shape
    rows, cols = np.meshgrid(np.arange(ny) - (ny - 1) / 2, np.arange(nx) - (nx - 1) / 2, indexing="ij")
    out = np.zeros((len(angles), ny, nx), dtype=np.float64)
    for k, theta in enumerate(np.deg2rad(np.asarray(angles, dtype=float))):
        u, v = cols, rows
        if xf is not None:
            a, d = xf[k, :, :2], xf[k, :, 2]
            u, v = a[0, 0] * cols + a[0, 1] * rows + d[0], a[1, 0] * cols + a[1, 1] * rows + d[1]
        for x, y, z, amp in blobs:
            u0 = x * np.cos(theta) + z * np.sin(theta)
            out[k] += amp * np.sqrt(2 * np.pi) * sigma * np.exp(-((u - u0) ** 2 + (v - y) ** 2) / (2 * sigma**2))
    return out.astype(np.float32)


def blob_volume(blobs: Sequence[Blob], shape: Tuple[int, int, int], sigma: float = 2.0) -> np.ndarray:
    """The blobs on an output grid ``(nz, ny, nx)`` with centres (n-1)/2."""
    nz, ny, nx = shape
    z, y, x = np.meshgrid(*(np.arange(n) - (n - 1) / 2 for n in shape), indexing="ij")
    vol = np.zeros(shape)
    for bx, by, bz, amp in blobs:
        vol += amp * np.exp(-((x - bx) ** 2 + (y - by) ** 2 + (z - bz) ** 2) / (2 * sigma**2))
    return vol.astype(np.float32)


def peak_index(volume: np.ndarray, near: Tuple[int, int, int], radius: int = 3) -> Tuple[int, int, int]:
    """Index of the maximum within ``radius`` of ``near``."""
    lo = [max(0, c - radius) for c in near]
    sub = volume[lo[0]:near[0] + radius + 1, lo[1]:near[1] + radius + 1, lo[2]:near[2] + radius + 1]
    idx = np.unravel_index(np.argmax(sub), sub.shape)
    return tuple(int(i + start) for i, start in zip(idx, lo))


def rotation_xf(n_views: int, angle_deg: float, shift: Tuple[float, float], scale: float = 1.0) -> np.ndarray:
    """(n, 2, 3) .xf transforms: the same rotation/scale, shifts varying a little per view."""
    c, s = np.cos(np.deg2rad(angle_deg)) * scale, np.sin(np.deg2rad(angle_deg)) * scale
    xf = np.zeros((n_views, 2, 3))
    for k in range(n_views):
        xf[k] = [[c, -s, shift[0] + 0.3 * np.sin(k)], [s, c, shift[1] - 0.2 * np.cos(k)]]
    return xf


def peak_position(volume: np.ndarray, near: Sequence[float], radius: int = 3) -> np.ndarray:
    """Sub-pixel (z, y, x) position of the peak near ``near``: centroid of the values above half
    the local maximum in a (2 radius + 1)^3 box around the local maximum."""
    start = [int(round(c)) for c in near]
    iz, iy, ix = peak_index(volume, tuple(start), radius)
    lo = [max(0, c - 2) for c in (iz, iy, ix)]
    box = volume[lo[0]:iz + 3, lo[1]:iy + 3, lo[2]:ix + 3].astype(np.float64)
    w = np.clip(box - 0.5 * box.max(), 0, None)
    grids = np.meshgrid(*(np.arange(n) for n in box.shape), indexing="ij")
    return np.array([(g * w).sum() / w.sum() + start for g, start in zip(grids, lo)])
