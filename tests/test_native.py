"""The compiled kernels (localet_core/_native.c) against their numpy/scipy fallbacks."""
import numpy as np
import pytest

from localet_core import native
from localet_core.native import NATIVE_VARIABLE, csr_product, native_available

needs_native = pytest.mark.skipif(not native_available(),
                                  reason="the compiled kernel is not built (no C compiler when localet was installed)")


def _random_csr(rng, n_rows, n_cols, per_row):
    counts = rng.integers(0, per_row + 1, n_rows)
    counts[::7] = 0  # empty rows
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    indices = np.concatenate([np.sort(rng.choice(n_cols, c, replace=False)) for c in counts]).astype(np.int32)
    data = rng.standard_normal(indptr[-1]).astype(np.float32)
    return indptr, indices, data, (n_rows, n_cols)


@needs_native
@pytest.mark.parametrize("n", [1, 5, 16, 17, 32, 45])
def test_native_product_gives_scipys_floats(monkeypatch, n):
    import scipy.sparse

    rng = np.random.default_rng(n)
    indptr, indices, data, shape = _random_csr(rng, 300, 200, 40)
    dense = rng.standard_normal((200, n)).astype(np.float32)
    ours = np.full((300, n), np.nan, np.float32)  # old values must be ignored
    csr_product(indptr, indices, data, shape, dense, ours)
    monkeypatch.setenv(NATIVE_VARIABLE, "0")
    theirs = np.full((300, n), np.nan, np.float32)
    csr_product(indptr, indices, data, shape, dense, theirs)
    np.testing.assert_array_equal(ours, theirs)  # the same sums in the same order
    reference = scipy.sparse.csr_matrix((data, indices, indptr), shape=shape).astype(np.float64) @ dense
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-5)


def test_product_refuses_wrong_shapes_and_types():
    rng = np.random.default_rng(0)
    indptr, indices, data, shape = _random_csr(rng, 10, 8, 3)
    dense = np.zeros((8, 4), np.float32)
    with pytest.raises(ValueError, match="shapes"):
        csr_product(indptr, indices, data, shape, np.zeros((7, 4), np.float32), np.zeros((10, 4), np.float32))
    with pytest.raises(ValueError, match="out must be C-contiguous float32"):
        csr_product(indptr, indices, data, shape, dense, np.zeros((10, 4), np.float64))
    with pytest.raises(ValueError, match="indices must be C-contiguous int32"):
        csr_product(indptr, indices.astype(np.int64), data, shape, dense, np.zeros((10, 4), np.float32))
    with pytest.raises(ValueError, match="dense must be C-contiguous"):
        csr_product(indptr, indices, data, shape, np.zeros((4, 8), np.float32).T, np.zeros((10, 4), np.float32))


@needs_native
def test_numpy_wbp_is_the_same_with_and_without_the_kernel(monkeypatch):
    from localet_core.reconstruction.geometry import TiltGeometry
    from localet_core.reconstruction.wbp_numpy import iter_wbp_slabs_array

    g = TiltGeometry(angles=tuple(np.linspace(-57, 60, 40)), detector_shape=(40, 72), thickness=37,
                     shift_x=1.5, axis_offset=-0.7)
    stack = np.random.default_rng(3).standard_normal((40, 40, 72)).astype(np.float32)

    def volume():
        return np.concatenate([s.copy() for _, _, s in iter_wbp_slabs_array(stack, g, threads=2)], axis=1)

    ours = volume()
    monkeypatch.setenv(NATIVE_VARIABLE, "0")
    np.testing.assert_array_equal(ours, volume())


def test_a_missing_or_foreign_library_falls_back(monkeypatch, tmp_path):
    # a file that is not our library: the loader says "not available" and the product still works
    fake = tmp_path / "_native.so"
    fake.write_bytes(b"not a shared object")

    class Spec:
        origin = str(fake)

    native._library.cache_clear()
    monkeypatch.setattr(native.importlib.util, "find_spec", lambda name: Spec())
    try:
        assert not native.native_available()
        rng = np.random.default_rng(1)
        indptr, indices, data, shape = _random_csr(rng, 20, 10, 4)
        dense = rng.standard_normal((10, 3)).astype(np.float32)
        out = np.empty((20, 3), np.float32)
        csr_product(indptr, indices, data, shape, dense, out)
        np.testing.assert_allclose(out, _dense(indptr, indices, data, shape) @ dense, rtol=1e-5, atol=1e-6)
    finally:
        monkeypatch.undo()
        native._library.cache_clear()


def _dense(indptr, indices, data, shape):
    m = np.zeros(shape, np.float64)
    for r in range(shape[0]):
        m[r, indices[indptr[r]:indptr[r + 1]]] = data[indptr[r]:indptr[r + 1]]
    return m


@needs_native
@pytest.mark.parametrize("offset", [0.0, 1e4])
def test_one_pass_statistics_equal_numpys(monkeypatch, offset):
    from localet_core.io.mrc_write import _RunningStats

    rng = np.random.default_rng(7)
    # a large offset with a small spread: the case where naive sums of squares cancel
    block = (offset + rng.standard_normal((5, 300, 7001))).astype(np.float32)
    block[2, 10, 5] = offset + 40.0  # an outlier, and a first value far from the mean
    block[0, 0, 0] = offset - 30.0
    ours = _RunningStats.of_block(block)
    monkeypatch.setenv(NATIVE_VARIABLE, "0")
    numpy_path = _RunningStats.of_block(block)
    exact = block.astype(np.float64)
    for stats in (ours, numpy_path):
        assert stats.n == block.size
        assert stats.vmin == exact.min() and stats.vmax == exact.max()
        assert stats.mean == pytest.approx(exact.mean(), rel=1e-12, abs=1e-12)
        assert stats.rms == pytest.approx(exact.std(), rel=1e-9)
    # a non-contiguous block (a box of a larger array) too
    box = block[:, 5:200, 100:5000]
    monkeypatch.delenv(NATIVE_VARIABLE)
    assert _RunningStats.of_block(box).rms == pytest.approx(box.astype(np.float64).std(), rel=1e-9)


@needs_native
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_one_pass_statistics_refuse_nan_and_inf(bad):
    from localet_core.io.mrc_write import _RunningStats
    from localet_core.native import value_stats

    block = np.zeros((2, 3, 40), np.float32)
    block[1, 2, 39] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        _RunningStats.of_block(block)
    with pytest.raises(ValueError, match="NaN or infinite"):
        value_stats(block.reshape(-1), 0.0)
    assert value_stats(np.zeros(0, np.float32), 0.0) is not None  # empty: no error
