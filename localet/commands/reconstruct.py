"""`localet reconstruct`: a tilt series through a trained localized network."""
from __future__ import annotations

import os
import time

import click

from localet.commands._options import (
    build_output_options,
    core_option,
    history_label,
    mirrors_option,
    output_options,
    reports_progress,
    tilt_series_options,
)
from localet_core import config

EPILOG = """\b
Examples:
  localet reconstruct TS_01.st --tlt TS_01.tlt --xf TS_01.xf --thickness 300 --bin 4 --model my.safetensors -o TS_01_rec.mrc
  localet reconstruct TS_01.ali --tlt TS_01.tlt --odd TS_01_odd.ali --even TS_01_even.ali --model my -o TS_01_rec.mrc
  torchrun --nproc_per_node 2 -m localet reconstruct TS_01.ali --tlt TS_01.tlt --model my -o TS_01_rec.mrc
"""


@click.command("reconstruct", epilog=EPILOG)
@tilt_series_options
@output_options
@core_option("--model", "model_name", setting=("localet_core.methods.Localet", "model"),
             default=config.DEFAULT_MODEL, metavar="NAME|PATH",
             help="Trained model: a shipped name or a .safetensors file from `localet train`.")
@click.option("--odd", type=click.Path(dir_okay=False),
              help="Odd-frame half stack: also write OUT_odd.mrc (same geometry as STACK).")
@click.option("--even", type=click.Path(dir_okay=False),
              help="Even-frame half stack: also write OUT_even.mrc.")
@click.option("--validate/--no-validate", default=True, show_default=True,
              help="With --odd and --even: also write OUT_prior_proof.star/.png, the prior-proof resolution "
                   "of the half tomograms (each against the other half's WBP; docs/fsc.md).")
@core_option("--precision", type=click.Choice(config.PRECISIONS), default=config.PRECISIONS[0],
             setting=("localet_core.methods.Localet", "precision"),
             help="Arithmetic of the per-voxel layers (bf16: faster on recent CPUs, ~1e-2 relative error).")
@core_option("--form", type=click.Choice(config.FORMS), default=config.FORMS[0],
             setting=("localet_core.methods.Localet", "form"),
             help="fast: factorised first layer (exact); direct: patch by patch (slow, for checks).")
@mirrors_option
@reports_progress
def command(stack, tlt, mdoc, xf, aln, exclude, pixel_size, output, thickness, width, binning, shift,
            offset, x_axis_tilt, device, memory, progress, model_name, odd, even, precision, form, mirrors,
            validate):
    """Reconstruct a tilt series with a localized supervised network (denoised, wedge-filled).

    Inputs and the output grid are exactly those of `localet fbp` (IMOD conventions). Values
    are in the network's units: references normalised to zero mean and unit standard deviation.
    """
    from localet_core.io.files import prefetch

    prefetch(stack, odd, even)  # the stacks come off the disk while torch is imported
    from localet_core.contracts.model_card import fit_warnings
    from localet_core.contracts.naming import HALVES, half_name, plot_name, prior_proof_name
    from localet_core.device import parse_memory, resolve_device
    from localet_core.errors import InputError
    from localet_core.io import read_stack
    from localet_core.io.outputs import check_free_space, guard_outputs, volume_bytes
    from localet_core.methods import Localet
    from localet_core.pipeline import is_writer, write_slabs
    from localet_core.progress import parts
    from localet_core.tiltseries import load_tilt_series

    start = time.perf_counter()
    halves_given = [(h, p) for h, p in zip(HALVES, (odd, even)) if p is not None]
    outputs = [output] + [half_name(output, h) for h, _ in halves_given]
    if validate and len(halves_given) == 2:
        outputs += [prior_proof_name(output), plot_name(prior_proof_name(output))]
    model_file = model_name if str(model_name).endswith(".safetensors") else None
    guard_outputs(outputs, inputs=[stack, tlt, mdoc, xf, exclude, odd, even, model_file])
    options = build_output_options(thickness, width, binning, shift, offset, x_axis_tilt)
    device = resolve_device(device)
    recon = Localet(model_name, device=device, budget=parse_memory(memory), precision=precision, form=form,
                    mirrors=mirrors)
    card = recon.card
    series = load_tilt_series(stack, tlt=tlt, xf=xf, aln=aln, exclude=exclude, mdoc=mdoc,
                              pixel_size=pixel_size, output=options)
    geometry = series.geometry
    sizes = {out: volume_bytes(geometry.output_shape) for out in outputs[:1 + len(halves_given)]}
    scratch = {}
    if validate and len(halves_given) == 2:  # the prior-proof FSC out of core, when it does not fit --memory
        from localet_core.validation.halfset import plan_validation

        scratch[os.path.join(os.path.dirname(output) or ".", f".{os.path.basename(output)}.fsc-scratch")] = \
            plan_validation(geometry, recon, "prior-proof").scratch_bytes
    check_free_space(sizes, scratch)
    for warning in fit_warnings(card, geometry.voxel_size):
        click.echo(f"Warning: {warning}", err=True)
    history = history_label()
    jobs = [(series.data, output, "reconstruct", series.output_labels(history))]
    half_stacks = {}
    for half, path in zip(HALVES, (odd, even)):
        if path is not None:
            raw = read_stack(path)
            if raw.data.shape != series.stack_shape:
                raise InputError(path, f"has shape {raw.data.shape[::-1]} (x, y, views) but the full "
                                       f"stack has {series.stack_shape[::-1]}")
            half_stacks[half] = series.prepare_half(raw)  # in the aligned frame, like the full stack
            jobs.append((half_stacks[half].data, half_name(output, half), half,
                         series.output_labels(history, half_stacks[half])))
    writer = is_writer()
    validating = validate and len(half_stacks) == 2 and geometry.voxel_size is not None
    with parts(len(jobs) + validating):  # the progress: each slab pass, then the validation
        for data, out, description, labels in jobs:
            slabs = recon.slabs(data, geometry)
            if writer:
                write_slabs(out, geometry, slabs, progress=progress, description=description, label=labels)
            else:  # torchrun: compute this rank's share, rank 0 writes
                for _ in slabs:
                    pass
        if writer:
            nz, ny, nx = geometry.output_shape
            voxel = f"{geometry.voxel_size:.3f} A" if geometry.voxel_size else "unknown"
            click.echo(f"{output}: {nx} x {ny} x {nz} (x, y, z), voxel {voxel}, "
                       f"{len(geometry.used_views)} of {geometry.n_views} views, model "
                       f"{card.get('name', model_name)}, {form}/{precision}"
                       f"{f', {mirrors} mirrors' if mirrors > 1 else ''} on {device}, "
                       f"{time.perf_counter() - start:.1f} s", err=True)
            if validating:
                _validate(series, recon, half_stacks, output)


def _validate(series, recon, half_stacks, output) -> None:
    """The prior-proof estimate of the written half tomograms (against the halves' WBP):
    ``OUT_prior_proof.star`` and ``.png`` next to ``OUT``, and its summary on stderr."""
    from localet_core.contracts.naming import HALVES, half_name, plot_name, prior_proof_name
    from localet_core.io.atomic import scratch_near
    from localet_core.validation.fsc_report import plot_prior_proof, write_prior_proof_star
    from localet_core.validation.halfset import validate_halves

    halves = tuple(half_name(output, h) for h in HALVES)  # read whole, or slab by slab (out of core)
    with scratch_near(output):
        check = validate_halves(series.data, series.geometry, recon, *(half_stacks[h] for h in HALVES),
                                estimate="prior-proof", halves=halves)
    table = prior_proof_name(output)
    write_prior_proof_star(table, check.prior_proof, names=[half_name(output, h) for h in HALVES])
    plot_prior_proof(plot_name(table), check.prior_proof, title=f"{output}: odd/even halves")
    click.echo(check.prior_proof.summary() + f"\n  wrote {table} and {plot_name(table)}", err=True)
