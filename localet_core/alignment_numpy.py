"""The aligned frame without torch: the maps of :mod:`localet_core.alignment` and its default
(bicubic) resampling through localet's compiled kernel.

:func:`aligned_geometry` and :func:`aligned_to_raw` are the one definition of the aligned frame
(:mod:`localet_core.alignment` re-exports them). :func:`align_stack_array` is
:func:`localet_core.alignment.align_stack` with ``method="bicubic"`` on the CPU, computed by
:func:`localet_core.native.resample_bicubic` (the same weights, zero padding of the view minus its
mean, the positions in float64 where torch's ``affine_grid`` rounds them to float32): the stacks
agree to about 1e-5 of their range, exactly on whole-pixel maps. It needs the compiled kernels;
importing this module imports no torch, so ``localet fbp`` of a raw stack with an ``.xf`` runs
without it.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Optional

import numpy as np

from localet_core.native import native_enabled, resample_bicubic
from localet_core.reconstruction.filters import bin_images

if TYPE_CHECKING:
    from localet_core.reconstruction.geometry import TiltGeometry


def aligned_geometry(geometry: "TiltGeometry") -> "TiltGeometry":
    """The geometry of the aligned, binned stack that :func:`localet_core.alignment.align_stack`
    makes from ``geometry``'s raw stack: no ``.xf``, binning 1 on the binned detector, pixel size
    times the binning; the same output grid, angles, exclusions and options (all of which are in
    output pixels already)."""
    b = geometry.binning
    return dataclasses.replace(
        geometry, xf=None, detector_shape=geometry.binned_detector_shape, binning=1,
        pixel_size=None if geometry.pixel_size is None else geometry.pixel_size * b)


def aligned_to_raw(geometry: "TiltGeometry") -> np.ndarray:
    """Per-view affine maps from aligned binned pixel indices to binned raw pixel indices.

    Returns:
        ``(n_views, 2, 3)`` float64: ``(col, row)_raw = M[:, :, :2] @ (col, row)_aligned + M[:, :, 2]``,
        both in binned pixel indices (identity for views without a transform).
    """
    if geometry.xf is None:
        raise ValueError("aligned_to_raw needs a geometry with an .xf")
    b = geometry.binning
    ry, rx = geometry.detector_centre  # raw image centre on the binned raw grid
    cx = (geometry.binned_detector_shape[1] - 1) / 2  # aligned tilt axis column (see alignment's doc)
    out = np.empty((geometry.n_views, 2, 3))
    for v in range(geometry.n_views):
        inv = np.linalg.inv(geometry.xf[v, :, :2])
        out[v, :, :2] = inv
        # raw = A^-1 ((col - cx, row - ry) - d / b) + (rx, ry)
        out[v, :, 2] = -inv @ (np.array([cx, ry]) + geometry.xf[v, :, 2] / b) + np.array([rx, ry])
    return out


def align_stack_array(stack: np.ndarray, geometry: "TiltGeometry", out: Optional[np.ndarray] = None,
                      threads: Optional[int] = None) -> np.ndarray:
    """:func:`localet_core.alignment.align_stack` (bicubic, CPU) without torch.

    Args:
        stack: ``(n_views, ny, nx)`` raw stack (all views, stack order), any real dtype.
        geometry: its geometry, with an ``.xf``.
        out: ``(n_views, ny_b, nx_b)`` float32 array to write into; may be ``stack`` itself when
            the binning is 1 (each view is read before it is written). Excluded views of ``out``
            are left as they are.
        threads: views resampled at once (the kernel releases the GIL); default: the CPUs this
            process may use (:func:`localet_core.reconstruction.wbp_numpy.cpu_threads`).

    Returns:
        ``(n_views, ny_b, nx_b)`` float32 aligned stack (``out`` when given); excluded views are
        zero (or untouched in ``out``).
    """
    if not native_enabled():
        raise RuntimeError("align_stack_array needs localet's compiled kernels (localet_core.native)")
    geometry.check_stack(tuple(stack.shape))
    nyb, nxb = geometry.binned_detector_shape
    maps = aligned_to_raw(geometry)
    if out is None:
        out = np.empty((geometry.n_views, nyb, nxb), dtype=np.float32)
        out[list(geometry.excluded)] = 0.0
    elif out.shape != (geometry.n_views, nyb, nxb) or out.dtype != np.float32:
        raise ValueError(f"out must be float32 {(geometry.n_views, nyb, nxb)}, got {out.dtype} {out.shape}")

    def one(v: int) -> None:
        raw = bin_images(np.array(stack[v:v + 1], dtype=np.float32), geometry.binning, geometry.crop_offsets)[0]
        raw = np.ascontiguousarray(raw)
        fill = float(np.float32(raw.mean(dtype=np.float64)))
        resample_bicubic(raw, maps[v], (nyb, nxb), fill, out[v])

    if threads is None:
        from localet_core.reconstruction.wbp_numpy import cpu_threads

        threads = cpu_threads()
    used = list(geometry.used_views)
    if threads <= 1 or len(used) < 2:
        for v in used:
            one(v)
        return out
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(threads, thread_name_prefix="localet-align") as pool:
        for _ in pool.map(one, used):
            pass
    return out
