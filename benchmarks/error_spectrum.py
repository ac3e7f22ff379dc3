"""Where a model's error lies against ground truth, by spatial frequency, and what a 3D low-pass
of its output would change: on the first series of each quality test set (bench_quality.py's
sets and scoring).

    python benchmarks/error_spectrum.py [--model localet-default]

For each series: Pearson / SSIM / PSNR inside the ice slab (after the affine fit) of the output
and of the output blurred by Gaussians of 0.5-1.5 voxels; then, after the same affine fit (the
volume zero outside the slab, both volumes minus the truth's slab mean), per band of spatial
frequency (cycles per voxel): the share of the truth's power in the band, the squared error in
the band over the truth's total power (the bands' errors add up to 1 - R^2 of the fit), and the
correlation of output and truth in the band (an FSC over the band).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_quality import TEST_A, TEST_B  # noqa: E402

from localet_core.methods import Localet  # noqa: E402
from localet_core.reconstruction.geometry import TiltGeometry  # noqa: E402
from localet_core.simulate.forward import simulate_series  # noqa: E402
from localet_core.validation.metrics import _gaussian_blur3d, pearson, psnr, ssim  # noqa: E402

SIGMAS = (0.0, 0.5, 0.75, 1.0, 1.5)
BANDS = (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.9)


def gaussian_blur(volume: np.ndarray, sigma: float) -> np.ndarray:
    """``(nz, ny, nx)`` volume blurred by a separable Gaussian of ``sigma`` voxels (edges
    replicated): the blur of the SSIM window (``metrics._gaussian_blur3d``)."""
    if sigma == 0:
        return volume
    return _gaussian_blur3d(torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32)), sigma).numpy()


def band_table(volume: np.ndarray, truth: np.ndarray, slab: np.ndarray) -> list:
    """``[(lo, hi, truth power share, error share, band correlation)]`` (see the module docstring)."""
    m = slab.astype(bool)
    fit = np.linalg.lstsq(np.stack([volume[m], np.ones(m.sum())], 1), truth[m], rcond=None)[0]
    mean = truth[m].mean()
    v = np.where(m, volume * fit[0] + fit[1] - mean, 0.0)
    t = np.where(m, truth - mean, 0.0)
    fv, ft = np.fft.rfftn(v), np.fft.rfftn(t)
    kz, ky, kx = np.meshgrid(np.fft.fftfreq(v.shape[0]), np.fft.fftfreq(v.shape[1]), np.fft.rfftfreq(v.shape[2]),
                             indexing="ij")
    radius = np.sqrt(kz ** 2 + ky ** 2 + kx ** 2)
    total = (np.abs(ft) ** 2).sum()
    rows = []
    for lo, hi in zip(BANDS[:-1], BANDS[1:]):
        s = (radius >= lo) & (radius < hi)
        pt, pv = (np.abs(ft[s]) ** 2).sum(), (np.abs(fv[s]) ** 2).sum()
        corr = float(np.real((fv[s] * np.conj(ft[s])).sum()) / np.sqrt(pt * pv))
        rows.append((lo, hi, pt / total, (np.abs(fv[s] - ft[s]) ** 2).sum() / total, corr))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="localet-default")
    args = ap.parse_args()
    method = Localet(args.model, device="cpu")
    for set_name, sets in (("a", TEST_A), ("b", TEST_B)):
        for config, seeds in sets:
            seed = list(seeds)[0]
            series = simulate_series(dataclasses.replace(config, halves=False), seed)
            geometry = TiltGeometry(series.angles, config.shape[1:], config.shape[0], pixel_size=config.voxel_size)
            volume = method.volume(series.stack, geometry)
            truth, slab = series.truth, series.slab_mask
            print(f"\nset ({set_name}), seed {seed}: Gaussian blur of the output (sigma in voxels)")
            for sigma in SIGMAS:
                b = gaussian_blur(volume, sigma)
                print(f"  sigma {sigma:4.2f}: Pearson {pearson(b, truth, slab):.3f}  SSIM {ssim(b, truth, slab):.3f}  "
                      f"PSNR {psnr(b, truth, slab):.2f} dB")
            print("  band (cycles/voxel) | truth power share | error / truth power | correlation")
            for lo, hi, share, err, corr in band_table(volume, truth, slab):
                print(f"  [{lo:.2f}, {hi:.2f}) | {share:.3f} | {err:.3f} | {corr:.2f}")


if __name__ == "__main__":
    main()
