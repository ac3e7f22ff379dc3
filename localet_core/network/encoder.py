"""The per-view encoder: a small CNN on each filtered view, conditioned on its tilt angle.

    E_theta = Conv_1x1( act(FiLM_L(Conv_L( ... act(FiLM_1(Conv_1(y_theta))) ... ))) )
    FiLM_l(x) = x * (1 + gamma_l(theta)) + beta_l(theta),  (gamma_l, beta_l) = A_l B(theta)

* ``y_theta`` is the filtered view on the detector grid, ``B(theta)`` the Legendre basis of
  :func:`localet_core.network.model.angular_basis` (as for the first-layer kernels), ``A_l`` a
  learned matrix (zero at initialisation: the encoder starts unconditioned).
* Convolutions are *valid* on the view zero-extended beyond the detector by the receptive
  radius ``R`` (:attr:`ModelConfig.encoder_radius`), and the output is defined on the detector
  pixels only (zero outside), exactly like the filtered view itself. So one output pixel is a
  fixed function of the ``(2R + 1)^2`` view pixels around it: computing the encoder on the whole
  view (the fast form, training) and on a small window around each voxel's projection (the
  direct form, :func:`encode_at_voxels`) give the same numbers, and the output channels are
  sampled bilinearly at ``r_theta`` and summed over views with the quadrature weights, like the
  FBP channel: any tilt scheme is valid input.

Tensor shapes: views ``(n, H, W)``, angle basis ``(n, M)``, output ``(n, C, H, W)``.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from localet_core.reconstruction.geometry import TiltGeometry


class ViewEncoder(nn.Module):
    """See the module docstring.

    Args:
        widths: hidden convolution widths (one ``kernel x kernel`` convolution each).
        out_channels: C, the channels back-projected.
        kernel: odd convolution size.
        n_basis: M, the angle basis size of the FiLM conditioning.
        activation: a function on tensors.
    """

    def __init__(self, widths: Sequence[int], out_channels: int, kernel: int, n_basis: int,
                 activation) -> None:
        super().__init__()
        self.radius = len(widths) * (kernel // 2)
        self.convs = nn.ModuleList()
        self.films = nn.ModuleList()
        cin = 1
        for w in widths:
            self.convs.append(nn.Conv2d(cin, w, kernel))
            film = nn.Linear(n_basis, 2 * w)
            nn.init.zeros_(film.weight)
            nn.init.zeros_(film.bias)
            self.films.append(film)
            cin = w
        self.out = nn.Conv2d(cin, out_channels, 1)
        self._act = activation

    def forward(self, padded: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
        """``(n, 1, h + 2R, w + 2R)`` views (zero beyond the detector) and ``(n, M)`` basis ->
        ``(n, C, h, w)`` (valid convolutions)."""
        x = padded
        for conv, film in zip(self.convs, self.films):
            x = conv(x)
            gamma, beta = film(basis.to(x.dtype)).chunk(2, dim=-1)
            x = self._act(x * (1 + gamma[:, :, None, None]) + beta[:, :, None, None])
        return self.out(x)


def _floor_frac(rows: torch.Tensor, cols: torch.Tensor, dtype: torch.dtype
                ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    r0, c0 = torch.floor(rows), torch.floor(cols)
    return r0.long(), c0.long(), (rows - r0).to(dtype), (cols - c0).to(dtype)


def _corner_mask(r0: torch.Tensor, c0: torch.Tensor, height: int, width: int, dtype: torch.dtype
                 ) -> torch.Tensor:
    """``(..., 2, 2)`` 1 where the bilinear neighbour ``(r0 + a, c0 + b)`` lies on the detector."""
    rr = r0[..., None] + torch.arange(2, device=r0.device)
    cc = c0[..., None] + torch.arange(2, device=c0.device)
    ok_r = (rr >= 0) & (rr < height)
    ok_c = (cc >= 0) & (cc < width)
    return (ok_r[..., :, None] & ok_c[..., None, :]).to(dtype)


def _lerp_corners(corners: torch.Tensor, fr: torch.Tensor, fc: torch.Tensor) -> torch.Tensor:
    """``(..., C, 2, 2)`` neighbour values and ``(...)`` fractions -> ``(..., C)`` bilinear values."""
    fr, fc = fr[..., None], fc[..., None]
    top = torch.lerp(corners[..., 0, 0], corners[..., 0, 1], fc)
    bottom = torch.lerp(corners[..., 1, 0], corners[..., 1, 1], fc)
    return torch.lerp(top, bottom, fr)


def sample_points(features: torch.Tensor, geometry: TiltGeometry, voxels: torch.Tensor,
                  row_origin: int = 0) -> torch.Tensor:
    """Bilinear samples of per-view channel images at each voxel's projection.

    Args:
        features: ``(n_used, C, h, W)`` channel images holding detector rows
            ``row_origin .. row_origin + h - 1`` (zero on detector rows outside them, which the
            caller guarantees no voxel needs, and outside the detector).
        geometry: the views' tilt geometry (``W`` = its binned detector width).
        voxels: ``(B, 3)`` output voxel indices ``(iz, iy, ix)``.
        row_origin: detector row of ``features[:, :, 0]``.

    Returns:
        ``(B, n_used, C)``, the same convention as :func:`~localet_core.network.patches.sample_patches`
        with ``P = 1`` (pixel centres at whole coordinates, zero outside the detector).
    """
    n, c, h, w = features.shape
    vox = torch.as_tensor(voxels, device=features.device, dtype=torch.float64)
    rows, cols = geometry.detector_coordinates(vox[:, 0], vox[:, 1], vox[:, 2], dtype=torch.float64)
    rows, cols = torch.broadcast_tensors(rows, cols)  # (n, B)
    r0, c0, fr, fc = _floor_frac(rows - row_origin, cols, features.dtype)
    mask = _corner_mask(r0, c0, h, w, features.dtype)  # (n, B, 2, 2)
    # channels last, so each gather reads C contiguous values; index -1 .. size + 1 stays in
    # range after clamping
    padded = F.pad(features, (1, 2, 1, 2)).permute(0, 2, 3, 1)
    ri = r0.clamp(-1, h).add(1)
    ci = c0.clamp(-1, w).add(1)
    views = torch.arange(n, device=features.device)[:, None]
    fr, fc = fr[..., None], fc[..., None]
    m = mask[..., None]
    top = torch.lerp(padded[views, ri, ci] * m[:, :, 0, 0], padded[views, ri, ci + 1] * m[:, :, 0, 1], fc)
    bottom = torch.lerp(padded[views, ri + 1, ci] * m[:, :, 1, 0], padded[views, ri + 1, ci + 1] * m[:, :, 1, 1], fc)
    return torch.lerp(top, bottom, fr).transpose(0, 1)  # (B, n, C)


def encode_at_voxels(encoder: ViewEncoder, images: torch.Tensor, basis: torch.Tensor,
                     geometry: TiltGeometry, voxels: torch.Tensor) -> torch.Tensor:
    """The direct form: the encoder on a ``(2R + 2)^2`` window of each view around each voxel's
    projection (its four bilinear neighbours' receptive fields), lerped.

    Args:
        images: ``(n_used, H, W)`` filtered views.
        basis: ``(n_used, M)`` angle basis of the views.
        voxels: ``(B, 3)`` voxel indices.

    Returns:
        ``(B, n_used, C)``; equal to :func:`sample_points` of the whole-view encoding.
    """
    n, height, width = images.shape
    r = encoder.radius
    vox = torch.as_tensor(voxels, device=images.device, dtype=torch.float64)
    rows, cols = geometry.detector_coordinates(vox[:, 0], vox[:, 1], vox[:, 2], dtype=torch.float64)
    rows, cols = torch.broadcast_tensors(rows, cols)
    r0, c0, fr, fc = _floor_frac(rows, cols, images.dtype)
    mask = _corner_mask(r0, c0, height, width, images.dtype)
    size = 2 * r + 2
    pad = r + 1
    windows = F.pad(images, (pad, pad, pad, pad)).unfold(1, size, 1).unfold(2, size, 1)
    # a window starting at padded index r0 + 1 covers view rows r0 - r .. r0 + 1 + r
    ri = r0.clamp(-1, height - 1) + 1
    ci = c0.clamp(-1, width - 1) + 1
    b = vox.shape[0]
    views = torch.arange(n, device=images.device)[:, None]
    win = windows[views, ri, ci]  # (n, B, size, size)
    enc = encoder(win.reshape(n * b, 1, size, size), basis.repeat_interleave(b, dim=0))
    corners = enc.view(n, b, -1, 2, 2) * mask[:, :, None]
    return _lerp_corners(corners, fr, fc).transpose(0, 1)
