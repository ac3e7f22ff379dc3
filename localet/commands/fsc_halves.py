"""`localet fsc-halves`: reconstruct two independent halves of a tilt series and report their FSC."""
from __future__ import annotations

from pathlib import Path

import click

from localet.commands._options import (build_output_options, compute_options, grid_options,
                                       tilt_series_options)

EPILOG = """\b
Examples:
  localet fsc-halves TS_01.st --tlt TS_01.tlt --odd TS_01_odd.st --even TS_01_even.st --bin 4 -o TS_01_fsc.star --plot TS_01_fsc.png
  localet fsc-halves TS_01.ali --tlt TS_01.tlt --thickness 300 -o TS_01_fsc.star   # alternate tilts
  localet fsc-halves TS_01.ali --tlt TS_01.tlt --method wbp -o TS_01_wbp_fsc.star
"""


@click.command("fsc-halves", epilog=EPILOG)
@tilt_series_options
@click.option("--odd", type=click.Path(dir_okay=False), help="Odd-frame half stack (same geometry as STACK).")
@click.option("--even", type=click.Path(dir_okay=False), help="Even-frame half stack.")
@click.option("--method", type=click.Choice(["localet", "wbp", "sirt"]), default="localet", show_default=True,
              help="How to reconstruct each half: the localized network (--model), WBP or SIRT.")
@click.option("--model", "model_name", default="localet-default", show_default=True, metavar="NAME|PATH",
              help="Model for --method localet: a shipped name or a .safetensors file.")
@grid_options
@compute_options
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="STAR table of the FSC curves.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), help="PNG plot of the curves.")
@click.option("--save-halves", metavar="PREFIX", help="Also write PREFIX_half1.mrc and PREFIX_half2.mrc.")
def command(stack, tlt, mdoc, xf, aln, exclude, pixel_size, odd, even, method, model_name, thickness, width, binning,
            shift, offset, x_axis_tilt, device, memory, progress, output, plot, save_halves):
    """Half-set FSC: reconstruct halves from --odd/--even stacks (or, without them, from
    alternate tilts of STACK) and report their FSC, also split inside/outside the missing wedge.

    Valid for methods that never saw the tomogram (WBP, SIRT, a pretrained localet model);
    optimistic for self-supervised ones trained on the same halves (see docs/fsc.md).
    """
    from localet.commands.fsc import _check_output, report_fsc
    from localet_core.device import parse_memory, resolve_device
    from localet_core.halfset import half_set_fsc, reconstruct_halves
    from localet_core.io import read_stack, write_volume
    from localet_core.sirt import sirt
    from localet_core.tiltseries import load_tilt_series
    from localet_core.wbp import weighted_backprojection

    inputs = tuple(Path(p) for p in (stack, odd, even) if p)
    _check_output(output, "-o/--output", ".star", inputs)
    if plot is not None:
        _check_output(plot, "--plot", ".png", inputs)
    options = build_output_options(thickness, width, binning, shift, offset, x_axis_tilt)
    series = load_tilt_series(stack, tlt=tlt, xf=xf, aln=aln, exclude=exclude, mdoc=mdoc,
                              pixel_size=pixel_size, output=options)
    if series.geometry.voxel_size is None:
        raise click.UsageError("the stack has no pixel size in its header: give --pixel-size")
    dev, budget = resolve_device(device), parse_memory(memory)
    halves = [series.prepare_half(read_stack(p, pixel_size=series.stack.pixel_size)) if p else None
              for p in (odd, even)]

    if method == "localet":
        from localet_core.modelfile import load_model
        from localet_core.reconstruct import iter_model_slabs
        from localet_core.wbp import assemble_slabs

        model, _ = load_model(model_name)

    def reconstruct(data, geometry):
        if method == "localet":
            return assemble_slabs(geometry.output_shape, iter_model_slabs(data, geometry, model, dev, budget))
        if method == "sirt":
            return sirt(data, geometry, device=dev, budget=budget)
        return weighted_backprojection(data, geometry, device=dev, budget=budget)

    half1, half2, how = reconstruct_halves(series.data, series.geometry, reconstruct, *halves)
    if save_halves:
        for i, half in enumerate((half1, half2), start=1):
            write_volume(f"{save_halves}_half{i}.mrc", half, series.geometry.voxel_size)
    result = half_set_fsc(half1, half2, series.geometry)
    report_fsc(result, f"of {method} half tomograms ({how})", "stack", output, plot,
               names=(f"{stack} half 1", f"{stack} half 2"), title=f"{Path(stack).name}: {how} ({method})")
