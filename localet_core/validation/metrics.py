"""Scores of a reconstruction against a ground truth, for benchmarks.

Reconstructions and ground truths live in different units (a WBP is not scaled like a
potential), so every score except the correlations is taken after the least-squares affine fit
``a * recon + b ~ truth`` over the scored voxels, computed in float64 (float32 sums over
millions of voxels are not accurate enough).

All volumes are ``(nz, ny, nx)`` arrays or tensors, oriented ``V[z, y, x]`` (Z along the beam).
"""
from __future__ import annotations

import math
from typing import Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from localet_core.validation.fourier import hermitian_weights
from localet_core.validation.wedge import missing_wedge_mask

ArrayLike = Union[np.ndarray, torch.Tensor]


def _t(x: ArrayLike) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).to(torch.float64)


def _mask(mask: Optional[ArrayLike], shape) -> torch.Tensor:
    return torch.ones(shape, dtype=torch.bool) if mask is None else _t(mask) > 0.5


def affine_fit(recon: ArrayLike, truth: ArrayLike, mask: Optional[ArrayLike] = None) -> Tuple[float, float]:
    """``(a, b)`` minimising ``sum over mask of (a recon + b - truth)^2`` (float64)."""
    r, t = _t(recon), _t(truth)
    m = _mask(mask, r.shape)
    r, t = r[m], t[m]
    rc, tc = r - r.mean(), t - t.mean()
    var = float((rc * rc).sum())
    a = float((rc * tc).sum()) / var if var > 0 else 0.0
    return a, float(t.mean() - a * r.mean())


def pearson(recon: ArrayLike, truth: ArrayLike, mask: Optional[ArrayLike] = None) -> float:
    """Pearson correlation over the mask (float64)."""
    r, t = _t(recon), _t(truth)
    m = _mask(mask, r.shape)
    rc, tc = r[m] - r[m].mean(), t[m] - t[m].mean()
    return float((rc * tc).sum() / torch.sqrt((rc * rc).sum() * (tc * tc).sum()))


def psnr(recon: ArrayLike, truth: ArrayLike, mask: Optional[ArrayLike] = None) -> float:
    """PSNR (dB) of the affine-fitted reconstruction; peak = the truth's range over the mask."""
    a, b = affine_fit(recon, truth, mask)
    r, t = _t(recon), _t(truth)
    m = _mask(mask, r.shape)
    mse = float(((a * r[m] + b - t[m]) ** 2).mean())
    peak = float(t[m].max() - t[m].min())
    return 10 * math.log10(peak**2 / mse) if mse > 0 else math.inf


def _gaussian_blur3d(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = int(math.ceil(3 * sigma))
    g = torch.exp(-torch.arange(-radius, radius + 1, dtype=x.dtype) ** 2 / (2 * sigma**2))
    g = g / g.sum()
    y = x[None, None]
    for dim in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + dim] = g.numel()
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (2 - dim)] = pad[2 * (2 - dim) + 1] = radius
        y = F.conv3d(F.pad(y, pad, mode="replicate"), g.view(shape))
    return y[0, 0]


def ssim(recon: ArrayLike, truth: ArrayLike, mask: Optional[ArrayLike] = None, sigma: float = 1.5) -> float:
    """3D SSIM (Gaussian window of ``sigma`` voxels, Wang et al. 2004 constants) of the
    affine-fitted reconstruction, averaged over the mask; data range = the truth's range."""
    a, b = affine_fit(recon, truth, mask)
    x, y = a * _t(recon) + b, _t(truth)
    m = _mask(mask, x.shape)
    data_range = float(y[m].max() - y[m].min())
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = _gaussian_blur3d(x, sigma), _gaussian_blur3d(y, sigma)
    vx = _gaussian_blur3d(x * x, sigma) - mx * mx
    vy = _gaussian_blur3d(y * y, sigma) - my * my
    cxy = _gaussian_blur3d(x * y, sigma) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return float(s[m].mean())


def wedge_correlation(recon: ArrayLike, truth: ArrayLike, tilt_range: Tuple[float, float],
                      mask: Optional[ArrayLike] = None) -> float:
    """Correlation of the Fourier coefficients inside the missing wedge of ``tilt_range``.

    ``Re sum F_r conj(F_t) / sqrt(sum |F_r|^2 sum |F_t|^2)`` over the wedge (DC excluded),
    each volume first multiplied by the (soft) ``mask`` after removing its mean inside the
    mask, so neither a constant nor the mask's own shape adds correlation. Near 0 means the
    method put nothing of the truth into the wedge (WBP); higher means it filled it.
    """
    r, t = _t(recon), _t(truth)
    w = torch.ones_like(r) if mask is None else _t(mask).clamp(0, 1)
    hard = w > 0.5

    def prepared(v: torch.Tensor) -> torch.Tensor:
        return (v - v[hard].mean()) * w

    fr, ft = torch.fft.rfftn(prepared(r)), torch.fft.rfftn(prepared(t))
    wedge = missing_wedge_mask(r.shape, *tilt_range)
    wedge[0, 0, 0] = False
    h = hermitian_weights(r.shape).to(torch.float64).expand(fr.shape)[wedge]  # each rfft bin stands for its mate too
    cross = (h * (fr[wedge] * ft[wedge].conj()).real).sum()
    p_r, p_t = (h * fr[wedge].abs() ** 2).sum(), (h * ft[wedge].abs() ** 2).sum()
    if p_r <= 1e-20 * (fr.abs() ** 2).sum() or p_t == 0:
        return 0.0  # nothing in the wedge: round-off would otherwise give a random ratio
    return float(cross / torch.sqrt(p_r * p_t))


def resolution_against_truth(recon: ArrayLike, truth: ArrayLike, pixel_size: float, threshold: float,
                             mask: Optional[ArrayLike] = None) -> float:
    """Resolution (Angstrom) where the FSC of ``recon`` against ``truth`` drops below
    ``threshold`` (e.g. 0.5 or 0.143), with the crossing rules of every resolution localet
    reports (:func:`localet_core.validation.fsc.crossing_frequency` with ``BAND`` and
    ``MIN_SHELL_VOXELS``: the few lowest shells, a handful of voxels each, and a noisy dip at
    the start do not stop the search). Never crossing gives the Nyquist resolution
    ``2 * pixel_size``.
    """
    from localet_core.validation.fsc import BAND, MIN_SHELL_VOXELS, compute_fsc, crossing_frequency

    result = compute_fsc(_t(recon).float(), _t(truth).float(), pixel_size=pixel_size,
                         mask=None if mask is None else _t(mask).float())
    f, _ = crossing_frequency(result.frequency, result.fsc, threshold, result.n_voxels, BAND, MIN_SHELL_VOXELS)
    return pixel_size / max(f, 1e-12)


def bead_contrast(volume: ArrayLike, fraction: float = 5e-5, minimum: int = 20) -> float:
    """How sharply the darkest features (gold beads) stand out: the mean of the darkest
    ``fraction`` of the voxels (at least ``minimum``), in robust standard deviations (1.4826 x
    the median absolute deviation) below the median. A misaligned or mirrored reconstruction
    smears the beads and lowers it (used to check orientation on real data, where there is no
    ground truth). 0 for a volume without spread.

    Args:
        volume: ``(nz, ny, nx)`` reconstruction, densities as reconstructed from raw intensities
            (gold is dark).
    """
    v = np.asarray(volume, dtype=np.float64).ravel()
    v = v - np.median(v)
    scale = 1.4826 * np.median(np.abs(v))
    if not scale > 0:  # no spread at all (e.g. a constant volume): nothing stands out
        return 0.0
    k = max(minimum, int(v.size * fraction))
    return float(-np.partition(v, k)[:k].mean() / scale)
