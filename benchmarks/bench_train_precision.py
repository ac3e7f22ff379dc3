"""Training step of the shipped architecture in fp32 and under bf16 autocast, same run.

    python benchmarks/bench_train_precision.py [--device cpu|cuda] [--repeat 10]

One AdamW step of the direct (patch) form on 1024 voxels x 41 views of 13 x 13 patches (the
recipe's stage-1 batch), the patches given (sampling excluded: it is the same in both), forward
under ``torch.autocast`` or not, the loss and the optimiser in fp32. Prints ms per step of each,
their ratio, and how far the bf16 output is from the fp32 one (max error over the range, RMS
over the std). Whether training should use bf16 is decided by this ratio on the machine at hand.
"""
import argparse
import time

import torch

from localet_core.config import ModelConfig
from localet_core.network.model import LocalizedNet


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--batch", type=int, default=1024)
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = LocalizedNet(ModelConfig(patch_size=13, channels=16, hidden=(32, 32))).to(device)
    n, p = 41, 13
    patches = torch.randn(args.batch, n, p, p, device=device)
    angles = torch.linspace(-60, 60, n, device=device)
    weights = torch.full((n,), 0.05, device=device)
    target = torch.randn(args.batch, device=device)
    opt = torch.optim.AdamW(model.parameters(), 1e-3)

    def step(bf16: bool) -> None:
        opt.zero_grad()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = model(patches, angles, weights)
        ((out.float() - target) ** 2).mean().backward()
        opt.step()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    times = {}
    for bf16 in (False, True, False, True):  # alternated, best of two blocks
        step(bf16)
        sync()
        t = time.perf_counter()
        for _ in range(args.repeat):
            step(bf16)
        sync()
        ms = (time.perf_counter() - t) / args.repeat * 1000
        times[bf16] = min(times.get(bf16, ms), ms)
    with torch.no_grad():
        a = model(patches, angles, weights)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            b = model(patches, angles, weights).float()
    print(f"device {device}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"fp32: {times[False]:.1f} ms/step; bf16 autocast: {times[True]:.1f} ms/step "
          f"({times[True] / times[False]:.2f}x fp32's time)")
    print(f"bf16 output vs fp32: max error {float((a - b).abs().max() / (a.max() - a.min())):.2e} of the range, "
          f"RMS {float((a - b).pow(2).mean().sqrt() / a.std()):.2e} of the std")


if __name__ == "__main__":
    main()
