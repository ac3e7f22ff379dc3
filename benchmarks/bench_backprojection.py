"""Benchmark: weighted back-projection speed and memory (issue: core engine).

Measures, in one run on the same random input (41 tilts, -60..60):
  * localet WBP end to end (filtering + back-projection, in memory), voxel-updates per second;
  * the back-projection kernel alone;
  * a straightforward torch ``grid_sample`` back-projection of the same filtered views, as the
    baseline, and checks that both outputs agree within 1e-4 relative;
  * peak RSS of each stage, in its own process;
  * with ``--xf``: the same input as a raw stack with an 85-degree .xf (per-view shifts): resampled
    into the aligned frame once (localet_core.alignment, what every command does), then the same
    WBP; both paths and their ratio are printed (``--old-xf`` also times the raw-frame path that
    folds the .xf into a 2D grid_sample back-projection).
The IMOD anchor (measured separately on this kind of machine, docs/benchmarks.md) is printed
for reference, not re-measured.

Usage: python benchmarks/bench_backprojection.py [--sizes 512x512x128,1024x1024x256] [--threads N]
       [--xf [--old-xf]] [--repeat R]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

IMOD_SECONDS = {"512x512x128": (0.90, 0.50), "1024x1024x256": (6.2, 3.2)}  # 1 process, 2 processes


def _stage(kind: str, size: str, threads: int, out_path: str, repeat: int = 1) -> None:
    import numpy as np
    import torch

    from localet_core.reconstruction.backprojection import backproject_grid_sample
    from localet_core.reconstruction.filters import RampFilter
    from localet_core.reconstruction.geometry import TiltGeometry
    from localet_core.reconstruction.wbp import iter_backprojection_slabs, prepare_views, weighted_backprojection

    torch.set_num_threads(threads)
    nx, ny, nz = (int(v) for v in size.split("x"))
    angles = np.linspace(-60, 60, 41)
    stack = np.random.default_rng(0).standard_normal((41, ny, nx)).astype(np.float32)
    geometry = TiltGeometry(angles=angles, detector_shape=(ny, nx), thickness=nz)
    result = {}
    if kind in ("localet_xf", "old_xf"):
        from localet_core.alignment import align_stack, aligned_geometry

        xf = bench_xf(len(angles))
        raw_geometry = TiltGeometry(angles=angles, detector_shape=(ny, nx), thickness=nz, xf=xf)
        weighted_backprojection(stack[:, :8], TiltGeometry(angles, (8, nx), nz), device="cpu")  # warm-up
        result["seconds"] = result["resample_seconds"] = float("inf")
        for _ in range(1 if kind == "old_xf" else repeat):  # best of `repeat`
            t0 = time.perf_counter()
            if kind == "old_xf":
                volume = weighted_backprojection(stack, raw_geometry, device="cpu")
            else:
                aligned = align_stack(stack, raw_geometry)
                result["resample_seconds"] = min(result["resample_seconds"], time.perf_counter() - t0)
                volume = weighted_backprojection(aligned, aligned_geometry(raw_geometry), device="cpu")
            result["seconds"] = min(result["seconds"], time.perf_counter() - t0)
    elif kind == "localet":
        weighted_backprojection(stack[:, :8], TiltGeometry(angles, (8, nx), nz), device="cpu")  # warm-up
        result["seconds"] = float("inf")
        for _ in range(repeat):  # best of `repeat`
            t0 = time.perf_counter()
            volume = weighted_backprojection(stack, geometry, device="cpu")
            result["seconds"] = min(result["seconds"], time.perf_counter() - t0)
        images = prepare_views(stack, geometry, RampFilter(), torch.device("cpu"))
        weights = torch.as_tensor(geometry.view_weights(), dtype=torch.float32)
        t0 = time.perf_counter()
        for _ in iter_backprojection_slabs(images, geometry, weights, kernel="sparse"):
            pass
        result["kernel_seconds"] = time.perf_counter() - t0
    else:
        images = prepare_views(stack, geometry, RampFilter(), torch.device("cpu"))
        weights = torch.as_tensor(geometry.view_weights(), dtype=torch.float32)
        t0 = time.perf_counter()
        volume = np.empty(geometry.output_shape, np.float32)
        rows = 8
        with torch.no_grad():
            for y0 in range(0, ny, rows):  # slabs keep its temporaries bounded
                volume[:, y0:y0 + rows] = backproject_grid_sample(
                    geometry, images, weights, (y0, min(ny, y0 + rows)))[..., 0].numpy()
        result["kernel_seconds"] = time.perf_counter() - t0
    np.save(out_path, volume)
    result["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps(result))


def bench_xf(n_views: int):
    """The benchmark's .xf: an 85-degree rotation (tilt axis of current detectors) and per-view
    shifts of 5 pixels std (seeded)."""
    import numpy as np

    a = np.deg2rad(-85.0)
    xf = np.zeros((n_views, 2, 3))
    xf[:, :, :2] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    xf[:, :, 2] = np.random.default_rng(1).normal(0.0, 5.0, (n_views, 2))
    return xf


def _run_stage(kind: str, size: str, threads: int, out_path: str, repeat: int = 1) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--stage", kind, "--sizes", size,
                           "--threads", str(threads), "--out", out_path, "--repeat", str(repeat)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"stage {kind} {size} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="512x512x128", help="comma-separated NXxNYxNZ volumes")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--skip-baseline-above", type=int, default=512,
                        help="skip the (slow) grid_sample baseline for volumes wider than this")
    parser.add_argument("--xf", action="store_true",
                        help="also time a raw stack with an 85-degree .xf (resampled once), same run")
    parser.add_argument("--old-xf", action="store_true",
                        help="with --xf, also time the raw-frame path (.xf inside a grid_sample back-projection)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="best of this many runs of the localet WBP stages (aligned and --xf)")
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        _stage(args.stage, args.sizes, args.threads, args.out, args.repeat)
        return

    import platform
    import tempfile

    import numpy as np

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch threads {args.threads}")
    for size in args.sizes.split(","):
        nx, ny, nz = (int(v) for v in size.split("x"))
        updates = 41 * nx * ny * nz
        with tempfile.TemporaryDirectory() as tmp:
            ours = _run_stage("localet", size, args.threads, f"{tmp}/ours.npy", args.repeat)
            print(f"\n{size} from 41 tilts of {nx}x{ny} ({updates / 1e9:.2f} G voxel-updates)")
            print(f"  localet WBP, filtering included: {ours['seconds']:.2f} s = "
                  f"{updates / ours['seconds'] / 1e9:.2f} G voxel-updates/s, peak RSS {ours['peak_rss_gib']:.2f} GiB")
            print(f"  localet back-projection kernel:  {ours['kernel_seconds']:.2f} s = "
                  f"{updates / ours['kernel_seconds'] / 1e9:.2f} G voxel-updates/s")
            if args.xf:
                xf = _run_stage("localet_xf", size, args.threads, f"{tmp}/xf.npy", args.repeat)
                print(f"  with an 85-degree .xf (resample once + the same WBP): {xf['seconds']:.2f} s "
                      f"(resampling {xf['resample_seconds']:.2f} s), {xf['seconds'] / ours['seconds']:.2f}x "
                      f"the aligned stack, peak RSS {xf['peak_rss_gib']:.2f} GiB")
                if args.old_xf:
                    old = _run_stage("old_xf", size, args.threads, f"{tmp}/old.npy")
                    print(f"  with an 85-degree .xf, raw-frame grid_sample path (before):  {old['seconds']:.2f} s, "
                          f"{old['seconds'] / ours['seconds']:.1f}x the aligned stack")
            if nx <= args.skip_baseline_above:
                base = _run_stage("grid_sample", size, args.threads, f"{tmp}/base.npy")
                a, b = np.load(f"{tmp}/ours.npy"), np.load(f"{tmp}/base.npy")
                rel = float(np.abs(a - b).max() / np.abs(b).max())
                print(f"  grid_sample baseline kernel:     {base['kernel_seconds']:.2f} s = "
                      f"{updates / base['kernel_seconds'] / 1e9:.2f} G voxel-updates/s, "
                      f"peak RSS {base['peak_rss_gib']:.2f} GiB")
                print(f"  kernel speed-up over grid_sample: {base['kernel_seconds'] / ours['kernel_seconds']:.1f}x; "
                      f"max difference {rel:.1e} of max |value| ({'OK' if rel <= 1e-4 else 'FAIL'} at 1e-4)")
            if size in IMOD_SECONDS:
                one, two = IMOD_SECONDS[size]
                print(f"  IMOD tilt (reference, not re-measured): {one:.2f} s in 1 process, {two:.2f} s in 2")


if __name__ == "__main__":
    main()
