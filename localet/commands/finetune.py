"""`localet finetune`: a model for your specimen, from a map of your molecule and your series' acquisition."""
from __future__ import annotations

from pathlib import Path

import click

from localet.commands._options import _pair, as_text, core_option, history_label, progress_option, reports_progress
from localet_core import config
from localet_core.config import SimulationConfig
from localet_core.specimen import DEFAULT_COUNT, DEFAULT_STEPS, SPECIMEN_SHAPE

_SIMULATOR = SimulationConfig.__dataclass_fields__  # the simulator's defaults, for the help

EPILOG = """\b
Examples:
  localet finetune TS_01.st --tlt TS_01.tlt --bin 4 --templates emd_1234.map -o apof
  localet finetune TS_01.st --mdoc TS_01.st.mdoc --bin 4 --templates 4v1w --steps 5000 -o apof5k   # 3x faster
  localet reconstruct TS_01.st --tlt TS_01.tlt --bin 4 --model apof/model.safetensors -o TS_01_apof.mrc
"""


@click.command("finetune", epilog=EPILOG)
@click.argument("stack", type=click.Path(dir_okay=False))
@click.option("--tlt", type=click.Path(dir_okay=False), help="Tilt angles (.tlt/.rawtlt), stack order.")
@click.option("--mdoc", type=click.Path(dir_okay=False),
              help="SerialEM .mdoc: angles when --tlt is absent, pixel size when the header has none, dose.")
@click.option("--exclude", metavar="LIST", help="Views you leave out, 1-based: e.g. 1-3,41 or a file.")
@click.option("--pixel-size", type=float, metavar="A", help="Pixel size of STACK in Angstrom, overriding its header.")
@core_option("--bin", "binning", type=int, setting=("localet_core.specimen.read_acquisition", "binning"), default=1,
             help="The binning you reconstruct at: the model is trained at pixel size x binning.")
@click.option("--templates", required=True, metavar="MAP|ID[,...]",
              help="Your molecule: an MRC map (an EMDB entry, a subtomogram average; any units) or a "
                   "shipped id (4v5d, 3jb9, 4v1w, 6z6u, 6qt9).")
@click.option("-o", "--out-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for model.safetensors, the training's log and checkpoint, and simulations/.")
@click.option("--dose", type=float, metavar="E/A2", help="Total exposure of the series [default: the .mdoc's, "
              f"else {_SIMULATOR['dose'].default:g}].")
@click.option("--defocus", metavar="UM[,UM]",
              help=f"Underfocus in um, or a range [default: {as_text(_SIMULATOR['defocus_um'].default)}].")
@click.option("--thickness", "thickness_nm", metavar="NM[,NM]",
              help="Ice thickness in nm, or a range [default: a share of the simulated depth].")
@core_option("--count", type=int, setting=("localet_core.specimen.finetune_for_specimen", "count"),
             default=DEFAULT_COUNT, help="Series to simulate (the last tenth held out).")
@core_option("--steps", type=int, setting=("localet_core.specimen.finetune_for_specimen", "steps"),
             default=DEFAULT_STEPS, help="Fine-tuning steps (5000: 3x faster, a little worse).")
@core_option("--seed", type=int, setting=("localet_core.specimen.finetune_for_specimen", "seed"), default=0,
             help="Seed of the first series and of the training.")
@core_option("--init", setting=("localet_core.specimen.finetune_for_specimen", "init"),
             default=config.DEFAULT_MODEL, metavar="NAME|PATH", help="The model to start from.")
@core_option("--shape", setting=("localet_core.specimen.specimen_simulation", "shape"), to_text=as_text,
             default=as_text(SPECIMEN_SHAPE), metavar="NZ,NY,NX", help="Simulated field of view, voxels.")
@click.option("--resume", is_flag=True, help="Keep the complete series and go on from the training's checkpoint.")
@core_option("--device", setting=("localet_core.device.resolve_device", "spec"), default="auto",
             help="auto, cpu or cuda:N.")
@progress_option
@reports_progress
def command(stack, tlt, mdoc, exclude, pixel_size, binning, templates, out_dir, dose, defocus, thickness_nm, count,
            steps, seed, init, shape, resume, device, progress):
    """Fine-tune the pretrained network for your specimen: simulate crowds of your molecule (from
    its map) as your tilt series was recorded (pixel size x binning, tilt range and step, dose),
    then fine-tune the model on them.

    A specimen that is mostly one molecule (a purified complex, an in-vitro sample) reconstructs
    better with such a model than with the general one (docs/network.md: on the benchmark's
    apoferritin crowds, Pearson 0.449 -> 0.53 at 5,000 steps, 0.56 at 15,000). Only STACK's
    header is read, not its images. Writes OUT_DIR/model.safetensors for `localet reconstruct
    --model`, OUT_DIR/simulations/ (the series and pairs.star), log.csv, summary.json and
    checkpoint.pt for --resume.
    """
    from localet_core.errors import InputError
    from localet_core.specimen import finetune_for_specimen, read_acquisition, specimen_simulation

    try:
        dims = tuple(int(v) for v in shape.split(","))
    except ValueError:
        raise InputError("--shape", f"expected three whole numbers like 128,128,128, got {shape!r}") from None
    ranges = {}
    for flag, text in (("--defocus", defocus), ("--thickness", thickness_nm)):
        if text:
            lo, hi = _pair(text, flag)
            ranges[flag] = (lo, hi) if "," in text else lo
    acquisition = read_acquisition(tlt=tlt, mdoc=mdoc, stack=stack, exclude=exclude, pixel_size=pixel_size,
                                   binning=binning)
    settings = specimen_simulation([t.strip() for t in templates.split(",") if t.strip()], acquisition, dose=dose,
                                   defocus_um=ranges.get("--defocus"), thickness_nm=ranges.get("--thickness"),
                                   shape=dims)
    log = lambda line: click.echo(line, err=True)  # noqa: E731
    summary = finetune_for_specimen(out_dir, settings, count=count, steps=steps, seed=seed, init=init,
                                    resume=resume, device=device, progress=progress, label=history_label(),
                                    inputs=[stack, tlt, mdoc, exclude], log=log)
    if summary.get("model_file"):
        val = summary["final_val_loss"]
        click.echo(f"{summary['model_file']}: {summary['steps_done']} steps"
                   + (f", val loss {val:.4g}" if val is not None else "")
                   + f", {summary['seconds']:.1f} s on {summary['device']}; reconstruct with "
                   f"--model {summary['model_file']}", err=True)
