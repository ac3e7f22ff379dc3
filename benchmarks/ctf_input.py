"""Does a CTF-corrected (phase-flipped) stack reconstruct as well as the raw one?

    python benchmarks/ctf_input.py [--model localet-default] [--quick]

The training series are not CTF-corrected, while IMOD users often give the aligned stack after
``ctfphaseflip``. On bench_quality.py's test sets (its fixed seeds and scoring), each stack is
reconstructed as simulated and phase-flipped with its own defocus (the simulator's CTF sign,
one defocus per series as simulated: what ``ctfphaseflip`` does without a defocus gradient), by
WBP (eTomo's RADIAL) and by the model. Prints one line per series (Pearson) and the means
(Pearson / PSNR / SSIM / wedge / wedge (particles) / FSC-0.143 against the truth, A).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_quality import TEST_A, TEST_B, score  # noqa: E402  (the benchmark's own sets and scoring)

from localet_core.methods import WBP, Localet  # noqa: E402
from localet_core.reconstruction.filters import ETOMO_RADIAL  # noqa: E402
from localet_core.reconstruction.geometry import TiltGeometry  # noqa: E402
from localet_core.simulate.forward import simulate_series  # noqa: E402
from localet_core.simulate.optics import ctf_2d  # noqa: E402

SHOWN = ("pearson", "psnr", "ssim", "wedge_corr", "wedge_corr_particles", "fsc_0.143_A")


def phase_flip(stack: torch.Tensor, pixel_size: float, defocus_um: float) -> torch.Tensor:
    """Each view (n_views, ny, nx) with the Fourier components where the CTF of ``defocus_um``
    (um, underfocus) is negative multiplied by -1; the view's mean is kept."""
    sign = torch.sign(ctf_2d(tuple(stack.shape[-2:]), pixel_size, defocus_um))
    sign[sign == 0] = 1
    mean = stack.mean(dim=(-2, -1), keepdim=True)
    return torch.fft.irfft2(torch.fft.rfft2(stack - mean) * sign, s=stack.shape[-2:]) + mean


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="localet-default", help="model name or .safetensors path")
    ap.add_argument("--quick", action="store_true", help="the first series of each scheme only")
    args = ap.parse_args()
    methods = {"WBP": WBP(ramp=ETOMO_RADIAL, device="cpu"), "localet": Localet(args.model, device="cpu")}
    rows = {}
    for set_name, sets in (("a", TEST_A), ("b", TEST_B)):
        for config, seeds in sets:
            for seed in list(seeds)[: 1 if args.quick else None]:
                series = simulate_series(dataclasses.replace(config, halves=False), seed)
                geometry = TiltGeometry(series.angles, config.shape[1:], config.shape[0],
                                        pixel_size=config.voxel_size)
                raw = torch.as_tensor(np.asarray(series.stack), dtype=torch.float32)
                stacks = {"raw": raw, "flipped": phase_flip(raw, config.voxel_size, series.params["defocus_um"])}
                for kind, stack in stacks.items():
                    for name, method in methods.items():
                        volume = method.volume(stack.numpy(), geometry)
                        rows.setdefault((set_name, name, kind), []).append(score(volume, series, geometry))
                print(f"set {set_name} seed {seed} (defocus {series.params['defocus_um']:.2f} um): " + ", ".join(
                    f"{m} {k} {rows[(set_name, m, k)][-1]['pearson']:.3f}" for m in methods for k in stacks), flush=True)
    print("\n| set | method | input | Pearson / PSNR / SSIM / wedge / wedge (particles) / FSC-0.143 (A) |")
    print("|---|---|---|---|")
    for (set_name, name, kind), scores in rows.items():
        means = " / ".join(f"{np.mean([s[k] for s in scores]):.3f}" for k in SHOWN)
        print(f"| ({set_name}) | {name} | {kind} | {means} |")


if __name__ == "__main__":
    main()
