"""`localet fsc`: Fourier Shell Correlation between two volumes, whole and split at the
missing wedge, with resolutions at 0.143, 0.5 and half-bit, a STAR table and a PNG plot."""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional, Tuple

import click

from localet.commands._options import memory_option
from localet_core.contracts.tolerances import same_pixel_size
from localet_core.errors import InputError


def _voxel_size(path: Path) -> Optional[float]:
    """The header voxel size of an MRC volume (Angstrom, None when unset), its header checked;
    :class:`InputError` naming the file on any problem (missing, not MRC...)."""
    from localet_core.io import read_volume_header

    return read_volume_header(path).voxel_size


def _parse_tilt_range(value: str) -> Tuple[Tuple[float, float], str]:
    """``--tlt``: an IMOD .tlt file (read by :func:`localet_core.io.read_tlt`) or ``MIN,MAX``
    in degrees.

    Returns ``((min, max), description)``.
    """
    path = Path(value)
    if path.is_file():
        from localet_core.io import read_tlt

        angles = read_tlt(path)
        source: object = path
        lo, hi = float(angles.min()), float(angles.max())
        what = f"from {path} ({angles.size} views)"
    else:
        parts = value.replace(":", ",").split(",")
        try:
            lo, hi = (float(p) for p in parts)
        except ValueError:
            raise InputError("--tlt", f"{value!r} is neither a .tlt file nor a range MIN,MAX in degrees") from None
        source = "--tlt"
        what = "from --tlt"
    if not (math.isfinite(lo) and math.isfinite(hi)) or not (-90 < lo <= hi < 90):
        raise InputError(source, f"tilt range [{lo:g}, {hi:g}] is not within (-90, 90) degrees with min <= max")
    return (lo, hi), what


def _pixel_size(option: Optional[float], a: Tuple[Path, Optional[float]], b: Tuple[Path, Optional[float]]
                ) -> Tuple[float, str]:
    """The pixel size to use and where it came from, from ``(path, header voxel size)`` of each
    volume; warns when --pixel-size overrides a header that says otherwise."""
    headers = [(p, v) for p, v in (a, b) if v is not None]
    if option is not None:
        if not math.isfinite(option) or option <= 0:
            raise InputError("--pixel-size", f"must be a positive number of Angstrom, got {option:g}")
        for path, size in headers:
            if not same_pixel_size(size, option):
                click.echo(f"Warning: {path}: header pixel size {size:g} A differs from "
                           f"--pixel-size {option:g} A; using --pixel-size", err=True)
        return option, "--pixel-size"
    if not headers:
        raise InputError(a[0], "has no pixel size in its header; give --pixel-size")
    if len(headers) == 2:
        (pa, sa), (pb, sb) = headers
        if not same_pixel_size(sa, sb):
            raise InputError(pb, f"pixel size {sb:g} A differs from {pa} ({sa:g} A); the volumes "
                                 "must have the same sampling (give --pixel-size to override the headers)")
    return headers[0][1], "header"


def _check_output(path: Path, option: str, suffix: str, inputs) -> None:
    if path.suffix.lower() != suffix:
        raise InputError(option, f"{path} should end in {suffix}")
    resolved = path.expanduser().resolve()
    for other in inputs:
        if other is not None and Path(other).expanduser().resolve() == resolved:
            raise InputError(option, f"{path} would overwrite an input file")
    if not resolved.parent.is_dir():
        raise InputError(path, f"output directory {str(path.parent)!r} does not exist")


EPILOG = """\b
Examples:
  localet fsc TS_01_odd.mrc TS_01_even.mrc -o TS_01_fsc.star --plot TS_01_fsc.png
  localet fsc TS_01_odd.mrc TS_01_even.mrc --tlt TS_01.tlt -o TS_01_fsc.star       # split at the missing wedge
  localet fsc rec.mrc truth.mrc --tlt -60,60 --mask slab.mrc --pixel-size 10 -o rec_vs_truth.star
  localet fsc big_odd.mrc big_even.mrc --memory 2G -o big_fsc.star               # out of core beyond 2G
"""


@click.command("fsc", epilog=EPILOG)
@click.argument("volume_a", type=click.Path(path_type=Path))
@click.argument("volume_b", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path),
              help="STAR file to write (blocks general, fsc, resolution).")
@click.option("--mask", type=click.Path(path_type=Path),
              help="Soft mask (MRC, same shape, values 0..1) applied to both volumes. "
                   "Masks inflate the FSC.")
@click.option("--pixel-size", type=float,
              help="Pixel size in Angstrom (default: from the MRC headers).")
@click.option("--tlt", "tilt", metavar="ANGLES",
              help="Tilt angles: an IMOD .tlt file or MIN,MAX in degrees. Adds the FSC inside "
                   "and outside the missing wedge.")
@click.option("--plot", type=click.Path(path_type=Path), help="PNG plot of the curves.")
@memory_option
def command(volume_a: Path, volume_b: Path, output: Path, mask: Optional[Path],
            pixel_size: Optional[float], tilt: Optional[str], plot: Optional[Path],
            memory: Optional[str]) -> None:
    """Fourier Shell Correlation between volumes VOLUME_A and VOLUME_B (MRC).

    Prints the resolution at the 0.143, 0.5 and half-bit criteria, writes the curves as a
    STAR table and, with --plot, as a PNG. With --tlt the FSC is also computed separately
    over the Fourier region measured by the tilt series (outside the missing wedge) and the
    region it never measured (inside the wedge): a method that really fills the wedge keeps
    a high inside-wedge FSC, one that only denoises does not. For a half-set FSC, give two
    reconstructions from independent halves of the data (odd/even frames or alternate tilts).
    """
    from localet_core.device import memory_budget, parse_memory
    from localet_core.io import read_volume_header
    from localet_core.io.atomic import scratch_near
    from localet_core.io.outputs import check_free_space, guard_outputs
    from localet_core.validation.streamed import fsc_files, fsc_files_plan

    inputs = (volume_a, volume_b, mask)
    _check_output(output, "-o/--output", ".star", inputs)
    if plot is not None:
        _check_output(plot, "--plot", ".png", inputs)
    guard_outputs([output, plot], inputs=[*inputs, tilt])
    tilt_range, tilt_what = _parse_tilt_range(tilt) if tilt is not None else (None, "")
    budget = memory_budget("cpu", parse_memory(memory))
    header_a, header_b = read_volume_header(volume_a), read_volume_header(volume_b)
    px, px_what = _pixel_size(pixel_size, (volume_a, header_a.voxel_size), (volume_b, header_b.voxel_size))
    _, scratch = fsc_files_plan(header_a.shape, mask is not None, budget)
    check_free_space({output: 1 << 20}, {output.with_name(f".{output.name}.fsc-scratch"): scratch})
    with scratch_near(output):  # the volumes' transforms, when they do not fit --memory
        result = fsc_files(volume_a, volume_b, mask=mask, pixel_size=px, tilt_range=tilt_range, budget=budget)
    report_fsc(result, f"{volume_a} vs {volume_b}", px_what, output, plot,
               names=(os.fspath(volume_a), os.fspath(volume_b)),
               title=f"{volume_a.name} vs {volume_b.name}", mask=mask, tilt_what=tilt_what)


def report_fsc(result, what: str, px_what: str, output: Path, plot: Optional[Path], names,
               title: str, mask: Optional[Path] = None, tilt_what: str = "") -> None:
    """Print the resolutions and write the STAR table (and the PNG plot)."""
    from localet_core.validation.fsc_report import format_fsc_summary, plot_fsc, write_fsc_star

    nz, ny, nx = result.shape
    px = result.pixel_size
    click.echo(f"FSC {what}: {nz} x {ny} x {nx} voxels (z, y, x), "
               f"pixel {px:g} A ({px_what}), Nyquist {2 * px:.1f} A")
    if mask is not None:
        click.echo(f"mask: {mask}")
    if result.tilt_range is not None:
        tilt_range = result.tilt_range
        click.echo(f"tilt range {tilt_range[0]:g} .. {tilt_range[1]:g} degrees {tilt_what}: "
                   "FSC also split inside/outside the missing wedge")
    click.echo(format_fsc_summary(result))
    write_fsc_star(output, result, names=names)
    click.echo(f"wrote {output}")
    if plot is not None:
        plot_fsc(plot, result, title=title)
        click.echo(f"wrote {plot}")
