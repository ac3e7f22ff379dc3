"""Benchmark: the whole `localet fbp` (and `localet reconstruct`) command, from enter to the last
byte on disk, beside the in-process figures, in one run.

    python benchmarks/bench_cli.py                        # 512 x 512 x 128 from 41 x 512^2
    python benchmarks/bench_cli.py --size 512,1024 --repeat 2 --xf
    python benchmarks/bench_cli.py --size 1024 --baseline /tmp/base   # another checkout, alternated
    python benchmarks/bench_cli.py --size 1024 --threads 1,2 --env OMP_WAIT_POLICY=ACTIVE

For each size N (an N x N x N/4 volume from 41 views of N^2, -60..60 step 3, random float32,
written once with mrcfile into a temporary folder) it runs, as child processes:

* ``python -m localet fbp STACK --tlt TLT --thickness N/4 -o OUT --no-progress`` (fresh ``OUT``
  each time: no previous file to keep as ``OUT~``), best of ``--repeat``: the wall time from the
  start of the process to its exit (the output is fsync'ed and renamed before it exits), the
  child's peak RSS (``os.wait4``), and its user and system CPU seconds;
* with ``--xf``: the same stack as a raw stack with an 85-degree ``.xf`` and per-view shifts
  (``bench_backprojection.bench_xf``), which the command resamples once;
* with ``--reconstruct``: ``localet reconstruct`` (the shipped model, fast form) on the same
  input; slow on CPU (about 15 s for 512 on the reference machine), so it is off by default
  and runs for the first size only unless ``--reconstruct-all``; ``--mirrors 2,4`` adds the same
  command with ``--mirrors 2`` and ``--mirrors 4`` (mirror averaging);
* with ``--baseline DIR``: every run also with the code of another checkout (``PYTHONPATH=DIR``,
  e.g. ``git worktree add /tmp/base <commit>``), alternated with this one run by run, so both
  see the same machine load; the ratios are printed;
* the in-process figures of ``benchmarks/bench_backprojection.py`` (WBP in memory, filtering
  included, and the back-projection kernel alone, in their own process, with the
  ``OMP_WAIT_POLICY=PASSIVE`` the CLI sets), for comparison;
* IMOD's ``tilt`` on the same stack and angles (``tilt -InputProjections STACK -OutputFile OUT
  -TILTFILE TLT -THICKNESS N/4 -MODE 2``, one process) when a ``tilt`` binary is on the PATH,
  otherwise a line saying it was skipped. IMOD is free software (GPL): its source is published
  at https://bio3d.colorado.edu/imod/ (the "open source" page); to build it, unpack the source,
  run its ``setup`` script (``./setup -help`` lists the options, e.g. an install folder and
  leaving out the Qt programs), then ``make`` and ``make install``, and source the
  ``IMOD-linux.sh`` startup script of the installation so that ``tilt`` is on the PATH (the
  source's README lists the compilers and libraries it needs).

``--threads 1,2`` repeats every command with ``OMP_NUM_THREADS`` (torch's intra-op threads) set
to each value; ``--env KEY=VALUE`` adds variables to every child's environment. The load
average of the machine is printed before and after: other jobs on the machine change the
figures, the ratios of runs alternated in one run much less.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
N_VIEWS = 41


def make_inputs(folder: Path, n: int) -> Dict[str, Path]:
    """A random float32 stack of 41 views of n^2 (10 A pixels), its .tlt (-60..60 step 3) and
    the benchmark's .xf (an 85-degree rotation with shifts) in ``folder``."""
    import mrcfile
    import numpy as np

    sys.path.insert(0, str(HERE))
    from bench_backprojection import bench_xf

    stack = folder / f"ts{n}.mrc"
    if not stack.exists():
        data = np.random.default_rng(0).standard_normal((N_VIEWS, n, n)).astype(np.float32)
        with mrcfile.new(str(stack)) as mrc:
            mrc.set_data(data)
            mrc.voxel_size = 10.0
        del data
    tlt = folder / "ts.tlt"
    np.savetxt(tlt, np.linspace(-60, 60, N_VIEWS), fmt="%.2f")
    xf = folder / "ts.xf"
    rows = bench_xf(N_VIEWS)
    np.savetxt(xf, np.concatenate([rows[:, :, :2].reshape(N_VIEWS, 4), rows[:, :, 2]], axis=1), fmt="%12.7f")
    return {"stack": stack, "tlt": tlt, "xf": xf}


def run_child(args: Sequence[str], env: Dict[str, str], cwd: Path) -> dict:
    """Run one command; its wall time, peak RSS (GiB), user and system CPU seconds and exit code."""
    t0 = time.perf_counter()
    child = subprocess.Popen(list(args), cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = child.stderr.read().decode(errors="replace")
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - t0
    child.stderr.close()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(f"failed ({code}): {' '.join(map(str, args))}\n{err}")
    return {"wall_s": wall, "rss_gib": usage.ru_maxrss / 2**20, "user_s": usage.ru_utime, "sys_s": usage.ru_stime}


def child_env(tree: Path, extra: Dict[str, str]) -> Dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tree)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.update(extra)
    return env


def localet_args(command: str, inputs: Dict[str, Path], n: int, out: Path, xf: bool, device: str) -> List[str]:
    args = [sys.executable, "-m", "localet", command, str(inputs["stack"]), "--tlt", str(inputs["tlt"]),
            "--thickness", str(n // 4), "-o", str(out), "--no-progress", "--device", device]
    return args + (["--xf", str(inputs["xf"])] if xf else [])


def best(runs: List[dict]) -> dict:
    return min(runs, key=lambda r: r["wall_s"])


def fmt(r: dict) -> str:
    return (f"{r['wall_s']:6.2f} s   peak RSS {r['rss_gib']:.2f} GiB   "
            f"(cpu {r['user_s']:.1f} s user + {r['sys_s']:.1f} s sys)")


def in_process(tree: Path, size: str, threads: int, repeat: int, folder: Path, extra: Dict[str, str]) -> Optional[dict]:
    """bench_backprojection.py's 'localet' stage of ``tree`` (WBP in memory + kernel alone), with
    the ``OMP_WAIT_POLICY`` the CLI sets (PASSIVE) unless ``extra`` sets one."""
    script = tree / "benchmarks" / "bench_backprojection.py"
    if not script.exists():
        return None
    out = folder / "inproc.npy"
    proc = subprocess.run([sys.executable, str(script), "--stage", "localet", "--sizes", size,
                           "--threads", str(threads), "--out", str(out), "--repeat", str(repeat)],
                          capture_output=True, text=True,
                          env=child_env(tree, {"OMP_WAIT_POLICY": "PASSIVE", **extra}))
    out.unlink(missing_ok=True)
    if proc.returncode != 0:
        print(f"  (in-process stage of {tree} failed: {proc.stderr.strip().splitlines()[-1:]})")
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="512", help="comma-separated detector sizes N: N x N x N/4 volumes")
    ap.add_argument("--repeat", type=int, default=2, help="best of this many runs of each command")
    ap.add_argument("--xf", action="store_true", help="also the raw stack with an 85-degree .xf")
    ap.add_argument("--reconstruct", action="store_true", help="also `localet reconstruct` (first size only)")
    ap.add_argument("--reconstruct-all", action="store_true", help="`localet reconstruct` for every size")
    ap.add_argument("--mirrors", default="", metavar="N[,N]",
                    help="with --reconstruct: also `localet reconstruct --mirrors N` (2, 4) in the same run")
    ap.add_argument("--device", default="cpu", help="the commands' --device (cpu, cuda, cuda:N)")
    ap.add_argument("--threads", default="", help="comma-separated OMP_NUM_THREADS values to compare")
    ap.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                    help="extra environment for every child (repeatable)")
    ap.add_argument("--baseline", type=Path, help="another checkout, timed alternately with this one")
    ap.add_argument("--no-in-process", action="store_true", help="skip the in-process figures")
    ap.add_argument("--workdir", type=Path, help="where inputs and outputs go (default: a temporary folder)")
    ap.add_argument("--json", type=Path, help="also write every measurement here")
    args = ap.parse_args()

    extra = dict(item.split("=", 1) for item in args.env)
    thread_values = [int(t) for t in args.threads.split(",") if t] or [None]
    trees = [("this", ROOT)] + ([("baseline", args.baseline.resolve())] if args.baseline else [])
    sizes = [int(s) for s in args.size.split(",") if s]
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}, python {platform.python_version()}")
    print(f"load average at start: {' '.join(f'{v:.2f}' for v in os.getloadavg())} (1, 5, 15 min)")
    print(f"trees: {', '.join(f'{name} = {path}' for name, path in trees)}; best of {args.repeat}; device {args.device}")
    if extra:
        print(f"extra environment: {extra}")
    results: List[dict] = []
    tmp = tempfile.TemporaryDirectory(prefix="bench_cli_") if args.workdir is None else None
    folder = Path(tmp.name) if tmp is not None else args.workdir
    folder.mkdir(parents=True, exist_ok=True)
    try:
        for i, n in enumerate(sizes):
            inputs = make_inputs(folder, n)
            print(f"\n{n} x {n} x {n // 4} from {N_VIEWS} views of {n}^2 "
                  f"({N_VIEWS * n * n * (n // 4) / 1e9:.2f} G voxel-updates)")
            jobs = [("fbp", False, [])] + ([("fbp", True, [])] if args.xf else [])
            if args.reconstruct_all or (args.reconstruct and i == 0):
                jobs.append(("reconstruct", False, []))
                jobs += [("reconstruct", False, ["--mirrors", m]) for m in args.mirrors.split(",") if m]
            for command, with_xf, options in jobs:
                for threads in thread_values:
                    env_extra = dict(extra)
                    if threads is not None:
                        env_extra.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
                    runs: Dict[str, List[dict]] = {name: [] for name, _ in trees}
                    for _ in range(args.repeat):
                        for name, tree in trees:  # alternated: both see the same load
                            out = folder / f"out_{name}.mrc"
                            for stale in (out, out.with_name(out.name + "~")):
                                stale.unlink(missing_ok=True)
                            runs[name].append(run_child(localet_args(command, inputs, n, out, with_xf, args.device)
                                                        + options, child_env(tree, env_extra), folder))
                    label = f"localet {command}" + "".join(f" {o}" for o in options) + \
                        (" --xf (85-degree, resampled)" if with_xf else "") + \
                        (f", OMP_NUM_THREADS={threads}" if threads is not None else "")
                    print(f"  {label}")
                    for name, _ in trees:
                        b = best(runs[name])
                        all_walls = ", ".join(f"{r['wall_s']:.2f}" for r in runs[name])
                        print(f"    {name:8s} {fmt(b)}   runs: {all_walls} s")
                        results.append({"size": n, "command": " ".join([command] + options), "xf": with_xf,
                                        "threads": threads,
                                        "tree": name, **b, "walls": [r["wall_s"] for r in runs[name]]})
                    if args.baseline:
                        ratio = best(runs["baseline"])["wall_s"] / best(runs["this"])["wall_s"]
                        print(f"    this run is {ratio:.2f}x faster than the baseline (best against best)")
            if not args.no_in_process and args.device == "cpu":
                for name, tree in trees:
                    r = in_process(tree, f"{n}x{n}x{n // 4}", os.cpu_count() or 1, args.repeat, folder, extra)
                    if r is not None:
                        print(f"  in process ({name}, bench_backprojection.py): WBP with filtering "
                              f"{r['seconds']:.2f} s, kernel alone {r['kernel_seconds']:.2f} s, "
                              f"peak RSS {r['peak_rss_gib']:.2f} GiB")
                        results.append({"size": n, "command": "in-process", "tree": name, **r})
            tilt = shutil.which("tilt")
            if tilt is None:
                print("  IMOD tilt: skipped (no `tilt` on the PATH; see this script's docstring to build IMOD)")
            else:
                out = folder / "tilt.rec"
                runs_t = []
                for _ in range(args.repeat):
                    out.unlink(missing_ok=True)
                    runs_t.append(run_child([tilt, "-InputProjections", str(inputs["stack"]), "-OutputFile", str(out),
                                             "-TILTFILE", str(inputs["tlt"]), "-THICKNESS", str(n // 4), "-MODE", "2"],
                                            dict(os.environ), folder))
                print(f"  IMOD tilt (1 process): {fmt(best(runs_t))}")
                results.append({"size": n, "command": "imod-tilt", "tree": "imod", **best(runs_t)})
            inputs["stack"].unlink(missing_ok=True)
    finally:
        print(f"\nload average at end: {' '.join(f'{v:.2f}' for v in os.getloadavg())} (1, 5, 15 min)")
        if tmp is not None:
            tmp.cleanup()
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
