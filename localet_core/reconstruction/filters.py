"""Ramp filtering of projections for weighted back-projection.

The filter acts across the tilt axis (along detector X after alignment). Its response, in
cycles per pixel ``f``, is ``|f| * window(f) * radial(f)``:

* ``|f|`` is the ramp, floored at ``0.2 / n_pad`` at ``f = 0`` as IMOD does (``w[0] = 0.2``), so
  the mean density is kept, weakly.
* ``window`` is one of the usual apodisations: ``ram-lak`` (none), ``shepp-logan``, ``cosine``,
  ``hamming``, ``hann``.
* ``radial`` is IMOD's RADIAL cutoff,falloff: 1 up to ``cutoff``, then a Gaussian fall-off of
  standard deviation ``falloff``; values >= 1 are read as reciprocal-space pixels of the padded
  line, like IMOD. ``None`` means a plain ramp to Nyquist (tilt's default; eTomo uses 0.35, 0.035).

With the view weights of :meth:`TiltGeometry.view_weights` (radians) the filtered back-projection
returns the density itself for a complete tilt range: no arbitrary scale.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch

from localet_core.config import RADIAL_FALLOFF, RAMP_WINDOW, WINDOWS
from localet_core.device import empty
from localet_core.errors import FieldError


@dataclass(frozen=True)
class RampFilter:
    """Ramp filter settings. ``cutoff``/``falloff``: IMOD's RADIAL (see module doc)."""

    window: str = RAMP_WINDOW
    cutoff: Optional[float] = None
    falloff: float = RADIAL_FALLOFF

    def __post_init__(self) -> None:
        if self.window not in WINDOWS:
            raise FieldError("window", f"unknown window {self.window!r}; choose from {', '.join(WINDOWS)}")
        if self.cutoff is not None and not self.cutoff > 0:
            raise FieldError("cutoff", f"must be positive, got {self.cutoff}")
        if not self.falloff > 0:
            raise FieldError("falloff", f"must be positive, got {self.falloff}")

    def response(self, freq: torch.Tensor, n_pad: int) -> torch.Tensor:
        """Filter value at signed frequencies ``freq`` (cycles/pixel, any shape; same shape out)."""
        f = freq.abs()
        ramp = torch.clamp(f, min=0.2 / n_pad)
        x = f / 0.5  # 0 at DC, 1 at Nyquist
        if self.window == "shepp-logan":
            win = torch.sinc(x / 2)
        elif self.window == "cosine":
            win = torch.cos(x * (math.pi / 2))
        elif self.window == "hamming":
            win = 0.54 + 0.46 * torch.cos(math.pi * x)
        elif self.window == "hann":
            win = 0.5 + 0.5 * torch.cos(math.pi * x)
        else:
            win = torch.ones_like(f)
        out = ramp * win
        if self.cutoff is not None:
            cutoff = self.cutoff if self.cutoff < 1 else self.cutoff / n_pad
            falloff = self.falloff if self.falloff < 1 else self.falloff / n_pad
            out = torch.where(f > cutoff, out * torch.exp(-((f - cutoff) ** 2) / (2 * falloff**2)), out)
        return out


#: Padded values per batch of :func:`ramp_filter_rows` (16 MB of float32).
FILTER_BATCH = 1 << 22

#: eTomo's default RADIAL 0.35,0.035 (cycles/pixel): what users compare against.
ETOMO_RADIAL = RampFilter(cutoff=0.35, falloff=0.035)


def padded_size(n: int) -> int:
    """An FFT-friendly length of at least ``2 n`` (zero-padding by the full width keeps the ramp's
    long tails from wrapping around)."""
    m = 2 * n
    while True:
        k = m
        for p in (2, 3, 5):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1


def _taper_pad(images: torch.Tensor, n_pad: int, dim: int) -> torch.Tensor:
    """Pad ``images`` along ``dim`` to ``n_pad`` with each line's edge values fading to the line
    mean (a raised cosine), so the periodic FFT sees no jump at the image border."""
    n = images.shape[dim]
    extra = n_pad - n
    if extra <= 0:
        return images
    mean = images.mean(dim=dim, keepdim=True)
    first = images.narrow(dim, 0, 1)
    last = images.narrow(dim, n - 1, 1)
    t = torch.arange(1, extra + 1, dtype=images.dtype, device=images.device) / (extra + 1)
    fade = 0.5 + 0.5 * torch.cos(math.pi * t)  # 1 -> 0 across the pad
    shape = [1] * images.dim()
    shape[dim] = extra
    fade = fade.view(shape)
    # the pad is the periodic bridge from the last column back round to the first
    bridge = mean + (last - mean) * fade + (first - mean) * fade.flip(dim)
    return torch.cat([images, bridge], dim=dim)


def _taper_pad_rows_into(lines: torch.Tensor, padded: torch.Tensor, fade: torch.Tensor) -> None:
    """:func:`_taper_pad` of ``(k, n)`` float32 lines along their last axis, written into a
    ``(k, n_pad)`` buffer (the same values, without the temporaries of ``torch.cat``);
    ``fade``: its ``(n_pad - n,)`` raised cosine."""
    n = lines.shape[-1]
    padded[:, :n] = lines
    mean = lines.mean(dim=-1, keepdim=True)
    bridge = padded[:, n:]
    torch.mul(lines[:, n - 1:n] - mean, fade, out=bridge)
    bridge += mean
    bridge += (lines[:, :1] - mean) * fade.flip(0)


def ramp_filter_rows(images: torch.Tensor, ramp: RampFilter) -> torch.Tensor:
    """Filter each row of ``images`` (..., ny, nx) along X (the last axis). Same shape out
    (contiguous, a new tensor).

    Rows are filtered in batches of about :data:`FILTER_BATCH` padded values through buffers
    reused from batch to batch: the padded lines, their spectra and inverse transforms stay a
    few tens of MB (a stack of 1024^2 views at once took 1 GB of them), and each batch's result
    goes straight into the output."""
    nx = images.shape[-1]
    n_pad = padded_size(nx)
    device = images.device
    freq = torch.fft.rfftfreq(n_pad, device=device, dtype=torch.float64)
    response = ramp.response(freq, n_pad).to(torch.float32)
    lines = images.reshape(-1, nx)
    out = empty(lines.shape, images.dtype, device)
    extra = n_pad - nx
    t = torch.arange(1, extra + 1, dtype=torch.float32, device=device) / (extra + 1)
    fade = 0.5 + 0.5 * torch.cos(math.pi * t)  # as _taper_pad's
    batch = min(lines.shape[0], max(1, FILTER_BATCH // n_pad))
    padded = empty((batch, n_pad), torch.float32, device)
    spectrum = empty((batch, n_pad // 2 + 1), torch.complex64, device)
    filtered = empty((batch, n_pad), torch.float32, device)
    for r0 in range(0, lines.shape[0], batch):
        r1 = min(lines.shape[0], r0 + batch)
        k = r1 - r0
        _taper_pad_rows_into(lines[r0:r1].float(), padded[:k], fade)
        # float32 FFTs: 5x faster than float64 here, and far more precise than the data
        torch.fft.rfft(padded[:k], dim=-1, out=spectrum[:k])
        spectrum[:k] *= response
        torch.fft.irfft(spectrum[:k], n=n_pad, dim=-1, out=filtered[:k])
        out[r0:r1] = filtered[:k, :nx]
    return out.view(images.shape)


def ramp_filter_oblique(images: torch.Tensor, linear: torch.Tensor, ramp: RampFilter) -> torch.Tensor:
    """Filter raw (unaligned) views along the aligned frame's X.

    A view aligned by ``aligned = A raw + d`` must be filtered along aligned X. Filtering is
    shift-invariant, so on the raw grid the same filter has the 2D response
    ``H((A^-T k)_x)`` at raw frequency ``k``: one FFT, no resampling, and the alignment stays
    inside the back-projection's single interpolation.

    Args:
        images: ``(n, ny, nx)`` raw views.
        linear: ``(n, 2, 2)`` the ``A`` of each view (``[[a11, a12], [a21, a22]]``, x = column).
        ramp: filter settings.
    """
    n, ny, nx = images.shape
    px, py = padded_size(nx), padded_size(ny)
    padded = _taper_pad(_taper_pad(images, px, dim=-1), py, dim=-2)
    kx = torch.fft.rfftfreq(px, dtype=torch.float64, device=images.device).view(1, 1, -1)
    ky = torch.fft.fftfreq(py, dtype=torch.float64, device=images.device).view(1, -1, 1)
    inv_t = torch.linalg.inv(linear.to(torch.float64)).transpose(1, 2)  # A^-T
    # aligned-frame x frequency of each raw frequency: (A^-T k)_x
    k_aligned_x = inv_t[:, 0, 0].view(-1, 1, 1) * kx + inv_t[:, 0, 1].view(-1, 1, 1) * ky
    spectrum = torch.fft.rfft2(padded.float()) * ramp.response(k_aligned_x, px).to(torch.float32)
    return torch.fft.irfft2(spectrum, s=(py, px))[:, :ny, :nx].to(images.dtype)


def bin_images(images: torch.Tensor, binning: int, crop: Tuple[int, int]) -> torch.Tensor:
    """Block-average ``(n, ny, nx)`` images by ``binning`` after cropping ``crop`` = (rows, cols)
    raw pixels at the start (and the remainder at the end)."""
    if binning == 1:
        return images
    n, ny, nx = images.shape
    nyb, nxb = ny // binning, nx // binning
    oy, ox = crop
    block = images[:, oy:oy + nyb * binning, ox:ox + nxb * binning]
    return block.reshape(n, nyb, binning, nxb, binning).mean(dim=(2, 4))
