"""Weighted back-projection against analytic phantoms, an independent back-projector
(scikit-image's iradon), and IMOD's orientation conventions."""
import numpy as np
import pytest
import torch

from localet_core.reconstruction.filters import RampFilter, ramp_filter_rows
from localet_core.reconstruction.geometry import TiltGeometry
from localet_core.reconstruction.wbp import weighted_backprojection
from localet_core.simulate.blobs import blob_projections, blob_volume, peak_position, rotation_xf

ANGLES = np.arange(-60.0, 61.0, 3.0)


def corr(a, b):
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def test_agrees_with_scikit_image_iradon_slice_by_slice():
    iradon = pytest.importorskip("skimage.transform").iradon
    # odd sizes: scikit-image centres at n // 2, which equals our (n - 1) / 2 only for odd n
    ny, nx, nz = 12, 65, 65
    rng = np.random.default_rng(1)
    stack = rng.standard_normal((ANGLES.size, ny, nx)).astype(np.float32)
    geometry = TiltGeometry(angles=ANGLES, detector_shape=(ny, nx), thickness=nz)
    ours = weighted_backprojection(stack, geometry, device="cpu")
    filtered = ramp_filter_rows(torch.from_numpy(stack), RampFilter()).numpy()
    for y in range(ny):
        # the same filtered data, back-projected by scikit-image; theta = -angle maps its
        # convention onto IMOD's (found once with an off-centre blob), image rows = z
        ref = iradon(filtered[:, y, :].T, theta=-ANGLES, filter_name=None,
                     interpolation="linear", circle=False, output_size=nx)
        assert corr(ours[:, y, :], ref) >= 0.99


def test_sparse_and_grid_sample_kernels_agree():
    ny, nx, nz = 20, 48, 17
    stack = np.random.default_rng(2).standard_normal((ANGLES.size, ny, nx)).astype(np.float32)
    geometry = TiltGeometry(angles=ANGLES, detector_shape=(ny, nx), thickness=nz, width=40)
    a = weighted_backprojection(stack, geometry, device="cpu", kernel="sparse")
    b = weighted_backprojection(stack, geometry, device="cpu", kernel="grid_sample")
    assert np.abs(a - b).max() <= 1e-4 * np.abs(b).max()


def test_full_range_reconstruction_is_the_density():
    blobs = [(0.5, 0.5, 0.5, 1.0)]
    angles = np.arange(-89.5, 90.0, 0.5)
    stack = blob_projections(blobs, angles, (64, 64), sigma=6.0)
    geometry = TiltGeometry(angles=angles, detector_shape=(64, 64), thickness=32)
    volume = weighted_backprojection(stack, geometry, device="cpu")
    assert volume[16, 32, 32] == pytest.approx(1.0, abs=0.02)


# Off-centre features in x, y and z, with distinct amplitudes: a mirror in any axis, a swapped
# axis or a shifted centre moves a peak.
ASYMMETRIC = [(18.0, -9.0, 7.0, 1.0), (-14.0, 11.0, -9.0, 0.7), (5.0, 4.0, 12.0, 0.5)]


@pytest.mark.parametrize("shape", [(40, 64, 72), (41, 63, 73)])  # even and odd sizes
def test_orientation_follows_imod(shape):
    nz, ny, nx = shape
    stack = blob_projections(ASYMMETRIC, ANGLES, (ny, nx))
    geometry = TiltGeometry(angles=ANGLES, detector_shape=(ny, nx), thickness=nz)
    volume = weighted_backprojection(stack, geometry, device="cpu")
    truth = blob_volume(ASYMMETRIC, shape)
    assert corr(volume, truth) > 0.8
    for x, y, z, _ in ASYMMETRIC:
        expected = np.array([c + (n - 1) / 2 for c, n in zip((z, y, x), shape)])
        assert np.abs(peak_position(volume, expected) - expected).max() < 0.35
    # the mirrored hand (angles negated) puts the features at -z: the handedness check
    mirrored = weighted_backprojection(blob_projections(ASYMMETRIC, -ANGLES, (ny, nx)), geometry, device="cpu")
    assert corr(mirrored, truth) < 0.5


def test_rectangular_detector_and_width():
    ny, nx, nz, width = 40, 90, 30, 70
    stack = blob_projections(ASYMMETRIC, ANGLES, (ny, nx))
    geometry = TiltGeometry(angles=ANGLES, detector_shape=(ny, nx), thickness=nz, width=width)
    volume = weighted_backprojection(stack, geometry, device="cpu")
    assert volume.shape == (nz, ny, width)
    truth = blob_volume([b for b in ASYMMETRIC if abs(b[2]) < nz / 2 - 3], (nz, ny, width))
    assert corr(volume, truth) > 0.75


def test_xf_alignment_is_folded_into_the_sampling():
    ny, nx, nz = 64, 64, 40
    xf = rotation_xf(ANGLES.size, angle_deg=-20.0, shift=(3.5, -2.25), scale=1.0)
    raw = blob_projections(ASYMMETRIC, ANGLES, (ny, nx), xf=xf)
    aligned = blob_projections(ASYMMETRIC, ANGLES, (ny, nx))
    g_raw = TiltGeometry(angles=ANGLES, detector_shape=(ny, nx), thickness=nz, xf=xf)
    g_ali = TiltGeometry(angles=ANGLES, detector_shape=(ny, nx), thickness=nz)
    from_raw = weighted_backprojection(raw, g_raw, device="cpu")
    from_ali = weighted_backprojection(aligned, g_ali, device="cpu")
    inner = (slice(4, -4), slice(12, -12), slice(12, -12))  # away from the rotated borders
    assert corr(from_raw[inner], from_ali[inner]) >= 0.98
    for x, y, z, _ in ASYMMETRIC:
        expected = np.array([c + (n - 1) / 2 for c, n in zip((z, y, x), (nz, ny, nx))])
        assert np.abs(peak_position(from_raw, expected) - expected).max() < 0.35


def test_excluded_views_equal_removed_views():
    ny, nx, nz = 24, 40, 20
    stack = blob_projections(ASYMMETRIC, ANGLES, (ny, nx))
    excluded = (0, 5, ANGLES.size - 1)
    keep = [i for i in range(ANGLES.size) if i not in excluded]
    a = weighted_backprojection(stack, TiltGeometry(ANGLES, (ny, nx), nz, excluded=excluded), device="cpu")
    b = weighted_backprojection(stack[keep], TiltGeometry(ANGLES[keep], (ny, nx), nz), device="cpu")
    np.testing.assert_allclose(a, b, atol=1e-5 * np.abs(b).max())


def test_binning_keeps_positions():
    ny, nx, nz = 64, 96, 24
    blobs = [(20.0, -12.0, 8.0, 1.0), (-22.0, 10.0, -8.0, 1.0)]
    stack = blob_projections(blobs, ANGLES, (ny, nx), sigma=3.0)
    geometry = TiltGeometry(angles=ANGLES, detector_shape=(ny, nx), thickness=nz, binning=2)
    volume = weighted_backprojection(stack, geometry, device="cpu")
    assert volume.shape == (nz, ny // 2, nx // 2)
    truth = blob_volume([(x / 2, y / 2, z / 2, a) for x, y, z, a in blobs], volume.shape, sigma=1.5)
    assert corr(volume, truth) > 0.8


def test_shift_moves_features_like_imod():
    ny, nx, nz = 32, 64, 32
    stack = blob_projections(ASYMMETRIC[:1], ANGLES, (ny, nx))
    base = TiltGeometry(ANGLES, (ny, nx), nz)
    shifted = TiltGeometry(ANGLES, (ny, nx), nz, shift_x=4.0, shift_z=3.0)
    a = weighted_backprojection(stack, base, device="cpu")
    b = weighted_backprojection(stack, shifted, device="cpu")
    pa = np.unravel_index(np.argmax(a), a.shape)
    pb = np.unravel_index(np.argmax(b), b.shape)
    assert (pb[0] - pa[0], pb[1] - pa[1], pb[2] - pa[2]) == (-3, 0, 4)
