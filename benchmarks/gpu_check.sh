#!/usr/bin/env bash
# One command for a machine with CUDA: device information, the tests that need CUDA, a CPU/CUDA
# agreement check of the back-projection, and the whole-command benchmark on the GPU.
#
#     benchmarks/gpu_check.sh                  # from anywhere; PYTHON=... picks the interpreter
#     GPU_CHECK_SIZE=512 benchmarks/gpu_check.sh   # a quicker benchmark (default 1024)
#
# Steps (each prints what it does):
#   1. device information: nvidia-smi, and what torch sees (version, CUDA build, devices);
#      exits with status 2 when torch has no CUDA device (nothing else runs);
#   2. the tests that need CUDA: every test file under tests/ and localet_scipion/tests/ that
#      checks for CUDA (grep for cuda.is_available / a cuda skip marker), run with pytest;
#   3. `localet fbp` on CPU and on CUDA for the same small series: the volumes must agree
#      within 1e-4 of the maximum (the two kernels' documented agreement is 5e-5);
#   4. benchmarks/bench_cli.py --size 1024 --device cuda --xf --reconstruct (whole commands,
#      best of 2, peak RSS; 1024 x 1024 x 256 from 41 views);
#   5. the network: `localet reconstruct` with localet-default and localet-encoder on CPU and on
#      CUDA (agreement within 1e-3 of the range), and 50 steps of slab training with an encoder.
#   6. benchmarks/bench_train_precision.py --device cuda: a training step in fp32 and under bf16
#      autocast (on this project's CPU, bf16 is 4.8x slower, so CPU training stays fp32).
# The exit status is 0 only when every step passed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python}"
SIZE="${GPU_CHECK_SIZE:-1024}"
export PYTHONPATH="${ROOT}${PYTHONPATH:+:${PYTHONPATH}}"
cd "${ROOT}"
status=0

echo "== 1. device"
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi || echo "nvidia-smi failed"
else
    echo "nvidia-smi: not on the PATH"
fi
if ! "${PYTHON}" - <<'EOF'
import sys

import torch

print(f"torch {torch.__version__}, built for CUDA {torch.version.cuda}, cuDNN "
      f"{torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}")
if not torch.cuda.is_available():
    print("no CUDA device is available to torch: nothing to check on this machine")
    sys.exit(2)
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    free, total = torch.cuda.mem_get_info(i)
    print(f"cuda:{i}: {p.name}, compute capability {p.major}.{p.minor}, {p.multi_processor_count} SMs, "
          f"{total / 2**30:.1f} GiB ({free / 2**30:.1f} GiB free)")
EOF
then
    echo "CUDA is absent: stopping (exit status 2)"
    exit 2
fi

echo
echo "== 2. tests that need CUDA"
mapfile -t cuda_tests < <(grep -l -E "cuda\.is_available|skipif\(.*cuda|requires_cuda|--device cuda" \
    tests/*.py localet_scipion/tests/*.py 2>/dev/null | sort -u)
if [ "${#cuda_tests[@]}" -eq 0 ]; then
    echo "no test file checks for CUDA"
else
    echo "files: ${cuda_tests[*]}"
    "${PYTHON}" -m pytest -q -rs "${cuda_tests[@]}" || status=1
fi

echo
echo "== 3. CPU and CUDA agree (localet fbp, 256 x 256 x 64 from 41 views)"
"${PYTHON}" - <<'EOF' || status=1
import subprocess
import sys
import tempfile
from pathlib import Path

import mrcfile
import numpy as np

with tempfile.TemporaryDirectory() as tmp:
    d = Path(tmp)
    stack = np.random.default_rng(0).standard_normal((41, 256, 256)).astype(np.float32)
    with mrcfile.new(str(d / "ts.mrc")) as m:
        m.set_data(stack)
        m.voxel_size = 10.0
    np.savetxt(d / "ts.tlt", np.linspace(-60, 60, 41), fmt="%.2f")
    volumes = {}
    for device in ("cpu", "cuda"):
        out = d / f"{device}.mrc"
        subprocess.run([sys.executable, "-m", "localet", "fbp", str(d / "ts.mrc"), "--tlt", str(d / "ts.tlt"),
                        "--thickness", "64", "--device", device, "--no-progress", "-o", str(out)], check=True)
        with mrcfile.open(str(out)) as m:
            volumes[device] = m.data.copy()
    rel = float(np.abs(volumes["cuda"] - volumes["cpu"]).max() / np.abs(volumes["cpu"]).max())
    print(f"max |cuda - cpu| = {rel:.2e} of max |cpu|: {'OK' if rel <= 1e-4 else 'FAIL'} at 1e-4")
    sys.exit(0 if rel <= 1e-4 else 1)
EOF

echo
echo "== 4. whole commands on CUDA (benchmarks/bench_cli.py --size ${SIZE})"
"${PYTHON}" benchmarks/bench_cli.py --size "${SIZE}" --repeat 2 --device cuda --xf --reconstruct-all || status=1

echo
echo "== 5. the network on CUDA: both shipped models CPU vs CUDA, and slab training with an encoder"
"${PYTHON}" - <<'EOF' || status=1
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mrcfile
import numpy as np

ok = True
with tempfile.TemporaryDirectory() as tmp:
    d = Path(tmp)
    run = lambda *a: subprocess.run([sys.executable, "-m", "localet", *map(str, a)], check=True)  # noqa: E731
    run("simulate", "-o", d / "sim", "--count", "2", "--shape", "48,96,96", "--no-progress")
    for model in ("localet-default", "localet-encoder"):
        vols = {}
        for device in ("cpu", "cuda"):
            out = d / f"{model}_{device}.mrc"
            run("reconstruct", d / "sim" / "sim_0.st", "--tlt", d / "sim" / "sim_0.tlt", "--thickness", 48,
                "--model", model, "--device", device, "--no-progress", "-o", out)
            with mrcfile.open(str(out)) as m:
                vols[device] = m.data.copy()
        rel = float(np.abs(vols["cuda"] - vols["cpu"]).max() / np.ptp(vols["cpu"]))
        print(f"{model}: max |cuda - cpu| = {rel:.2e} of the range: {'OK' if rel <= 1e-3 else 'FAIL'} at 1e-3")
        ok &= rel <= 1e-3
    t = time.perf_counter()
    run("train", "--pairs", d / "sim" / "pairs.star", "-o", d / "train", "--init", "localet-default",
        "--encoder", "16,16", "--encoder-channels", "8", "--slab-rows", "8", "--steps", "50",
        "--val-every", "25", "--device", "cuda", "--no-progress")
    print(f"slab training with an encoder on CUDA: 50 steps in {time.perf_counter() - t:.1f} s")
sys.exit(0 if ok else 1)
EOF

echo
echo "== 6. training precision on CUDA: fp32 against bf16 autocast (benchmarks/bench_train_precision.py)"
"${PYTHON}" benchmarks/bench_train_precision.py --device cuda || status=1

echo
if [ "${status}" -eq 0 ]; then echo "gpu_check: every step passed"; else echo "gpu_check: some step FAILED"; fi
exit "${status}"
