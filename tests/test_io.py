"""Tests of localet_core.io: real files in tmp_path, round trips, and every bad input."""
from __future__ import annotations

import io
import os
import tracemalloc
import warnings
from pathlib import Path

import mrcfile
import numpy as np
import pytest

from localet_core.errors import InputError
from localet_core.io import (
    IncompleteVolumeError,
    MdocInfo,
    VolumeWriter,
    atomic_output,
    parse_view_list,
    read_exclude_list,
    read_mdoc,
    read_stack,
    read_tlt,
    read_volume,
    read_xf,
    write_tlt,
    write_volume,
    write_xf,
)


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def make_mrc(path: Path, data: np.ndarray, voxel_size=None, **header) -> Path:
    """Write ``data`` with mrcfile (the reference writer), setting extra header fields."""
    with mrcfile.new(path, overwrite=True) as m, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mrcfile's header stats warn about planted NaNs
        m.set_data(data)
        if voxel_size is not None:
            m.voxel_size = voxel_size
        for key, value in header.items():
            setattr(m.header, key, value)
    return path


def assert_valid_mrc(path: Path) -> None:
    out = io.StringIO()
    assert mrcfile.validate(path, print_file=out), out.getvalue()


def leftovers(directory: Path) -> list:
    """Temporary files left behind by a writer (names like .NAME.tmp-xxxx)."""
    return [p.name for p in directory.iterdir() if ".tmp-" in p.name]


def raises_input_error(path, match: str, func, *args, **kwargs) -> InputError:
    """``func`` must raise an InputError whose one-line message names ``path`` and matches."""
    with pytest.raises(InputError, match=match) as info:
        func(*args, **kwargs)
    message = str(info.value)
    assert Path(path).name in message
    assert "\n" not in message
    return info.value


def rng_stack(shape=(5, 12, 10), dtype=np.float32, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(100, 20, size=shape)).astype(dtype)


# --------------------------------------------------------------------------------------------
# atomic_output
# --------------------------------------------------------------------------------------------
def test_atomic_output_renames_on_success(tmp_path):
    final = tmp_path / "out.txt"
    with atomic_output(final) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".out.txt.tmp-")
        tmp.write_text("hello")
        assert not final.exists()  # nothing under the final name while writing
    assert final.read_text() == "hello"
    assert leftovers(tmp_path) == []


def test_atomic_output_cleans_up_and_keeps_old_file_on_error(tmp_path):
    final = tmp_path / "out.txt"
    final.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_output(final) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert final.read_text() == "old"
    assert leftovers(tmp_path) == []


def test_atomic_output_missing_directory(tmp_path):
    target = tmp_path / "nowhere" / "out.mrc"
    raises_input_error(target, "does not exist", lambda: atomic_output(target).__enter__())


# --------------------------------------------------------------------------------------------
# read_stack
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".st", ".mrc", ".mrcs", ".ali", ".weird"])
def test_read_stack_float32_any_extension(tmp_path, suffix):
    data = rng_stack()
    path = make_mrc(tmp_path / f"ts{suffix}", data, voxel_size=2.17)
    stack = read_stack(path)
    assert stack.data.dtype == np.float32 and stack.data.shape == (5, 12, 10)
    np.testing.assert_array_equal(stack.data, data)
    assert stack.pixel_size == 2.17  # shortest float32 repr, not 2.1700000762939453
    assert stack.path == path and stack.n_views == 5


@pytest.mark.parametrize("dtype", [np.int16, np.uint16, np.int8, np.uint8, np.float16])
def test_read_stack_converts_integer_and_half_modes(tmp_path, dtype):
    data = np.arange(3 * 4 * 5).reshape(3, 4, 5).astype(dtype)
    path = make_mrc(tmp_path / "ts.st", data)
    stack = read_stack(path)
    assert stack.data.dtype == np.float32
    np.testing.assert_array_equal(stack.data, data.astype(np.float32))


def test_read_stack_int16_negative_values_and_big_endian(tmp_path):
    data = np.array([[-32768, -1], [0, 32767]], dtype=np.int16)[None].repeat(3, axis=0)
    path = make_mrc(tmp_path / "le.st", data)
    np.testing.assert_array_equal(read_stack(path).data, data.astype(np.float32))
    # The same stack written big-endian, as old SGI/Mac files are.
    big = data.astype(">i2")
    path_be = tmp_path / "be.st"
    with mrcfile.new(path_be) as m:
        m.set_data(big)
    np.testing.assert_array_equal(read_stack(path_be).data, data.astype(np.float32))


def test_read_stack_pixel_size_rules(tmp_path):
    data = rng_stack((2, 4, 4))
    unset = make_mrc(tmp_path / "unset.st", data)  # mrcfile leaves cella = 0
    assert read_stack(unset).pixel_size is None
    assert read_stack(unset, pixel_size=3.5).pixel_size == 3.5
    one = make_mrc(tmp_path / "one.st", data, voxel_size=1.0)
    assert read_stack(one).pixel_size == 1.0  # kept as given
    given = make_mrc(tmp_path / "given.st", data, voxel_size=5.4)
    assert read_stack(given, pixel_size=1.35).pixel_size == 1.35  # argument wins
    with pytest.raises(InputError, match="pixel size"):
        read_stack(given, pixel_size=-1)


def test_read_stack_tolerates_imod_header_quirks(tmp_path):
    data = rng_stack((3, 4, 6))
    path = tmp_path / "quirky.st"
    with mrcfile.new(path) as m:
        m.set_data(data)
        m.set_image_stack()  # space group 0, as IMOD writes tilt series
        assert m.header.ispg == 0
    raw = bytearray(path.read_bytes())
    raw[212:216] = b"\x00\x00\x00\x00"  # machine stamp zeroed
    raw[208:212] = b"\x00\x00\x00\x00"  # no 'MAP ' ID (pre-2000 IMOD), size still exact
    path.write_bytes(bytes(raw))
    np.testing.assert_array_equal(read_stack(path).data, data)
    # Extra bytes after the data are accepted too.
    path2 = make_mrc(tmp_path / "padded.st", data)
    with open(path2, "ab") as f:
        f.write(b"\x00" * 16)
    np.testing.assert_array_equal(read_stack(path2).data, data)


def test_read_stack_missing_file(tmp_path):
    path = tmp_path / "missing.st"
    raises_input_error(path, "file not found", read_stack, path)


def test_read_stack_not_mrc(tmp_path):
    text = tmp_path / "notes.st"
    text.write_text("this is a text file\n" * 100)
    raises_input_error(text, "not an MRC file", read_stack, text)
    short = tmp_path / "short.mrc"
    short.write_bytes(b"MAP ")
    raises_input_error(short, "not an MRC file", read_stack, short)
    noise = tmp_path / "noise.mrc"
    noise.write_bytes(np.random.default_rng(1).bytes(5000))
    raises_input_error(noise, "not an MRC file", read_stack, noise)


def test_read_stack_truncated(tmp_path):
    path = make_mrc(tmp_path / "cut.st", rng_stack())
    raw = path.read_bytes()
    path.write_bytes(raw[:-100])
    raises_input_error(path, "truncated", read_stack, path)
    path.write_bytes(raw[:1030])
    raises_input_error(path, "truncated", read_stack, path)


def test_read_stack_single_image(tmp_path):
    path2d = make_mrc(tmp_path / "image.mrc", rng_stack((1, 8, 8))[0])
    raises_input_error(path2d, "is a single 2D image, not a tilt-series stack", read_stack,
                       path2d)
    path_nz1 = make_mrc(tmp_path / "slab.mrc", rng_stack((1, 8, 8)))
    raises_input_error(path_nz1, "single 2D image", read_stack, path_nz1)


def test_read_stack_complex_mode(tmp_path):
    path = make_mrc(tmp_path / "fft.mrc", np.ones((3, 4, 4), dtype=np.complex64))
    raises_input_error(path, "complex", read_stack, path)


def test_read_stack_volume_stack(tmp_path):
    path = make_mrc(tmp_path / "vols.mrc", rng_stack((2, 3, 4, 5)))
    raises_input_error(path, "volume stack", read_stack, path)
    raises_input_error(path, "volume stack", read_volume, path)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_read_stack_nan_reports_1_based_view(tmp_path, bad):
    data = rng_stack()
    data[2, 5, 5] = bad
    path = make_mrc(tmp_path / "nan.st", data)
    raises_input_error(path, r"contains NaN or infinite values in view 3\b", read_stack, path)


# --------------------------------------------------------------------------------------------
# volumes: write_volume, read_volume, VolumeWriter
# --------------------------------------------------------------------------------------------
def header_stats(path: Path):
    with mrcfile.open(path, header_only=True) as m:
        h = m.header
        return float(h.dmin), float(h.dmax), float(h.dmean), float(h.rms), int(h.mode)


def test_write_volume_round_trip_and_header(tmp_path):
    data = rng_stack((6, 7, 9), seed=3)
    path = tmp_path / "tomo.mrc"
    write_volume(path, data, voxel_size=10.88, origin=(1.5, -2.0, 30.0))
    assert_valid_mrc(path)
    assert leftovers(tmp_path) == []
    vol = read_volume(path)
    np.testing.assert_array_equal(vol.data, data)
    assert vol.voxel_size == 10.88
    assert vol.origin == (1.5, -2.0, 30.0)
    dmin, dmax, dmean, rms, mode = header_stats(path)
    assert mode == 2
    assert dmin == data.min() and dmax == data.max()
    assert dmean == pytest.approx(data.astype(np.float64).mean(), rel=1e-6)
    assert rms == pytest.approx(data.astype(np.float64).std(), rel=1e-6)
    with mrcfile.open(path, header_only=True) as m:
        assert tuple(m.voxel_size.item()) == pytest.approx((10.88,) * 3)


def test_write_volume_unset_voxel_size_reads_back_none(tmp_path):
    path = tmp_path / "v.mrc"
    write_volume(path, np.zeros((2, 3, 4), np.float32), voxel_size=None)
    assert_valid_mrc(path)
    assert read_volume(path).voxel_size is None


def test_stats_precise_with_large_mean(tmp_path):
    # A naive float32 or sum-of-squares rms loses all digits when mean >> std.
    rng = np.random.default_rng(7)
    data = (1e4 + rng.normal(0, 0.01, size=(8, 16, 16))).astype(np.float32)
    path = tmp_path / "offset.mrc"
    with VolumeWriter(path, data.shape) as w:
        for z in range(8):
            w[z] = data[z]
    _, _, dmean, rms, _ = header_stats(path)
    exact = data.astype(np.float64)
    assert dmean == pytest.approx(exact.mean(), rel=1e-7)
    assert rms == pytest.approx(exact.std(), rel=1e-4)


def test_read_volume_accepts_single_image_and_rejects_bad(tmp_path):
    image = make_mrc(tmp_path / "image.mrc", rng_stack((1, 5, 6))[0])
    vol = read_volume(image)
    assert vol.data.shape == (1, 5, 6)
    data = rng_stack((3, 4, 5))
    data[1, 0, 0] = np.nan
    nan = make_mrc(tmp_path / "nan.mrc", data)
    raises_input_error(nan, "NaN or infinite values in Z slice 2", read_volume, nan)
    raises_input_error(tmp_path / "none.mrc", "file not found", read_volume,
                       tmp_path / "none.mrc")


def _stored_as(volume: np.ndarray, axes) -> np.ndarray:
    """``volume`` (z, y, x) laid out as a file with MAPC, MAPR, MAPS = ``axes`` stores it: the
    axis ``axes[0]`` (1 = X, 2 = Y, 3 = Z) along the columns, ``axes[1]`` the rows, ``axes[2]``
    the sections."""
    dim_of_axis = {3: 0, 2: 1, 1: 2}  # where X, Y, Z lie in (z, y, x)
    return np.ascontiguousarray(volume.transpose([dim_of_axis[a] for a in axes[::-1]]))


@pytest.mark.parametrize("axes", [(3, 2, 1), (2, 1, 3), (3, 1, 2), (2, 3, 1), (1, 3, 2)])
def test_read_volume_follows_permuted_axes(tmp_path, axes):
    """A map whose header says its columns, rows and sections are not X, Y, Z (MAPC, MAPR, MAPS,
    as in some EMDB maps) is read in its own (z, y, x), whole and as streamed slabs; read as
    stored it would be transposed (a mirror image). A tilt series with permuted axes is refused."""
    from localet_core.io import iter_volume_slabs, read_volume_header

    volume = rng_stack((5, 6, 7), seed=3)
    stored = _stored_as(volume, axes)
    assert stored.shape != volume.shape
    path = make_mrc(tmp_path / "permuted.mrc", stored, 4.0, mapc=axes[0], mapr=axes[1], maps=axes[2])
    got = read_volume(path)
    np.testing.assert_array_equal(got.data, volume)
    assert got.voxel_size == 4.0
    assert read_volume_header(path).shape == (5, 6, 7)
    slabs = list(iter_volume_slabs(path, 4))
    assert [(y0, y1) for y0, y1, _ in slabs] == [(0, 4), (4, 6)]
    np.testing.assert_array_equal(np.concatenate([s for _, _, s in slabs], axis=1), volume)
    raises_input_error(path, r"permuted axes in its header \(MAPC, MAPR, MAPS = "
                       rf"{axes[0]}, {axes[1]}, {axes[2]}\)", read_stack, path)


def test_read_volume_takes_unset_axes_as_stored(tmp_path):
    """Old writers leave MAPC, MAPR, MAPS at 0: the stored order, as IMOD reads them."""
    from localet_core.io import iter_volume_slabs

    volume = rng_stack((4, 5, 6), seed=4)
    path = make_mrc(tmp_path / "zeros.mrc", volume, mapc=0, mapr=0, maps=0)
    np.testing.assert_array_equal(read_volume(path).data, volume)
    np.testing.assert_array_equal(np.concatenate([s for _, _, s in iter_volume_slabs(path, 2)], axis=1), volume)
    assert read_stack(path).data.shape == (4, 5, 6)


def test_volume_writer_slabs_equal_write_volume(tmp_path):
    data = rng_stack((5, 33, 17), seed=11)
    whole = tmp_path / "whole.mrc"
    write_volume(whole, data, voxel_size=4.0, origin=(0.0, 0.0, 0.0))
    slabs = tmp_path / "slabs.mrc"
    with VolumeWriter(slabs, shape=data.shape, voxel_size=4.0) as w:
        for y0 in range(0, 33, 10):  # slabs along y, like a reconstruction loop
            w[:, y0:y0 + 10, :] = data[:, y0:y0 + 10, :]
        assert w.complete
    assert_valid_mrc(slabs)
    a, b = read_volume(whole), read_volume(slabs)
    np.testing.assert_array_equal(a.data, b.data)
    assert a.voxel_size == b.voxel_size
    assert header_stats(whole) == pytest.approx(header_stats(slabs), rel=1e-6)


def test_volume_writer_index_forms(tmp_path):
    path = tmp_path / "forms.mrc"
    expected = np.zeros((2, 3, 4), np.float32)
    with VolumeWriter(path, (2, 3, 4)) as w:
        w[0] = 1.0                          # int index + scalar broadcast
        expected[0] = 1.0
        w[-1, 0] = np.arange(4)             # negative index, 1D row
        expected[-1, 0] = np.arange(4)
        w[1, 1:, ...] = [[5, 6, 7, 8]]      # ellipsis + broadcast over rows
        expected[1, 1:, ...] = [[5, 6, 7, 8]]
        w[0:0] = 7.0                        # empty region: nothing happens
        assert w.n_written == 24
    np.testing.assert_array_equal(read_volume(path).data, expected)


def test_volume_writer_rejects_bad_keys_and_values(tmp_path):
    path = tmp_path / "bad.mrc"
    with VolumeWriter(path, (2, 4, 4)) as w:
        with pytest.raises(IndexError, match="step"):
            w[:, ::2] = 0
        with pytest.raises(IndexError):
            w[np.array([0, 1])] = 0
        with pytest.raises(IndexError, match="out of bounds"):
            w[2] = 0
        with pytest.raises(ValueError, match="shape"):
            w[0] = np.zeros((3, 3))
        with pytest.raises(ValueError, match="NaN"):
            w[0] = np.full((4, 4), np.nan)
        w[0] = 1
        with pytest.raises(ValueError, match="overlaps"):
            w[:, 2:] = 2                    # overlaps the earlier write of z = 0
        assert w.n_written == 16            # rejected writes changed nothing
        w[1] = 3
    vol = read_volume(path)
    np.testing.assert_array_equal(vol.data[0], 1)
    np.testing.assert_array_equal(vol.data[1], 3)
    assert header_stats(path)[:3] == (1.0, 3.0, 2.0)


def test_volume_writer_exception_midway_leaves_nothing(tmp_path):
    path = tmp_path / "tomo.mrc"
    with pytest.raises(RuntimeError, match="GPU fell over"):
        with VolumeWriter(path, (4, 8, 8), voxel_size=2.0) as w:
            w[0:2] = 1.0
            raise RuntimeError("GPU fell over")
    assert list(tmp_path.iterdir()) == []


def test_volume_writer_incomplete_leaves_nothing_and_keeps_old(tmp_path):
    path = tmp_path / "tomo.mrc"
    path.write_bytes(b"previous result")
    with pytest.raises(IncompleteVolumeError, match="only 64 of 256 voxels"):
        with VolumeWriter(path, (4, 8, 8)) as w:
            w[1] = 1.0
    assert path.read_bytes() == b"previous result"
    assert leftovers(tmp_path) == []


def test_volume_writer_memory_stays_at_block_size(tmp_path):
    shape = (32, 256, 256)  # 8 MiB of float32; blocks of 2 z-slices are 512 KiB
    block = np.ones((2, 256, 256), np.float32)
    tracemalloc.start()
    try:
        with VolumeWriter(tmp_path / "big.mrc", shape) as w:
            tracemalloc.reset_peak()
            for z0 in range(0, shape[0], 2):
                w[z0:z0 + 2] = block * z0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    full = np.prod(shape) * 4
    assert peak < full / 4, f"peak {peak} bytes for a {full}-byte volume"
    assert header_stats(tmp_path / "big.mrc")[:2] == (0.0, 30.0)


def test_write_volume_accepts_float64_and_torch(tmp_path):
    data = rng_stack((3, 4, 5)).astype(np.float64)
    write_volume(tmp_path / "f64.mrc", data)
    np.testing.assert_array_equal(read_volume(tmp_path / "f64.mrc").data,
                                  data.astype(np.float32))
    torch = pytest.importorskip("torch")
    write_volume(tmp_path / "t.mrc", torch.from_numpy(data.astype(np.float32)), voxel_size=3.0)
    np.testing.assert_array_equal(read_volume(tmp_path / "t.mrc").data,
                                  data.astype(np.float32))
    with pytest.raises(ValueError, match="3D"):
        write_volume(tmp_path / "flat.mrc", np.zeros((4, 4)))
    assert not (tmp_path / "flat.mrc").exists()


def test_write_volume_nan_leaves_nothing(tmp_path):
    data = np.zeros((3, 4, 4), np.float32)
    data[2, 1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        write_volume(tmp_path / "v.mrc", data)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------
# .tlt
# --------------------------------------------------------------------------------------------
def test_tlt_round_trip(tmp_path):
    angles = np.array([-60.0, -57.004, 0.0, 2.996, 60.0])
    path = tmp_path / "ts.tlt"
    write_tlt(path, angles)
    assert path.read_text().splitlines()[1] == "-57.00"
    np.testing.assert_allclose(read_tlt(path), np.round(angles, 2))
    assert read_tlt(path).dtype == np.float64


def test_tlt_tolerant_parsing_and_rawtlt(tmp_path):
    path = tmp_path / "ts.rawtlt"
    path.write_text("  -3.0 \n\n\t0\r\n 3.5e0\n\n")
    np.testing.assert_array_equal(read_tlt(path), [-3.0, 0.0, 3.5])


@pytest.mark.parametrize("content, match", [
    ("", "no tilt angles"),
    ("\n  \n", "no tilt angles"),
    ("1.0\n2.0\nabc\n", r"line 3: 'abc' is not a number"),
    ("1.0\nnan\n", "line 2: 'nan' is not a finite number"),
    ("1.0 2.0\n", "line 1: expected one tilt angle"),
])
def test_tlt_errors(tmp_path, content, match):
    path = tmp_path / "bad.tlt"
    path.write_text(content)
    raises_input_error(path, match, read_tlt, path)


def test_writers_reject_bad_arrays(tmp_path):
    with pytest.raises(ValueError):
        write_tlt(tmp_path / "a.tlt", [1.0, np.nan])
    with pytest.raises(ValueError):
        write_xf(tmp_path / "a.xf", np.zeros((3, 3, 2)))
    assert list(tmp_path.iterdir()) == []


def test_tlt_missing(tmp_path):
    raises_input_error(tmp_path / "no.tlt", "file not found", read_tlt, tmp_path / "no.tlt")


# --------------------------------------------------------------------------------------------
# .xf
# --------------------------------------------------------------------------------------------
def test_xf_round_trip_and_format(tmp_path):
    theta = np.deg2rad([85.0, 86.5, -10.0])
    xf = np.zeros((3, 2, 3))
    xf[:, 0, 0], xf[:, 0, 1] = np.cos(theta), -np.sin(theta)
    xf[:, 1, 0], xf[:, 1, 1] = np.sin(theta), np.cos(theta)
    xf[:, 0, 2], xf[:, 1, 2] = [1.25, -30.5, 0.0], [2.0, 4.125, -100.0]
    path = tmp_path / "ts.xf"
    write_xf(path, xf)
    line = path.read_text().splitlines()[0]
    assert len(line) == 72
    a = xf[0]
    assert line == (f"{a[0, 0]:12.7f}{a[0, 1]:12.7f}{a[1, 0]:12.7f}{a[1, 1]:12.7f}"
                    f"{a[0, 2]:12.3f}{a[1, 2]:12.3f}")
    back = read_xf(path)
    assert back.shape == (3, 2, 3) and back.dtype == np.float64
    np.testing.assert_allclose(back, xf, atol=1e-6)


def test_xf_reads_imod_text_and_glued_columns(tmp_path):
    path = tmp_path / "ts.xf"
    path.write_text("   1.0000000   0.0000000   0.0000000   1.0000000       3.000      -4.500\n"
                    "\n"
                    "   0.0000000  -1.0000000   1.0000000   0.0000000-1234567.125       0.000\n")
    xf = read_xf(path)
    np.testing.assert_array_equal(xf[0], [[1, 0, 3], [0, 1, -4.5]])
    np.testing.assert_array_equal(xf[1], [[0, -1, -1234567.125], [1, 0, 0]])


@pytest.mark.parametrize("content, match", [
    ("1 0 0 1 0 0\n1 0 0 1 0\n", "line 2: expected 6 numbers"),
    ("1 0 0 1 0 0\n1 0 0 1 x 0\n", "line 2: 'x' is not a number"),
    ("1 0 0 1 0 0\n1 0 0 1 0 0\n2 4 1 2 0 0\n", "view 3: .*singular"),
    ("", "no transforms"),
])
def test_xf_errors(tmp_path, content, match):
    path = tmp_path / "bad.xf"
    path.write_text(content)
    raises_input_error(path, match, read_xf, path)


def test_xf_binary_file(tmp_path):
    path = make_mrc(tmp_path / "oops.xf", rng_stack((2, 3, 3)))
    raises_input_error(path, "not a text file", read_xf, path)


# --------------------------------------------------------------------------------------------
# view lists
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, views", [
    ("1-3,7, 10-12", [1, 2, 3, 7, 10, 11, 12]),
    ("1-3 7", [1, 2, 3, 7]),
    ("5", [5]),
    ("  ", []),
    ("3, 1, 2-3", [1, 2, 3]),
    ("1 - 3", [1, 2, 3]),
])
def test_parse_view_list(text, views):
    assert parse_view_list(text) == views


@pytest.mark.parametrize("text, match", [
    ("1-3,a", "malformed"),
    ("1--3", "malformed"),
    ("4-2", "backwards"),
    ("0,1", "start at 1"),
    ("1-", "malformed"),
])
def test_parse_view_list_errors(text, match):
    with pytest.raises(InputError, match=match) as info:
        parse_view_list(text, source="--exclude")
    assert str(info.value).startswith("--exclude: ")


def test_read_exclude_list_file_and_text(tmp_path):
    path = tmp_path / "exclude.txt"
    path.write_text("1-2, 5\n\n40 41  # dark views\n")
    assert read_exclude_list(path) == [1, 2, 5, 40, 41]
    assert read_exclude_list(str(path)) == [1, 2, 5, 40, 41]
    assert read_exclude_list("1-3,40") == [1, 2, 3, 40]
    path.write_text("1-2\n3-x\n")
    raises_input_error(path, "line 2: malformed", read_exclude_list, path)
    raises_input_error(tmp_path / "missing.txt", "file not found", read_exclude_list,
                       str(tmp_path / "missing.txt"))


# --------------------------------------------------------------------------------------------
# .mdoc
# --------------------------------------------------------------------------------------------
MDOC_HEAD = """PixelSpacing = 2.176
Voltage = 300
ImageFile = TS_03.mrc
ImageSize = 4096 4096
DataMode = 1

[T = SerialEM: Digitized on EMBL Krios G4                   24-Nov-26  10:14:50    ]

[T =     Tilt axis angle = 85.3, binning = 1  spot = 8  camera = 0]
"""

# Dose-symmetric order 0, +3, -3, +6, -6 (acquisition), stored in Z order -6..+6 (stack).
_VIEWS = [  # (ZValue, angle, dose, time)
    (2, 0.0012, 3.1, "10:15:02"), (3, 3.0008, 3.0, "10:15:40"), (1, -2.9991, 3.2, "10:16:15"),
    (4, 6.0015, 2.9, "10:16:51"), (0, -5.9987, 3.3, "10:17:30"),
]


def mdoc_text(views=_VIEWS, head=MDOC_HEAD) -> str:
    parts = [head]
    for z, angle, dose, time in views:  # written in acquisition order, like SerialEM
        parts.append(f"""
[ZValue = {z}]
TiltAngle = {angle}
StagePosition = 12.345 -45.678
Magnification = 81000
Intensity = 0.123456
ExposureDose = {dose}
PixelSpacing = 2.176
SpotSize = 8
Defocus = -3.21
ImageShift = 0.01 -0.02
RotationAngle = 175.3
ExposureTime = 0.6
Binning = 1
CameraIndex = 1
DividedBy2 = 0
MagIndex = 31
CountsPerElectron = 32
TargetDefocus = -3
SubFramePath = X:\\data\\TS_03_{z:03d}_{angle:.1f}.tif
NumSubFrames = 10
FrameDosesAndNumber = {dose / 10:.3f} 10
DateTime = 24-Nov-26  {time}
FilterSlitAndLoss = 20 0
""")
    return "".join(parts)


def test_read_mdoc(tmp_path):
    path = tmp_path / "TS_03.mrc.mdoc"
    path.write_text(mdoc_text())
    info = read_mdoc(path)
    assert isinstance(info, MdocInfo) and info.n_views == 5
    np.testing.assert_allclose(info.angles, [-5.9987, -2.9991, 0.0012, 3.0008, 6.0015])
    np.testing.assert_allclose(info.dose, [3.3, 3.2, 3.1, 3.0, 2.9])
    np.testing.assert_array_equal(info.acquisition_order, [4, 2, 0, 1, 3])
    np.testing.assert_allclose(info.prior_dose, [3.1 + 3.0 + 3.2 + 2.9, 3.1 + 3.0, 0.0, 3.1,
                                                 3.1 + 3.0 + 3.2])
    np.testing.assert_array_equal(info.z_values, np.arange(5))
    assert info.pixel_size == 2.176
    assert info.tilt_axis_angle == 85.3
    assert info.voltage == 300.0
    assert info.datetimes[2].hour == 10 and info.datetimes[2].year == 2026


def test_read_mdoc_without_dates_or_doses(tmp_path):
    text = "\n".join(line for line in mdoc_text().splitlines()
                     if not line.startswith(("DateTime", "ExposureDose", "Voltage")))
    text = text.replace("Tilt axis angle = 85.3", "no axis here") + "\nTiltAxisAngle = -94.7\n"
    path = tmp_path / "plain.mdoc"
    path.write_text(text)
    info = read_mdoc(path)
    np.testing.assert_array_equal(info.acquisition_order, np.arange(5))  # by ZValue
    np.testing.assert_array_equal(info.dose, 0.0)
    np.testing.assert_array_equal(info.prior_dose, 0.0)
    assert info.voltage is None
    assert info.tilt_axis_angle == -94.7


@pytest.mark.parametrize("edit, match", [
    (lambda t: t.replace("ImageSize = 4096 4096", "ImageSize 4096 4096"),
     r"line 4: expected 'Key = value'"),
    (lambda t: t.replace("TiltAngle = 3.0008", "TiltAngle = three"),
     r"line \d+: TiltAngle value 'three' is not a number"),
    (lambda t: t.replace("[ZValue = 4]", "[ZValue = 3]"), r"ZValue 3 appears twice"),
    (lambda t: t.replace("[ZValue = 4]", "[ZValue = 7]"), r"ZValue 4 is missing"),
    (lambda t: t.replace("[ZValue = 1]", "[ZValue = 1"), r"line \d+: malformed section"),
    (lambda t: t.replace("24-Nov-26  10:16:15", "yesterday"), r"line \d+: DateTime"),
    (lambda t: t.replace("TiltAngle = -5.9987\n", ""), r"\[ZValue = 0\] has no TiltAngle"),
    (lambda t: MDOC_HEAD, "no \\[ZValue"),
])
def test_read_mdoc_errors(tmp_path, edit, match):
    path = tmp_path / "bad.mdoc"
    path.write_text(edit(mdoc_text()))
    raises_input_error(path, match, read_mdoc, path)


def test_read_mdoc_line_number_is_right(tmp_path):
    text = mdoc_text().replace("TiltAngle = 3.0008", "TiltAngle = three")
    path = tmp_path / "bad.mdoc"
    path.write_text(text)
    line_no = text.splitlines().index("TiltAngle = three") + 1
    raises_input_error(path, f"line {line_no}: ", read_mdoc, path)
    raises_input_error(tmp_path / "no.mdoc", "file not found", read_mdoc, tmp_path / "no.mdoc")


def test_volume_writer_disk_full_is_a_clean_error(tmp_path, monkeypatch):
    import errno

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full, raising=False)
    path = tmp_path / "tomo.mrc"
    with pytest.raises(InputError, match="not enough free disk space") as info:
        with VolumeWriter(path, (4, 8, 8)):
            pass  # pragma: no cover - never reached
    assert path.name in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_atomic_output_gives_ordinary_permissions_whatever_the_writer_does(tmp_path):
    import stat as _stat

    from localet_core.io.atomic import atomic_output

    target = tmp_path / "out.bin"
    with atomic_output(target) as tmp:
        os.unlink(tmp)  # a writer that recreates the file privately (as safetensors does)
        fd = os.open(tmp, os.O_CREAT | os.O_WRONLY, 0o600)
        os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    assert _stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
