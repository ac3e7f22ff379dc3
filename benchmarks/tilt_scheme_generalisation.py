"""Does a model trained on one tilt scheme work on another? (the reason for angle-smooth kernels)

Simulated pairs (random Gaussian blobs, noisy exact projections, the blob volume as reference).
Train on scheme A (-60..60 step 3), evaluate the validation L1 loss on held-out specimens projected
with A, B (-54..54 step 2, 55 views) and C (-45..45 step 3); compare with a model trained on each
target scheme itself, and with the best constant prediction (the median).

    python benchmarks/tilt_scheme_generalisation.py [--steps 300]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from localet_core.io import write_tlt, write_volume
from localet_core.network.model import ModelConfig
from localet_core.network.training import PairSpec, TrainConfig, _loss, _predict, augmented_views, load_pair, train
from localet_core.simulate.blobs import blob_projections, blob_volume

ROOT = Path(__file__).resolve().parents[1]

SCHEMES = {"A -60..60/3": np.arange(-60, 61, 3.0), "B -54..54/2": np.arange(-54, 55, 2.0),
           "C -45..45/3": np.arange(-45, 46, 3.0)}
SHAPE = (24, 32, 40)


def make(d: Path, name: str, seed: int, angles: np.ndarray) -> PairSpec:
    r = np.random.default_rng(seed)
    nz, ny, nx = SHAPE
    blobs = [(r.uniform(-16, 16), r.uniform(-13, 13), r.uniform(-8, 8), r.uniform(0.5, 1.5)) for _ in range(25)]
    clean = blob_projections(blobs, angles, (ny, nx), sigma=1.5)
    # the same dose per tilt series whatever the number of views
    noise = 0.3 * clean.std() * np.sqrt(angles.size / 41)
    write_volume(d / f"{name}.mrc", clean + noise * r.standard_normal(clean.shape).astype(np.float32))
    write_tlt(d / f"{name}.tlt", angles)
    write_volume(d / f"{name}_ref.mrc", blob_volume(blobs, SHAPE, sigma=1.5))
    return PairSpec(str(d / f"{name}.mrc"), str(d / f"{name}.tlt"), str(d / f"{name}_ref.mrc"))


def evaluate(model, config, specs) -> float:
    tc = TrainConfig(steps=1)
    total = 0.0
    for i, spec in enumerate(specs):
        pair = load_pair(spec)
        images, geometry = augmented_views(pair, config, tc, 0, i, 0, torch.device("cpu"), augment=False)
        gen = torch.Generator().manual_seed(i)
        vox = torch.stack([torch.randint(s, (8192,), generator=gen) for s in SHAPE], -1)
        with torch.no_grad():
            pred = _predict(model, images, geometry, vox, config)
        total += float(_loss(pred, pair.reference[vox[:, 0], vox[:, 1], vox[:, 2]], "l1"))
    return total / len(specs)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--train-pairs", type=int, default=3)
    args = ap.parse_args()
    config = ModelConfig(patch_size=5, channels=8, hidden=(16,), n_angle_basis=4)
    tc = TrainConfig(steps=args.steps, batch_size=512, lr=1e-2, warmup=20, val_every=10 ** 9, drop_tilts=0.2)
    from localet_core.network.modelfile import load_model

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        data = {}
        for key, angles in SCHEMES.items():
            tag = key[0]
            data[key] = ([make(d, f"{tag}tr{i}", 100 + i, angles) for i in range(args.train_pairs)],
                         [make(d, f"{tag}va{i}", 200 + i, angles) for i in range(2)])
        refs = [load_pair(s).reference for s in data["A -60..60/3"][1]]
        median = float(np.mean([float((r - r.median()).abs().mean()) for r in refs]))
        models = {}
        for key in SCHEMES:
            t = time.perf_counter()
            train(data[key][0], d / f"run{key[0]}", config, tc, device="cpu")
            models[key] = load_model(d / f"run{key[0]}" / "model.safetensors")[0]
            print(f"trained on {key}: {time.perf_counter() - t:.0f} s", flush=True)
        print(f"\nvalidation L1 (normalised units); best constant: {median:.3f}")
        print(f"{'evaluated on':14s} {'trained on A':>13s} {'trained on it':>14s}")
        for key in SCHEMES:
            a = evaluate(models["A -60..60/3"], config, data[key][1])
            own = evaluate(models[key], config, data[key][1])
            print(f"{key:14s} {a:13.3f} {own:14.3f}")


if __name__ == "__main__":
    main()
