"""`localet reconstruct`: a tilt series through a trained localized network."""
from __future__ import annotations

import os
import time
from pathlib import Path

import click

from localet.commands._options import build_output_options, output_options, tilt_series_options

EPILOG = """\b
Examples:
  localet reconstruct TS_01.st --tlt TS_01.tlt --xf TS_01.xf --thickness 300 --bin 4 --model my.safetensors -o TS_01_rec.mrc
  localet reconstruct TS_01.ali --tlt TS_01.tlt --odd TS_01_odd.ali --even TS_01_even.ali --model my -o TS_01_rec.mrc
  torchrun --nproc_per_node 2 -m localet reconstruct TS_01.ali --tlt TS_01.tlt --model my -o TS_01_rec.mrc
"""


def half_output(output: str, half: str) -> str:
    """``OUT.mrc`` -> ``OUT_odd.mrc`` (next to the full volume)."""
    p = Path(output)
    return str(p.with_name(f"{p.stem}_{half}{p.suffix or '.mrc'}"))


@click.command("reconstruct", epilog=EPILOG)
@tilt_series_options
@output_options
@click.option("--model", "model_name", default="localet-default", show_default=True, metavar="NAME|PATH",
              help="Trained model: a shipped name or a .safetensors file from `localet train`.")
@click.option("--odd", type=click.Path(dir_okay=False),
              help="Odd-frame half stack: also write OUT_odd.mrc (same geometry as STACK).")
@click.option("--even", type=click.Path(dir_okay=False),
              help="Even-frame half stack: also write OUT_even.mrc.")
@click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True,
              help="Arithmetic of the per-voxel layers (bf16: faster on recent CPUs, ~1e-2 relative error).")
@click.option("--form", type=click.Choice(["fast", "direct"]), default="fast", show_default=True,
              help="fast: factorised first layer (exact); direct: patch by patch (slow, for checks).")
def command(stack, tlt, mdoc, xf, aln, exclude, pixel_size, output, thickness, width, binning, shift,
            offset, x_axis_tilt, device, memory, progress, model_name, odd, even, precision, form):
    """Reconstruct a tilt series with a localized supervised network (denoised, wedge-filled).

    Inputs and the output grid are exactly those of `localet fbp` (IMOD conventions). Values
    are in the network's units: references normalised to zero mean and unit standard deviation.
    """
    from localet_core.device import parse_memory, resolve_device
    from localet_core.errors import InputError
    from localet_core.io import read_stack
    from localet_core.modelfile import load_model
    from localet_core.reconstruct import distributed_context, iter_model_slabs
    from localet_core.tiltseries import load_tilt_series
    from localet_core.volume_output import write_slabs

    start = time.perf_counter()
    options = build_output_options(thickness, width, binning, shift, offset, x_axis_tilt)
    budget = parse_memory(memory)
    if device == "auto" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch

        if torch.cuda.is_available():
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    device = resolve_device(device)
    model, card = load_model(model_name)
    series = load_tilt_series(stack, tlt=tlt, xf=xf, aln=aln, exclude=exclude, mdoc=mdoc,
                              pixel_size=pixel_size, output=options)
    geometry = series.geometry
    from localet_core.modelfile import fit_warnings

    for warning in fit_warnings(card, geometry.voxel_size):
        click.echo(f"Warning: {warning}", err=True)
    jobs = [(series.data, output, "reconstruct")]
    for half, path in (("odd", odd), ("even", even)):
        if path is not None:
            data = read_stack(path)
            if data.data.shape != series.stack_shape:
                raise InputError(path, f"has shape {data.data.shape[::-1]} (x, y, views) but the full "
                                       f"stack has {series.stack_shape[::-1]}")
            jobs.append((series.prepare_half(data).data, half_output(output, half), half))
    rank, _ = distributed_context()
    for data, out, label in jobs:
        slabs = iter_model_slabs(data, geometry, model, device, budget, precision, form)
        if rank == 0:
            write_slabs(out, geometry, slabs, progress=progress, description=label)
        else:
            for _ in slabs:
                pass
    if rank == 0:
        nz, ny, nx = geometry.output_shape
        voxel = f"{geometry.voxel_size:.3f} A" if geometry.voxel_size else "unknown"
        click.echo(f"{output}: {nx} x {ny} x {nz} (x, y, z), voxel {voxel}, "
                   f"{len(geometry.used_views)} of {geometry.n_views} views, model "
                   f"{card.get('name', model_name)}, {form}/{precision} on {device}, "
                   f"{time.perf_counter() - start:.1f} s", err=True)
