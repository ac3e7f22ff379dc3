"""The patch operator C of the paper (Eq. 3), and the network's view preparation.

For an output voxel ``r`` and a used view ``theta``, the patch is the ``P x P`` block of the
filtered view sampled around the voxel's projection ``r_theta`` (from
:meth:`TiltGeometry.detector_coordinates`, the one voxel->detector mapping) at offsets
``step * (i - (P - 1) / 2)`` detector pixels along rows (i) and columns (j).

* Sampling is bilinear with zeros outside the detector, the same values as
  :func:`localet_core.reconstruction.backprojection.backproject_grid_sample` (``align_corners=False``,
  normalised coordinate ``(2 c + 1) / n - 1``), so a 1x1 patch summed over views with the view
  weights is the weighted back-projection itself.
* Offsets lie on the binned detector grid of the images. Raw stacks with an alignment are
  resampled into the aligned frame when loaded (:mod:`localet_core.alignment`), so patches are cut
  along the aligned axes, the frame the network was trained in; only a geometry that still holds
  an ``.xf`` (a library call) has patch axes along the raw image's rows and columns. With an odd
  ``P`` and an integer ``step`` every offset is a whole number of pixels, which makes the fast
  form (:mod:`localet_core.network.inference`) exact.

Network inputs are normalised before filtering (:func:`prepare_network_views`): the used, binned
views are shifted to zero mean and scaled to unit standard deviation (over all their pixels), so
a trained model sees data on a fixed scale whatever the detector's units.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np
import torch
import torch.nn.functional as F

from localet_core.errors import LocaletError
from localet_core.reconstruction.filters import RampFilter
from localet_core.reconstruction.geometry import TiltGeometry
from localet_core.reconstruction.wbp import filter_views, prepare_views


def sample_patches(
    images: torch.Tensor,
    geometry: TiltGeometry,
    voxels: torch.Tensor,
    patch_size: int,
    step: int,
) -> torch.Tensor:
    """Patches of every used view around the projections of a batch of voxels.

    Args:
        images: ``(n_used, H, W)`` filtered views (binned raw frame), float32 or float64.
        geometry: the tilt geometry the images belong to.
        voxels: ``(B, 3)`` output voxel indices ``(iz, iy, ix)`` (fractional allowed).
        patch_size: ``P`` (odd for the fast form to be exact).
        step: ``Delta``, in binned detector pixels.

    Returns:
        ``(B, n_used, P, P)`` on the images' device and dtype: ``[b, v, i, j]`` is view ``v``
        sampled at row ``r + off[i]`` and column ``c + off[j]`` of voxel ``b``'s projection.
    """
    n, height, width = images.shape
    vox = torch.as_tensor(voxels, device=images.device, dtype=torch.float64)
    rows, cols = geometry.detector_coordinates(vox[:, 0], vox[:, 1], vox[:, 2], dtype=torch.float64)
    rows, cols = torch.broadcast_tensors(rows, cols)  # (n, B)
    if step > 1:
        return _sample_strided(images, rows, cols, patch_size, step)
    # With whole-pixel offsets every sample of one (voxel, view) patch shares the same bilinear
    # weights, so the patch is a lerp of four whole-pixel windows cut from the padded view: several
    # times faster than grid_sample's per-sample coordinates (this is the training's hot loop).
    half = step * (patch_size - 1) // 2
    size = 2 * half + 2
    pad = 2 * half + 3
    windows = F.pad(images, (pad, pad, pad, pad)).unfold(1, size, 1).unfold(2, size, 1)
    r0, c0 = torch.floor(rows), torch.floor(cols)
    fr = (rows - r0).to(images.dtype)[..., None, None]
    fc = (cols - c0).to(images.dtype)[..., None, None]
    # a window more than its half-width off the detector lies wholly in the zero padding
    r0 = r0.clamp(-half - 2, height + half + 1).long() + (pad - half)
    c0 = c0.clamp(-half - 2, width + half + 1).long() + (pad - half)
    out = images.new_empty((vox.shape[0], n, patch_size, patch_size))
    for v0 in range(0, n, _VIEW_CHUNK):  # chunks keep the temporaries in cache
        v1 = min(n, v0 + _VIEW_CHUNK)
        views = torch.arange(v0, v1, device=images.device)[:, None]
        win = windows[views, r0[v0:v1], c0[v0:v1]]  # (v, B, size, size)
        upper = win[..., 0::step, :][..., :patch_size, :]
        lower = win[..., 1::step, :][..., :patch_size, :]
        top = torch.lerp(upper[..., 0::step][..., :patch_size], upper[..., 1::step][..., :patch_size], fc[v0:v1])
        bottom = torch.lerp(lower[..., 0::step][..., :patch_size], lower[..., 1::step][..., :patch_size], fc[v0:v1])
        out[:, v0:v1] = torch.lerp(top, bottom, fr[v0:v1]).transpose(0, 1)
    return out


_VIEW_CHUNK = 8


def _sample_strided(images: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, patch_size: int,
                    step: int) -> torch.Tensor:
    """:func:`sample_patches` for ``step > 1``: the same bilinear samples (one pair of weights per
    (voxel, view) patch, zeros off the detector), gathered at the P x P sample positions instead
    of cutting whole windows (a coarse context patch spans ``step (P - 1) + 2`` pixels but
    holds only ``P^2`` samples). ``rows``, ``cols``: ``(n, B)`` detector coordinates."""
    n, height, width = images.shape
    half = step * (patch_size - 1) // 2
    pad = 2 * half + 3
    padded = F.pad(images, (pad, pad, pad, pad))
    wp = width + 2 * pad
    flat = padded.reshape(n, -1)
    r0, c0 = torch.floor(rows), torch.floor(cols)
    fr = (rows - r0).to(images.dtype)[..., None, None]
    fc = (cols - c0).to(images.dtype)[..., None, None]
    # a patch more than its half-width off the detector samples the zero padding only
    r0 = r0.clamp(-half - 2, height + half + 1).long() + pad
    c0 = c0.clamp(-half - 2, width + half + 1).long() + pad
    offsets = step * (torch.arange(patch_size, device=images.device) - (patch_size - 1) // 2)
    out = images.new_empty((rows.shape[1], n, patch_size, patch_size))
    for v0 in range(0, n, _VIEW_CHUNK):
        v1 = min(n, v0 + _VIEW_CHUNK)
        ri = r0[v0:v1, :, None] + offsets  # (v, B, P)
        ci = c0[v0:v1, :, None] + offsets
        index = (ri[..., :, None] * wp + ci[..., None, :]).reshape(v1 - v0, -1)
        src = flat[v0:v1]

        def at(shift: int) -> torch.Tensor:
            return torch.gather(src, 1, index + shift).view(ri.shape + (patch_size,))

        top = torch.lerp(at(0), at(1), fc[v0:v1])
        bottom = torch.lerp(at(wp), at(wp + 1), fc[v0:v1])
        out[:, v0:v1] = torch.lerp(top, bottom, fr[v0:v1]).transpose(0, 1)
    return out


def context_views(images: torch.Tensor, step: int) -> torch.Tensor:
    """The views the context channels sample (``ModelConfig.context_channels``): ``(n, H, W)``
    filtered views averaged over a ``step`` x ``step`` box centred on each pixel (zeros
    beyond the detector, as everywhere), the same shape: a low-pass against aliasing when
    the coarse patch samples every ``step`` pixels."""
    if step == 1:
        return images
    return F.avg_pool2d(images.unsqueeze(1), step, stride=1, padding=step // 2,
                        count_include_pad=True).squeeze(1)


def sample_context(context_images: torch.Tensor, geometry: TiltGeometry, voxels: torch.Tensor,
                   config) -> torch.Tensor:
    """``(B, n_used, Pc, Pc)`` coarse patches of ``context_images`` (:func:`context_views`) for
    the context channels of a model of ``config`` (:class:`~localet_core.config.ModelConfig`)."""
    return sample_patches(context_images, geometry, voxels, config.context_patch, config.context_step)


@dataclass(frozen=True)
class ViewStats:
    """Mean and standard deviation removed from the binned used views (input units)."""

    mean: float
    std: float


def normalise_views(views: torch.Tensor, per_view: bool = False) -> "tuple[torch.Tensor, ViewStats]":
    """Zero mean, unit standard deviation over all pixels of ``(n, H, W)`` views (float64
    statistics). A constant stack keeps std 1 instead of dividing by zero.

    With ``per_view`` (``ModelConfig.view_norm == "view"``) each view is first divided by its own
    mean, so the views' intensity change with tilt (attenuation) is removed; the views must then
    be raw intensities (every view's mean positive), else ``ValueError``."""
    if per_view:
        means = views.double().mean(dim=(1, 2))
        if not bool((means > 0).all()):
            bad = int(torch.nonzero(~(means > 0))[0, 0])
            raise LocaletError(f"view {bad} has a mean of {float(means[bad]):.4g}: this model divides each view by "
                             "its mean and needs raw (positive) intensities, not mean-subtracted images")
        views = views / means.to(views.dtype)[:, None, None]
    mean = float(views.double().mean())
    std = float(views.double().std(correction=0))  # population std, like numpy
    if not np.isfinite(std) or std <= 0:
        std = 1.0
    return (views - mean) / std, ViewStats(mean, std)


def prepare_network_views(
    stack: Union[np.ndarray, torch.Tensor],
    geometry: TiltGeometry,
    ramp: RampFilter,
    device: torch.device,
    per_view: bool = False,
) -> "tuple[torch.Tensor, ViewStats]":
    """Used views, binned, normalised (:func:`normalise_views`, ``per_view`` for a model whose
    ``view_norm`` is ``view``), then ramp-filtered like ``localet fbp`` does:
    ``(n_used, ny_b, nx_b)`` float32 on ``device``, and the statistics."""
    views = prepare_views(stack, geometry, None, device)
    views, stats = normalise_views(views, per_view)
    return filter_views(views, geometry, ramp), stats
