"""Weighted back-projection on the CPU without torch: numpy, scipy's FFTs and localet's compiled CSR
product (:mod:`localet_core.native`; scipy's where it is not built).

The same reconstruction as :func:`localet_core.reconstruction.wbp.iter_wbp_slabs` with the sparse
kernel (separable geometries: an aligned stack, no X-axis tilt), from the same pieces: the
geometry (:class:`~localet_core.reconstruction.geometry.TiltGeometry`), the ramp filter
(:func:`~localet_core.reconstruction.filters.ramp_filter_rows_array`, which the torch path runs
on the CPU too), the matrix, its row order and slab loop
(:mod:`localet_core.reconstruction.separable`) and the slab writer
(:func:`localet_core.pipeline.write_slabs`); only the sparse product differs (ours or scipy's
instead of MKL's through torch). The volumes agree to float32 rounding.

Why: importing torch takes longer than reconstructing a 512 x 512 x 128 volume (about 2 s
against 0.4 s on the reference machine's 2 cores), so ``localet fbp`` on the CPU takes this
path (:func:`numpy_wbp_applies`): always with localet's compiled product, and without it unless
the volume is large enough for MKL's faster product to win the import back
(:data:`NUMPY_MAX_UPDATES`). Importing this module does not import torch.
"""
from __future__ import annotations

import collections
import os
import threading
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Optional

import numpy as np

from localet_core.device import memory_budget
from localet_core.native import native_enabled
from localet_core.pipeline import Slab, slab_ranges
from localet_core.reconstruction.filters import RampFilter, bin_images, ramp_filter_rows_array
from localet_core.reconstruction.separable import (
    KERNEL_ROWS,
    Z_BLOCK,
    SeparableSlabs,
    SlabBuffers,
    rows_per_slab,
    separable_matrix_numpy,
    sparse_matrix_bytes,
)

if TYPE_CHECKING:
    from localet_core.reconstruction.geometry import TiltGeometry

#: The largest back-projection (used views x output voxels) :func:`numpy_wbp_applies` gives to
#: this path when localet's compiled product (:mod:`localet_core.native`) is not built. scipy's
#: CSR product costs about 5x MKL's per entry and importing torch about 2 s: measured
#: (benchmarks/bench_cli.py), 512 x 512 x 128 from 41 views (1.4 G) is faster here, 1024 x 1024
#: x 256 (11 G) through torch. With the compiled product there is no limit: 1024 x 1024 x 256 took
#: 4.65 s here against 7.83 s through torch (bench_cli.py, the developer VM's 2 cores).
NUMPY_MAX_UPDATES = 3_000_000_000

#: ``LOCALET_FBP_ENGINE=torch|numpy|auto``: which path ``localet fbp`` takes for a WBP on the CPU
#: (default ``auto``: :func:`numpy_wbp_applies`); for measurements and tests.
ENGINE_VARIABLE = "LOCALET_FBP_ENGINE"


def cpu_threads() -> int:
    """Threads for this path: ``OMP_NUM_THREADS`` when set (the variable torch's intra-op threads
    follow), else the CPUs this process may run on."""
    text = os.environ.get("OMP_NUM_THREADS", "").strip()
    if text.isdigit() and int(text) > 0:
        return int(text)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def numpy_wbp_applies(geometry: "TiltGeometry", budget: Optional[int] = None) -> bool:
    """Whether :func:`iter_wbp_slabs_array` can take this geometry (separable, its matrix within
    the memory budget) and is the faster path for it (at most :data:`NUMPY_MAX_UPDATES`)."""
    if not geometry.is_separable:
        return False
    n_used = len(geometry.used_views)
    if sparse_matrix_bytes(geometry, n_used) > memory_budget("cpu", budget):
        return False
    if native_enabled():  # the compiled product is as fast as MKL's: no import of torch to win back
        return True
    nz, ny, nx = geometry.output_shape
    return n_used * nz * ny * nx <= NUMPY_MAX_UPDATES


def prepare_views_array(stack: np.ndarray, geometry: "TiltGeometry", ramp: Optional[RampFilter],
                        threads: int = 1) -> np.ndarray:
    """:func:`localet_core.reconstruction.wbp.prepare_views` in numpy, for a geometry without an
    ``.xf``: the used views, binned, ramp-filtered along X; ``(n_used, ny_b, nx_b)`` float32, never
    the caller's array."""
    if geometry.xf is not None:
        raise ValueError("the numpy WBP takes an aligned stack (a geometry without an .xf)")
    geometry.check_stack(tuple(stack.shape))
    used = list(geometry.used_views)
    views = np.asarray(stack) if len(used) == stack.shape[0] else np.asarray(stack)[used]
    views = bin_images(np.asarray(views, dtype=np.float32), geometry.binning, geometry.crop_offsets)
    if ramp is not None:
        return ramp_filter_rows_array(views, ramp, threads=threads)
    return views.copy() if np.shares_memory(views, stack) else views


def _ordered(compute: Callable[[Any], Any], items: Iterable[Any], workers: int) -> Iterator[Any]:
    """``compute(item)`` for each item, in order, with up to ``workers`` computed at a time in
    threads (``workers`` ahead of the one handed out: bounded memory)."""
    if workers <= 1:
        for item in items:
            yield compute(item)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers, thread_name_prefix="localet-wbp") as pool:
        pending: collections.deque = collections.deque()
        try:
            for item in items:
                pending.append(pool.submit(compute, item))
                if len(pending) > workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


def iter_wbp_slabs_array(
    stack: np.ndarray,
    geometry: "TiltGeometry",
    ramp: Optional[RampFilter] = RampFilter(),
    budget: Optional[int] = None,
    threads: Optional[int] = None,
) -> Iterator[Slab]:
    """Weighted back-projection of ``stack`` without torch, yielded as ``(y0, y1, slab)`` numpy
    float32 slabs ``(nz, y1 - y0, nx_out)`` in output order: the values of
    :func:`localet_core.reconstruction.wbp.iter_wbp_slabs` (sparse kernel) to float32 rounding.

    Args:
        stack: ``(n_views, ny, nx)`` stack, all views in stack order (aligned: no ``.xf``).
        geometry: a separable geometry whose matrix fits ``budget`` (:func:`numpy_wbp_applies`).
        ramp: ramp filter settings; ``None`` for an unfiltered back-projection.
        budget: working-memory bytes (default: half the available memory, capped).
        threads: threads for the FFTs and the products (default :func:`cpu_threads`): slabs
            are computed ``threads`` at a time, each with its own scratch buffers.
    """
    if not geometry.is_separable:
        raise ValueError("the numpy WBP needs a separable geometry (no .xf, no X-axis tilt)")
    threads = cpu_threads() if threads is None else max(1, int(threads))
    budget = memory_budget("cpu", budget)
    n_used = len(geometry.used_views)
    if sparse_matrix_bytes(geometry, n_used) > budget:
        raise MemoryError("the sparse matrix does not fit the memory budget: use the torch path")
    images = prepare_views_array(stack, geometry, ramp, threads)
    weights = geometry.view_weights().astype(np.float32)
    nz, ny, nxo = geometry.output_shape
    z_block = Z_BLOCK if nz >= 2 * Z_BLOCK else 1
    matrix = separable_matrix_numpy(geometry, weights, z_block=z_block, threads=threads)
    # each thread: its scratch (layout + product, about one slab) and its output slab; plus the
    # slab handed out and the writer's copy: 2 threads + 2 slabs, against rows_per_slab's 4
    rows = max(1, min(KERNEL_ROWS, rows_per_slab(geometry, budget) * 4 // (2 * threads + 2)))
    local = threading.local()
    buffers = SlabBuffers()

    def compute(task):
        y0, y1, out = task
        kernel = getattr(local, "kernel", None)
        if kernel is None:
            kernel = local.kernel = SeparableSlabs(matrix, images, nz, z_block, rows)
        return y0, y1, kernel(y0, y1, out)

    tasks = ((y0, y1, buffers.take((nz, y1 - y0, nxo)))
             for y0, y1 in slab_ranges(ny, rows))
    for y0, y1, slab in _ordered(compute, tasks, threads):
        yield y0, y1, buffers.lend(slab)
