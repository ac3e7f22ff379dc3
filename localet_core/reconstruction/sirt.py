"""SIRT: the simultaneous iterative reconstruction technique, a quality baseline for WBP.

    x <- x + relaxation * C * Bp( R * (b - Pj(x)) )

with ``Pj`` the projector (the exact adjoint of the unweighted back-projection ``Bp`` of
:mod:`localet_core.reconstruction.backprojection`, so both share one interpolation model), ``R`` the inverse
ray sums ``1 / Pj(1)`` and ``C`` the inverse voxel sums ``1 / Bp(1)``. Each view is mean-subtracted
first: a constant offset per view is inconsistent with any finite slab and would leave streaks.

Separable geometries run slab by slab along Y (every row is an independent 2D problem: all
iterations on one slab of rows, then the next), within the memory budget (:func:`plan_separable`):
the operators ``B`` and ``P`` cover one (z, x) section and all views; when they do not fit the
budget they are built in blocks of slices, kept in memory, or written to a scratch file and read
back block by block at every iteration (slower, but bounded). Others (``.xf`` in a library call,
X-axis tilt, a GPU) iterate on the whole volume, which is refused when it does not fit the budget.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Tuple, Union

import numpy as np
import torch

from localet_core.config import SIRT_ITERATIONS, SIRT_RELAXATION
from localet_core.device import memory_budget, resolve_device
from localet_core.errors import FieldError, InputError
from localet_core.pipeline import Slab, assemble_slabs, slab_ranges
from localet_core.reconstruction.backprojection import backproject_grid_sample, choose_kernel, separable_matrix
from localet_core.reconstruction.geometry import TiltGeometry
from localet_core.reconstruction.projector import SeparableOperators, project_general
from localet_core.reconstruction.wbp import prepare_views


def _safe_reciprocal(t: torch.Tensor) -> torch.Tensor:
    return torch.where(t > 1e-6, 1.0 / t.clamp(min=1e-6), torch.zeros_like(t))


#: Peak bytes while one block of the operators is built, per byte of the block (``B`` and its
#: transpose ``P``): building ``B`` takes twice its size, transposing it about 5.6 times (measured
#: with ``ru_maxrss`` on a 512 x 256 section, 41 views); so about 3.5 times ``B + P``.
BUILD_FACTOR = 3.5


def operator_bytes(geometry: TiltGeometry, z_slices: Optional[int] = None) -> int:
    """Bytes of the separable operators ``B`` and ``P = B^T`` (CSR: int32 columns, float32 values,
    two entries per voxel column and view) for ``z_slices`` output slices (default all)."""
    nz, _, nxo = geometry.output_shape
    nz = nz if z_slices is None else z_slices
    n_used = len(geometry.used_views)
    nxd = geometry.binned_detector_shape[1]
    nnz = 2 * n_used * nz * nxo
    return 2 * 8 * nnz + 4 * (nz * nxo + 1) + 4 * (n_used * nxd + 1)


def row_bytes(geometry: TiltGeometry) -> int:
    """Working bytes of SIRT per output row of a slab: the estimate ``x``, a back-projected
    update and the output copy (voxels), data, projection, residual and a temporary (detector)."""
    nz, _, nxo = geometry.output_shape
    n_used = len(geometry.used_views)
    nxd = geometry.binned_detector_shape[1]
    return 4 * (3 * nz * nxo + 4 * n_used * nxd)


@dataclass(frozen=True)
class SirtPlan:
    """How separable SIRT runs within a memory budget (:func:`plan_separable`).

    Attributes:
        mode: ``"whole"`` (the operators built at once and kept: the fastest), ``"blocks"``
            (built and kept in blocks of slices: no transpose of the whole matrix at once) or
            ``"scratch"`` (blocks written to a scratch file and read back, one at a time, at
            every iteration: the operators need not fit in memory).
        z_blocks: ``(z0, z1)`` slices of each block.
        rows: output rows per slab (all iterations run on one slab, then the next).
        scratch_bytes: size of the scratch file (0 unless ``mode == "scratch"``).
    """

    mode: str
    z_blocks: Tuple[Tuple[int, int], ...]
    rows: int
    scratch_bytes: int = 0


def plan_separable(geometry: TiltGeometry, budget: int) -> SirtPlan:
    """The fastest way to run SIRT on a separable ``geometry`` whose peak memory stays within
    ``budget`` bytes (beyond the process's own footprint and the stack).

    Raises:
        InputError: not even one slice of the operators and one output row fit the budget.
    """
    nz, ny, _ = geometry.output_shape
    total = operator_bytes(geometry)
    per_row = row_bytes(geometry)
    if BUILD_FACTOR * total + per_row * min(ny, 8) <= budget:
        rows = max(1, min(ny, (budget - total) // per_row // 2))
        return SirtPlan("whole", ((0, nz),), int(rows))
    slice_bytes = operator_bytes(geometry, 1)
    # kept in memory, built in blocks: all of them + the build of one + one row
    free = budget - total - per_row
    if free > (BUILD_FACTOR - 1) * slice_bytes:
        per_block = max(1, min(nz, int(free // 2 / ((BUILD_FACTOR - 1) * slice_bytes))))
        blocks = tuple((z0, min(nz, z0 + per_block)) for z0 in range(0, nz, per_block))
        left = budget - total - (BUILD_FACTOR - 1) * operator_bytes(geometry, per_block)
        return SirtPlan("blocks", blocks, int(max(1, min(ny, left // per_row))))
    # a scratch file: one block in memory at a time (its build, then its buffer), and the slab
    if BUILD_FACTOR * slice_bytes + per_row > budget:
        from localet_core.io.outputs import format_bytes

        raise InputError("memory_budget", f"is too small for SIRT of this volume: one slice of its "
                         f"projection operators and one output row need "
                         f"{format_bytes(BUILD_FACTOR * slice_bytes + per_row)}, the budget is "
                         f"{format_bytes(budget)}; give a larger --memory, a smaller --width or a larger --bin")
    per_block = max(1, min(nz, int(budget // 2 // (BUILD_FACTOR * slice_bytes))))
    blocks = tuple((z0, min(nz, z0 + per_block)) for z0 in range(0, nz, per_block))
    left = budget - BUILD_FACTOR * operator_bytes(geometry, per_block)
    rows = max(1, min(ny, int(max(left, budget // 2) // per_row)))
    return SirtPlan("scratch", blocks, rows, scratch_bytes=sum(operator_bytes(geometry, z1 - z0) for z0, z1 in blocks))


def sirt_scratch_bytes(geometry: TiltGeometry, budget: int, device: Union[str, torch.device] = "cpu") -> int:
    """Bytes of scratch file SIRT of ``geometry`` will write under ``budget`` (for a command's
    free-space check; 0 when its operators fit in memory or the geometry is not separable)."""
    if choose_kernel(geometry, resolve_device(device)) != "sparse":
        return 0
    return plan_separable(geometry, budget).scratch_bytes


def _csr_arrays(matrix: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    crow, col, val = matrix.crow_indices(), matrix.col_indices(), matrix.values()
    return crow.to(torch.int32), col.to(torch.int32), val


def _csr(crow: torch.Tensor, col: torch.Tensor, val: torch.Tensor, shape: Tuple[int, int]) -> torch.Tensor:
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, val, size=shape, check_invariants=False)


class _BlockOperators:
    """``B`` and ``P = B^T`` in blocks of output slices, kept in memory or on a scratch file.

    Block ``k`` covers the rows ``(z, x)`` of slices ``z0:z1`` of ``B``: ``B_k`` is
    ``((z1 - z0) * nx_out, n_used * nx_det)``, ``P_k`` its transpose. ``inv_vox`` (per voxel
    column) and ``inv_ray`` (per detector column) are computed while the blocks are built.
    """

    def __init__(self, geometry: TiltGeometry, plan: SirtPlan, device: torch.device) -> None:
        nz, _, nxo = geometry.output_shape
        n_used = len(geometry.used_views)
        self.n_det = n_used * geometry.binned_detector_shape[1]
        self.nxo = nxo
        self.plan = plan
        self.scratch = None
        self.blocks: list = []  # in memory: (B_k, P_k); on scratch: (offsets, sizes)
        ray = torch.zeros(self.n_det, 1, device=device)
        vox = []
        offset = 0
        if plan.mode == "scratch":
            from localet_core.io.atomic import ScratchFile

            self.scratch = ScratchFile("sirt-operators")
        try:
            for z0, z1 in plan.z_blocks:
                b = separable_matrix(geometry, torch.ones(n_used), z_range=(z0, z1), device=device)
                p = b.t().to_sparse_csr()
                vox.append(_safe_reciprocal(torch.sparse.mm(b, torch.ones(self.n_det, 1, device=device))))
                ray += torch.sparse.mm(p, torch.ones(b.shape[0], 1, device=device))
                if self.scratch is None:
                    self.blocks.append((b, p))
                    continue
                entry = []
                for m in (b, p):
                    arrays = [a.contiguous().cpu().numpy() for a in _csr_arrays(m)]
                    for a in arrays:
                        self.scratch.write(a, offset)
                        offset += a.nbytes
                    entry.append((tuple(m.shape), tuple(a.size for a in arrays)))
                self.blocks.append(entry)
                del b, p
        except BaseException:
            self.close()
            raise
        self.inv_vox = torch.cat(vox)
        self.inv_ray = _safe_reciprocal(ray)
        if self.scratch is not None:  # one buffer per array, the largest block's size
            sizes = [[max(e[m][1][i] for e in self.blocks) for i in range(3)] for m in range(2)]
            self._buffers = [(np.empty(s[0], np.int32), np.empty(s[1], np.int32), np.empty(s[2], np.float32))
                             for s in sizes]

    def __iter__(self):
        """``(r0, r1, B_k, P_k)`` for each block: rows ``r0:r1`` of ``x`` (voxel columns)."""
        offset = 0
        for (z0, z1), entry in zip(self.plan.z_blocks, self.blocks):
            r0, r1 = z0 * self.nxo, z1 * self.nxo
            if self.scratch is None:
                yield r0, r1, entry[0], entry[1]
                continue
            mats = []
            for m, (shape, sizes) in enumerate(entry):
                parts = []
                for buf, size in zip(self._buffers[m], sizes):
                    view = buf[:size]
                    self.scratch.read_into(view, offset)
                    offset += view.nbytes
                    parts.append(torch.from_numpy(view))
                mats.append(_csr(*parts, shape))
            yield r0, r1, mats[0], mats[1]

    def close(self) -> None:
        if self.scratch is not None:
            self.scratch.close()


def _sirt_separable(
    images: torch.Tensor, geometry: TiltGeometry, iterations: int, relaxation: float, budget: int
) -> Iterator[Tuple[int, int, torch.Tensor]]:
    nz, ny, nxo = geometry.output_shape
    plan = plan_separable(geometry, budget)
    n_used, _, nxd = images.shape
    if plan.mode == "whole":  # the operators at once (the fastest; bit-identical to earlier releases)
        ops = SeparableOperators(geometry, images.device)
        inv_ray = _safe_reciprocal(ops.project(torch.ones(ops.back_matrix.shape[0], 1, device=images.device)))
        inv_vox = _safe_reciprocal(ops.back(torch.ones(ops.back_matrix.shape[1], 1, device=images.device)))
        for y0, y1 in slab_ranges(ny, plan.rows):
            b = images[:, y0:y1].permute(0, 2, 1).reshape(n_used * nxd, y1 - y0)
            x = torch.zeros(ops.back_matrix.shape[0], y1 - y0, device=images.device)
            for _ in range(iterations):
                x += relaxation * inv_vox * ops.back(inv_ray * (b - ops.project(x)))
            yield y0, y1, x.view(nz, nxo, y1 - y0).permute(0, 2, 1)
        return
    # blocks of slices, kept or on a scratch file: one pass over the blocks per iteration
    # updates x block by block from the residual and projects the updated block for the next
    ops = _BlockOperators(geometry, plan, images.device)
    try:
        for y0, y1 in slab_ranges(ny, plan.rows):
            b = images[:, y0:y1].permute(0, 2, 1).reshape(n_used * nxd, y1 - y0)
            x = torch.zeros(nz * nxo, y1 - y0, device=images.device)
            projection = torch.zeros_like(b)
            for _ in range(iterations):
                residual = ops.inv_ray * (b - projection)
                projection.zero_()
                for r0, r1, back, project in ops:
                    x[r0:r1] += relaxation * ops.inv_vox[r0:r1] * torch.sparse.mm(back, residual)
                    projection += torch.sparse.mm(project, x[r0:r1])
                del residual
            yield y0, y1, x.view(nz, nxo, y1 - y0).permute(0, 2, 1)
    finally:
        ops.close()


def general_bytes(geometry: TiltGeometry) -> int:
    """About the peak bytes of whole-volume SIRT (:func:`_sirt_general`, an X-axis tilt or a
    GPU): four volumes (estimate, voxel sums, ones, an update), the projector's autograd record
    (a sampling grid and samples: 12 bytes per voxel and view) and 64 MB of sampling temporaries."""
    nz, ny, nx = geometry.output_shape
    voxels = nz * ny * nx
    return 16 * voxels + 12 * voxels * len(geometry.used_views) + (64 << 20)


def _sirt_general(
    images: torch.Tensor, geometry: TiltGeometry, iterations: int, relaxation: float, budget: int
) -> torch.Tensor:
    need = general_bytes(geometry)
    if need > budget:
        from localet_core.io.outputs import format_bytes

        raise InputError("memory_budget", f"is too small for SIRT of this geometry: with an X-axis tilt (or on a "
                         f"GPU) SIRT iterates on the whole volume, which needs about {format_bytes(need)}, more "
                         f"than the budget of {format_bytes(budget)}; give a larger --memory, a smaller "
                         "--thickness/--width or a larger --bin")
    ny = geometry.output_shape[1]
    ones_w = torch.ones(images.shape[0], device=images.device)
    chunk = 1 << 22  # sampling temporaries: about 16 bytes per element

    def back(img: torch.Tensor) -> torch.Tensor:
        return backproject_grid_sample(geometry, img, ones_w, (0, ny), max_elements=chunk)[..., 0]

    inv_ray = _safe_reciprocal(project_general(torch.ones(geometry.output_shape, device=images.device), geometry))
    inv_vox = _safe_reciprocal(back(torch.ones_like(images)))
    x = torch.zeros(geometry.output_shape, device=images.device)
    for _ in range(iterations):
        x += relaxation * inv_vox * back(inv_ray * (images - project_general(x, geometry)))
    return x


def iter_sirt_slabs(
    stack: Union[np.ndarray, torch.Tensor],
    geometry: TiltGeometry,
    iterations: int = SIRT_ITERATIONS,
    relaxation: float = SIRT_RELAXATION,
    device: Union[str, torch.device] = "auto",
    budget: Optional[int] = None,
) -> Iterator[Slab]:
    """SIRT reconstruction yielded as ``(y0, y1, slab)`` numpy float32 slabs ``(nz, rows, nx)``.

    Args:
        stack: ``(n_views, ny, nx)`` raw stack (all views, stack order).
        iterations: number of SIRT iterations (more: sharper and noisier).
        relaxation: step in (0, 2); 1 is the classic choice.
    """
    if iterations < 1:
        raise FieldError("iterations", f"must be at least 1, got {iterations}")
    if not 0 < relaxation < 2:
        raise FieldError("relaxation", f"must lie between 0 and 2, got {relaxation:g}")
    device = resolve_device(device)
    images = prepare_views(stack, geometry, None, device)
    images = images - images.mean(dim=(1, 2), keepdim=True)
    with torch.no_grad():
        if choose_kernel(geometry, device) == "sparse":
            for y0, y1, slab in _sirt_separable(images, geometry, iterations, relaxation,
                                                memory_budget(device, budget)):
                yield y0, y1, slab.cpu().numpy()
        else:
            volume = _sirt_general(images, geometry, iterations, relaxation,
                                   memory_budget(device, budget)).cpu().numpy()
            yield 0, volume.shape[1], volume


def sirt(
    stack: Union[np.ndarray, torch.Tensor],
    geometry: TiltGeometry,
    iterations: int = SIRT_ITERATIONS,
    relaxation: float = SIRT_RELAXATION,
    device: Union[str, torch.device] = "auto",
    budget: Optional[int] = None,
    on_slab: Optional[Callable[[int, int], None]] = None,
) -> np.ndarray:
    """Whole-volume SIRT: ``(nz, ny_b, nx_out)`` float32, same grid as :func:`weighted_backprojection`."""
    return assemble_slabs(geometry.output_shape,
                          iter_sirt_slabs(stack, geometry, iterations, relaxation, device, budget), on_slab)
