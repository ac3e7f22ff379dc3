"""Benchmark: network reconstruction (fast form fp32/bf16, direct form) against `localet fbp`.

    python benchmarks/bench_reconstruct.py                 # 512 x 512 x 128 from 41 x 512^2
    python benchmarks/bench_reconstruct.py --size 1024 --thickness 256 --device cuda
    python benchmarks/bench_reconstruct.py --xf        # also a raw stack with an 85-degree .xf
    python benchmarks/bench_reconstruct.py --encoder 16,16 --encoder-channels 8   # or --model NAME

All timings in the same process and run, on random input (speed does not depend on the data or
the weights). The direct (patch) form is timed on a few output rows and extrapolated to the whole
volume (said in the output); its values on those rows are compared with the fast form's.
Peak RSS is the process's maximum resident set (ru_maxrss), i.e. over every phase.
With ``--xf`` the same input is also run as a raw stack with an 85-degree .xf and per-view shifts
(``bench_backprojection.bench_xf``), resampled once into the aligned frame as every command does
(``localet_core.alignment``), then ``fbp`` and the fast form; both paths and their ratios print.
"""
from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np
import torch

from localet_core.config import ModelConfig
from localet_core.device import memory_budget
from localet_core.network.inference import FastForm, iter_direct_slabs
from localet_core.network.model import LocalizedNet
from localet_core.network.patches import prepare_network_views
from localet_core.pipeline import slab_ranges
from localet_core.reconstruction.geometry import TiltGeometry
from localet_core.reconstruction.wbp import iter_wbp_slabs


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--thickness", type=int, default=128)
    ap.add_argument("--views", type=int, default=41)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--patch-size", type=int, default=ModelConfig.patch_size)
    ap.add_argument("--channels", type=int, default=ModelConfig.channels)
    ap.add_argument("--hidden", default=",".join(map(str, ModelConfig.hidden)))
    ap.add_argument("--encoder", default="", help="per-view encoder widths, e.g. 16,16 (default: none)")
    ap.add_argument("--encoder-channels", type=int, default=8)
    ap.add_argument("--model", help="time this model file's architecture instead (e.g. localet-default)")
    ap.add_argument("--direct-rows", type=int, default=1, help="rows timed for the direct form")
    ap.add_argument("--memory", type=float, default=None, help="budget in GiB (default: as the CLI)")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--xf", action="store_true", help="also time a raw stack with an 85-degree .xf")
    args = ap.parse_args()

    device = torch.device(args.device)
    n = args.size
    angles = np.linspace(-60, 60, args.views)
    geometry = TiltGeometry(angles=angles, detector_shape=(n, n), thickness=args.thickness)
    stack = np.random.default_rng(0).standard_normal((args.views, n, n)).astype(np.float32)
    hidden = tuple(int(h) for h in args.hidden.split(",") if h)
    encoder = tuple(int(h) for h in args.encoder.split(",") if h)
    cfg = ModelConfig(patch_size=args.patch_size, channels=args.channels, hidden=hidden, encoder=encoder,
                      encoder_channels=args.encoder_channels if encoder else 0)
    if args.model:
        from localet_core.network.modelfile import load_model

        cfg = load_model(args.model)[0].config
    torch.manual_seed(0)
    model = LocalizedNet(cfg)
    with torch.no_grad():
        model.bias0.normal_()
    model = model.to(device).eval()
    budget = memory_budget(device, None if args.memory is None else int(args.memory * (1 << 30)))
    nz, ny, nx = geometry.output_shape
    res = {"volume": f"{nx}x{ny}x{nz}", "views": args.views, "device": str(device),
           "threads": torch.get_num_threads(), "config": cfg.to_dict(),
           "parameters": model.n_parameters(), "macs_per_voxel": model.macs_per_voxel(args.views),
           "budget_GiB": round(budget / (1 << 30), 2)}

    def timed(fn):
        best = float("inf")
        out = None
        for _ in range(args.repeat):
            sync(device)
            t = time.perf_counter()
            out = fn()
            sync(device)
            best = min(best, time.perf_counter() - t)
        return best, out

    def fbp():
        for _ in iter_wbp_slabs(stack, geometry, device=device, budget=budget):
            pass

    res["fbp_s"], _ = timed(fbp)

    def fast(precision):
        def run():
            images, _ = prepare_network_views(stack, geometry, cfg.ramp(), device)
            form = FastForm(model, images, geometry, precision)
            vol = np.empty(geometry.output_shape, np.float32)
            with torch.no_grad():
                for y0, y1 in slab_ranges(ny, form.rows_per_slab(budget)):
                    vol[:, y0:y1] = form.slab(y0, y1).cpu().numpy()
            return vol
        return run

    res["fast_fp32_s"], vol32 = timed(fast("fp32"))
    if args.xf:
        from bench_backprojection import bench_xf

        from localet_core.alignment import align_stack, aligned_geometry

        raw_geometry = TiltGeometry(angles=angles, detector_shape=(n, n), thickness=args.thickness,
                                    xf=bench_xf(args.views))
        xf_geometry = aligned_geometry(raw_geometry)

        def fbp_xf():
            aligned = align_stack(stack, raw_geometry)
            for _ in iter_wbp_slabs(aligned, xf_geometry, device=device, budget=budget):
                pass

        def fast_xf():
            aligned = align_stack(stack, raw_geometry)
            images, _ = prepare_network_views(aligned, xf_geometry, cfg.ramp(), device)
            form = FastForm(model, images, xf_geometry, "fp32")
            with torch.no_grad():
                for y0, y1 in slab_ranges(ny, form.rows_per_slab(budget)):
                    form.slab(y0, y1).cpu()

        res["resample_s"], _ = timed(lambda: align_stack(stack, raw_geometry))
        res["fbp_xf_s"], _ = timed(fbp_xf)
        res["fast_fp32_xf_s"], _ = timed(fast_xf)
        res["fbp_xf_over_fbp"] = res["fbp_xf_s"] / res["fbp_s"]
        res["fast_fp32_xf_over_fast_fp32"] = res["fast_fp32_xf_s"] / res["fast_fp32_s"]
    res["fast_bf16_s"], vol16 = timed(fast("bf16"))
    rng = float(np.ptp(vol32))
    res["bf16_max_abs_err_over_range"] = float(np.abs(vol16 - vol32).max()) / rng
    res["bf16_rms_err_over_std"] = float(np.sqrt(np.mean((vol16 - vol32) ** 2)) / vol32.std())
    del vol16

    images, _ = prepare_network_views(stack, geometry, cfg.ramp(), device)
    y0 = ny // 2
    rows = [(y0, y0 + args.direct_rows)]
    sync(device)
    t = time.perf_counter()
    direct = next(iter_direct_slabs(model, images, geometry, 1 << 28, rows))[2]
    sync(device)
    dt = time.perf_counter() - t
    res["direct_rows_timed"] = args.direct_rows
    res["direct_s_extrapolated"] = dt * ny / args.direct_rows
    res["direct_vs_fast_max_abs_over_range"] = float(np.abs(direct - vol32[:, y0:y0 + args.direct_rows]).max()) / rng
    res["fast_over_fbp"] = res["fast_fp32_s"] / res["fbp_s"]
    res["fast_bf16_over_fbp"] = res["fast_bf16_s"] / res["fbp_s"]
    res["direct_over_fast"] = res["direct_s_extrapolated"] / res["fast_fp32_s"]
    res["peak_rss_GiB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20)
    if device.type == "cuda":
        res["peak_vram_GiB"] = torch.cuda.max_memory_allocated(device) / (1 << 30)
    for k, v in res.items():
        print(f"{k:34s} {round(v, 4) if isinstance(v, float) else v}")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
