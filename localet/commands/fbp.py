"""`localet fbp`: weighted back-projection (or SIRT) of a tilt series."""
from __future__ import annotations

import time

import click

from localet.commands._options import (
    _pair,
    build_output_options,
    core_option,
    history_label,
    output_options,
    reports_progress,
    tilt_series_options,
)
from localet_core import config

EPILOG = """\b
Examples:
  localet fbp TS_01.st --tlt TS_01.tlt --xf TS_01.xf --thickness 300 --bin 4 -o TS_01_wbp.mrc
  localet fbp TS_01.ali --tlt TS_01.tlt --exclude 1-2,40 --radial 0.35,0.035 -o TS_01_wbp.mrc
  localet fbp TS_01.ali --tlt TS_01.tlt --method sirt --iterations 20 -o TS_01_sirt.mrc
"""


@click.command("fbp", epilog=EPILOG)
@tilt_series_options
@output_options
@click.option("--method", type=click.Choice(["wbp", "sirt"]), default="wbp", show_default=True,
              help="Weighted back-projection, or SIRT (iterative; a quality baseline).")
@click.option("--radial", metavar="CUTOFF,FALLOFF",
              help="RADIAL: keep the ramp up to CUTOFF then a Gaussian fall-off (cycles/pixel, "
                   "or reciprocal pixels if >= 1); eTomo uses 0.35,0.035 [default: ramp to Nyquist].")
@core_option("--filter", "window", type=click.Choice(config.WINDOWS),
             setting=("localet_core.reconstruction.filters.RampFilter", "window"), default=config.RAMP_WINDOW,
             help="Apodisation window of the ramp filter.")
@core_option("--iterations", type=int, setting=("localet_core.methods.SIRT", "iterations"),
             default=config.SIRT_ITERATIONS, help="SIRT iterations.")
@reports_progress
def command(stack, tlt, mdoc, xf, aln, exclude, pixel_size, output, thickness, width, binning, shift,
            offset, x_axis_tilt, device, memory, progress, method, radial, window, iterations):
    """Reconstruct a tilt series by weighted back-projection (WBP/FBP) or SIRT.

    The output follows IMOD's `tilt` conventions (angles as in the .tlt, tilt axis along Y,
    volume written like `tilt -RotateBy90`) on an exact centred grid; see docs/geometry.md.
    """
    import os

    from localet_core.io.files import prefetch

    prefetch(stack)  # the stack comes off the disk while the modules are imported
    from localet_core.device import cpu_without_torch, parse_memory
    from localet_core.io.atomic import scratch_near
    from localet_core.io.outputs import check_free_space, guard_outputs, volume_bytes
    from localet_core.native import native_enabled
    from localet_core.pipeline import write_slabs
    from localet_core.reconstruction.filters import RampFilter
    from localet_core.reconstruction.wbp_numpy import ENGINE_VARIABLE
    from localet_core.tiltseries import load_tilt_series

    start = time.perf_counter()
    guard_outputs([output], inputs=[stack, tlt, mdoc, xf, exclude])
    options = build_output_options(thickness, width, binning, shift, offset, x_axis_tilt)
    budget = parse_memory(memory)
    ramp = None
    if method == "wbp":
        cutoff, falloff = _pair(radial, "--radial") if radial else (None, None)
        ramp = RampFilter(window=window, cutoff=cutoff, falloff=falloff or config.RADIAL_FALLOFF)
    # a WBP on the CPU runs without torch (localet_core.reconstruction.wbp_numpy)
    engine = os.environ.get(ENGINE_VARIABLE, "auto").strip().lower() or "auto"
    # a raw stack with an .xf/.aln too, when the compiled resampler aligns it (no torch either)
    numpy_path = (method == "wbp" and engine != "torch" and (native_enabled() or (xf is None and aln is None))
                  and options.x_axis_tilt == 0.0 and cpu_without_torch(device))
    if not numpy_path:
        from localet_core.device import resolve_device

        device = resolve_device(device)
    series = load_tilt_series(stack, tlt=tlt, xf=xf, aln=aln, exclude=exclude, mdoc=mdoc,
                              pixel_size=pixel_size, output=options)
    geometry = series.geometry
    if numpy_path:
        from localet_core.reconstruction.wbp_numpy import iter_wbp_slabs_array, numpy_wbp_applies

        numpy_path = engine == "numpy" or numpy_wbp_applies(geometry, budget)
    if numpy_path:
        device = "cpu"
        check_free_space({output: volume_bytes(geometry.output_shape)})
        slabs = iter_wbp_slabs_array(series.data, geometry, ramp, budget=budget)
    else:
        from localet_core.device import resolve_device
        from localet_core.methods import make_method, scratch_sizes

        device = resolve_device(device)
        recon = make_method(method, ramp=ramp, iterations=iterations, device=device, budget=budget)
        check_free_space({output: volume_bytes(geometry.output_shape)}, scratch_sizes(recon, geometry, output))
        slabs = recon.slabs(series.data, geometry)
    with scratch_near(output):  # SIRT's operators, when they do not fit --memory
        write_slabs(output, geometry, slabs, progress=progress, description=method,
                    label=series.output_labels(history_label()))
    nz, ny, nx = geometry.output_shape
    voxel = f"{geometry.voxel_size:.3f} A" if geometry.voxel_size else "unknown"
    click.echo(f"{output}: {nx} x {ny} x {nz} (x, y, z), voxel {voxel}, "
               f"{len(geometry.used_views)} of {geometry.n_views} views, {method} on {device}, "
               f"{time.perf_counter() - start:.1f} s", err=True)
