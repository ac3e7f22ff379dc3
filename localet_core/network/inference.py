"""Reconstruction with a :class:`LocalizedNet`, slab by slab: the fast (factorised) form and the
direct (patch) form of the same weights.

Fast form (exact, not an approximation). The first layer is linear and its kernels depend on the
view only, so for an odd P and an integer step Delta

    h_k(r) = sum_theta w_theta sum_ij W_k(theta)[i, j] y_theta(r_theta + Delta (i - c, j - c))
           = sum_theta w_theta (y_theta (*) W_k(theta)) (r_theta)

where ``(*)`` is a correlation dilated by Delta on the detector grid: bilinear interpolation
commutes with whole-pixel shifts. Per slab of output rows:

1. correlate the band of detector rows the slab sees with the K kernels of each view
   (grouped ``conv2d``, dilation Delta). The channel images are *extended* by ``c * Delta``
   pixels beyond the detector (zero input outside it), because a voxel projecting just off the
   detector still has patch samples on it: that keeps the identity exact at the borders;
2. back-project the K channels at once with the shared kernels of
   :mod:`localet_core.reconstruction.backprojection` (the sparse kernel reuses the interpolation indices and
   weights for every channel; ``detector_origin`` / ``col_origin`` place the extended images);
3. add the first-layer bias and run the per-voxel layers on ``(voxels, K)`` as large matrix
   products, in float32 or bfloat16.

With a per-view encoder (:mod:`localet_core.network.encoder`) its C channels are computed on the
detector rows of the band (blocks of :data:`ENCODER_BLOCK` rows, cached across slabs) and
back-projected in step 2 beside the linear channels; the direct form computes them per voxel on
windows of the views, so fast == direct holds for them too.

Output units: the network's (trained against normalised references, see
:mod:`localet_core.network.training`); the input stack is normalised by
:func:`localet_core.network.patches.prepare_network_views`.
"""
from __future__ import annotations

import copy
import math
from typing import Iterator, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from localet_core.config import PRECISIONS
from localet_core.device import memory_budget
from localet_core.network.encoder import encode_at_voxels
from localet_core.network.model import LocalizedNet, angular_basis
from localet_core.network.patches import context_views, prepare_network_views, sample_context, sample_patches
from localet_core.pipeline import Slab, distribute_slabs, slab_ranges
from localet_core.reconstruction.backprojection import (
    backproject_grid_sample,
    backproject_separable,
    choose_kernel,
    separable_matrix,
    transpose_csr,
)
from localet_core.reconstruction.geometry import TiltGeometry
from localet_core.reconstruction.wbp import sparse_matrix_bytes

#: The sparse kernel slows 2-3x when a slab holds more than about this many (row x channel)
#: columns (k=32: 4 rows 11.3 s, 16 rows 18.2 s for 512x512x128; the output leaves the cache).
SPARSE_ROW_CHANNELS = 128
#: Voxels per chunk of the per-voxel layers on the CPU: small enough that a chunk's activations
#: stay in the cache (measured, the shipped model on 2 cores: 2^14 voxels 2.3x faster per voxel
#: than 2^18, 4-8x with the contiguous input of ``LocalizedNet.head_features``).
HEAD_CHUNK = 1 << 14
#: ... on a GPU, where each chunk costs kernel launches rather than cache (not measured here:
#: the size used before the CPU's was made smaller).
HEAD_CHUNK_GPU = 1 << 18
#: Detector rows the encoder computes at a time (reused by the slabs that need them).
ENCODER_BLOCK = 64
#: torch dtype of each of :data:`localet_core.config.PRECISIONS`
DTYPES = dict(zip(PRECISIONS, (torch.float32, torch.bfloat16)))


def _band(geometry: TiltGeometry, y0: int, y1: int, height: int, halo: int) -> Tuple[int, int]:
    """Detector rows ``[n0, n1)`` of the channel images that output rows y0:y1 touch (bilinear
    neighbours included), clipped to the extended range ``[-halo, height + halo)`` beyond which
    the channel images are zero. Separable geometries: exactly ``[y0, y1)``."""
    if geometry.is_separable:
        return y0, y1
    nz, _, nx = geometry.output_shape
    corners = torch.tensor([[z, y, x] for z in (0, nz - 1) for y in (y0, y1 - 1) for x in (0, nx - 1)],
                           dtype=torch.float64)
    rows, _ = geometry.detector_coordinates(corners[:, 0], corners[:, 1], corners[:, 2])
    # the mapping is affine, so the extremes over the box are at its corners
    n0 = max(-halo, int(math.floor(float(rows.min()))))
    n1 = min(height + halo, int(math.floor(float(rows.max()))) + 2)
    return n0, max(n0 + 1, n1)


class FastForm:
    """The factorised network on one set of prepared views (see module docstring).

    Args:
        model: the network (its first-layer kernels are evaluated at the geometry's angles).
        images: ``(n_used, H, W)`` prepared views (:func:`prepare_network_views`).
        geometry: their tilt geometry.
        precision: ``fp32`` or ``bf16`` for the per-voxel layers (the back-projection stays fp32).
        kernel: back-projection kernel (``auto``: sparse on CPU for separable geometries).
    """

    def __init__(self, model: LocalizedNet, images: torch.Tensor, geometry: TiltGeometry,
                 precision: str = "fp32", kernel: str = "auto", budget: Optional[int] = None,
                 trainable: bool = False) -> None:
        cfg = model.config
        self.trainable = trainable
        self.model, self.geometry = model, geometry
        self.device = images.device
        self.head_chunk = HEAD_CHUNK if self.device.type == "cpu" else HEAD_CHUNK_GPU
        self.kernel = choose_kernel(geometry, self.device, kernel)
        self.dtype = DTYPES[precision]
        self.halo = cfg.halo  # the wider of the fine and the context patches' half-widths
        n, self.height, self.width = images.shape
        matrix_bytes = sparse_matrix_bytes(geometry, n) * (self.width + 2 * self.halo)
        if (kernel == "auto" and self.kernel == "sparse" and budget is not None
                and matrix_bytes > budget * geometry.output_shape[2]):
            self.kernel = "grid_sample"  # the whole-volume matrix would not fit the budget
        # the grid-sample kernel's temporaries (~32 bytes per view x voxel x channel) within it
        self.max_elements = 1 << 25 if budget is None else min(1 << 25, max(1 << 16, budget // 32))
        angles = torch.as_tensor(geometry.used_angles)
        self.lin_channels = cfg.channels + int(cfg.fbp_residual)
        self.channels = cfg.total_channels
        if not trainable:  # evaluated once; a trainable form evaluates them at every slab
            with torch.no_grad():
                self.conv_weight, self.ctx_weight, self.bias = self._first_weights(angles)
        self.images, self.angles = images.float(), angles
        self._enc_rows: Tuple[int, int] = (0, 0)
        self._enc: Optional[torch.Tensor] = None
        # zero-pad once by 2 halos: the correlation of the padded image, unpadded, gives the
        # channel images on the extended grid [-halo, size + halo) in both directions
        h2 = 2 * self.halo
        self.padded = F.pad(images.float().unsqueeze(0), (h2, h2, h2, h2))
        self.ctx_padded = None
        if cfg.context_channels:
            low = context_views(images.float(), cfg.context_step)
            self.ctx_padded = F.pad(low.unsqueeze(0), (h2, h2, h2, h2))
        self.weights = torch.as_tensor(geometry.view_weights(), dtype=torch.float32, device=self.device)
        self.ext_width = self.width + 2 * self.halo
        self.matrix = self.matrix_t = None
        if self.kernel == "sparse":
            self.matrix = separable_matrix(geometry, self.weights, device=self.device,
                                           col_origin=-self.halo, n_cols=self.ext_width)
            if trainable:
                self.matrix_t = transpose_csr(self.matrix)
        self.head = model if self.dtype == torch.float32 else _cast_copy(model, self.dtype)

    def with_first_layer(self, model: LocalizedNet) -> "FastForm":
        """This form on the same views, back-projector and per-voxel layers, with ``model``'s
        first-layer kernels (a mirror image of this form's model: same config and later layers;
        :mod:`localet_core.network.mirror`)."""
        other = copy.copy(self)
        other.model = model
        with torch.no_grad():
            other.conv_weight, other.ctx_weight, other.bias = other._first_weights(self.angles)
        return other

    def _first_weights(self, angles: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor], torch.Tensor]:
        """The grouped-convolution weights ``(n * K_lin, 1, P, P)`` and (context channels, else
        None) ``(n * Kc, 1, Pc, Pc)``, and the bias ``(K,)``."""
        cfg = self.model.config
        kernels = self.model.view_kernels(angles).to(device=self.device, dtype=torch.float32)
        weight = kernels.reshape(-1, 1, cfg.patch_size, cfg.patch_size)
        ctx = None
        if cfg.context_channels:
            ctx = self.model.context_kernels(angles).to(device=self.device, dtype=torch.float32)
            ctx = ctx.reshape(-1, 1, cfg.context_patch, cfg.context_patch)
        return weight, ctx, self.model.first_bias().to(self.device, torch.float32)

    def _correlate(self, padded: torch.Tensor, weight: torch.Tensor, n0: int, n1: int, step: int,
                   size: int) -> torch.Tensor:
        """``(n, K, n1 - n0, W + 2 halo)``: views ``padded`` (zero-padded by 2 halos) correlated
        with the ``size`` x ``size`` kernels of ``weight`` dilated by ``step``, on detector rows
        n0:n1 and columns -halo .. W + halo (the extended grid)."""
        half, h2 = step * (size - 1) // 2, 2 * self.halo
        band = padded[:, :, n0 - half + h2:n1 + half + h2, self.halo - half:self.halo + self.ext_width + half]
        n = padded.shape[1]
        return F.conv2d(band, weight, groups=n, dilation=step).view(n, -1, n1 - n0, self.ext_width)

    def rows_per_slab(self, budget: int) -> int:
        """Output rows per slab under ``budget`` bytes: channel images of the band (x2 for the
        re-ordered copy), back-projected slab (x3: result, permuted copy, head input), head
        activations (one chunk)."""
        nz, ny, nx = self.geometry.output_shape
        n = len(self.geometry.used_views)
        cfg = self.model.config
        widest = max((cfg.per_voxel_inputs,) + cfg.hidden)
        fixed = self.head_chunk * widest * 4 * 3
        if cfg.encoder:  # the cached block of encoder channels and the encoder's activations
            fixed += 4 * n * self.width * ENCODER_BLOCK * (cfg.encoder_channels + 2 * max(cfg.encoder))
        per_row = 4 * self.channels * (2 * n * self.ext_width + 3 * nz * nx)
        if cfg.volume_head:  # every row's features and the 3D head's activations, whole slabs
            per_row += 4 * nz * nx * (2 * widest + 2 * max(cfg.volume_head))
            fixed += 2 * cfg.volume_radius * per_row  # the halo rows
        rows = max(1, (budget - fixed) // per_row)
        if self.kernel == "sparse":
            rows = min(rows, max(1, SPARSE_ROW_CHANNELS // self.channels))
        if cfg.volume_head:  # slabs much thicker than the halo (the halo rows are computed twice)
            rows = max(rows, 4 * cfg.volume_radius)
        return int(min(ny, rows))

    def z_chunk(self, budget: int, rows: int) -> int:
        """Output slices computed at a time for slabs of ``rows`` rows: all of them, unless
        one row of the first layer's channels (x3) would exceed ``budget`` (a very thick
        volume); the sparse kernel always takes all."""
        nz, _, nx = self.geometry.output_shape
        if self.kernel == "sparse":
            return nz
        per_slice = 4 * self.channels * 3 * rows * nx
        return int(max(1, min(nz, budget // max(1, per_slice))))

    def first_layer(self, y0: int, y1: int, z_range: Optional[Tuple[int, int]] = None) -> torch.Tensor:
        """``(nz, y1 - y0, nx, K)`` first-layer outputs (bias included) for output rows y0:y1
        (and slices ``z_range``, default all; the grid-sample kernel only)."""
        n0, n1 = _band(self.geometry, y0, y1, self.height, self.halo)
        n = self.padded.shape[1]
        cfg = self.model.config
        if self.trainable:
            conv_weight, ctx_weight, bias = self._first_weights(self.angles)
        else:
            conv_weight, ctx_weight, bias = self.conv_weight, self.ctx_weight, self.bias
        chans = self._correlate(self.padded, conv_weight, n0, n1, cfg.step, cfg.patch_size)
        if self.model.encoder is not None:
            enc = F.pad(self.encoded(n0, n1), (self.halo, self.halo))
            chans = torch.cat([chans, enc], dim=1)
        if ctx_weight is not None:
            ctx = self._correlate(self.ctx_padded, ctx_weight, n0, n1, cfg.context_step, cfg.context_patch)
            chans = torch.cat([chans, ctx], dim=1)
        nz = self.geometry.output_shape[0]
        if self.kernel == "sparse":
            layout = chans.permute(0, 3, 2, 1).reshape(n * self.ext_width, n1 - n0, self.channels)
            out = backproject_separable(self.matrix, layout, (0, n1 - n0), nz, transposed=self.matrix_t)
        else:
            out = backproject_grid_sample(self.geometry, chans.permute(0, 2, 3, 1), self.weights,
                                          (y0, y1), z_range=z_range, max_elements=self.max_elements,
                                          detector_origin=(n0, -self.halo))
        return out + bias

    def encoded(self, n0: int, n1: int) -> torch.Tensor:
        """``(n, C, n1 - n0, W)`` encoder channels of detector rows n0:n1 (zero off the
        detector), from a cached block of :data:`ENCODER_BLOCK` rows when it holds them."""
        if self.trainable:  # no cache: the encoder changes at every step
            return self.model.encode(self.images, self.angles, (n0, n1)).float()
        a, b = max(0, n0), min(self.height, n1)
        c0, c1 = self._enc_rows
        if self._enc is None or a < c0 or b > c1:
            c0, c1 = a, min(self.height, max(b, a + ENCODER_BLOCK))
            with torch.no_grad():
                self._enc = self.model.encode(self.images, self.angles, (c0, c1)).float()
            self._enc_rows = (c0, c1)
        out = self._enc.new_zeros(self._enc.shape[:2] + (n1 - n0, self.width))
        if b > a:
            out[:, :, a - n0:b - n0] = self._enc[:, :, a - c0:b - c0]
        return out

    def slab(self, y0: int, y1: int, z_chunk: Optional[int] = None) -> torch.Tensor:
        """``(nz, y1 - y0, nx)`` float32 predictions for output rows y0:y1 (on the device),
        computed ``z_chunk`` slices at a time (default: all; see :meth:`z_chunk`)."""
        nz = self.geometry.output_shape[0]
        if self.model.config.volume_head:
            return self._slab_with_volume_head(y0, y1)
        step = nz if z_chunk is None or self.kernel == "sparse" else max(1, int(z_chunk))
        result = None
        for z0 in range(0, nz, step):
            z1 = min(nz, z0 + step)
            h = self.first_layer(y0, y1, None if step == nz else (z0, z1))
            shape = h.shape[:-1]
            flat = h.reshape(-1, self.channels)
            out = torch.empty(flat.shape[0], dtype=torch.float32, device=self.device)
            for a in range(0, flat.shape[0], self.head_chunk):
                out[a:a + self.head_chunk] = self.head.head(flat[a:a + self.head_chunk].to(self.dtype)).float()
            if step == nz:
                return out.view(shape)
            if result is None:
                result = torch.empty((nz,) + tuple(shape[1:]), dtype=torch.float32, device=self.device)
            result[z0:z1] = out.view(shape)
            del h, flat, out
        return result


    def _slab_with_volume_head(self, y0: int, y1: int) -> torch.Tensor:
        """:meth:`slab` of a model with a 3D head: the per-voxel layers on the rows ``y0 - R``
        to ``y1 + R`` inside the volume (every slice), then the 3D head on their features."""
        nz, ny, nx = self.geometry.output_shape
        rad = self.model.config.volume_radius
        a, b = max(0, y0 - rad), min(ny, y1 + rad)
        h = self.first_layer(a, b)
        flat = h.reshape(-1, self.channels)
        outs, feats = [], []
        for c in range(0, flat.shape[0], self.head_chunk):
            out, z = self.head.head_features(flat[c:c + self.head_chunk].to(self.dtype))
            outs.append(out)
            feats.append(z)
        out = torch.cat(outs).float().view(nz, b - a, nx)
        z = torch.cat(feats).view(nz, b - a, nx, -1)
        if a > y0 - rad or b < y1 + rad:  # rows outside the volume: zero features
            z = F.pad(z, (0, 0, 0, 0, a - (y0 - rad), (y1 + rad) - b))
        rows = torch.arange(y0 - rad, y1 + rad, device=self.device)
        correction = self.head.volume_correction(z, (rows >= 0) & (rows < ny))
        return out[:, y0 - a:y1 - a] + correction.float()


def _cast_copy(model: LocalizedNet, dtype: torch.dtype) -> LocalizedNet:
    import copy

    return copy.deepcopy(model).to(dtype)


def iter_fast_slabs(
    model: LocalizedNet,
    images: torch.Tensor,
    geometry: TiltGeometry,
    budget: int,
    precision: str = "fp32",
    kernel: str = "auto",
    ranges: Optional[Sequence[Tuple[int, int]]] = None,
) -> Iterator[Slab]:
    """Fast-form reconstruction, yielded as ``(y0, y1, (nz, y1 - y0, nx) float32 numpy)``.

    Args:
        budget: working-set bytes (slab size).
        ranges: the row ranges to compute (default: all, from the budget); distributed runs pass
            their share.
    """
    fast = FastForm(model, images, geometry, precision, kernel)
    if ranges is None:
        ranges = slab_ranges(geometry.output_shape[1], fast.rows_per_slab(budget))
    with torch.no_grad():
        for y0, y1 in ranges:
            yield y0, y1, fast.slab(y0, y1).cpu().numpy()


def iter_direct_slabs(
    model: LocalizedNet,
    images: torch.Tensor,
    geometry: TiltGeometry,
    budget: int = 1 << 28,
    ranges: Optional[Sequence[Tuple[int, int]]] = None,
) -> Iterator[Slab]:
    """Direct (patch) form: sample every voxel's patches and run the whole network. Same output
    as :func:`iter_fast_slabs`; far slower (it exists to check the fast form, and for training)."""
    nz, ny, nx = geometry.output_shape
    cfg = model.config
    n = len(geometry.used_views)
    per_voxel = cfg.patch_size ** 2 + (cfg.context_patch ** 2 if cfg.context_channels else 0)
    if cfg.encoder:  # the windows and the encoder's activations on them
        per_voxel += (2 * cfg.encoder_radius + 2) ** 2 * (1 + 2 * max(cfg.encoder))
    batch = max(1, budget // (3 * 4 * n * per_voxel))
    angles = torch.as_tensor(geometry.used_angles)
    basis = angular_basis(angles, cfg.n_angle_basis).to(images)
    weights = torch.as_tensor(geometry.view_weights())
    device = images.device
    low = context_views(images, cfg.context_step) if cfg.context_channels else None
    if ranges is None:
        ranges = slab_ranges(ny, max(1, batch // (nz * nx)) if batch >= nz * nx else 1)
    rad = cfg.volume_radius

    def per_voxel(y0: int, y1: int) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Rows y0:y1 through the per-voxel network, patch by patch: ``(nz, rows, nx)``
        predictions and, with a 3D head, the ``(nz, rows, nx, F)`` features it convolves."""
        grid = torch.stack(torch.meshgrid(torch.arange(nz), torch.arange(y0, y1), torch.arange(nx),
                                          indexing="ij"), dim=-1).reshape(-1, 3).to(device)
        out = torch.empty(grid.shape[0], dtype=torch.float32, device=device)
        feats = []
        for a in range(0, grid.shape[0], batch):
            patches = sample_patches(images, geometry, grid[a:a + batch], cfg.patch_size, cfg.step)
            encoded = None
            if model.encoder is not None:
                encoded = encode_at_voxels(model.encoder, images, basis, geometry, grid[a:a + batch])
            context = None if low is None else sample_context(low, geometry, grid[a:a + batch], cfg)
            pred, z = model.head_features(model.first_layer(patches, angles, weights, encoded, context))
            out[a:a + batch] = pred.float()
            if rad:
                feats.append(z)
        z = torch.cat(feats).view(nz, y1 - y0, nx, -1) if rad else None
        return out.view(nz, y1 - y0, nx), z

    with torch.no_grad():
        for y0, y1 in ranges:
            if not rad:
                yield y0, y1, per_voxel(y0, y1)[0].cpu().numpy()
                continue
            a, b = max(0, y0 - rad), min(ny, y1 + rad)
            out, z = per_voxel(a, b)
            z = F.pad(z, (0, 0, 0, 0, a - (y0 - rad), (y1 + rad) - b))
            rows = torch.arange(y0 - rad, y1 + rad, device=device)
            correction = model.volume_correction(z, (rows >= 0) & (rows < ny))
            yield y0, y1, (out[:, y0 - a:y1 - a] + correction.float()).cpu().numpy()


def iter_model_slabs(
    stack: np.ndarray,
    geometry: TiltGeometry,
    model: LocalizedNet,
    device: torch.device,
    budget: Optional[int] = None,
    precision: str = "fp32",
    form: str = "fast",
    mirrors: int = 1,
) -> Iterator[Slab]:
    """Network reconstruction of a raw ``stack`` ``(n_views, ny, nx)`` as ``(y0, y1, (nz, rows,
    nx) float32)`` slabs in order, in the network's units.

    With ``mirrors`` 2 or 4 each slab is the mean of the model's and its mirror images' slabs
    (:mod:`localet_core.network.mirror`), computed one after the other on the same filtered
    views and back-projector (2x or 4x the time, little more memory).

    Under torchrun every rank must iterate this to the end; only rank 0 yields (the others
    compute their share of the slabs and send them, see
    :func:`localet_core.pipeline.distribute_slabs`).

    Args:
        budget: working-set bytes (default: half the free memory of ``device``, capped).
        precision: ``fp32`` or ``bf16`` for the per-voxel layers (fast form).
        form: ``fast`` (factorised, exact) or ``direct`` (patch by patch, for checks).
    """
    from localet_core.network.mirror import mirror_models

    models = [m.to(device).eval() for m in mirror_models(model, mirrors)]
    model = models[0]
    images, _ = prepare_network_views(stack, geometry, model.config.ramp(), device,
                                      per_view=model.config.view_norm == "view")
    budget = memory_budget(device, budget)
    if form == "direct":
        ranges = slab_ranges(geometry.output_shape[1], 1)

        def compute(y0: int, y1: int) -> np.ndarray:
            slabs = [next(iter_direct_slabs(m, images, geometry, budget, [(y0, y1)]))[2] for m in models]
            return slabs[0] if len(slabs) == 1 else np.mean(slabs, axis=0, dtype=np.float32)
    else:
        fast = FastForm(model, images, geometry, precision, budget=budget)
        forms = [fast] + [fast.with_first_layer(mirrored) for mirrored in models[1:]]
        rows = fast.rows_per_slab(budget)
        ranges = slab_ranges(geometry.output_shape[1], rows)
        z_chunk = fast.z_chunk(budget, rows)

        def compute(y0: int, y1: int) -> np.ndarray:
            with torch.no_grad():
                out = forms[0].slab(y0, y1, z_chunk)
                if len(forms) > 1:  # the default (one form) returns its slab untouched
                    for other in forms[1:]:  # not in place: a form may hand out a buffer it reuses
                        out = out + other.slab(y0, y1, z_chunk)
                    out = out / len(forms)
                return out.cpu().numpy()

    yield from distribute_slabs(ranges, compute, geometry.output_shape, device)
