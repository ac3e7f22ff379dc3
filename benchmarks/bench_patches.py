"""Benchmark: `sample_patches` (four-window lerp) against per-sample `grid_sample`, the way it
sampled before, on the same input in the same run.

    python benchmarks/bench_patches.py [--views 52] [--size 128] [--batch 1024] [--threads 1]

Patch sampling is the hot loop of `localet train` (one call per step). Both give the same values
(tests/test_network.py checks it); the printed max difference shows it here too.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from localet_core.network.patches import sample_patches
from localet_core.reconstruction.geometry import TiltGeometry


def grid_sample_patches(images, geometry, voxels, p, step):
    """The baseline: one bilinear grid_sample coordinate per patch sample."""
    n, height, width = images.shape
    rows, cols = geometry.detector_coordinates(voxels[:, 0], voxels[:, 1], voxels[:, 2])
    rows, cols = torch.broadcast_tensors(rows, cols)
    off = step * (torch.arange(p, dtype=torch.float64) - (p - 1) / 2)
    r = (rows[:, :, None, None] + off.view(-1, 1)).expand(-1, -1, p, p)
    c = (cols[:, :, None, None] + off.view(1, -1)).expand(-1, -1, p, p)
    grid = torch.stack([(2 * c + 1) / width - 1, (2 * r + 1) / height - 1], dim=-1)
    out = F.grid_sample(images.unsqueeze(1), grid.reshape(n, len(voxels), p * p, 2).to(images.dtype),
                        align_corners=False)
    return out.view(n, len(voxels), p, p).permute(1, 0, 2, 3)


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--views", type=int, default=52)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    n = args.size
    geometry = TiltGeometry(np.linspace(-54, 54, args.views), (n, n), n)
    images = torch.randn(args.views, n, n)
    voxels = torch.rand(args.batch, 3, dtype=torch.float64) * n
    print(f"{args.views} views of {n}^2, batch {args.batch}, {args.threads} thread(s), best of {args.repeat}")
    print(f"{'P':>3} {'step':>4} {'grid_sample ms':>15} {'windows ms':>11} {'speed-up':>9} {'max diff':>9}")
    for p, step in ((9, 1), (13, 1), (17, 1), (9, 2)):
        base = best_of(lambda: grid_sample_patches(images, geometry, voxels, p, step), args.repeat)
        new = best_of(lambda: sample_patches(images, geometry, voxels, p, step), args.repeat)
        diff = float((grid_sample_patches(images, geometry, voxels, p, step)
                      - sample_patches(images, geometry, voxels, p, step)).abs().max())
        print(f"{p:>3} {step:>4} {base * 1e3:>15.1f} {new * 1e3:>11.1f} {base / new:>8.1f}x {diff:>9.1e}")


if __name__ == "__main__":
    main()
