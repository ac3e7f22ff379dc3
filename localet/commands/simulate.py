"""`localet simulate`: synthetic cryo-ET tilt series with ground truth (for training and tests)."""
from __future__ import annotations

from pathlib import Path

import click

from localet.commands._options import _pair, as_text, core_option, history_label, progress_option, reports_progress
from localet_core import config
from localet_core.config import SimulationConfig

EPILOG = """\b
Examples:
  localet simulate -o sim --count 200 --seed 0                      # training pairs + pairs.star
  localet simulate -o testB --family shifted --tilt-range -54,54 --tilt-step 2 --dose 60 --voxel 12
  localet simulate -o aligned --misalign 2 --tilt-axis 85            # raw images + .xf
  localet simulate -o cell --family cell --optics calibrated --voxel 20 --shape 160,128,128 --thickness 250,320
  localet simulate -o apof --count 28 --family diverse --templates 4v1w --voxel 14   # one molecule: a fine-tune set
  localet simulate -o mine --count 28 --family diverse --templates emd_1234.map --voxel 14  # your own map
"""


@click.command("simulate", epilog=EPILOG)
@click.option("-o", "--out-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the series (created).")
@click.option("--count", type=int, default=1, show_default=True, help="Number of tilt series.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the first series (then +1...).")
@click.option("--name", default="sim", show_default=True, help="File name prefix.")
@core_option("--shape", setting=(SimulationConfig, "shape"), to_text=as_text, metavar="NZ,NY,NX",
             help="Field of view in voxels (Z along the beam).")
@core_option("--voxel", type=float, setting=(SimulationConfig, "voxel_size"), help="Pixel size, Angstrom.")
@core_option("--tilt-range", setting=(SimulationConfig, "tilt_range"), to_text=as_text, metavar="MIN,MAX",
             help="Degrees.")
@core_option("--tilt-step", type=float, setting=(SimulationConfig, "tilt_step"), help="Degrees.")
@core_option("--dose", type=float, setting=(SimulationConfig, "dose"), help="Total exposure, e/A^2.")
@core_option("--defocus", setting=(SimulationConfig, "defocus_um"), to_text=as_text, metavar="UM[,UM]",
             help="Underfocus in um, or a range drawn per series.")
@core_option("--family", type=click.Choice(config.FAMILY_NAMES), setting=(SimulationConfig, "family"),
             help="Specimen preset: 'diverse' adds membranes, filaments and crowding; 'broad' also "
                  "scales each particle 0.5-3x; 'dense' packs its particles near true size in dense "
                  "crowds; 'shifted' uses other templates (a test set); "
                  "'cell' is a crowded, membrane-bounded cell body in thick ice (calibrated "
                  "against a real cell).")
@click.option("--thickness", "thickness_nm", metavar="NM[,NM]", help="Ice thickness (nm) or a range.")
@core_option("--misalign", type=float, setting=(SimulationConfig, "misalign_px"),
             help="Std of random per-view shifts (pixels), written as an .xf.")
@core_option("--tilt-axis", type=float, setting=(SimulationConfig, "tilt_axis_deg"),
             help="Rotate the raw images so the tilt axis lies at this angle (degrees); in the .xf.")
@core_option("--optics", type=click.Choice(config.OPTICS_NAMES), setting=(SimulationConfig, "optics"),
             help="Microscope and detector model: 'ideal' (every electron counted, attenuation by "
                  "the ice thickness, white noise) or 'calibrated' against a real series (DQE, "
                  "mass-dependent attenuation, noise roll-off; docs/simulation.md).")
@core_option("--templates", setting=(SimulationConfig, "templates"), metavar="ID|MAP[,...]",
             help="Make the particles of these macromolecules instead of the preset's: shipped ids "
                  "(4v5d, 3jb9, 4v1w, 6z6u, 6qt9) or MRC maps of your own (.mrc, .map: an EMDB "
                  "entry, a subtomogram average; any units, rescaled to an average protein's "
                  "contrast). One entry simulates a crowd of one molecule, e.g. your specimen for "
                  "a fine-tune [default: the preset's].", show_default=False)
@click.option("--no-halves", is_flag=True, help="Do not write odd/even half-dose stacks.")
@click.option("--resume", is_flag=True,
              help="Keep the series already complete in the folder (same name, seeds and settings; "
                   "checked against their .json) and simulate only the rest. A run that is stopped "
                   "or fails keeps its complete series for this (not the one it was writing).")
@progress_option
@reports_progress
def command(out_dir, count, seed, name, shape, voxel, tilt_range, tilt_step, dose, defocus, family,
            thickness_nm, misalign, tilt_axis, optics, templates, no_halves, resume, progress):
    """Simulate tilt series of cellular specimens built from real macromolecules (PDB 4V5D,
    3JB9, 4V1W, 6Z6U, 6QT9), membranes, filaments, gold and ice, with CTF, dose filtering and
    Poisson noise, in localet's (IMOD's) geometry.

    Writes per series NAME_K.st/.tlt (.xf), NAME_K_odd.st/_even.st, the ground truth
    NAME_K_truth.mrc (minus the excess potential: the data's contrast), the slab mask
    NAME_K_mask.mrc and NAME_K.json (every parameter and the seed), plus pairs.star for
    `localet train --pairs`.
    """
    from localet_core.errors import InputError
    from localet_core.simulate.folder import simulate_folder

    try:
        dims = tuple(int(v) for v in shape.split(","))
    except ValueError:
        raise InputError("--shape", f"expected three whole numbers like 96,128,128, got {shape!r}") from None
    lo, hi = _pair(tilt_range, "--tilt-range")
    d0, d1 = _pair(defocus, "--defocus")
    defocus_um = (d0, d1) if "," in defocus else d0
    thickness = None
    if thickness_nm:
        t0, t1 = _pair(thickness_nm, "--thickness")
        thickness = (t0, t1) if "," in thickness_nm else t0
    settings = SimulationConfig(shape=dims, voxel_size=voxel, tilt_range=(lo, hi), tilt_step=tilt_step,
                                dose=dose, defocus_um=defocus_um, family=family, thickness_nm=thickness,
                                halves=not no_halves, misalign_px=misalign, tilt_axis_deg=tilt_axis,
                                optics=optics,
                                templates=tuple(t.strip() for t in templates.split(",")) if templates else None)
    simulate_folder(out_dir, settings, count=count, seed=seed, name=name, resume=resume,
                    label=history_label(), progress=progress, log=lambda line: click.echo(line, err=True))
