"""`localet demo`: simulate a small tilt series and reconstruct it with every method."""
from __future__ import annotations

import time
from pathlib import Path

import click

from localet.commands._options import core_option
from localet_core import config

EPILOG = """\b
Examples:
  localet demo                          # simulated series with ground truth: demo_out/ in about 10 s
  localet demo --seed 7 -o demo_seed7   # another specimen
  localet demo -o demo_gpu --device cuda:0
  localet demo --real -o real_out       # a real EMPIAR-10499 tilt series (fetch it once: make demo-real)
"""


@click.command("demo", epilog=EPILOG)
@click.option("-o", "--output", "out_dir", default="demo_out", show_default=True,
              type=click.Path(file_okay=False, path_type=Path), help="Folder for the results.")
@click.option("--real", is_flag=True,
              help="The real tilt series instead: raw stack + .xf, WBP and the shipped model, validated "
                   "without ground truth (prior-proof resolution, gold-bead contrast).")
@click.option("--cache", type=click.Path(file_okay=False, path_type=Path),
              help="Where `make demo-real` put the real data [default: $LOCALET_CACHE or ~/.cache/localet].")
@core_option("--seed", type=int, setting=("localet_core.demo.run_demo", "seed"), default=config.DEMO_SEED,
             help="Seed of the simulation (the default is not among the training seeds).")
@core_option("--device", setting=("localet_core.demo.run_demo", "device"), default="auto",
             help="auto, cpu, or cuda:N.")
def command(out_dir: Path, real: bool, cache: Path, seed: int, device: str) -> None:
    """Simulate a small tilt series of a cellular specimen (fixed seed, no download), reconstruct
    it with WBP, SIRT and the pretrained localet model, and score each against the ground truth:
    volumes (.mrc), scores.tsv (Pearson inside the ice slab, FSC resolutions) and demo.png.

    With --real: a real tilt series (EMPIAR-10499, from the warpylib 1.1.2 sdist) from its raw
    stack and .xf at bin 2, with WBP and the shipped model: volumes, real.png (XY/XZ/YZ slices
    and a zoomed crop, side by side), the prior-proof validation of each, and real.tsv."""
    from localet_core.io.outputs import guard_outputs

    guard_outputs([], folders=[out_dir])  # a failed demo leaves no empty folder
    start = time.perf_counter()
    if real:
        from localet_core.demo_real import run_real_demo

        result = run_real_demo(out_dir, cache=cache, device=device, log=click.echo)
        click.echo(f"wrote {len(result.files)} files to {out_dir}/ in {time.perf_counter() - start:.0f} s "
                   f"(open real.png)")
        return
    from localet_core.demo import run_demo

    result = run_demo(out_dir, seed=seed, device=device, log=click.echo)
    click.echo(f"wrote {len(result.files)} files to {out_dir}/ in {time.perf_counter() - start:.0f} s "
               f"(open demo.png; volumes open in 3dmod, Z is the beam axis)")
