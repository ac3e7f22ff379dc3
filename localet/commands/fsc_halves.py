"""`localet fsc-halves`: reconstruct two independent halves of a tilt series and report their FSC."""
from __future__ import annotations

from pathlib import Path

import click

from localet.commands._options import (
    build_output_options,
    compute_options,
    core_option,
    grid_options,
    history_label,
    mirrors_option,
    reports_progress,
    tilt_series_options,
)
from localet_core import config

EPILOG = """\b
Examples:
  localet fsc-halves TS_01.st --tlt TS_01.tlt --odd TS_01_odd.st --even TS_01_even.st --bin 4 -o TS_01_fsc.star --plot TS_01_fsc.png
  localet fsc-halves TS_01.ali --tlt TS_01.tlt --thickness 300 -o TS_01_fsc.star   # alternate tilts
  localet fsc-halves TS_01.ali --tlt TS_01.tlt --method wbp -o TS_01_wbp_fsc.star
  localet fsc-halves TS_01.st --tlt TS_01.tlt --odd TS_01_odd.st --even TS_01_even.st --mirrors 4 -o fsc.star  # as reconstructed
"""


@click.command("fsc-halves", epilog=EPILOG)
@tilt_series_options
@click.option("--odd", type=click.Path(dir_okay=False), help="Odd-frame half stack (same geometry as STACK).")
@click.option("--even", type=click.Path(dir_okay=False), help="Even-frame half stack.")
@click.option("--method", type=click.Choice(["localet", "wbp", "sirt"]), default="localet", show_default=True,
              help="How to reconstruct each half: the localized network (--model), WBP or SIRT.")
@core_option("--model", "model_name", setting=("localet_core.methods.Localet", "model"),
             default=config.DEFAULT_MODEL, metavar="NAME|PATH",
             help="Model for --method localet: a shipped name or a .safetensors file.")
@mirrors_option
@grid_options
@compute_options
@core_option("--estimate", setting=("localet_core.validation.halfset.validate_halves", "estimate"),
             default=config.ESTIMATES[0], type=click.Choice(config.ESTIMATES),
             help="auto: the prior-proof estimate for the network (each half against the other half's WBP; "
                  "no learned prior can raise it), the plain half-set FSC for WBP/SIRT. half-set: the plain "
                  "FSC of the two halves (optimistic for learned methods).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="STAR table of the reported curves.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), help="PNG plot of the curves.")
@click.option("--save-halves", metavar="PREFIX", help="Also write PREFIX_half1.mrc and PREFIX_half2.mrc.")
@reports_progress
def command(stack, tlt, mdoc, xf, aln, exclude, pixel_size, odd, even, method, model_name, mirrors, thickness,
            width, binning, shift, offset, x_axis_tilt, device, memory, progress, estimate, output, plot, save_halves):
    """Validate a reconstruction by its halves: reconstruct halves from --odd/--even stacks (or,
    without them, from alternate tilts of STACK) and report their resolution.

    For the localet network (a learned prior), the reported resolution is the prior-proof
    estimate: where each half's correlation with the signal in the data, measured against the
    other half's weighted back-projection, drops below 0.5 (docs/fsc.md). The plain half-set
    FSC (also split inside/outside the missing wedge) is printed beside it; it is valid for WBP
    and optimistic for learned methods.
    """
    from localet.commands.fsc import _check_output, report_fsc
    from localet_core.contracts.naming import saved_half_name
    from localet_core.device import parse_memory, resolve_device
    from localet_core.io import read_stack
    from localet_core.io.atomic import scratch_near
    from localet_core.io.outputs import check_free_space, guard_outputs, volume_bytes
    from localet_core.methods import make_method, scratch_sizes
    from localet_core.tiltseries import load_tilt_series
    from localet_core.validation.fsc_report import plot_prior_proof, write_prior_proof_star
    from localet_core.validation.halfset import plan_validation, validate_halves

    if method != "localet" and mirrors != 1:
        raise click.UsageError(f"--mirrors applies to --method localet, not {method}")
    inputs = tuple(Path(p) for p in (stack, odd, even) if p)
    _check_output(output, "-o/--output", ".star", inputs)
    if plot is not None:
        _check_output(plot, "--plot", ".png", inputs)
    halves_out = [saved_half_name(save_halves, i) for i in (1, 2)] if save_halves else []
    model_file = model_name if str(model_name).endswith(".safetensors") else None
    guard_outputs([output, plot, *halves_out], inputs=[stack, tlt, mdoc, xf, exclude, odd, even, model_file])
    options = build_output_options(thickness, width, binning, shift, offset, x_axis_tilt)
    series = load_tilt_series(stack, tlt=tlt, xf=xf, aln=aln, exclude=exclude, mdoc=mdoc,
                              pixel_size=pixel_size, output=options)
    if series.geometry.voxel_size is None:
        raise click.UsageError("the stack has no pixel size in its header: give --pixel-size")
    dev, budget = resolve_device(device), parse_memory(memory)
    recon = make_method(method, model=model_name, mirrors=mirrors, device=dev, budget=budget)
    # the saved halves, and the scratch files when the volumes do not fit --memory: the FSC's
    # (computed out of core) and SIRT's operators
    plan = plan_validation(series.geometry, recon, estimate)
    scratch = scratch_sizes(recon, series.geometry, output)
    if plan.scratch_bytes:
        scratch[output.with_name(f".{output.name}.fsc-scratch")] = plan.scratch_bytes
    check_free_space({out: volume_bytes(series.geometry.output_shape) for out in halves_out}, scratch)
    halves = [series.prepare_half(read_stack(p, pixel_size=series.stack.pixel_size)) if p else None
              for p in (odd, even)]
    history = history_label()
    save = [(path, series.output_labels(history, halves[i])) for i, path in enumerate(halves_out)]
    with scratch_near(output):
        check = validate_halves(series.data, series.geometry, recon, *halves, estimate=estimate, save=save or None)
    names = (f"{stack} half 1", f"{stack} half 2")
    if mirrors > 1:
        method = f"{method} ({mirrors} mirrors)"
    title = f"{Path(stack).name}: {check.how} ({method})"
    if check.prior_proof is None:
        label = " (optimistic for a learned method: see --estimate)" if recon.learned else ""
        report_fsc(check.half_set, f"of {method} half tomograms ({check.how}){label}", "stack", output, plot,
                   names=names, title=title)
        return
    from localet_core.validation.fsc_report import format_fsc_summary

    click.echo(f"plain half-set FSC of {method} half tomograms ({check.how}), optimistic for learned methods:")
    click.echo(format_fsc_summary(check.half_set))
    click.echo(check.prior_proof.summary())
    write_prior_proof_star(output, check.prior_proof, names=names)
    click.echo(f"wrote {output}")
    if plot is not None:
        plot_prior_proof(plot, check.prior_proof, title=title)
        click.echo(f"wrote {plot}")
