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

The filter's definition (:meth:`RampFilter.response`, :func:`padded_size`, the edge taper of
:func:`taper_fade`) is numpy, and so is the row filter on the CPU (:func:`ramp_filter_rows_array`,
scipy's float32 FFTs when scipy is there): the torch-free WBP (:mod:`localet_core.reconstruction.wbp_numpy`)
and the torch functions here (which hand CPU tensors to it; their own loop runs on CUDA) share
them. Importing this module does not import torch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Tuple

import numpy as np

from localet_core.config import RADIAL_FALLOFF, RAMP_WINDOW, WINDOWS
from localet_core.errors import FieldError

if TYPE_CHECKING:
    import torch


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

    def response(self, freq: Any, n_pad: int) -> Any:
        """Filter value at signed frequencies ``freq`` (cycles/pixel, any shape; same shape out):
        a float64 numpy array for a numpy ``freq``; for a torch tensor, the same values as a
        float64 tensor on its device."""
        if not isinstance(freq, np.ndarray) and hasattr(freq, "detach"):
            import torch

            values = self.response(freq.detach().cpu().numpy().astype(np.float64), n_pad)
            return torch.from_numpy(values).to(freq.device)
        f = np.abs(np.asarray(freq, dtype=np.float64))
        ramp = np.maximum(f, 0.2 / n_pad)
        x = f / 0.5  # 0 at DC, 1 at Nyquist
        if self.window == "shepp-logan":
            win = np.sinc(x / 2)
        elif self.window == "cosine":
            win = np.cos(x * (math.pi / 2))
        elif self.window == "hamming":
            win = 0.54 + 0.46 * np.cos(math.pi * x)
        elif self.window == "hann":
            win = 0.5 + 0.5 * np.cos(math.pi * x)
        else:
            win = np.ones_like(f)
        out = ramp * win
        if self.cutoff is not None:
            cutoff = self.cutoff if self.cutoff < 1 else self.cutoff / n_pad
            falloff = self.falloff if self.falloff < 1 else self.falloff / n_pad
            out = np.where(f > cutoff, out * np.exp(-((f - cutoff) ** 2) / (2 * falloff**2)), out)
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


def taper_fade(n: int, n_pad: int) -> np.ndarray:
    """``(n_pad - n,)`` float32 raised cosine, 1 -> 0 across the pad of a line of ``n`` padded to
    ``n_pad``: the pad is the periodic bridge ``mean + (last - mean) fade + (first - mean)
    fade[::-1]`` from the line's last value back round to its first, so the FFT sees no jump."""
    extra = n_pad - n
    t = np.arange(1, extra + 1, dtype=np.float32) / np.float32(extra + 1)
    return (0.5 + 0.5 * np.cos(np.float32(math.pi) * t)).astype(np.float32)


def _taper_pad(images: "torch.Tensor", n_pad: int, dim: int) -> "torch.Tensor":
    """Pad ``images`` along ``dim`` to ``n_pad`` with :func:`taper_fade`'s bridge (torch, any dim)."""
    import torch

    n = images.shape[dim]
    extra = n_pad - n
    if extra <= 0:
        return images
    mean = images.mean(dim=dim, keepdim=True)
    first = images.narrow(dim, 0, 1)
    last = images.narrow(dim, n - 1, 1)
    fade = torch.from_numpy(taper_fade(n, n_pad)).to(device=images.device, dtype=images.dtype)
    shape = [1] * images.dim()
    shape[dim] = extra
    fade = fade.view(shape)
    bridge = mean + (last - mean) * fade + (first - mean) * fade.flip(dim)
    return torch.cat([images, bridge], dim=dim)


def _fft_module() -> Tuple[Any, bool]:
    """(scipy.fft, True) when scipy is installed (float32 transforms, ``workers=``), else
    (numpy.fft, False) (float64 transforms: the same values, slower)."""
    try:
        import scipy.fft as fft

        return fft, True
    except ImportError:  # pragma: no cover - scipy is a dependency
        return np.fft, False


def ramp_filter_rows_array(images: np.ndarray, ramp: RampFilter, threads: int = 1,
                           out: Optional[np.ndarray] = None) -> np.ndarray:
    """Filter each row of ``images`` (..., ny, nx) along X (the last axis), numpy: float32 out
    (``out``, or a new array), same shape.

    Rows are filtered in batches of about :data:`FILTER_BATCH` padded values through buffers
    reused from batch to batch (the padded lines, their spectra and inverse transforms stay a
    few tens of MB), each batch's result written straight into the output. With ``threads`` >
    1 (and scipy's FFTs) the rows are split into that many contiguous parts, each filtered by
    its own thread with its own buffers (numpy and pocketfft release the GIL): the padding and
    the response multiply run in parallel too, not only the transforms."""
    fft, single = _fft_module()
    nx = images.shape[-1]
    n_pad = padded_size(nx)
    response = ramp.response(np.fft.rfftfreq(n_pad), n_pad).astype(np.float32)
    lines = images.reshape(-1, nx)
    if out is None:
        out = np.empty(images.shape, dtype=np.float32)
    result = out.reshape(-1, nx)
    fade = taper_fade(nx, n_pad)
    fade_back = np.ascontiguousarray(fade[::-1])
    n_lines = lines.shape[0]
    parts = max(1, min(int(threads), n_lines // 64)) if single else 1
    workers = 1 if parts > 1 or not single else max(1, int(threads))

    def run(a: int, b: int) -> None:
        batch = min(b - a, max(1, FILTER_BATCH // n_pad // parts))
        padded = np.empty((batch, n_pad), dtype=np.float32)
        bridge_tmp = np.empty((batch, n_pad - nx), dtype=np.float32)
        options = {"workers": workers} if single else {}
        for r0 in range(a, b, batch):
            r1 = min(b, r0 + batch)
            k = r1 - r0
            block = lines[r0:r1]
            pad = padded[:k]
            pad[:, :nx] = block
            mean = block.mean(axis=-1, keepdims=True, dtype=np.float32)
            bridge, tmp = pad[:, nx:], bridge_tmp[:k]
            np.multiply(block[:, nx - 1:nx] - mean, fade, out=bridge)
            bridge += mean
            np.multiply(block[:, :1] - mean, fade_back, out=tmp)
            bridge += tmp
            spectrum = fft.rfft(pad, axis=-1, **options)
            spectrum *= response
            result[r0:r1] = fft.irfft(spectrum, n=n_pad, axis=-1, **options)[:, :nx]

    if parts == 1:
        run(0, n_lines)
        return out
    import threading

    bounds = [n_lines * i // parts for i in range(parts + 1)]
    errors: list = []

    def guarded(a: int, b: int) -> None:
        try:
            run(a, b)
        except BaseException as err:  # pragma: no cover - re-raised below
            errors.append(err)

    pool = [threading.Thread(target=guarded, args=(bounds[i], bounds[i + 1]), name="localet-filter")
            for i in range(1, parts)]
    for t in pool:
        t.start()
    guarded(bounds[0], bounds[1])
    for t in pool:
        t.join()
    if errors:
        raise errors[0]
    return out


def ramp_filter_rows(images: "torch.Tensor", ramp: RampFilter) -> "torch.Tensor":
    """Filter each row of ``images`` (..., ny, nx) along X (the last axis). Same shape out
    (contiguous, a new tensor).

    On the CPU this is :func:`ramp_filter_rows_array` (with torch's intra-op thread count as
    the FFT's workers); on CUDA the same batches run through torch's FFTs with the same
    response and taper."""
    import torch

    from localet_core.device import empty

    if images.device.type == "cpu":
        source = images.detach().numpy() if images.dtype == torch.float32 else images.detach().float().numpy()
        return torch.from_numpy(ramp_filter_rows_array(source, ramp, threads=torch.get_num_threads()))
    nx = images.shape[-1]
    n_pad = padded_size(nx)
    device = images.device
    response = torch.from_numpy(ramp.response(np.fft.rfftfreq(n_pad), n_pad).astype(np.float32)).to(device)
    lines = images.reshape(-1, nx)
    out = empty(lines.shape, images.dtype, device)
    fade = torch.from_numpy(taper_fade(nx, n_pad)).to(device)
    batch = min(lines.shape[0], max(1, FILTER_BATCH // n_pad))
    padded = empty((batch, n_pad), torch.float32, device)
    spectrum = empty((batch, n_pad // 2 + 1), torch.complex64, device)
    filtered = empty((batch, n_pad), torch.float32, device)
    for r0 in range(0, lines.shape[0], batch):
        r1 = min(lines.shape[0], r0 + batch)
        k = r1 - r0
        block = lines[r0:r1].float()
        pad = padded[:k]
        pad[:, :nx] = block
        mean = block.mean(dim=-1, keepdim=True)
        bridge = pad[:, nx:]
        torch.mul(block[:, nx - 1:nx] - mean, fade, out=bridge)
        bridge += mean
        bridge += (block[:, :1] - mean) * fade.flip(0)
        torch.fft.rfft(pad, dim=-1, out=spectrum[:k])
        spectrum[:k] *= response
        torch.fft.irfft(spectrum[:k], n=n_pad, dim=-1, out=filtered[:k])
        out[r0:r1] = filtered[:k, :nx]
    return out.view(images.shape)


def ramp_filter_oblique(images: "torch.Tensor", linear: "torch.Tensor", ramp: RampFilter) -> "torch.Tensor":
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
    import torch

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


def bin_images(images: Any, binning: int, crop: Tuple[int, int]) -> Any:
    """Block-average ``(n, ny, nx)`` images (a torch tensor, or a float32 numpy array) by
    ``binning`` after cropping ``crop`` = (rows, cols) raw pixels at the start (and the
    remainder at the end)."""
    if binning == 1:
        return images
    n, ny, nx = images.shape
    nyb, nxb = ny // binning, nx // binning
    oy, ox = crop
    block = images[:, oy:oy + nyb * binning, ox:ox + nxb * binning].reshape(n, nyb, binning, nxb, binning)
    if isinstance(block, np.ndarray):
        return block.mean(axis=(2, 4), dtype=np.float32)
    return block.mean(dim=(2, 4))
