"""The fast paths of `localet fbp` (issue 17) give what the plain paths give: the 32-row sparse
slabs, the chunked matrix, the batched ramp filter, the background slab writer and its header
statistics."""
from __future__ import annotations

import mrcfile
import numpy as np
import pytest
import torch

from localet_core.io import VolumeWriter
from localet_core.pipeline import SlabWriterThread, slab_ranges, write_slabs
from localet_core.reconstruction.backprojection import (
    SeparableSlabs,
    backproject_separable,
    separable_matrix,
    to_separable_layout,
)
from localet_core.reconstruction.filters import FILTER_BATCH, RampFilter, ramp_filter_rows
from localet_core.reconstruction.geometry import TiltGeometry
from localet_core.reconstruction.wbp import iter_wbp_slabs, prepare_views

ANGLES = np.linspace(-60, 60, 21)


def _geometry(ny=24, nx=40, nz=37, **kw) -> TiltGeometry:
    return TiltGeometry(angles=ANGLES, detector_shape=(ny, nx), thickness=nz, **kw)


@pytest.mark.parametrize("z_block, nz", [(1, 7), (4, 37), (16, 40)])
def test_separable_slabs_equal_the_reordered_kernel(z_block, nz):
    g = _geometry(nz=nz)
    images = torch.randn(len(ANGLES), 24, 40)
    weights = torch.rand(len(ANGLES))
    matrix = separable_matrix(g, weights, z_block=z_block)
    slabs = SeparableSlabs(matrix, images, nz, z_block, max_rows=10)
    layout = to_separable_layout(images)
    for y0, y1 in slab_ranges(24, 10):
        fast = slabs(y0, y1)
        assert fast.is_contiguous() and fast.shape == (nz, y1 - y0, 40)
        torch.testing.assert_close(fast, backproject_separable(matrix, layout, (y0, y1), nz, z_block)[..., 0],
                                   rtol=0, atol=0)
    with pytest.raises(ValueError, match="at most 10"):
        slabs(0, 11)


def test_matrix_chunks_do_not_change_it(monkeypatch):
    from localet_core.reconstruction import separable

    g = _geometry(nz=32, shift_x=1.3, axis_offset=-2.2)
    weights = torch.rand(len(ANGLES))
    whole = separable_matrix(g, weights, z_block=4, col_origin=-3, n_cols=46)
    monkeypatch.setattr(separable, "_MATRIX_CHUNK", 1)  # one z block at a time
    chunked = separable_matrix(g, weights, z_block=4, col_origin=-3, n_cols=46)
    for a, b in ((whole.crow_indices(), chunked.crow_indices()), (whole.col_indices(), chunked.col_indices()),
                 (whole.values(), chunked.values())):
        assert torch.equal(a, b)


def test_ramp_filter_batches_do_not_change_it(monkeypatch):
    from localet_core.reconstruction import filters

    images = torch.randn(5, 7, 33)
    whole = ramp_filter_rows(images, RampFilter(window="hann"))
    monkeypatch.setattr(filters, "FILTER_BATCH", 3 * filters.padded_size(33))  # 3 rows per batch
    batched = ramp_filter_rows(images, RampFilter(window="hann"))
    assert batched.shape == images.shape and batched.is_contiguous()
    torch.testing.assert_close(batched, whole, rtol=0, atol=1e-6)
    assert FILTER_BATCH >= 1 << 20


def test_prepare_views_never_returns_the_callers_stack():
    g = _geometry()
    stack = np.random.default_rng(0).standard_normal((len(ANGLES), 24, 40)).astype(np.float32)
    views = prepare_views(stack, g, None, torch.device("cpu"))
    views += 1
    assert not np.shares_memory(views.numpy(), stack)
    filtered = prepare_views(stack, g, RampFilter(), torch.device("cpu"))
    assert not np.shares_memory(filtered.numpy(), stack)


def test_background_writer_writes_what_the_plain_loop_writes(tmp_path):
    g = _geometry(ny=50, nx=30, nz=20)
    stack = np.random.default_rng(1).standard_normal((len(ANGLES), 50, 30)).astype(np.float32)
    slabs = list(iter_wbp_slabs(stack, g, device="cpu", budget=4 * 4 * 20 * 30 * 7))  # 7 rows per slab
    assert len(slabs) > 3
    write_slabs(tmp_path / "a.mrc", g, iter(slabs), background=True)
    write_slabs(tmp_path / "b.mrc", g, iter(slabs), background=False)
    with mrcfile.open(tmp_path / "a.mrc") as a, mrcfile.open(tmp_path / "b.mrc") as b:
        np.testing.assert_array_equal(a.data, b.data)
        for field in ("dmin", "dmax", "dmean", "rms"):
            assert a.header[field] == b.header[field]
        data = a.data.astype(np.float64)
        assert float(a.header.dmean) == pytest.approx(data.mean(), rel=1e-6, abs=1e-7 * data.std())
        assert float(a.header.rms) == pytest.approx(data.std(), rel=1e-6)
        assert float(a.header.dmin) == data.min() and float(a.header.dmax) == data.max()


def test_background_writer_error_reaches_the_caller_and_leaves_no_file(tmp_path):
    shape = (3, 8, 5)
    bad = np.full((3, 2, 5), np.nan, np.float32)
    with pytest.raises(ValueError, match="NaN"):
        with VolumeWriter(tmp_path / "v.mrc", shape) as writer, SlabWriterThread(writer) as thread:
            thread.put(0, 2, np.zeros((3, 2, 5), np.float32))
            thread.put(2, 4, bad)
            for y0 in range(4, 8, 2):
                thread.put(y0, y0 + 2, np.zeros((3, 2, 5), np.float32))
    assert list(tmp_path.iterdir()) == []


def test_background_writer_stops_when_the_producer_fails(tmp_path):
    def slabs():
        yield 0, 2, np.zeros((3, 2, 5), np.float32)
        raise RuntimeError("the GPU fell over")

    g = TiltGeometry(angles=ANGLES, detector_shape=(8, 5), thickness=3)
    with pytest.raises(RuntimeError, match="fell over"):
        write_slabs(tmp_path / "v.mrc", g, slabs())
    assert list(tmp_path.iterdir()) == []


def test_slab_buffers_are_reused_only_once_the_consumer_let_go():
    from localet_core.reconstruction.wbp import SlabBuffers

    g = _geometry(ny=50, nx=30, nz=20)
    stack = np.random.default_rng(2).standard_normal((len(ANGLES), 50, 30)).astype(np.float32)
    budget = 4 * 4 * 20 * 30 * 7  # 7 rows per slab: 8 slabs
    kept = [s for _, _, s in iter_wbp_slabs(stack, g, device="cpu", budget=budget)]
    views = [s[:, 1:, ::2] for _, _, s in iter_wbp_slabs(stack, g, device="cpu", budget=budget)]
    tensors = [torch.from_numpy(s) for _, _, s in iter_wbp_slabs(stack, g, device="cpu", budget=budget)]
    for held in (kept, views, tensors):  # nothing a consumer still holds is overwritten
        pointers = {h.__array_interface__["data"][0] if isinstance(h, np.ndarray) else h.data_ptr() for h in held}
        assert len(pointers) == len(held) == 8
    for a, v, t in zip(kept, views, tensors):
        np.testing.assert_array_equal(a[:, 1:, ::2], v)
        np.testing.assert_array_equal(a, t.numpy())
    def pointer(a):
        return a.__array_interface__["data"][0]

    for wrap in (np.asarray, torch.from_numpy):  # lent as written by numpy, or through a tensor over it
        pool = SlabBuffers()
        first = pool.take((2, 3))
        assert pointer(pool.take((2, 3))) != pointer(first)  # taken, not lent yet: not free
        lent = pool.lend(wrap(first))
        del first
        assert pointer(pool.take((2, 3))) != pointer(lent)
        view = lent[1:]
        address = pointer(lent)
        del lent
        assert pointer(pool.take((2, 3))) != address  # a view of the lent array is still alive
        del view
        assert pointer(pool.take((1, 3))) == address  # let go: reused
