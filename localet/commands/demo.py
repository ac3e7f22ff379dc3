"""`localet demo`: simulate a small tilt series and reconstruct it with every method."""
from __future__ import annotations

import time
from pathlib import Path

import click


@click.command("demo")
@click.option("-o", "--output", "out_dir", default="demo_out", show_default=True,
              type=click.Path(file_okay=False, path_type=Path), help="Folder for the results.")
@click.option("--seed", type=int, default=424242, show_default=True,  # = localet_core.demo.DEMO_SEED
              help="Seed of the simulation (the default is not among the training seeds).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, or cuda:N.")
def command(out_dir: Path, seed: int, device: str) -> None:
    """Simulate a small tilt series of a cellular specimen (fixed seed, no download), reconstruct
    it with WBP, SIRT and the pretrained localet model, and score each against the ground truth:
    volumes (.mrc), scores.tsv (Pearson inside the ice slab, FSC resolutions) and demo.png."""
    from localet_core.demo import run_demo

    start = time.perf_counter()
    result = run_demo(out_dir, seed=seed, device=device, log=click.echo)
    click.echo(f"wrote {len(result.files)} files to {out_dir}/ in {time.perf_counter() - start:.0f} s "
               f"(open demo.png; volumes open in 3dmod, Z is the beam axis)")
