"""localet's compiled kernels (``localet_core/_native.c``), loaded with ctypes, with numpy/scipy
fallbacks that compute the same things.

- :func:`csr_product`: the CSR x dense product of the torch-free back-projection
  (:mod:`localet_core.reconstruction.separable`). The kernel gives the same floats as scipy's
  ``csr_matvecs`` (the same order of sums, no fused multiply-adds), 4-5x faster on the reference
  machine: it keeps a block of 16 accumulators in registers over a row's non-zeros and is
  vectorised for AVX2 where the CPU has it.
- :func:`value_stats`: min, max and shifted sums of a float32 array in one pass (the MRC
  writer's header statistics, :mod:`localet_core.io.mrc_write`), where numpy needs seven.
- :func:`resample_bicubic`: one view resampled at affinely mapped positions with torch's bicubic
  ``grid_sample`` weights (:mod:`localet_core.alignment_numpy`: raw stacks with an ``.xf``
  aligned without torch).

The kernels are built by ``pip install`` when a C compiler is there (setup.py, an optional
extension). ctypes releases the GIL during each call, so threads run them in parallel.
``LOCALET_NATIVE=0`` turns them off (measurements, tests). Importing this module imports neither
torch nor scipy.
"""
from __future__ import annotations

import ctypes
import importlib.util
import os
from functools import lru_cache
from typing import Any, Optional, Tuple

import numpy as np

#: ``LOCALET_NATIVE=0``: use the numpy/scipy fallbacks even where the kernels are built.
NATIVE_VARIABLE = "LOCALET_NATIVE"
_ABI = 3


@lru_cache(maxsize=1)
def _library() -> Optional[Any]:
    spec = importlib.util.find_spec("localet_core._native")
    if spec is None or not spec.origin or not os.path.isfile(spec.origin):
        return None
    try:
        lib = ctypes.CDLL(spec.origin)
        if lib.localet_native_abi() != _ABI:
            return None
        spmm, stats = lib.localet_csr_spmm_f32, lib.localet_stats_f32
        bicubic = lib.localet_resample_bicubic_f32
    except (OSError, AttributeError):
        return None
    p, i64 = ctypes.c_void_p, ctypes.c_int64
    bicubic.argtypes = [p, i64, i64, p, ctypes.c_float, p, i64, i64]
    bicubic.restype = None
    spmm.argtypes = [i64, i64, p, p, p, p, i64, p]
    spmm.restype = None
    stats.argtypes = [p, i64, ctypes.c_double, p]
    stats.restype = ctypes.c_int
    return lib


def native_available() -> bool:
    """Whether the compiled kernels are built and load (whatever ``LOCALET_NATIVE`` says)."""
    return _library() is not None


def _enabled() -> Optional[Any]:
    return _library() if os.environ.get(NATIVE_VARIABLE, "1").strip() != "0" else None


def native_enabled() -> bool:
    """Whether the kernels are used now (built, and not turned off by ``LOCALET_NATIVE=0``)."""
    return _enabled() is not None


def csr_product(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, shape: Tuple[int, int],
                dense: np.ndarray, out: np.ndarray) -> None:
    """``out = A @ dense`` for the CSR matrix ``A`` = (indptr, indices, data) of ``shape``
    ``(n_rows, n_cols)``, written into ``out``.

    Args:
        indptr: ``(n_rows + 1,)`` int32.
        indices: ``(nnz,)`` int32 column indices.
        data: ``(nnz,)`` float32 values.
        dense: ``(n_cols, n)`` C-contiguous float32.
        out: ``(n_rows, n)`` C-contiguous float32; its old values are ignored.
    """
    n_rows, n_cols = shape
    if dense.ndim != 2 or dense.shape[0] != n_cols or out.shape != (n_rows, dense.shape[1]):
        raise ValueError(f"CSR product shapes: matrix {shape}, dense {dense.shape}, out {out.shape}")
    if indptr.shape != (n_rows + 1,) or indices.shape != data.shape:
        raise ValueError(f"CSR product shapes: indptr {indptr.shape}, indices {indices.shape}, data {data.shape}")
    for name, a, dtype in (("indptr", indptr, np.int32), ("indices", indices, np.int32),
                           ("data", data, np.float32), ("dense", dense, np.float32), ("out", out, np.float32)):
        if a.dtype != dtype or not a.flags.c_contiguous:
            raise ValueError(f"CSR product: {name} must be C-contiguous {np.dtype(dtype).name}, not {a.dtype}")
    lib = _enabled()
    if lib is not None:
        lib.localet_csr_spmm_f32(0, n_rows, indptr.ctypes.data, indices.ctypes.data, data.ctypes.data,
                                 dense.ctypes.data, dense.shape[1], out.ctypes.data)
        return
    from scipy.sparse._sparsetools import csr_matvecs  # releases the GIL too

    out.fill(0)  # csr_matvecs accumulates
    csr_matvecs(n_rows, n_cols, dense.shape[1], indptr, indices, data, dense.reshape(-1), out.reshape(-1))


def value_stats(values: np.ndarray, shift: float) -> Optional[Tuple[float, float, float, float]]:
    """``(min, max, sum(x - shift), sum((x - shift)^2))`` of a C-contiguous float32 array in one
    pass with float64 sums, or None when the kernels are not available (the caller computes them
    with numpy). Raises ValueError when a value is NaN or infinite."""
    lib = _enabled()
    if lib is None:
        return None
    if values.dtype != np.float32 or not values.flags.c_contiguous:
        raise ValueError(f"value_stats needs C-contiguous float32 values, not {values.dtype}")
    result = np.empty(4, dtype=np.float64)
    if lib.localet_stats_f32(values.ctypes.data, values.size, float(shift), result.ctypes.data):
        raise ValueError("block contains NaN or infinite values (after conversion to float32)")
    return float(result[0]), float(result[1]), float(result[2]), float(result[3])


def resample_bicubic(image: np.ndarray, affine: np.ndarray, shape: Tuple[int, int], fill: float,
                     out: np.ndarray) -> None:
    """``out[r, c] = fill + `` the bicubic interpolant (Keys, a = -0.75, torch's ``grid_sample``
    weights) of ``image - fill`` at ``(col, row) = affine @ (c, r, 1)``, zero beyond the image's
    edge; positions in float64. Needs the compiled kernels (:func:`native_enabled`).

    Args:
        image: ``(h, w)`` C-contiguous float32 source.
        affine: ``(2, 3)`` target ``(col, row, 1)`` -> source ``(col, row)`` pixel indices.
        shape: ``(ho, wo)`` of the target.
        fill: the value outside the source.
        out: ``(ho, wo)`` C-contiguous float32, written.
    """
    lib = _enabled()
    if lib is None:
        raise RuntimeError("the compiled kernels are not available (native_enabled() is False)")
    if image.ndim != 2 or image.dtype != np.float32 or not image.flags.c_contiguous:
        raise ValueError("resample_bicubic: image must be a C-contiguous 2D float32 array")
    if out.shape != tuple(shape) or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"resample_bicubic: out must be C-contiguous float32 {tuple(shape)}")
    m = np.ascontiguousarray(affine, dtype=np.float64).reshape(2, 3)
    lib.localet_resample_bicubic_f32(image.ctypes.data, image.shape[0], image.shape[1], m.ctypes.data,
                                     float(fill), out.ctypes.data, shape[0], shape[1])
