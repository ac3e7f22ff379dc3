"""`localet simulate`: synthetic cryo-ET tilt series with ground truth (for training and tests)."""
from __future__ import annotations

from pathlib import Path

import click

from localet.commands._options import _pair

EPILOG = """\b
Examples:
  localet simulate -o sim --count 200 --seed 0                      # training pairs + pairs.star
  localet simulate -o testB --family shifted --tilt-range -54,54 --tilt-step 2 --dose 60 --voxel 12
  localet simulate -o aligned --misalign 2 --tilt-axis 85            # raw images + .xf
"""


@click.command("simulate", epilog=EPILOG)
@click.option("-o", "--out-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the series (created).")
@click.option("--count", type=int, default=1, show_default=True, help="Number of tilt series.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the first series (then +1...).")
@click.option("--name", default="sim", show_default=True, help="File name prefix.")
@click.option("--shape", default="96,128,128", show_default=True, metavar="NZ,NY,NX",
              help="Field of view in voxels (Z along the beam).")
@click.option("--voxel", type=float, default=10.0, show_default=True, help="Pixel size, Angstrom.")
@click.option("--tilt-range", default="-60,60", show_default=True, metavar="MIN,MAX", help="Degrees.")
@click.option("--tilt-step", type=float, default=3.0, show_default=True, help="Degrees.")
@click.option("--dose", type=float, default=100.0, show_default=True, help="Total exposure, e/A^2.")
@click.option("--defocus", default="2,5", show_default=True, metavar="UM[,UM]",
              help="Underfocus in um, or a range drawn per series.")
@click.option("--family", type=click.Choice(["default", "diverse", "broad", "shifted"]), default="default",
              show_default=True,
              help="Specimen preset: 'diverse' adds membranes, filaments and crowding; 'broad' also "
                   "scales each particle 0.5-3x; 'shifted' uses other templates (a test set).")
@click.option("--thickness", "thickness_nm", metavar="NM[,NM]", help="Ice thickness (nm) or a range.")
@click.option("--misalign", type=float, default=0.0, show_default=True,
              help="Std of random per-view shifts (pixels), written as an .xf.")
@click.option("--tilt-axis", type=float, default=0.0, show_default=True,
              help="Rotate the raw images so the tilt axis lies at this angle (degrees); in the .xf.")
@click.option("--no-halves", is_flag=True, help="Do not write odd/even half-dose stacks.")
def command(out_dir, count, seed, name, shape, voxel, tilt_range, tilt_step, dose, defocus, family,
            thickness_nm, misalign, tilt_axis, no_halves):
    """Simulate tilt series of cellular specimens built from real macromolecules (PDB 4V5D,
    3JB9, 4V1W, 6Z6U, 6QT9), membranes, filaments, gold and ice, with CTF, dose filtering and
    Poisson noise, in localet's (IMOD's) geometry.

    Writes per series NAME_K.st/.tlt (.xf), NAME_K_odd.st/_even.st, the ground truth
    NAME_K_truth.mrc (minus the excess potential: the data's contrast), the slab mask
    NAME_K_mask.mrc and NAME_K.json (every parameter and the seed), plus pairs.star for
    `localet train --pairs`.
    """
    from localet_core.errors import InputError
    from localet_core.simulate.forward import SimulationConfig, simulate_series, write_pairs_star, write_series

    try:
        dims = tuple(int(v) for v in shape.split(","))
    except ValueError:
        dims = ()
    if len(dims) != 3 or min(dims) < 8:
        raise InputError("--shape", f"expected three sizes of at least 8 like 96,128,128, got {shape!r}")
    if count < 1:
        raise InputError("--count", "must be at least 1")
    lo, hi = _pair(tilt_range, "--tilt-range")
    if not -90 < lo < hi < 90 or tilt_step <= 0:
        raise InputError("--tilt-range", f"need -90 < MIN < MAX < 90 and a positive step, got {tilt_range}")
    d0, d1 = _pair(defocus, "--defocus")
    defocus_um = (d0, d1) if "," in defocus else d0
    thickness = None
    if thickness_nm:
        t0, t1 = _pair(thickness_nm, "--thickness")
        thickness = (t0, t1) if "," in thickness_nm else t0
    config = SimulationConfig(shape=dims, voxel_size=voxel, tilt_range=(lo, hi), tilt_step=tilt_step,
                              dose=dose, defocus_um=defocus_um, family=family, thickness_nm=thickness,
                              halves=not no_halves, misalign_px=misalign, tilt_axis_deg=tilt_axis)
    rows = []
    width = len(str(seed + count - 1))
    for k in range(count):
        series = simulate_series(config, seed + k)
        rows.append(write_series(series, out_dir, f"{name}_{seed + k:0{width}d}", voxel))
        click.echo(f"{rows[-1]['stack']}: {len(series.angles)} views, defocus "
                   f"{series.params['defocus_um']:.2f} um, ice {series.params['ice_thickness_A'] / 10:.0f} nm",
                   err=True)
    write_pairs_star(out_dir / "pairs.star", rows)
    click.echo(f"wrote {count} series and {out_dir / 'pairs.star'}", err=True)
