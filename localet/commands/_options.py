"""Options shared by the commands (IMOD `tilt` names in the help), the defaults they take
from the engine's settings (:func:`default_of`, :func:`core_option`), and the CLI's names of
the engine's fields (:data:`FLAGS`)."""
from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any, Callable, Optional, Tuple, Union

import click

from localet_core import config
from localet_core.config import OutputOptions
from localet_core.errors import InputError
from localet_core.progress import DEFAULT_INTERVAL, ENV_INTERVAL

#: The flag of each engine field (:attr:`localet_core.errors.FieldError.field`), used when the
#: CLI shows a :class:`~localet_core.errors.FieldError`: ``binning: ...`` is printed as
#: ``--bin: ...``. A field of no command is shown as it is.
FLAGS = {
    # output grid (OutputOptions, TiltGeometry) and inputs
    "binning": "--bin",
    "thickness": "--thickness",
    "width": "--width",
    "x_axis_tilt": "--x-axis-tilt",
    "tilt_angles": "--tlt",
    "exclude": "--exclude",
    "pixel_size": "--pixel-size",
    "halves": "--odd/--even",
    # where to compute
    "device": "--device",
    "memory_budget": "--memory",
    # classical methods (RampFilter, SIRT)
    "method": "--method",
    "window": "--filter",
    "cutoff": "--radial",
    "falloff": "--radial",
    "iterations": "--iterations",
    # network (Localet, ModelConfig, TrainConfig, train)
    "model": "--model",
    "precision": "--precision",
    "form": "--form",
    "mirrors": "--mirrors",
    "patch_size": "--patch-size",
    "step": "--step",
    "channels": "--channels",
    "hidden": "--hidden",
    "encoder": "--encoder",
    "slab_rows": "--slab-rows",
    "encoder_channels": "--encoder-channels",
    "volume_head": "--volume-head",
    "context_channels": "--context-channels",
    "context_patch": "--context-patch",
    "context_step": "--context-step",
    "templates": "--templates",
    "count": "--count",
    "encoder_kernel": "--encoder-kernel",
    "n_angle_basis": "--angle-basis",
    "activation": "--activation",
    "view_norm": "--view-norm",
    "pairs": "--pair",
    "loss": "--loss",
    "steps": "--steps",
    "batch_size": "--batch-size",
    "lr": "--lr",
    "noise": "--noise",
    "drop_tilts": "--drop-tilts",
    "val_every": "--val-every",
    "checkpoint_every": "--checkpoint-every",
    "refresh_every": "--refresh-every",
    "reference_clip": "--clip-reference",
    # simulator (SimulationConfig)
    "shape": "--shape",
    "tilt_range": "--tilt-range",
    "tilt_step": "--tilt-step",
    "family": "--family",
    "optics": "--optics",
    "estimate": "--estimate",
    "voxel_size": "--voxel",
    "dose": "--dose",
    "defocus_um": "--defocus",
    "thickness_nm": "--thickness",
    "misalign_px": "--misalign",
    "shift_x": "--shift",
    "shift_z": "--shift",
    "angle_offset": "--offset",
    "axis_offset": "--offset",
}


def default_of(owner: Union[type, Callable], name: str) -> Any:
    """The default of field ``name`` of the dataclass ``owner``, or of parameter ``name`` of
    the function ``owner``: the one value the engine and the CLI share."""
    if dataclasses.is_dataclass(owner):
        f = {f.name: f for f in dataclasses.fields(owner)}[name]
        if f.default_factory is not dataclasses.MISSING:
            return f.default_factory()
        if f.default is dataclasses.MISSING:
            raise ValueError(f"{owner.__name__}.{name} has no default")
        return f.default
    default = inspect.signature(owner).parameters[name].default
    if default is inspect.Parameter.empty:
        raise ValueError(f"{owner.__name__}({name}) has no default")
    return default


def as_text(values) -> str:
    """``(96, 128, 128)`` -> ``"96,128,128"``: a tuple default as the CLI's comma list."""
    return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


class CoreOption(click.Option):
    """A click option that sets an engine setting (:func:`core_option`); it records which one
    in :attr:`setting`, so a test can check the two defaults are equal."""

    def __init__(self, *args: Any, setting: Tuple[Union[type, Callable, str], str],
                 to_text: Optional[Callable[[Any], Any]] = None, **kwargs: Any) -> None:
        self.setting = setting
        self.to_text = to_text
        super().__init__(*args, **kwargs)


def core_option(*decls: str, setting: Tuple[Union[type, Callable, str], str],
                to_text: Optional[Callable[[Any], Any]] = None, **kwargs: Any) -> Callable:
    """``click.option`` for the engine setting ``setting = (owner, field)``.

    The default is :func:`default_of` the setting (through ``to_text`` for options typed as
    text, such as ``--hidden 32,32``) when ``owner`` is a class or function of the torch-free
    :mod:`localet_core.config`. For a setting of a torch module, ``owner`` is its dotted name
    (``"localet_core.methods.SIRT"``, not imported here: ``localet --help`` stays fast) and
    ``default`` must be given, from :mod:`localet_core.config`;
    ``tests/test_cli_defaults.py`` checks that it is that setting's default.
    """
    owner, name = setting
    if not isinstance(owner, str):
        value = default_of(owner, name)
        kwargs["default"] = to_text(value) if to_text is not None else value
    elif "default" not in kwargs:
        raise TypeError(f"core_option for {owner}.{name}: give default= (from localet_core.config)")
    kwargs.setdefault("show_default", True)
    return click.option(*decls, cls=CoreOption, setting=setting, to_text=to_text, **kwargs)


def reports_progress(fn: Callable) -> Callable:
    """Run a command inside :func:`localet_core.progress.command_progress`, in the mode of its
    ``--progress/--no-progress`` flag (none: bars on a terminal, progress lines in a log),
    timed from the start of the process. Put it right above the command's function."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        from localet_core.progress import command_progress, process_start

        name = f"localet {click.get_current_context().info_name}"
        with command_progress(name, kwargs.get("progress"), start=process_start()):
            return fn(*args, **kwargs)

    return run


def history_label() -> str:
    """The header label of this command's outputs: ``localet CMD: ARGS ... DATE`` from the
    command line :func:`localet.cli.main` received (without it, e.g. under click's test
    runner, the command's name alone); see :func:`localet_core.io.labels.history_label`."""
    from localet_core.io.labels import history_label as make_label

    ctx = click.get_current_context()
    obj = ctx.find_root().obj
    argv = list(obj.get("argv", ())) if isinstance(obj, dict) else []
    name = ctx.info_name or ""
    args = argv[argv.index(name) + 1:] if name in argv else []
    return make_label(f"localet {name}".strip(), args)


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
                     help=f"THICKNESS: output Z size in output pixels [default: "
                          f"{config.DEFAULT_THICKNESS_ANGSTROM / 10:g} nm, or nx/4 without a pixel size]."),
        click.option("--width", type=int, metavar="NX", help="WIDTH: output X size [default: binned stack width]."),
        core_option("--bin", "binning", type=int, setting=(OutputOptions, "binning"),
                    help="Bin the stack by this factor (block average) before reconstructing."),
        click.option("--shift", metavar="SX[,SZ]",
                     help="SHIFT: move the volume by SX output pixels in X and by -SZ in Z (IMOD's signs)."),
        click.option("--offset", metavar="DEG[,DX]",
                     help="OFFSET: add DEG to every tilt angle; put the tilt axis DX pixels right of the centre."),
        core_option("--x-axis-tilt", type=float, setting=(OutputOptions, "x_axis_tilt"), metavar="DEG",
                    help="XAXISTILT: rotate the output about X to level a tilted specimen."),
    ])


#: ``--progress/--no-progress`` of the long-running commands (:func:`reports_progress`).
progress_option = click.option(
    "--progress/--no-progress", default=None,
    help="Report progress on stderr: a bar with ETA on a terminal; in a log, a line with percentage, "
         f"elapsed and remaining time every {ENV_INTERVAL} seconds ({DEFAULT_INTERVAL:g}) and a last "
         "line with the wall time [default: --progress].")


#: ``--memory SIZE`` (:func:`localet_core.device.parse_memory`).
memory_option = click.option(
    "--memory", metavar="SIZE",
    help="Working-memory budget such as 4G: the peak memory follows it, whatever the "
         "output size (what does not fit goes through a scratch file next to the output) "
         "[default: half the free RAM or VRAM, at most 1G].")


#: ``--mirrors``: the network averaged with its mirror images (``Localet.mirrors``).
mirrors_option = core_option(
    "--mirrors", type=int, default=config.MIRRORS[0], metavar="|".join(map(str, config.MIRRORS)),
    setting=("localet_core.methods.Localet", "mirrors"),
    help="Average the network with its mirror images: 2 (in Y, along the tilt axis) or 4 (also "
         "in X). A little better (set (b) Pearson +0.007 with 4), 2x or 4x the time.")


def compute_options(fn: Callable) -> Callable:
    """Where and within how much memory to compute."""
    return _apply(fn, [
        core_option("--device", setting=("localet_core.device.resolve_device", "spec"), default="auto",
                    help="auto (CUDA when available), cpu, or cuda:N."),
        memory_option,
        progress_option,
    ])


def output_options(fn: Callable) -> Callable:
    """-o OUT.mrc + grid + compute options: what every volume-writing command takes."""
    fn = compute_options(grid_options(fn))
    return click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
                        help="Output volume (.mrc), oriented like `tilt -RotateBy90`: Z along the beam.")(fn)


def build_output_options(thickness, width, binning, shift, offset, x_axis_tilt):
    """Click values -> :class:`localet_core.tiltseries.OutputOptions`."""
    shift_x, shift_z = _pair(shift, "--shift")
    angle_offset, axis_offset = _pair(offset, "--offset")
    return OutputOptions(thickness=thickness, width=width, binning=binning, shift_x=shift_x,
                         shift_z=shift_z, angle_offset=angle_offset, axis_offset=axis_offset,
                         x_axis_tilt=x_axis_tilt)
