"""Options shared by the reconstruction commands (IMOD `tilt` names in the help)."""
from __future__ import annotations

from typing import Callable, Optional, Tuple

import click

from localet_core.errors import InputError


def _pair(text: Optional[str], name: str) -> Tuple[float, float]:
    """'a' or 'a,b' -> (a, b) with b = 0 when absent."""
    if text is None:
        return 0.0, 0.0
    parts = [p for p in text.replace(" ", "").split(",") if p]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise InputError(name, f"expected one or two numbers like 10 or 10,-5, got {text!r}") from None
    if not 1 <= len(values) <= 2:
        raise InputError(name, f"expected one or two numbers, got {text!r}")
    return values[0], (values[1] if len(values) == 2 else 0.0)


def tilt_series_options(fn: Callable) -> Callable:
    """STACK argument + the inputs that describe it."""
    decorators = [
        click.argument("stack", type=click.Path(dir_okay=False)),
        click.option("--tlt", type=click.Path(dir_okay=False),
                     help="Tilt angles (.tlt/.rawtlt), degrees, one per view in stack order."),
        click.option("--mdoc", type=click.Path(dir_okay=False),
                     help="SerialEM .mdoc: angles when --tlt is absent; pixel size when the header has none."),
        click.option("--xf", type=click.Path(dir_okay=False),
                     help="IMOD .xf alignment of the raw stack (omit for an aligned .ali stack)."),
        click.option("--aln", type=click.Path(dir_okay=False),
                     help="AreTomo2/3 .aln alignment of the raw stack instead of --xf (global alignment; "
                          "its angles when --tlt is absent, its dark views excluded)."),
        click.option("--exclude", metavar="LIST",
                     help="Views to leave out, 1-based (EXCLUDELIST): e.g. 1-3,41 or a file holding such a list."),
        click.option("--pixel-size", type=float, metavar="A",
                     help="Pixel size in Angstrom, overriding the stack header."),
    ]
    for decorator in reversed(decorators):
        fn = decorator(fn)
    return fn


def _apply(fn: Callable, decorators) -> Callable:
    for decorator in reversed(decorators):
        fn = decorator(fn)
    return fn


def grid_options(fn: Callable) -> Callable:
    """Output grid: IMOD tilt's THICKNESS, WIDTH, SHIFT, OFFSET, XAXISTILT, plus binning."""
    return _apply(fn, [
        click.option("--thickness", type=int, metavar="NZ",
                     help="THICKNESS: output Z size in output pixels [default: 300 nm, or nx/4 without a pixel size]."),
        click.option("--width", type=int, metavar="NX", help="WIDTH: output X size [default: binned stack width]."),
        click.option("--bin", "binning", type=int, default=1, show_default=True,
                     help="Bin the stack by this factor (block average) before reconstructing."),
        click.option("--shift", metavar="SX[,SZ]",
                     help="SHIFT: move the volume by SX output pixels in X and by -SZ in Z (IMOD's signs)."),
        click.option("--offset", metavar="DEG[,DX]",
                     help="OFFSET: add DEG to every tilt angle; put the tilt axis DX pixels right of the centre."),
        click.option("--x-axis-tilt", type=float, default=0.0, show_default=True, metavar="DEG",
                     help="XAXISTILT: rotate the output about X to level a tilted specimen."),
    ])


def compute_options(fn: Callable) -> Callable:
    """Where and within how much memory to compute."""
    return _apply(fn, [
        click.option("--device", default="auto", show_default=True,
                     help="auto (CUDA when available), cpu, or cuda:N."),
        click.option("--memory", metavar="SIZE",
                     help="Working-memory budget such as 4G [default: half the free RAM or VRAM]."),
        click.option("--progress/--no-progress", default=None,
                     help="Progress bar with ETA [default: when stderr is a terminal]."),
    ])


def output_options(fn: Callable) -> Callable:
    """-o OUT.mrc + grid + compute options: what every volume-writing command takes."""
    fn = compute_options(grid_options(fn))
    return click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
                        help="Output volume (.mrc), oriented like `tilt -RotateBy90`: Z along the beam.")(fn)


def build_output_options(thickness, width, binning, shift, offset, x_axis_tilt):
    """Click values -> :class:`localet_core.tiltseries.OutputOptions`."""
    from localet_core.tiltseries import OutputOptions

    shift_x, shift_z = _pair(shift, "--shift")
    angle_offset, axis_offset = _pair(offset, "--offset")
    return OutputOptions(thickness=thickness, width=width, binning=binning, shift_x=shift_x,
                         shift_z=shift_z, angle_offset=angle_offset, axis_offset=axis_offset,
                         x_axis_tilt=x_axis_tilt)
