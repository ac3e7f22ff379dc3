"""Benchmark scores: checked against numpy/scikit-image and synthetic wedge cases."""
import numpy as np
import pytest

from localet_core.validation.metrics import affine_fit, pearson, psnr, ssim, wedge_correlation
from localet_core.validation.wedge import missing_wedge_mask


def smooth_volume(shape, seed):
    rng = np.random.default_rng(seed)
    f = np.fft.rfftn(rng.standard_normal(shape))
    k = np.sqrt(sum(np.meshgrid(*[np.fft.fftfreq(n) ** 2 for n in shape[:2]], np.fft.rfftfreq(shape[2]) ** 2,
                                indexing="ij")))
    return np.fft.irfftn(f * np.exp(-(k / 0.08) ** 2), s=shape)


def test_pearson_and_affine_fit():
    truth = smooth_volume((16, 20, 24), 0)
    recon = 3.0 * truth - 2.0 + 0.1 * np.random.default_rng(1).standard_normal(truth.shape)
    mask = np.zeros(truth.shape)
    mask[4:12] = 1
    assert pearson(recon, truth, mask) == pytest.approx(np.corrcoef(recon[4:12].ravel(), truth[4:12].ravel())[0, 1])
    a, b = affine_fit(3.0 * truth - 2.0, truth)
    assert (a, b) == (pytest.approx(1 / 3), pytest.approx(2 / 3))


def test_psnr_of_known_noise():
    truth = np.zeros((20, 20, 20))
    truth[5:15, 5:15, 5:15] = 1.0
    noisy = truth + np.random.default_rng(2).normal(0, 0.1, truth.shape)
    a, b = np.polyfit(noisy.ravel(), truth.ravel(), 1)  # independent affine fit
    mse = np.mean((a * noisy + b - truth) ** 2)
    assert psnr(noisy, truth) == pytest.approx(10 * np.log10(1.0 / mse), abs=1e-6)
    assert 19.5 < psnr(noisy, truth) < 21  # about 20 dB for noise sigma 0.1 at peak 1


def test_ssim_matches_scikit_image():
    metrics = pytest.importorskip("skimage.metrics")
    truth = smooth_volume((24, 24, 24), 3)
    recon = truth + 0.5 * truth.std() * np.random.default_rng(4).standard_normal(truth.shape)
    ours = ssim(recon, truth)
    # skimage on the same affine-fitted input, Gaussian window sigma 1.5
    a, b = affine_fit(recon, truth)
    ref = metrics.structural_similarity(a * recon + b, truth, gaussian_weights=True, sigma=1.5,
                                        use_sample_covariance=False, data_range=float(truth.max() - truth.min()))
    assert ours == pytest.approx(ref, abs=0.03)
    assert ssim(truth, truth) == pytest.approx(1.0)


def test_wedge_correlation_sees_only_the_wedge():
    shape = (32, 24, 32)
    truth = smooth_volume(shape, 5)
    wedge = missing_wedge_mask(shape, -60, 60).numpy()
    spectrum = np.fft.rfftn(truth)
    measured_only = np.fft.irfftn(np.where(wedge, 0, spectrum), s=shape)  # like WBP: no wedge
    wedge_only = np.fft.irfftn(np.where(wedge, spectrum, 0), s=shape)
    assert wedge_correlation(measured_only, truth, (-60, 60)) == 0.0
    noise = np.random.default_rng(7).standard_normal(shape) * truth.std()
    assert abs(wedge_correlation(measured_only + noise, truth, (-60, 60))) < 0.1
    assert wedge_correlation(measured_only + wedge_only, truth, (-60, 60)) == pytest.approx(1.0)
    noise = np.random.default_rng(6).standard_normal(shape)
    assert wedge_correlation(measured_only + 0.5 * wedge_only, truth, (-60, 60)) == pytest.approx(1.0)
    assert abs(wedge_correlation(noise, truth, (-60, 60))) < 0.1


def test_resolution_against_truth():
    from localet_core.validation.metrics import resolution_against_truth

    truth = smooth_volume((32, 32, 32), 8)
    assert resolution_against_truth(truth, truth, 10.0, 0.143) == pytest.approx(20.0)  # never crosses
    noisy = truth + 2 * truth.std() * np.random.default_rng(9).standard_normal(truth.shape)
    res = resolution_against_truth(noisy, truth, 10.0, 0.5)
    # the signal falls off as exp(-(k/0.08)^2): white noise at twice its std wins well below Nyquist
    assert 40.0 < res < 320.0
    assert resolution_against_truth(noisy, truth, 10.0, 0.143) < res
