"""Resample raw views into the aligned frame once, so that everything downstream sees an aligned stack.

A raw stack with an ``.xf`` (``aligned = A raw + d``, pixels relative to the image centre; see
:mod:`localet_core.reconstruction.geometry`) is turned into the stack that IMOD's ``newstack -xform`` would write,
on the binned grid: tilt axis along Y, rows along the tilt axis. The geometry loses its ``.xf``
(:func:`aligned_geometry`), so the ramp filter is the plain row filter, the back-projection uses the
fast separable kernel, SIRT runs slab by slab, and the network's patches and first-layer kernels
are taken in the frame they were trained in, whatever the raw images' orientation.

Order of operations, per used view (excluded views are never read: zero, or left as they
were when resampling in place):

1. crop + block-average by the binning, exactly as ``--bin`` does (:func:`bin_images`): the box
   filter is the antialiasing before resampling, and the resampling then costs ``1 / binning^2``
   of a full-resolution one;
2. resample the binned raw view at ``A^-1 (aligned - d)`` with a cubic kernel (default: torch's
   bicubic ``grid_sample``, Keys a = -0.75; ``bspline``, a prefiltered cubic B-spline, is sharper
   on paper, the same in FSC against ground truth and 3x dearer; both interpolate, so whole-pixel
   maps such as 90-degree rotations return the pixels themselves), on the same binned grid the
   single-interpolation path samples: column ``(nx_b - 1) / 2`` on the tilt axis, row ``iy`` on
   binned detector row ``iy``;
3. aligned pixels whose source lies outside the raw image get the view's mean (IMOD's fill); the
   last pixel or two inside fade towards it (the cubic's neighbours beyond the edge are the fill).

The result is an aligned, binned stack ``(n_views, ny_b, nx_b)`` with binning 1 in its geometry
(pixel size times the binning), on the same output grid as the raw stack's own geometry.

Cost: one interpolation more per voxel than the raw-frame path (``.xf`` folded into the
back-projection's bilinear sampling): a 2D cubic, then the back-projection's linear interpolation
along X. The measured price (``benchmarks/bench_alignment.py``) is in docs/geometry.md.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from localet_core.alignment_numpy import align_stack_array, aligned_geometry, aligned_to_raw
from localet_core.native import native_enabled
from localet_core.reconstruction.filters import bin_images
from localet_core.reconstruction.geometry import TiltGeometry

__all__ = ["METHODS", "DEFAULT_METHOD", "aligned_geometry", "aligned_to_raw", "align_stack", "resample",
           "bspline_coefficients"]

#: Resampling kernels: ``bicubic`` (torch's Keys cubic, a = -0.75; the default), ``bspline`` (cubic
#: B-spline, prefiltered), ``bilinear``. Kept selectable for the measurements in docs/geometry.md.
METHODS = ("bicubic", "bspline", "bilinear")
DEFAULT_METHOD = "bicubic"

#: Views resampled per batch (bounds the temporaries: about 12 copies of a batch of binned views).
VIEW_BATCH = 8
#: Target pixels per block of the B-spline path of :func:`resample` (bounds its temporaries).
ROW_BLOCK_PIXELS = 1 << 22


def align_stack(
    stack: Union[np.ndarray, torch.Tensor],
    geometry: TiltGeometry,
    method: str = DEFAULT_METHOD,
    device: Union[str, torch.device] = "cpu",
    out: Optional[np.ndarray] = None,
) -> np.ndarray:
    """Resample a raw stack into the aligned frame of :func:`aligned_geometry` (see module doc).

    Args:
        stack: ``(n_views, ny, nx)`` raw stack (all views, stack order), any real dtype.
        geometry: its geometry, with an ``.xf``.
        method: one of :data:`METHODS`.
        out: ``(n_views, ny_b, nx_b)`` float32 array to write into; may be ``stack`` itself when
            the binning is 1 (each batch of views is read before it is written: no second copy
            of a large stack). Excluded views of ``out`` are left as they are.

    Returns:
        ``(n_views, ny_b, nx_b)`` float32 numpy aligned stack (``out`` when given); excluded views
        are zero (or untouched in ``out``): they are never read.

    ``bicubic`` on the CPU of a numpy stack runs localet's compiled kernel when it is built
    (:func:`localet_core.alignment_numpy.align_stack_array`: the same weights, positions in
    float64), torch's ``grid_sample`` otherwise.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    geometry.check_stack(tuple(stack.shape))
    device = torch.device(device)
    if method == "bicubic" and device.type == "cpu" and native_enabled() and not isinstance(stack, torch.Tensor):
        return align_stack_array(stack, geometry, out=out, threads=torch.get_num_threads())
    nyb, nxb = geometry.binned_detector_shape
    maps = torch.from_numpy(aligned_to_raw(geometry))
    if out is None:
        out = np.empty((geometry.n_views, nyb, nxb), dtype=np.float32)
        out[list(geometry.excluded)] = 0.0
    elif out.shape != (geometry.n_views, nyb, nxb) or out.dtype != np.float32:
        raise ValueError(f"out must be float32 {(geometry.n_views, nyb, nxb)}, got {out.dtype} {out.shape}")
    used = list(geometry.used_views)
    for a in range(0, len(used), VIEW_BATCH):
        views = used[a:a + VIEW_BATCH]
        # a copy of the batch's views (fancy index, or an explicit copy of a slice), so out may be stack
        run = views[-1] - views[0] + 1 == len(views)
        raw = stack[views[0]:views[-1] + 1] if run else stack[views]
        raw = torch.as_tensor(np.asarray(raw) if not isinstance(raw, torch.Tensor) else raw)
        raw = raw.to(device=device, dtype=torch.float32, copy=run)
        raw = bin_images(raw, geometry.binning, geometry.crop_offsets)
        with torch.no_grad():
            result = resample(raw, maps[views], (nyb, nxb), method).cpu().numpy()
        if run:
            out[views[0]:views[-1] + 1] = result
        else:
            out[views] = result
    return out


def resample(
    images: torch.Tensor,
    maps: torch.Tensor,
    shape: Tuple[int, int],
    method: str = DEFAULT_METHOD,
    fill: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Sample each image at affinely mapped positions.

    Args:
        images: ``(n, H, W)`` float32 source images.
        maps: ``(n, 2, 3)`` target ``(col, row, 1)`` -> source ``(col, row)`` pixel indices.
        shape: ``(Ho, Wo)`` of the targets.
        method: one of :data:`METHODS`.
        fill: ``(n,)`` value outside the sources (default: each image's mean).

    Returns:
        ``(n, Ho, Wo)`` float32. Inside the source the value is the interpolant; outside it is
        ``fill``: ``bicubic``/``bilinear`` interpolate ``image - fill`` with zeros beyond the edge
        (so the last pixel or two fade to the fill), ``bspline`` reflects its coefficients and blends
        by the bilinear coverage of the source (half a pixel beyond its edge).
    """
    n, h, w = images.shape
    ho, wo = shape
    device = images.device
    if fill is None:
        fill = images.mean(dim=(1, 2), dtype=torch.float64).float()
    fill = fill.to(device=device, dtype=torch.float32).view(n, 1, 1)
    centred = images.float() - fill
    if method != "bspline":
        # one affine_grid + one grid_sample: fold the align_corners=False normalisations into the map
        m = maps.to(torch.float64).cpu()
        to_norm = torch.tensor([[2.0 / w, 0, 1.0 / w - 1], [0, 2.0 / h, 1.0 / h - 1], [0, 0, 1]], dtype=torch.float64)
        from_norm = torch.tensor([[wo / 2.0, 0, (wo - 1) / 2.0], [0, ho / 2.0, (ho - 1) / 2.0], [0, 0, 1]],
                                 dtype=torch.float64)
        full = torch.cat([m, torch.tensor([[[0.0, 0.0, 1.0]]], dtype=torch.float64).expand(n, 1, 3)], dim=1)
        theta = (to_norm @ full @ from_norm)[:, :2].to(device=device, dtype=torch.float32)
        grid = F.affine_grid(theta, [n, 1, ho, wo], align_corners=False)
        values = F.grid_sample(centred.unsqueeze(1), grid, mode=method, padding_mode="zeros",
                               align_corners=False)[:, 0]
        return values.add_(fill)
    source = bspline_coefficients(centred)
    # float32 coordinates: 4096 pixels are still resolved to 5e-4 pixel
    m = maps.to(device=device, dtype=torch.float32).view(n, 2, 3, 1, 1)
    cols = torch.arange(wo, dtype=torch.float32, device=device).view(1, 1, wo)
    out = torch.empty(n, ho, wo, dtype=torch.float32, device=device)
    block = max(1, ROW_BLOCK_PIXELS // max(1, n * wo))  # bounds the temporaries
    for r0 in range(0, ho, block):
        r1 = min(ho, r0 + block)
        rows = torch.arange(r0, r1, dtype=torch.float32, device=device).view(1, -1, 1)
        src_c = m[:, 0, 0] * cols + (m[:, 0, 1] * rows + m[:, 0, 2])
        src_r = m[:, 1, 0] * cols + (m[:, 1, 1] * rows + m[:, 1, 2])
        # bilinear coverage of the source with zero padding: 1 inside, fading over the outer half pixel
        coverage = (torch.minimum(src_c + 1, w - src_c).clamp_(0, 1)
                    .mul_(torch.minimum(src_r + 1, h - src_r).clamp_(0, 1)))
        out[:, r0:r1] = _bspline_sample(source, src_r, src_c).mul_(coverage).add_(fill)
    return out


def bspline_coefficients(images: torch.Tensor) -> torch.Tensor:
    """Cubic B-spline coefficients ``c`` of ``(n, H, W)`` images, such that
    ``sum_k c[k] beta3(x - k)`` equals the image at every pixel, for the half-sample symmetric
    extension of the image (the extension ``grid_sample``'s ``reflection`` padding makes). The
    prefilter ``6 / (4 + 2 cos w)`` is applied exactly by FFT on the symmetric period ``2 n``."""
    out = images.float()
    for dim in (-1, -2):
        n = out.shape[dim]
        if n < 2:
            continue
        sym = torch.cat([out, out.flip(dim)], dim=dim)  # period 2n, half-sample symmetric
        k = torch.arange(n + 1, device=out.device, dtype=torch.float64)
        response = (6.0 / (4.0 + 2.0 * torch.cos(math.pi * k / n))).float()
        shape = [1] * out.dim()
        shape[dim] = n + 1
        spec = torch.fft.rfft(sym, dim=dim).mul_(response.view(shape))
        out = torch.fft.irfft(spec, n=2 * n, dim=dim).narrow(dim, 0, n).contiguous()
    return out


def _bspline_sample(coeffs: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Evaluate the cubic B-spline of ``coeffs`` (n, H, W) at fractional ``rows``/``cols`` (n, Ho, Wo),
    float32 pixel indices.

    The 4 x 4 weights are positive, so each pair of neighbours along an axis is one linear lookup
    at a weighted position: 4 bilinear ``grid_sample`` calls give the 16-tap sum exactly
    (Sigg & Hadwiger, GPU Gems 2, ch. 20). Coefficients beyond the edges are their reflection."""
    n, h, w = coeffs.shape
    src = coeffs.float().unsqueeze(1)
    rows, cols = rows.float(), cols.float()

    def pairs(x: torch.Tensor, size: int):
        """Normalised lookup positions and weights of the pairs (-1, 0) and (1, 2) around floor(x)."""
        x0 = torch.floor(x)
        t = x - x0
        t2 = t * t
        w1 = t2.mul(t.mul(0.5).sub_(1)).add_(2.0 / 3)  # (3 t^3 - 6 t^2 + 4) / 6
        w3 = t2.mul_(t).div_(6)  # t^3 / 6
        g0 = torch.add(w1, t.sub_(1).neg_().pow_(3).div_(6))  # w0 + w1, w0 = (1 - t)^3 / 6
        scale, offset = 2.0 / size, 1.0 / size - 1
        x0.mul_(scale).add_(offset)
        p0 = torch.addcmul(x0, w1.div_(g0), torch.tensor(scale), value=1.0).sub_(scale)
        p1 = torch.addcmul(x0, w3.div_(1 - g0), torch.tensor(scale), value=1.0).add_(scale)
        return (p0, g0), (p1, 1 - g0)

    out = None
    for pr, gr in pairs(rows, h):
        for pc, gc in pairs(cols, w):
            grid = torch.stack([pc, pr], dim=-1)
            v = F.grid_sample(src, grid, mode="bilinear", padding_mode="reflection", align_corners=False)[:, 0]
            v.mul_(gr).mul_(gc)
            out = v if out is None else out.add_(v)
    return out
