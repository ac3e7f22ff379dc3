"""Raw stacks with an alignment (.xf, AreTomo .aln) reconstruct like the aligned stack: the views are
resampled once into the aligned frame (localet_core.alignment), then every path is the aligned one."""
import subprocess
import sys

import numpy as np
import pytest
import torch

from localet_core.alignment import align_stack, aligned_geometry, bspline_coefficients
from localet_core.errors import InputError
from localet_core.io import read_volume, write_tlt, write_volume, write_xf
from localet_core.io.aln import aln_to_xf, read_aln, write_aln
from localet_core.network.inference import iter_model_slabs
from localet_core.network.modelfile import load_model
from localet_core.pipeline import assemble_slabs
from localet_core.reconstruction.geometry import TiltGeometry
from localet_core.reconstruction.wbp import weighted_backprojection
from localet_core.simulate.blobs import blob_projections, rotation_xf
from localet_core.tiltseries import OutputOptions, load_tilt_series

ANGLES = np.arange(-60.0, 61.0, 3.0)
N, NZ = 96, 40
INNER = (slice(4, -4), slice(22, -22), slice(22, -22))  # away from the aligned frame's uncovered corners


def _blobs(seed=0, n=40):
    rng = np.random.default_rng(seed)
    return [(rng.uniform(-30, 30), rng.uniform(-30, 30), rng.uniform(-12, 12), 1.0) for _ in range(n)]


BLOBS = _blobs()


def corr(a, b, region=INNER):
    return float(np.corrcoef(a[region].ravel(), b[region].ravel())[0, 1])


def run_cli(*args):
    result = subprocess.run([sys.executable, "-m", "localet", *map(str, args)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result


def write_stack(path, data):
    write_volume(path, data, 2.0)
    return path


@pytest.fixture(scope="module")
def model():
    return load_model("localet-default")[0]


def network(model, stack, geometry):
    return assemble_slabs(geometry.output_shape, iter_model_slabs(stack, geometry, model, torch.device("cpu")))


# ----------------------------------------------------------------------------- the resampler
def test_bspline_interpolates_and_rot90_is_lossless():
    img = torch.randn(3, 17, 22)
    coeffs = bspline_coefficients(img)
    from localet_core.alignment import _bspline_sample

    r, c = torch.meshgrid(torch.arange(17.0), torch.arange(22.0), indexing="ij")
    back = _bspline_sample(coeffs, r.expand(3, -1, -1).double(), c.expand(3, -1, -1).double())
    assert float((back - img).abs().max()) < 1e-4
    ali = blob_projections(BLOBS, ANGLES, (N, N))
    raw = np.ascontiguousarray(np.rot90(ali, 1, axes=(1, 2)))
    xf = np.zeros((ANGLES.size, 2, 3))
    xf[:, :, :2] = [[0.0, -1.0], [1.0, 0.0]]
    out = align_stack(raw, TiltGeometry(ANGLES, (N, N), NZ, xf=xf))
    assert np.abs(out - ali).max() < 1e-5 * np.abs(ali).max()


def test_binned_grid_and_geometry():
    """Binning first, then resampling on the binned grid of the single-interpolation path: an
    identity .xf gives exactly the binned stack, and with odd remainders (the binned columns are
    re-centred on the raw centre, the rows kept) the same volume as the raw-frame path."""
    from localet_core.reconstruction.filters import bin_images

    identity = np.tile(np.array([[1.0, 0, 0], [0, 1.0, 0]]), (ANGLES.size, 1, 1))
    rng = np.random.default_rng(1)
    raw = rng.standard_normal((ANGLES.size, 44, 50)).astype(np.float32)
    g = TiltGeometry(ANGLES, (44, 50), 12, xf=identity, binning=2, pixel_size=1.5, excluded=(0, 3))
    ga = aligned_geometry(g)
    assert ga.xf is None and ga.binning == 1 and ga.detector_shape == (22, 25) and ga.pixel_size == 3.0
    assert ga.output_shape == g.output_shape and ga.is_separable and ga.voxel_size == g.voxel_size
    out = align_stack(raw, g)
    used = list(g.used_views)
    np.testing.assert_allclose(out[used], bin_images(torch.from_numpy(raw), 2, (0, 0)).numpy()[used], atol=1e-5)
    assert np.abs(out[[0, 3]]).max() == 0  # excluded views are never read
    odd = TiltGeometry(ANGLES, (45, 51), 14, xf=rotation_xf(ANGLES.size, 30.0, (1.5, -2.0)), binning=2)
    stack = blob_projections(BLOBS[:12], ANGLES, (45, 51), sigma=3.0, xf=odd.xf)
    old = weighted_backprojection(stack, odd, device="cpu")
    new = weighted_backprojection(align_stack(stack, odd), aligned_geometry(odd), device="cpu")
    assert new.shape == old.shape
    assert corr(new, old, (slice(2, -2), slice(5, -5), slice(5, -5))) >= 0.995


# ----------------------------------------------------------------------------- rot90 through the CLI
def test_rot90_raw_stack_reconstructs_like_the_aligned_stack(tmp_path):
    """The issue's case: raw = aligned rotated by 90 degrees (lossless) + the .xf that undoes it.
    Before: WBP 1.0000 but network 0.887 (0.60 here: the kernels were applied in the raw frame).
    Now both are the aligned stack's reconstruction, through the real CLI (fbp, SIRT, --bin 2,
    X-axis tilt with OFFSET and SHIFT on the general kernel, reconstruct)."""
    rng = np.random.default_rng(5)
    ali = blob_projections(BLOBS, ANGLES, (N, N), sigma=1.5)
    ali = ali + (0.5 * ali.std() * rng.standard_normal(ali.shape)).astype(np.float32)
    raw = np.ascontiguousarray(np.rot90(ali, 1, axes=(1, 2)))
    xf = np.zeros((ANGLES.size, 2, 3))
    xf[:, :, :2] = [[0.0, -1.0], [1.0, 0.0]]
    write_stack(tmp_path / "ts.ali", ali)
    write_stack(tmp_path / "ts.st", raw)
    write_tlt(tmp_path / "ts.tlt", ANGLES)
    write_xf(tmp_path / "ts.xf", xf)
    common = ["--tlt", tmp_path / "ts.tlt", "--thickness", NZ]
    for cmd, extra in (("fbp", []), ("fbp", ["--method", "sirt", "--iterations", 5]), ("fbp", ["--bin", 2]),
                       ("fbp", ["--x-axis-tilt", 5, "--offset", "2,1.5", "--shift", "3,2"]), ("reconstruct", [])):
        tag = cmd + "".join(map(str, extra))
        run_cli(cmd, tmp_path / "ts.ali", *common, *extra, "-o", tmp_path / f"{tag}_ali.mrc")
        run_cli(cmd, tmp_path / "ts.st", *common, *extra, "--xf", tmp_path / "ts.xf", "-o", tmp_path / f"{tag}_raw.mrc")
        a = read_volume(tmp_path / f"{tag}_ali.mrc").data
        b = read_volume(tmp_path / f"{tag}_raw.mrc").data
        whole = (slice(None),) * 3
        assert corr(a, b, whole) >= (0.9999 if cmd == "fbp" else 0.995), tag
        assert np.abs(a - b).max() <= 1e-4 * np.ptp(a), tag  # in fact the same volume


# ----------------------------------------------------------------------------- 85 degrees + shifts
@pytest.mark.parametrize("scale", [1.0, 1.03])
def test_85_degree_rotation_with_shifts_costs_one_interpolation(model, scale):
    """Exact (analytic) raw projections under an 85-degree rotation with shifts (and a 3 %
    magnification): the resampled path reconstructs like the aligned stack. Measured (96^2, 41
    views, inner region, default bicubic resampling): WBP 0.9999 (0.99986), network 0.9991 (0.9993 with the
    magnification). One extra interpolation at its worst, a half-pixel shift, costs WBP 0.9999 /
    network 0.9995; the rest is the aligned frame's corners that the rotated raw image does not
    cover. The old raw-frame path (single bilinear interpolation, kernels in the raw frame): WBP
    0.9994, network 0.58. (Cubic B-spline resampling: 0.99999 / 0.9995; bilinear: 0.9988 / 0.9974.)"""
    ali = blob_projections(BLOBS, ANGLES, (N, N), sigma=1.5)
    g0 = TiltGeometry(ANGLES, (N, N), NZ)
    ref_wbp = weighted_backprojection(ali, g0, device="cpu")
    ref_net = network(model, ali, g0)
    xf = rotation_xf(ANGLES.size, 85.0, (3.3, -2.7), scale=scale)
    raw = blob_projections(BLOBS, ANGLES, (N, N), sigma=1.5, xf=xf)
    gx = TiltGeometry(ANGLES, (N, N), NZ, xf=xf)
    new = align_stack(raw, gx)
    ga = aligned_geometry(gx)
    new_wbp = weighted_backprojection(new, ga, device="cpu")
    old_wbp = weighted_backprojection(raw, gx, device="cpu")  # the single-interpolation reference
    assert corr(new_wbp, ref_wbp) >= 0.9998
    assert corr(new_wbp, ref_wbp) >= corr(old_wbp, ref_wbp)
    assert corr(network(model, new, ga), ref_net) >= 0.999
    # the half-pixel shift: one extra interpolation at its worst
    half = np.zeros((ANGLES.size, 2, 3))
    half[:, :, :2] = np.eye(2)
    half[:, :, 2] = 0.5
    gh = TiltGeometry(ANGLES, (N, N), NZ, xf=half)
    shifted = align_stack(blob_projections(BLOBS, ANGLES, (N, N), sigma=1.5, xf=half), gh)
    assert corr(network(model, shifted, aligned_geometry(gh)), ref_net) >= 0.999


# ----------------------------------------------------------------------------- pairs and halves
def test_training_pair_and_halves_with_an_xf_are_resampled(tmp_path):
    from localet_core.network.training import PairSpec, load_pair

    xf = rotation_xf(ANGLES.size, 90.0, (0.0, 0.0))
    xf[:, :, :2] = np.round(xf[:, :, :2])
    xf[:, :, 2] = 0.0
    ali = blob_projections(BLOBS, ANGLES, (N, N))
    raw = np.ascontiguousarray(np.rot90(ali, 1, axes=(1, 2)))
    write_stack(tmp_path / "ts.st", raw)
    write_stack(tmp_path / "ts_odd.st", raw)
    write_tlt(tmp_path / "ts.tlt", ANGLES)
    write_xf(tmp_path / "ts.xf", xf)
    write_volume(tmp_path / "ref.mrc", np.random.default_rng(0).standard_normal((NZ, N, N)).astype(np.float32), 2.0)
    pair = load_pair(PairSpec(stack=str(tmp_path / "ts.st"), tlt=str(tmp_path / "ts.tlt"),
                              reference=str(tmp_path / "ref.mrc"), xf=str(tmp_path / "ts.xf"),
                              odd=str(tmp_path / "ts_odd.st")))
    assert pair.geometry.xf is None and pair.geometry.is_separable
    for data in pair.stacks:
        assert np.abs(data - ali).max() < 1e-5 * np.abs(ali).max()
    write_stack(tmp_path / "small_odd.st", raw[:, :, :-2])
    with pytest.raises(InputError, match="small_odd.st"):
        load_pair(PairSpec(stack=str(tmp_path / "ts.st"), tlt=str(tmp_path / "ts.tlt"),
                           reference=str(tmp_path / "ref.mrc"), xf=str(tmp_path / "ts.xf"),
                           odd=str(tmp_path / "small_odd.st")))


def test_load_tilt_series_resample_false_keeps_the_raw_frame(tmp_path):
    xf = rotation_xf(ANGLES.size, 10.0, (1.0, 2.0))
    write_stack(tmp_path / "ts.st", blob_projections(BLOBS, ANGLES, (32, 40), xf=xf))
    write_tlt(tmp_path / "ts.tlt", ANGLES)
    write_xf(tmp_path / "ts.xf", xf)
    kept = load_tilt_series(tmp_path / "ts.st", tlt=tmp_path / "ts.tlt", xf=tmp_path / "ts.xf", resample=False,
                            output=OutputOptions(thickness=8))
    assert kept.geometry.xf is not None and kept.raw_geometry is None
    series = load_tilt_series(tmp_path / "ts.st", tlt=tmp_path / "ts.tlt", xf=tmp_path / "ts.xf",
                              output=OutputOptions(thickness=8, binning=2))
    assert series.geometry.xf is None and series.raw_geometry.xf is not None
    assert series.data.shape == (ANGLES.size, 16, 20) and series.stack_shape == (ANGLES.size, 32, 40)
    assert series.geometry.output_shape == kept.geometry.output_shape[:1] + (16, 20)


# ----------------------------------------------------------------------------- AreTomo .aln
ALN2 = """# AreTomo Alignment / Priims bprmMn
# RawSize = 40 32 4
# NumPatches = 0
# DarkFrame =     0    3    60.00
# SEC     ROT         GMAG       TX          TY      SMEAN     SFIT    SCALE     BASE     TILT
    1    85.1000    1.00000     12.500     -3.250     1.00     1.00     1.00     0.00    -30.00
    0    84.9000    1.00000     -1.000      2.000     1.00     1.00     1.00     0.00    -60.00
    2    85.0000    1.00000      0.000      0.000     1.00     1.00     1.00     0.00      0.00
"""


def test_read_aln_aretomo2_and_aretomo3_sections(tmp_path):
    """Pinned to AreTomo's own .xf export (CSaveXF::mSaveForRelion): phi = -ROT,
    A = [[cos phi, -sin phi], [sin phi, cos phi]], d = A (-TX, -TY); SEC 0-based in AreTomo2,
    1-based in AreTomo3; dark views excluded with the identity."""
    path = tmp_path / "a2.aln"
    path.write_text(ALN2)
    aln = read_aln(path)
    assert aln.raw_size == (40, 32, 4) and aln.excluded == (3,)
    np.testing.assert_allclose(aln.angles, [-60.0, -30.0, 0.0, 60.0])
    phi = np.deg2rad(-85.1)
    a = np.array([[np.cos(phi), -np.sin(phi)], [np.sin(phi), np.cos(phi)]])
    np.testing.assert_allclose(aln.xf[1, :, :2], a)
    np.testing.assert_allclose(aln.xf[1, :, 2], a @ [-12.5, 3.25])
    np.testing.assert_allclose(aln.xf[3], [[1, 0, 0], [0, 1, 0]])
    # AreTomo3: the same file with sections counted from 1
    three = ALN2.replace("    3    60.00", "    4    60.00").replace("\n    1 ", "\n    2 ") \
        .replace("\n    0 ", "\n    1 ").replace("\n    2    85.0000", "\n    3    85.0000")
    (tmp_path / "a3.aln").write_text(three.replace("# NumPatches = 0", "# NumPatches = 0\n# Thickness = 300"))
    aln3 = read_aln(tmp_path / "a3.aln")
    np.testing.assert_allclose(aln3.xf, aln.xf)
    assert aln3.excluded == (3,)
    np.testing.assert_allclose(aln_to_xf([85.1], [12.5], [-3.25], [1.0])[0], aln.xf[1])


@pytest.mark.parametrize("text,match", [
    ("hello\n", "not an AreTomo .aln"),
    (ALN2.replace("# RawSize = 40 32 4\n", ""), "RawSize"),
    (ALN2.replace("# RawSize = 40 32 4", "# RawSize = 40 32 5"), "RawSize says 5 views"),
    (ALN2.replace("    2    85.0000", "    1    85.0000"), "section numbers"),
    (ALN2.replace("     1.00     0.00      0.00\n", "\n"), "10 values"),
    (ALN2.replace("85.1000", "eighty"), "not a number"),
])
def test_read_aln_errors_name_the_file(tmp_path, text, match):
    path = tmp_path / "bad.aln"
    path.write_text(text)
    with pytest.raises(InputError, match=match) as info:
        read_aln(path)
    assert "bad.aln" in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("base", [0, 1])
def test_aln_simulated_raw_series_reconstructs_like_the_aligned_series(tmp_path, base):
    """A raw series as AreTomo sees it (tilt axis at ROT ~ 86 degrees, per-view shifts, one dark
    view) with the .aln AreTomo would write for it: `localet fbp --aln` (angles and exclusion from
    the .aln, no --tlt) reconstructs like the aligned series without that view."""
    ny, nx, nz = 64, 72, 24
    blobs = [(b[0] * 0.6, b[1] * 0.6, b[2], b[3]) for b in BLOBS[:25]]
    n = ANGLES.size
    rng = np.random.default_rng(2)
    rot = 86.0 + rng.normal(0, 0.3, n)
    tx, ty = rng.normal(0, 3, n), rng.normal(0, 3, n)
    # The raw image is the aligned one turned so that the tilt axis points along R(ROT) y, then
    # moved by T: raw(r) = aligned(R(-ROT) (r - T)), written here without localet's converter.
    xf = np.zeros((n, 2, 3))
    for k in range(n):
        p = np.deg2rad(-rot[k])
        r = np.array([[np.cos(p), -np.sin(p)], [np.sin(p), np.cos(p)]])
        xf[k, :, :2], xf[k, :, 2] = r, -r @ [tx[k], ty[k]]
    raw = blob_projections(blobs, ANGLES, (ny, nx), xf=xf)
    dark = (n - 1,)
    raw[dark[0]] = 0.0
    write_stack(tmp_path / "ts.mrc", raw)
    write_aln(tmp_path / "ts.aln", rot, tx, ty, ANGLES, (nx, ny, n), dark=dark, base=base)
    ali = blob_projections(blobs, ANGLES, (ny, nx))
    write_stack(tmp_path / "ts.ali", ali)
    write_tlt(tmp_path / "ts.tlt", ANGLES)
    run_cli("fbp", tmp_path / "ts.mrc", "--aln", tmp_path / "ts.aln", "--thickness", nz, "-o", tmp_path / "raw.mrc")
    run_cli("fbp", tmp_path / "ts.ali", "--tlt", tmp_path / "ts.tlt", "--exclude", n, "--thickness", nz,
            "-o", tmp_path / "ali.mrc")
    a, b = read_volume(tmp_path / "ali.mrc").data, read_volume(tmp_path / "raw.mrc").data
    inner = (slice(2, -2), slice(12, -12), slice(12, -12))
    assert corr(a, b, inner) >= 0.99
    # the wrong sign of ROT (or of the shifts) does not reconstruct
    write_aln(tmp_path / "neg.aln", -rot, tx, ty, ANGLES, (nx, ny, n), dark=dark, base=base)
    run_cli("fbp", tmp_path / "ts.mrc", "--aln", tmp_path / "neg.aln", "--thickness", nz, "-o", tmp_path / "neg.mrc")
    assert corr(a, read_volume(tmp_path / "neg.mrc").data, inner) < 0.5


def test_aln_cli_errors(tmp_path):
    write_stack(tmp_path / "ts.mrc", np.zeros((4, 30, 40), np.float32))
    (tmp_path / "ts.aln").write_text(ALN2)
    write_xf(tmp_path / "ts.xf", rotation_xf(4, 0.0, (0.0, 0.0)))
    for extra, match in (([], "ts.aln: is for a raw stack of 40x32x4"),
                         (["--xf", tmp_path / "ts.xf"], "not both")):
        result = subprocess.run([sys.executable, "-m", "localet", "fbp", str(tmp_path / "ts.mrc"), "--aln",
                                 str(tmp_path / "ts.aln"), *map(str, extra), "-o", str(tmp_path / "o.mrc")],
                                capture_output=True, text=True)
        assert result.returncode != 0 and match in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


def test_fsc_halves_and_reconstruct_halves_with_an_xf_match_the_aligned_stack(tmp_path):
    """fsc-halves (odd/even) and reconstruct --odd/--even resample the half stacks like the stack."""
    rng = np.random.default_rng(7)
    ali = blob_projections(BLOBS, ANGLES, (N, N), sigma=1.5)
    halves = [ali + (0.3 * ali.std() * rng.standard_normal(ali.shape)).astype(np.float32) for _ in range(2)]
    rot = lambda a: np.ascontiguousarray(np.rot90(a, 1, axes=(1, 2)))  # noqa: E731
    xf = np.zeros((ANGLES.size, 2, 3))
    xf[:, :, :2] = [[0.0, -1.0], [1.0, 0.0]]
    for tag, data in (("ali", ali), ("raw", rot(ali))):
        write_stack(tmp_path / f"{tag}.mrc", data)
    for i, h in enumerate(halves):
        write_stack(tmp_path / f"ali_{i}.mrc", h)
        write_stack(tmp_path / f"raw_{i}.mrc", rot(h))
    write_tlt(tmp_path / "ts.tlt", ANGLES)
    write_xf(tmp_path / "ts.xf", xf)
    star = {}
    for tag, extra in (("ali", []), ("raw", ["--xf", tmp_path / "ts.xf"])):
        run_cli("fsc-halves", tmp_path / f"{tag}.mrc", "--tlt", tmp_path / "ts.tlt", *extra, "--method", "wbp",
                "--odd", tmp_path / f"{tag}_0.mrc", "--even", tmp_path / f"{tag}_1.mrc", "--thickness", NZ,
                "-o", tmp_path / f"{tag}.star", "--save-halves", tmp_path / tag)
        star[tag] = (tmp_path / f"{tag}.star").read_text()
        run_cli("fbp", tmp_path / f"{tag}_0.mrc", "--tlt", tmp_path / "ts.tlt", *extra, "--thickness", NZ,
                "-o", tmp_path / f"{tag}_fbp0.mrc")
    for i in (1, 2):
        a = read_volume(tmp_path / f"ali_half{i}.mrc").data
        b = read_volume(tmp_path / f"raw_half{i}.mrc").data
        assert np.abs(a - b).max() <= 1e-4 * np.ptp(a)
    ali_half1 = read_volume(tmp_path / "ali_half1.mrc").data
    np.testing.assert_allclose(read_volume(tmp_path / "raw_fbp0.mrc").data, ali_half1, atol=1e-4 * np.ptp(ali_half1))

    def numbers(text):
        return np.array([float(t) for t in text.split() if t.replace(".", "", 1).replace("-", "", 1).isdigit()])

    np.testing.assert_allclose(numbers(star["raw"]), numbers(star["ali"]), atol=1e-4)


# ------------------------------------------------------------- the compiled bicubic resampler

def _native_or_skip():
    from localet_core.native import native_available

    if not native_available():
        pytest.skip("the compiled kernels are not built (no C compiler when localet was installed)")


@pytest.mark.parametrize("binning, degrees, shift", [(1, 23.0, (3.3, -1.7)), (2, -85.0, (10.0, 4.0)),
                                                     (1, 90.0, (2.0, -1.0))])
def test_compiled_resampler_equals_torchs_grid_sample(monkeypatch, binning, degrees, shift):
    _native_or_skip()
    from localet_core.alignment_numpy import align_stack_array
    from localet_core.native import NATIVE_VARIABLE

    rng = np.random.default_rng(4)
    stack = (5.0 + rng.standard_normal((7, 64, 80))).astype(np.float32)
    g = TiltGeometry(angles=tuple(np.linspace(-45, 45, 7)), detector_shape=(64, 80), thickness=20,
                     xf=rotation_xf(7, degrees, shift), excluded=(2,), binning=binning)
    ours = align_stack_array(stack, g, threads=2)
    monkeypatch.setenv(NATIVE_VARIABLE, "0")
    theirs = align_stack(stack, g)  # torch's grid_sample
    assert ours.shape == theirs.shape and ours.dtype == np.float32
    assert not ours[2].any() and not theirs[2].any()  # an excluded view is never read
    # torch's affine_grid rounds the positions to float32; ours are float64
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=2e-5 * float(np.ptp(theirs)))
    monkeypatch.delenv(NATIVE_VARIABLE)
    # align_stack itself takes the compiled path on the CPU
    np.testing.assert_array_equal(align_stack(stack, g), ours)


def test_compiled_resampler_in_place(monkeypatch):
    _native_or_skip()
    from localet_core.alignment_numpy import align_stack_array

    rng = np.random.default_rng(5)
    stack = rng.standard_normal((5, 40, 48)).astype(np.float32)
    g = TiltGeometry(angles=tuple(np.linspace(-40, 40, 5)), detector_shape=(40, 48), thickness=10,
                     xf=rotation_xf(5, 12.0, (1.0, 2.0)), excluded=(4,))
    expected = align_stack_array(stack.copy(), g)
    kept = stack[4].copy()
    result = align_stack_array(stack, g, out=stack)
    assert result is stack
    np.testing.assert_array_equal(stack[:4], expected[:4])
    np.testing.assert_array_equal(stack[4], kept)  # excluded: left as it was


def test_compiled_resampler_returns_the_pixels_on_a_whole_pixel_map():
    _native_or_skip()
    from localet_core.alignment_numpy import align_stack_array, aligned_to_raw

    rng = np.random.default_rng(6)
    stack = (3.0 + rng.standard_normal((3, 48, 48))).astype(np.float32)
    xf = np.zeros((3, 2, 3))
    xf[:, :, :2] = [[0.0, -1.0], [1.0, 0.0]]  # 90 degrees about the centre, shifts of whole pixels
    xf[:, :, 2] = [[0.0, 0.0], [2.0, -3.0], [-5.0, 1.0]]
    g = TiltGeometry(angles=(-20.0, 0.0, 20.0), detector_shape=(48, 48), thickness=10, xf=xf)
    assert np.array_equal(aligned_to_raw(g), np.round(aligned_to_raw(g)))
    ours = align_stack_array(stack, g)
    np.testing.assert_array_equal(ours[0], np.rot90(stack[0], k=-1))  # exactly the pixels (no fill mixed in)
    for v in (1, 2):
        inner = ours[v, 8:-8, 8:-8]
        assert np.isin(inner, stack[v]).all()
