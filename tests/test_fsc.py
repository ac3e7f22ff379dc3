"""Tests of the FSC: core curves against an independent numpy reference, resolution criteria,
the missing-wedge geometry and split, half-set splitting, STAR/PNG output and the CLI."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from localet_core.errors import InputError
from localet_core.validation.fsc import (
    compute_fsc,
    crossing_frequency,
    half_bit_threshold,
    shell_correlation,
    split_alternate_tilts,
)
from localet_core.validation.wedge import missing_wedge_mask

RNG_SEED = 1234


def _rng(seed: int = RNG_SEED) -> np.random.Generator:
    return np.random.default_rng(seed)


# --------------------------------------------------------------------------------------------
# Independent reference: full complex FFT, explicit shells, explicit wedge, plain loops
# --------------------------------------------------------------------------------------------
def reference_fsc(a: np.ndarray, b: np.ndarray, tilt_range=None, region="all"):
    """Straightforward FSC over the full numpy fftn grid (no Friedel weighting needed)."""
    shape = a.shape
    big_n = max(shape)
    fa, fb = np.fft.fftn(a), np.fft.fftn(b)
    kz, ky, kx = np.meshgrid(*[np.fft.fftfreq(n) for n in shape], indexing="ij")
    radius = np.sqrt(kz ** 2 + ky ** 2 + kx ** 2)
    shells = np.floor(radius * big_n + 0.5).astype(int)
    select = np.ones(shape, dtype=bool)
    if tilt_range is not None:
        lo, hi = tilt_range
        measured = np.zeros(shape, dtype=bool)
        # a Nyquist frequency is also its own negative: measured if either alias is
        for sz in (1, -1):
            for sx in (1, -1):
                gz = np.where(np.abs(kz) == 0.5, sz * kz, kz)
                gx = np.where(np.abs(kx) == 0.5, sx * kx, kx)
                with np.errstate(divide="ignore", invalid="ignore"):
                    # the view angle whose central plane holds (kx, kz): kx sin t + kz cos t = 0
                    theta = np.degrees(np.arctan(-gz / gx))
                measured |= (gx != 0) & (theta >= lo - 1e-9) & (theta <= hi + 1e-9)
        measured[(kx == 0) & (kz == 0)] = True
        select = measured if region == "outside_wedge" else ~measured
    n_sh = big_n // 2 + 1
    fsc, count = np.full(n_sh, np.nan), np.zeros(n_sh)
    for i in range(n_sh):
        m = (shells == i) & select
        count[i] = m.sum()
        if count[i] == 0:
            continue
        num = np.sum(fa[m] * np.conj(fb[m])).real
        den = math.sqrt(np.sum(np.abs(fa[m]) ** 2) * np.sum(np.abs(fb[m]) ** 2))
        fsc[i] = num / den if den > 0 else 0.0
    return fsc, count


def _filtered_noise(shape, power, rng):
    """White noise shaped to the radial power spectrum ``power(|k| in cycles/pixel)``."""
    white = rng.standard_normal(shape)
    kz, ky, kx = np.meshgrid(*[np.fft.fftfreq(n) for n in shape], indexing="ij")
    k = np.sqrt(kz ** 2 + ky ** 2 + kx ** 2)
    return np.fft.ifftn(np.fft.fftn(white) * np.sqrt(power(k))).real


# --------------------------------------------------------------------------------------------
# Curves
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(12, 20, 16), (9, 14, 11), (16, 16, 16)])
def test_matches_numpy_reference(shape):
    rng = _rng()
    s = rng.standard_normal(shape)
    a = s + 0.7 * rng.standard_normal(shape)
    b = 0.5 * s + rng.standard_normal(shape)
    fsc, n = shell_correlation(torch.from_numpy(a), torch.from_numpy(b))
    ref, ref_n = reference_fsc(a, b)
    np.testing.assert_array_equal(n.numpy(), ref_n)
    np.testing.assert_allclose(fsc.numpy(), ref, atol=1e-10)


def test_float32_input_matches_reference_closely():
    rng = _rng()
    a, b = rng.standard_normal((2, 10, 24, 18)).astype(np.float32)
    fsc, _ = shell_correlation(torch.from_numpy(a), torch.from_numpy(b))
    ref, _ = reference_fsc(a.astype(np.float64), b.astype(np.float64))
    np.testing.assert_allclose(fsc.numpy(), ref, atol=2e-5)


def test_wedge_split_matches_numpy_reference():
    rng = _rng()
    shape = (14, 10, 20)
    s = rng.standard_normal(shape)
    a, b = s + rng.standard_normal(shape), s + rng.standard_normal(shape)
    result = compute_fsc(torch.from_numpy(a), torch.from_numpy(b), tilt_range=(-48.0, 61.0))
    for region in ("outside_wedge", "inside_wedge"):
        ref, ref_n = reference_fsc(a, b, (-48.0, 61.0), region)
        fsc, n = result.curves[region]
        np.testing.assert_array_equal(n.numpy(), ref_n)
        np.testing.assert_allclose(fsc.numpy(), ref, atol=1e-10, equal_nan=True)
    # the two regions partition every shell
    np.testing.assert_array_equal(result.curves["outside_wedge"][1] + result.curves["inside_wedge"][1],
                                  result.n_voxels)


def test_mask_is_applied_to_both_volumes():
    rng = _rng()
    shape = (8, 12, 10)
    a, b = rng.standard_normal((2,) + shape)
    m = rng.uniform(0, 1, shape)
    fsc, _ = shell_correlation(torch.from_numpy(a), torch.from_numpy(b), mask=torch.from_numpy(m))
    ref, _ = reference_fsc(a * m, b * m)
    np.testing.assert_allclose(fsc.numpy(), ref, atol=1e-10)
    assert compute_fsc(torch.from_numpy(a), torch.from_numpy(b), mask=torch.from_numpy(m)).masked


@pytest.mark.parametrize("shape", [(20, 36, 28), (31, 17, 24)])
def test_identical_volumes_give_one(shape):
    v = torch.from_numpy(_rng().standard_normal(shape))
    result = compute_fsc(v, v.clone(), pixel_size=4.0, tilt_range=(-60, 60))
    for region, (fsc, n) in result.curves.items():
        filled = n > 0
        assert filled[1:].any()
        torch.testing.assert_close(fsc[filled], torch.ones_like(fsc[filled]), atol=1e-12, rtol=0)
    res = result.resolutions[("all", "0.143")]
    assert not res.crossed and res.angstrom == pytest.approx(8.0)
    assert "better than Nyquist" in res.describe()


def test_independent_noise_gives_zero_within_three_sigma():
    shape = (24, 40, 56)  # non-cubic
    rng = _rng(7)
    a, b = rng.standard_normal((2,) + shape)
    result = compute_fsc(torch.from_numpy(a), torch.from_numpy(b), tilt_range=(-60, 60))
    for region, (fsc, n) in result.curves.items():
        ok = n[1:] > 0
        z = (fsc[1:] * n[1:].sqrt())[ok]
        assert bool((z.abs() < 3).all()), f"{region}: max |FSC| sqrt(n) = {z.abs().max():.2f}"
    # Var(FSC) = 1/n for noise: checks that n is the full-sphere count the half-bit uses
    z = result.fsc[1:] * result.n_voxels[1:].sqrt()
    assert 0.6 < float((z ** 2).mean()) < 1.6
    # and a correlated pair is not "about zero"
    c = compute_fsc(torch.from_numpy(a), torch.from_numpy(a + b))
    big = c.n_voxels > 100
    assert float((c.fsc[big] * c.n_voxels[big].sqrt()).min()) > 3


def test_band_limited_crossings_non_cubic():
    """Signal with Gaussian power A exp(-(k/k0)^2) plus white noise of unit power in each
    volume: the expected FSC is P/(P+1), crossing t where P = t/(1-t)."""
    shape = (40, 64, 56)
    big_a, k0 = 400.0, 0.12
    rng = _rng(3)
    s = _filtered_noise(shape, lambda k: big_a * np.exp(-(k / k0) ** 2), rng)
    a = s + rng.standard_normal(shape)
    b = s + rng.standard_normal(shape)
    result = compute_fsc(torch.from_numpy(a), torch.from_numpy(b), pixel_size=2.5)
    width = 1.0 / max(shape)
    for crit, t in (("0.5", 0.5), ("0.143", 0.143)):
        expected = k0 * math.sqrt(math.log(big_a * (1 - t) / t))
        r = result.resolutions[("all", crit)]
        assert r.crossed
        assert abs(r.frequency - expected) < width, (crit, r.frequency, expected)
        assert r.angstrom == pytest.approx(2.5 / r.frequency)
    # half-bit: threshold tends to 0.1716 for big shells, so it crosses slightly before 0.143
    hb = result.resolutions[("all", "half-bit")].frequency
    expected_hb = k0 * math.sqrt(math.log(big_a * (1 - 0.1716) / 0.1716))
    assert abs(hb - expected_hb) < width
    assert hb < result.resolutions[("all", "0.143")].frequency


def test_agrees_with_torch_fourier_shell_correlation():
    """Independent implementation (teamtomo). It bins with triangular weights on shells of
    width 1/min(n) and so only matches on a smooth curve, on a cube."""
    tfsc = pytest.importorskip("torch_fourier_shell_correlation")
    shape = (32, 32, 32)
    rng = _rng(11)
    s = _filtered_noise(shape, lambda k: 30.0 * np.exp(-(k / 0.15) ** 2), rng)
    a = torch.from_numpy(s + rng.standard_normal(shape))
    b = torch.from_numpy(s + rng.standard_normal(shape))
    ours = compute_fsc(a, b).fsc.numpy()
    theirs = tfsc.fourier_shell_correlation(a, b).numpy()
    assert theirs.shape == ours.shape
    np.testing.assert_allclose(ours[2:-1], theirs[2:-1], atol=0.05)


# --------------------------------------------------------------------------------------------
# Criteria
# --------------------------------------------------------------------------------------------
def test_crossing_frequency_interpolates_and_skips_empty_shells():
    f = torch.tensor([0.0, 0.1, 0.2, 0.3, 0.4, 0.5], dtype=torch.float64)
    c = torch.tensor([1.0, 0.9, 0.6, float("nan"), 0.3, 0.1], dtype=torch.float64)
    freq, crossed = crossing_frequency(f, c, 0.5)
    assert crossed and freq == pytest.approx(0.2 + 0.2 * 0.1 / 0.3)
    freq, crossed = crossing_frequency(f, c, 0.05)
    assert not crossed and freq == 0.5
    # per-shell threshold: crossing of the difference curve
    t = torch.tensor([1.0, 0.5, 0.5, 0.5, 0.5, 0.05], dtype=torch.float64)
    freq, crossed = crossing_frequency(f, c, t)
    assert crossed and freq == pytest.approx(0.2 + 0.2 * 0.1 / 0.3)
    # the first crossing counts, not a later one
    c2 = torch.tensor([1.0, 0.3, 0.9, 0.9, 0.9, 0.9], dtype=torch.float64)
    freq, crossed = crossing_frequency(f, c2, 0.5)
    assert crossed and 0 < freq < 0.1


def test_half_bit_threshold_values():
    t = half_bit_threshold(torch.tensor([1.0, 100.0, 1e12, 0.0], dtype=torch.float64))
    assert t[0].item() == pytest.approx(1.0, abs=1e-4)
    assert t[1].item() == pytest.approx((0.2071 + 0.19102) / (1.2071 + 0.09102))
    assert t[2].item() == pytest.approx(0.2071 / 1.2071, abs=1e-5)
    assert math.isnan(t[3].item())


# --------------------------------------------------------------------------------------------
# Missing wedge
# --------------------------------------------------------------------------------------------
def _direction_index(shape, theta_deg, radius=0.3):
    """Grid indices (iz, ix) closest to the direction measured by a view at ``theta_deg``:
    (kx, kz) along (cos theta, -sin theta), at ``radius`` cycles/pixel."""
    nz, _, nx = shape
    t = math.radians(theta_deg)
    kx, kz = radius * math.cos(t), -radius * math.sin(t)
    return int(round(kz * nz)) % nz, int(round(kx * nx))


def test_missing_wedge_mask_geometry_asymmetric_range():
    shape = (64, 6, 96)
    mask = missing_wedge_mask(shape, -50.0, 30.0)
    assert mask.shape == (64, 6, 49) and mask.dtype == torch.bool
    for theta, missing in ((0, False), (25, False), (-45, False), (40, True), (-60, True),
                           (80, True), (-85, True)):
        iz, ix = _direction_index(shape, theta)
        assert bool(mask[iz, 3, ix]) == missing, theta
        assert bool((mask[iz, :, ix] == missing).all())  # ky does not matter
    # the ky axis (and origin) is measured; the kz axis is not
    assert not mask[0, :, 0].any()
    assert mask[5, :, 0].all()


def test_missing_wedge_mask_full_grid_is_friedel_symmetric_and_matches_rfft():
    shape = (20, 7, 30)
    full = missing_wedge_mask(shape, -40, 65, rfft=False).numpy()
    half = missing_wedge_mask(shape, -40, 65).numpy()
    np.testing.assert_array_equal(full[:, :, : shape[2] // 2 + 1], half)
    flipped = full[(-np.arange(20)) % 20][:, (-np.arange(7)) % 7][:, :, (-np.arange(30)) % 30]
    np.testing.assert_array_equal(full, flipped)
    # on a fine isotropic grid the missing fraction of (kx, kz) directions is (180-105)/180
    fine = missing_wedge_mask((200, 1, 200), -40, 65, rfft=False).numpy()[:, 0, :]
    kz, kx = np.meshgrid(np.fft.fftfreq(200), np.fft.fftfreq(200), indexing="ij")
    ring = (np.hypot(kz, kx) > 0.2) & (np.hypot(kz, kx) < 0.5)
    assert fine[ring].mean() == pytest.approx(75 / 180, abs=0.01)


def test_missing_wedge_mask_rejects_bad_ranges():
    for lo, hi in ((-60, -70), (-95, 60), (0, 90), (float("nan"), 10)):
        with pytest.raises(InputError, match="tilt range"):
            missing_wedge_mask((8, 8, 8), lo, hi)


def test_volumes_from_in_wedge_and_out_of_wedge_components():
    """A volume built from in-wedge Fourier components only, and one from out-of-wedge
    components only: the real round trip keeps them apart (the mask is Friedel-consistent),
    and the wedge-split FSC tells filled-and-agreeing from not."""
    shape = (32, 24, 40)
    lo, hi = -55.0, 45.0
    rng = _rng(5)
    wedge = missing_wedge_mask(shape, lo, hi)

    def part(inside: bool) -> torch.Tensor:
        f = torch.fft.rfftn(torch.from_numpy(rng.standard_normal(shape)))
        f = torch.where(wedge if inside else ~wedge, f, torch.zeros_like(f))
        return torch.fft.irfftn(f, s=shape)

    inside_only = part(True)
    spectrum = torch.fft.rfftn(inside_only)
    assert float(spectrum[~wedge].abs().max()) < 1e-9 * float(spectrum.abs().max())
    outside = part(False)
    # same measured data, independent content in the wedge: a method that only denoises
    a = outside + part(True)
    b = outside + part(True)
    result = compute_fsc(a, b, tilt_range=(lo, hi), pixel_size=3.0)
    fsc_out, n_out = result.curves["outside_wedge"]
    fsc_in, n_in = result.curves["inside_wedge"]
    good = (n_out > 0) & (n_in > 0)
    good[0] = False
    assert float(fsc_out[good].min()) > 0.999
    # independent content: |FSC| within 3/sqrt(n) (shells of very few voxels say little)
    assert bool((fsc_in[good].abs() < 3 / n_in[good].sqrt()).all())
    assert float(fsc_in[n_in > 200].abs().max()) < 0.1
    assert result.resolutions[("outside_wedge", "0.143")].crossed is False
    assert result.resolutions[("inside_wedge", "0.143")].frequency < 0.1
    # the whole-volume curve mixes both and lies in between
    mid = result.fsc[good]
    assert bool(((mid < fsc_out[good]) & (mid > fsc_in[good])).all())


# --------------------------------------------------------------------------------------------
# Half sets
# --------------------------------------------------------------------------------------------
def test_split_alternate_tilts_interleaves_by_angle():
    # dose-symmetric acquisition order
    angles = [0, 3, -3, -6, 6, 9, -9, -12, 12]
    first, second = split_alternate_tilts(angles)
    assert sorted(first + second) == list(range(len(angles)))
    assert len(first) - len(second) == 1
    assert sorted(angles[i] for i in first) == [-12, -6, 0, 6, 12]
    assert sorted(angles[i] for i in second) == [-9, -3, 3, 9]
    assert split_alternate_tilts([-60.0, 60.0]) == ([0], [1])


def test_split_alternate_tilts_rejects_bad_input():
    with pytest.raises(InputError, match="at least 2 views"):
        split_alternate_tilts([5.0])
    with pytest.raises(InputError, match="view 1"):
        split_alternate_tilts([0.0, float("nan"), 3.0])


# --------------------------------------------------------------------------------------------
# Bad inputs (core)
# --------------------------------------------------------------------------------------------
def test_core_rejects_bad_inputs():
    a = torch.zeros(8, 10, 12)
    with pytest.raises(InputError, match="shapes differ"):
        compute_fsc(a, torch.zeros(8, 10, 11))
    b = torch.zeros(8, 10, 12)
    b[1, 2, 3] = float("nan")
    with pytest.raises(InputError, match="volume B: contains 1 NaN"):
        compute_fsc(a, b)
    for bad in (0.0, -1.5, float("nan"), float("inf")):
        with pytest.raises(InputError, match="pixel size"):
            compute_fsc(a, a, pixel_size=bad)
    with pytest.raises(InputError, match=r"mask: values must lie in \[0, 1\]"):
        compute_fsc(a, a, mask=torch.full((8, 10, 12), 2.0))
    with pytest.raises(InputError, match="mask: shape"):
        compute_fsc(a, a, mask=torch.ones(8, 10, 10))
    with pytest.raises(InputError, match="3-D volume"):
        compute_fsc(torch.zeros(10, 12), torch.zeros(10, 12))


# --------------------------------------------------------------------------------------------
# STAR, plot, CLI
# --------------------------------------------------------------------------------------------
def _write_mrc(path: Path, data: np.ndarray, voxel_size=None) -> Path:
    import mrcfile

    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(np.asarray(data, dtype=np.float32))
        if voxel_size is not None:
            mrc.voxel_size = voxel_size
    return path


@pytest.fixture
def half_maps(tmp_path):
    shape = (16, 28, 32)
    rng = _rng(21)
    s = _filtered_noise(shape, lambda k: 100.0 * np.exp(-(k / 0.12) ** 2), rng)
    a = _write_mrc(tmp_path / "odd.mrc", s + rng.standard_normal(shape), 5.0)
    b = _write_mrc(tmp_path / "even.mrc", s + rng.standard_normal(shape), 5.0)
    return a, b, shape


def _run(args):
    """Invoke the command as `localet` does (errors propagate as exceptions)."""
    from click.testing import CliRunner

    from localet.commands.fsc import command

    return CliRunner().invoke(command, [str(x) for x in args], catch_exceptions=True)


def test_cli_writes_star_and_plot(half_maps, tmp_path):
    import starfile

    a, b, shape = half_maps
    tlt = tmp_path / "series.tlt"
    tlt.write_text("\n".join(f"{t:.2f}" for t in np.arange(-57, 61, 3)) + "\n")
    star, png = tmp_path / "fsc.star", tmp_path / "fsc.png"
    res = _run([a, b, "-o", star, "--tlt", tlt, "--plot", png])
    assert res.exit_code == 0, res.output
    assert "pixel 5 A (header)" in res.output and "-57 .. 60 degrees" in res.output
    assert "whole volume" in res.output and "inside wedge" in res.output
    tables = starfile.read(star)
    fsc = tables["fsc"]
    assert len(fsc) == max(shape) // 2 + 1
    for col in ("rlnSpectralIndex", "locFrequency", "rlnResolution", "rlnAngstromResolution",
                "rlnFourierShellCorrelation", "locShellVoxels", "locHalfBitThreshold",
                "locFscOutsideWedge", "locFscInsideWedge", "locShellVoxelsInsideWedge"):
        assert col in fsc.columns, col
    np.testing.assert_allclose(fsc["rlnResolution"][1:], 1 / fsc["rlnAngstromResolution"][1:], rtol=1e-5)
    general = tables["general"]
    assert general["locPixelSize"][0] == 5.0 and general["locTiltMin"][0] == -57
    direct = compute_fsc(torch.from_numpy(_read(a)), torch.from_numpy(_read(b)), pixel_size=5.0)
    assert general["rlnFinalResolution"][0] == pytest.approx(
        direct.resolutions[("all", "0.143")].angstrom, rel=1e-5)
    np.testing.assert_allclose(fsc["rlnFourierShellCorrelation"], direct.fsc.numpy(), atol=1e-5)
    rows = tables["resolution"]
    assert len(rows) == 9 and set(rows["locRegion"]) == {"all", "outside_wedge", "inside_wedge"}
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*tmp-*"))


def _read(path):
    import mrcfile

    with mrcfile.open(path) as m:
        return m.data.astype(np.float64)


def test_cli_tilt_range_option_and_pixel_override(half_maps, tmp_path):
    a, b, _ = half_maps
    res = _run([a, b, "-o", tmp_path / "x.star", "--tlt", "-60,60", "--pixel-size", "2.5"])
    assert res.exit_code == 0, res.output
    assert "pixel 2.5 A (--pixel-size)" in res.output
    assert "differs from --pixel-size" in res.output  # warning about the headers


@pytest.mark.parametrize("case, message", [
    ("shape", "shape (16, 28, 30) (z, y, x) differs"),
    ("nan", "contains NaN or infinite values"),
    ("pixel-mismatch", "pixel size 7 A differs"),
    ("pixel-option", "--pixel-size: must be a positive number"),
    ("no-pixel", "has no pixel size in its header; give --pixel-size"),
    ("missing", "file not found"),
    ("mask-range", "values must lie in [0, 1]"),
    ("tlt-bad", "line 2: 'abc' is not a number"),  # the core's .tlt reader (localet_core.io.read_tlt)
    ("tlt-range", "--tlt: 'sixty' is neither"),
    ("overwrite", "would overwrite an input file"),
])
@pytest.mark.parametrize("memory", [None, "64K"], ids=["in-memory", "out-of-core"])
def test_cli_bad_inputs_give_one_line_errors_and_no_output(half_maps, tmp_path, case, message, memory):
    a, b, shape = half_maps
    out = tmp_path / "out.star"
    args = [a, b, "-o", out] + (["--memory", memory] if memory else [])
    bad = tmp_path / "bad.mrc"
    if case == "shape":
        args[1] = _write_mrc(bad, np.zeros((16, 28, 30)), 5.0)
    elif case == "nan":
        d = np.zeros(shape)
        d[3, 4, 5] = np.nan
        args[1] = _write_mrc(bad, d, 5.0)
    elif case == "pixel-mismatch":
        args[1] = _write_mrc(bad, np.zeros(shape), 7.0)
    elif case == "pixel-option":
        args += ["--pixel-size", "0"]
    elif case == "no-pixel":
        args[0] = _write_mrc(tmp_path / "a0.mrc", np.zeros(shape))
        args[1] = _write_mrc(bad, np.zeros(shape))
    elif case == "missing":
        args[1] = tmp_path / "nope.mrc"
    elif case == "mask-range":
        args += ["--mask", _write_mrc(bad, np.full(shape, 3.0), 5.0)]
    elif case == "tlt-bad":
        tlt = tmp_path / "bad.tlt"
        tlt.write_text("-60\nabc\n60\n")
        args += ["--tlt", tlt]
    elif case == "tlt-range":
        args += ["--tlt", "sixty"]
    elif case == "overwrite":
        args += ["--mask", out]
    res = _run(args)
    assert isinstance(res.exception, InputError), res.output
    text = str(res.exception)
    assert "\n" not in text and message in text, text
    assert not out.exists() and not list(tmp_path.glob(".*tmp-*"))


def test_cli_out_of_core_fsc_equals_the_in_memory_one(half_maps, tmp_path):
    """Under a budget the volumes do not fit (--memory 64K) they are read a few rows at a time,
    masked and transformed into a scratch file: the same curves (whole and wedge-split, with a
    mask, from an int16 volume too), the same resolutions, and no scratch file left."""
    import mrcfile
    import starfile

    from localet_core.validation.streamed import fsc_files_plan

    a, b, shape = half_maps
    assert fsc_files_plan(shape, True, 64 << 10)[0] and not fsc_files_plan(shape, True, 1 << 30)[0]
    with mrcfile.open(b) as m:
        data = m.data
    b16 = tmp_path / "even16.mrc"
    with mrcfile.new(str(b16)) as m:
        m.set_data(np.round(data * 100).astype(np.int16))
        m.voxel_size = 5.0
    zz, yy, xx = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    mask = _write_mrc(tmp_path / "mask.mrc", np.clip(1.5 - 1.5 * (zz**2 + yy**2 + xx**2), 0, 1), 5.0)
    for other in (b, b16):
        tables = []
        for memory in ("1G", "64K"):
            out = tmp_path / f"fsc_{memory}.star"
            res = _run([a, other, "-o", out, "--tlt", "-57,60", "--mask", mask, "--memory", memory])
            assert res.exit_code == 0, res.output
            tables.append(starfile.read(out))
        whole, streamed = tables
        for column in ("rlnFourierShellCorrelation", "locFscOutsideWedge", "locFscInsideWedge"):
            np.testing.assert_allclose(streamed["fsc"][column], whole["fsc"][column], atol=1e-5)
        np.testing.assert_allclose(streamed["resolution"]["locFrequency"], whole["resolution"]["locFrequency"],
                                   atol=1e-5)
        assert streamed["general"]["rlnFinalResolution"][0] == pytest.approx(
            whole["general"]["rlnFinalResolution"][0], rel=1e-4)
    assert not list(tmp_path.glob(".*tmp-*"))


def test_cli_reads_a_map_with_permuted_axes_in_its_own_axes(half_maps, tmp_path):
    """The same half map stored with its axes permuted (MAPC, MAPR, MAPS = 3, 1, 2, as EMDB
    maps may be) gives the same FSC as the plain file, whole and read a few rows at a time; read
    as stored, its shape would differ and the command refuse it."""
    import mrcfile
    import starfile

    a, b, shape = half_maps
    with mrcfile.open(b) as m:
        data = m.data.copy()
    permuted = tmp_path / "even_permuted.mrc"
    with mrcfile.new(str(permuted)) as m:
        m.set_data(np.ascontiguousarray(data.transpose(1, 0, 2)))  # sections Y, rows Z, columns X
        m.voxel_size = 5.0
        m.header.mapc, m.header.mapr, m.header.maps = 1, 3, 2
    for memory in ("1G", "64K"):
        tables = []
        for other in (b, permuted):
            out = tmp_path / f"fsc_{other.stem}_{memory}.star"
            res = _run([a, other, "-o", out, "--memory", memory])
            assert res.exit_code == 0, res.output
            tables.append(starfile.read(out)["fsc"]["rlnFourierShellCorrelation"])
        np.testing.assert_allclose(tables[1], tables[0], atol=1e-6)


def test_fsc_command_is_registered():
    from localet.commands import _MODULES

    assert "fsc" in _MODULES
    from localet.commands.fsc import command

    assert command.name == "fsc"


def test_localet_main_prints_one_line_error_and_exits_2(half_maps, tmp_path):
    """End to end through `localet`'s main(): a user error is one line on stderr, exit 2."""
    import subprocess
    import sys

    a, _, _ = half_maps
    small = _write_mrc(tmp_path / "small.mrc", np.zeros((4, 5, 6)), 5.0)
    code = ("import sys, localet.commands as c; c._MODULES = ['fsc']; from localet.cli import main; "
            "sys.argv = ['localet'] + sys.argv[1:]; main()")
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", code, "fsc", str(a), str(small), "-o",
                           str(tmp_path / "o.star")], capture_output=True, text=True, cwd=root,
                          env={**__import__("os").environ, "PYTHONPATH": str(root)}, timeout=60)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "small.mrc" in lines[0]
    assert "Traceback" not in proc.stderr


def test_shell_correlation_over_a_fourier_region_matches_wedge_split():
    rng = _rng(9)
    shape = (12, 9, 16)
    a, b = (torch.from_numpy(x) for x in rng.standard_normal((2,) + shape))
    wedge = missing_wedge_mask(shape, -35, 50)
    result = compute_fsc(a, b, tilt_range=(-35, 50))
    for region, sel in (("inside_wedge", wedge), ("outside_wedge", ~wedge)):
        fsc, n = shell_correlation(a, b, fourier_region=sel)
        torch.testing.assert_close(n, result.curves[region][1])
        torch.testing.assert_close(fsc, result.curves[region][0], equal_nan=True)
    with pytest.raises(InputError, match="rfft grid"):
        shell_correlation(a, b, fourier_region=torch.ones(shape, dtype=torch.bool))


def test_constant_volume_is_an_error_not_a_resolution():
    a = torch.randn(16, 20, 24)
    with pytest.raises(InputError, match="volume B: has no variance"):
        compute_fsc(a, torch.zeros(16, 20, 24), pixel_size=10.0)


def test_a_noisy_first_shell_is_not_the_resolution():
    """The demo's "FSC = 0.5 at 320 A": a dip in the first shells, then a curve above the
    criterion to high resolution, must report the real drop."""
    f = torch.arange(33, dtype=torch.float64) / 64
    c = torch.full((33,), 0.9, dtype=torch.float64)
    c[1], c[2] = 0.45, 0.3
    c[20:] = 0.1
    n = torch.full((33,), 500.0, dtype=torch.float64)
    freq, crossed = crossing_frequency(f, c, 0.5, n, band=3, min_shell_voxels=100)
    assert crossed and 19 / 64 < freq < 20 / 64
    # the plain rule (no band) takes the dip
    assert crossing_frequency(f, c, 0.5)[0] < 2 / 64


def test_a_curve_never_above_the_criterion_reports_at_most_the_box():
    f = torch.arange(33, dtype=torch.float64) / 64
    c = torch.full((33,), 0.2, dtype=torch.float64)
    c[0] = 1.0
    n = torch.full((33,), 500.0, dtype=torch.float64)
    freq, crossed = crossing_frequency(f, c, 0.5, n, band=3, min_shell_voxels=100)
    assert crossed and freq >= 1 / 64  # at most the box size (64 px), never larger
