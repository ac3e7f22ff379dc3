"""A model for one specimen: the shipped model fine-tuned on simulations of the user's molecule,
imaged as the user's series were (``localet finetune``).

The shipped model's prior is general (cells, membranes, filaments, crowds of several molecules
at many sizes). A specimen that is mostly one molecule is reconstructed better by a model that
has seen crowds of that molecule at the user's pixel size and tilt scheme (docs/network.md,
"Which objects set (b)'s score": Pearson 0.449 -> 0.532 at 5,000 steps, 0.563 at 15,000, on the
quality benchmark's apoferritin set). The steps, each in :mod:`localet_core`:

1. :func:`read_acquisition`: the tilt angles (``.tlt`` or ``.mdoc``, excluded views left out),
   the reconstruction's voxel size (pixel size x binning) and the total dose of the views used;
2. :func:`specimen_simulation`: :class:`~localet_core.config.SimulationConfig` of crowds of the
   molecule (the ``diverse`` preset: membranes, filaments and gold kept beside it) at that voxel
   size, over that tilt range and step, at that dose;
3. :func:`finetune_for_specimen`: the series simulated into ``OUT/simulations``
   (:func:`~localet_core.simulate.folder.simulate_folder`) and the starting model fine-tuned on
   them into ``OUT/model.safetensors`` (:func:`~localet_core.network.training.train`, the
   shipped recipe's loss and scaling). Both resume: the complete series are kept and training
   goes on from its checkpoint.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Sequence, Tuple, Union

from localet_core.config import DEFAULT_MODEL, SimulationConfig
from localet_core.errors import FieldError, InputError, PathLike
from localet_core.progress import ProgressSpec

if TYPE_CHECKING:
    import numpy as np

#: the simulations' specimen preset: the molecule's crowds with membranes, filaments and gold
SPECIMEN_FAMILY = "diverse"
#: the simulated field of view (nz, ny, nx), voxels
SPECIMEN_SHAPE = (128, 128, 128)
#: series simulated, and fine-tuning steps, by default: 15,000 steps meet every floor of issue 15
#: on the benchmark's apoferritin set where 5,000 miss PSNR (docs/network.md, FT1 and FT3)
DEFAULT_COUNT = 28
DEFAULT_STEPS = 15000
#: the simulations' folder inside the run's folder, and their files' prefix
SIMULATIONS = "simulations"
SERIES_NAME = "specimen"
#: the fine-tuned model: ``OUT/model.safetensors``
MODEL_NAME = "model"


@dataclass(frozen=True)
class Acquisition:
    """How the user's series were recorded, as the simulations copy it.

    Attributes:
        angles: ``(n_views,)`` degrees, the views used (excluded ones left out), stack order.
        voxel_size: Angstrom per voxel of the reconstruction (pixel size x binning).
        dose: total exposure of the views used, e/A^2, or None when unknown.
    """

    angles: np.ndarray
    voxel_size: float
    dose: Optional[float] = None

    @property
    def tilt_scheme(self) -> Tuple[Tuple[float, float], float]:
        """``((min, max), step)`` in degrees: the range of the angles, and the median spacing of
        the sorted angles (a dose-symmetric or bidirectional order gives the same) adjusted so a
        whole number of steps spans the range. Angles as a microscope records them
        (-60.01 ... 59.98 by about 3) then give the same number of views (41), not one less."""
        import numpy as np

        a = np.sort(np.asarray(self.angles, dtype=np.float64))
        lo, hi = round(float(a[0]), 3), round(float(a[-1]), 3)
        median = float(np.median(np.diff(a)))
        if not median > 0 or not hi > lo:
            return (lo, hi), 0.0
        return (lo, hi), (hi - lo) / max(1, round((hi - lo) / median))


def read_acquisition(tlt: Optional[PathLike] = None, mdoc: Optional[PathLike] = None,
                     stack: Optional[PathLike] = None, exclude: Union[None, str, Sequence[int]] = None,
                     pixel_size: Optional[float] = None, binning: int = 1,
                     voxel_size: Optional[float] = None) -> Acquisition:
    """The acquisition of a user's tilt series, from its files; no image data is read.

    Args:
        tlt: ``.tlt`` angles (degrees, stack order); else ``mdoc``'s.
        mdoc: SerialEM ``.mdoc``: angles (without ``tlt``), pixel size, dose per view.
        stack: the stack, for the pixel size in its header (only the header is read).
        exclude: views left out, 1-based (IMOD's list text such as ``"1-3,40"``, or a list).
        pixel_size: Angstrom per pixel of the stack, over the header's and the mdoc's.
        binning: the binning the user reconstructs at.
        voxel_size: the reconstruction's voxel size in Angstrom, over pixel size x binning.

    Raises:
        FieldError: no angles; fewer than 3 views used; no pixel size; a binning < 1.
        InputError: a file that cannot be read, or angles that do not fit the stack or mdoc.
    """
    import numpy as np

    from localet_core.io import read_exclude_list, read_mdoc, read_tlt
    from localet_core.io.mrc_read import read_volume_header

    if int(binning) != binning or binning < 1:
        raise FieldError("binning", f"must be a whole number >= 1, got {binning}")
    info = read_mdoc(mdoc) if mdoc is not None else None
    if tlt is not None:
        angles = read_tlt(tlt)
    elif info is not None:
        angles = info.angles
    else:
        raise FieldError("tilt_angles", "tilt angles are needed: give a .tlt file (or an .mdoc)")
    if info is not None and info.n_views != angles.size:
        raise InputError(mdoc, f"describes {info.n_views} views but {tlt} has {angles.size} angles")
    header = read_volume_header(stack) if stack is not None else None
    if header is not None and header.shape[0] != angles.size:
        raise InputError(stack, f"has {header.shape[0]} views but there are {angles.size} tilt angles")
    views = list(exclude) if isinstance(exclude, (list, tuple)) else (read_exclude_list(exclude) if exclude else [])
    bad = [v for v in views if not 1 <= v <= angles.size]
    if bad:
        raise FieldError("exclude", f"view {bad[0]} is outside 1..{angles.size}")
    used = np.setdiff1d(np.arange(angles.size), np.asarray(views, dtype=np.int64) - 1)
    if used.size < 3:
        raise FieldError("exclude", f"{used.size} views are left; at least 3 are needed")
    if voxel_size is None:
        pixel = pixel_size
        if pixel is None and header is not None:
            pixel = header.voxel_size
        if pixel is None and info is not None:
            pixel = info.pixel_size
        if pixel is None or not pixel > 0:
            raise FieldError("pixel_size", "the pixel size is unknown (not in the stack's header nor "
                                           "an .mdoc): give it")
        voxel_size = float(pixel) * int(binning)
    if not (np.isfinite(voxel_size) and voxel_size > 0):
        raise FieldError("voxel_size", f"must be a positive number of Angstrom, got {voxel_size}")
    dose = None
    if info is not None and np.isfinite(info.dose[used]).all() and float(info.dose[used].sum()) > 0:
        dose = float(info.dose[used].sum())
    return Acquisition(angles=np.asarray(angles, dtype=np.float64)[used], voxel_size=float(voxel_size), dose=dose)


def specimen_simulation(templates: Sequence[str], acquisition: Acquisition, dose: Optional[float] = None,
                        defocus_um: Any = None, thickness_nm: Any = None,
                        shape: Tuple[int, int, int] = SPECIMEN_SHAPE) -> SimulationConfig:
    """The simulation of the user's specimen as the user's series were recorded.

    Args:
        templates: the molecules (shipped ids or MRC maps of the user's,
            :mod:`localet_core.simulate.user_maps`).
        acquisition: :func:`read_acquisition`'s.
        dose: total e/A^2 over the series; default: the acquisition's, else the simulator's.
        defocus_um: underfocus in um, a value or a (min, max) range; default: the simulator's.
        thickness_nm: ice thickness in nm, a value or a range; default: the simulator's (a
            share of the field of view's depth).
        shape: the simulated field of view (nz, ny, nx), voxels.

    Raises:
        FieldError: a setting the simulator refuses (named by its field).
        InputError: a template map that cannot be used.
    """
    tilt_range, step = acquisition.tilt_scheme
    if not step > 0:
        raise FieldError("tilt_angles", "the tilt angles repeat: no step between them")
    given = {"dose": dose if dose is not None else acquisition.dose, "defocus_um": defocus_um}
    return SimulationConfig(shape=tuple(int(n) for n in shape), voxel_size=acquisition.voxel_size,
                            tilt_range=tilt_range, tilt_step=step, family=SPECIMEN_FAMILY,
                            templates=tuple(templates), thickness_nm=thickness_nm,
                            **{k: v for k, v in given.items() if v is not None})  # else the simulator's


def finetune_for_specimen(out_dir: PathLike, settings: SimulationConfig, count: int = DEFAULT_COUNT,
                          steps: int = DEFAULT_STEPS, seed: int = 0, init: PathLike = DEFAULT_MODEL,
                          resume: bool = False, device: Any = "cpu", progress: ProgressSpec = None,
                          label: Union[None, str, Sequence[str]] = None, inputs: Sequence[PathLike] = (),
                          log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Simulate ``count`` series of ``settings`` into ``out_dir/simulations`` and fine-tune
    ``init`` on them for ``steps`` steps into ``out_dir/model.safetensors``; returns the
    training's summary (:func:`~localet_core.network.training.train`).

    The series' seeds are ``seed``, ``seed + 1``, ...; the last tenth (at least one) is held
    out for validation. With ``resume``, the complete series already there are kept (when made
    with the same settings) and training goes on from ``out_dir/checkpoint.pt``: the result is
    that of an uninterrupted run. The model's card records the simulation (``specimen``: the
    settings as the series' JSON records them, a map of the user's by path and SHA-256).
    ``inputs`` (the user's stack, angles, ...) are checked not to be among the outputs, like the
    template maps and ``init``; ``label`` is the history label of the simulated MRC files;
    ``log`` receives the one-line messages.

    Raises:
        FieldError: a bad count or number of steps.
        InputError: anything the simulation or the training refuses (named).
    """
    import dataclasses

    from localet_core.config import TrainConfig
    from localet_core.contracts.model_card import model_file
    from localet_core.contracts.pairs import read_pairs_star
    from localet_core.io.outputs import guard_outputs
    from localet_core.network.checkpoint import CHECKPOINT_NAME, LOG_NAME
    from localet_core.network.modelfile import load_model
    from localet_core.network.training import train
    from localet_core.simulate.folder import simulate_folder
    from localet_core.simulate.forward import config_record
    from localet_core.simulate.user_maps import is_map_entry

    if int(count) < 2:
        raise FieldError("count", f"must be at least 2 (one series is held out for validation), got {count}")
    if int(steps) < 1:
        raise FieldError("steps", f"must be at least 1, got {steps}")
    out = Path(out_dir)
    start = load_model(init)[0].config  # the fine-tune keeps the starting model's architecture
    maps = [t for t in settings.templates or () if is_map_entry(t)]
    init_file = init if str(init).endswith(".safetensors") else None
    guard_outputs([model_file(out / MODEL_NAME), out / CHECKPOINT_NAME, out / LOG_NAME, out / "summary.json"],
                  inputs=[*inputs, *maps, init_file], folders=[out], keep_on_failure=True)  # the checkpoint stays
    (lo, hi), step = settings.tilt_range, settings.tilt_step
    names = ", ".join(Path(t).name for t in settings.templates or ("the preset's molecules",))
    log(f"{count} series of {names} at {settings.voxel_size:g} A, {lo:g}..{hi:g} by {step:.4g} degrees, "
        f"{settings.dose:g} e/A^2")
    simulate_folder(out / SIMULATIONS, settings, count=count, seed=seed, name=SERIES_NAME, resume=resume,
                    label=label, progress=progress, log=log)
    pairs = read_pairs_star(out / SIMULATIONS / "pairs.star")
    recipe = dataclasses.replace(TrainConfig(), steps=int(steps), seed=int(seed))
    log(f"fine-tuning {init} on {len(pairs)} simulated series for {steps} steps")
    specimen = {"simulation": config_record(settings), "series": count, "first_seed": seed}
    return train(pairs, out, start, recipe, device=device, resume=resume, progress=progress,
                 model_name=MODEL_NAME, init_model=init, card_extra={"specimen": specimen})
