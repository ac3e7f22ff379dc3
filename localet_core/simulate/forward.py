"""From a phantom to a tilt series, as a microscope would record it, in localet's geometry.

Steps (each parameter lands in ``SimulatedSeries.params``, with the seed):

1. The phantom (excess potential + ice) is padded along X so high-tilt rays cross material
   outside the field of view, then projected at the tilt angles with localet's own projector
   (``localet_core.reconstruction.projector``: the exact adjoint of the back-projection) at 2x oversampling
   in X and Z, then binned back (the plain voxel-driven projector has a mild moire near 45
   degrees); the central ``nx`` detector columns are the field of view.
2. Image formation (``optics.image_intensity``): exposure filter in dose-symmetric acquisition
   order, CTF, inelastic attenuation ``exp(-t / (lambda cos theta))``; with the "calibrated"
   optics (``SimulationConfig.optics``) the attenuation follows each ray's own path through ice
   and denser matter (``optics.inelastic_path``), and the amplitude contrast is drawn.
3. Optional misalignment: each raw image is the aligned one seen through a known transform,
   written as an IMOD ``.xf`` (raw -> aligned), so ``--xf`` must undo it.
4. Electron counts: Poisson at the dose per view (times the DQE of the calibrated optics);
   odd/even halves are two independent draws at half the dose each (a frame split), and the
   full stack is their sum; the calibrated optics then roll the noise power off towards Nyquist
   (``optics.detector_rolloff``).

The ground truth is the excess potential over ice of the field of view, with its sign flipped
so that it has the contrast of the data (protein dark, as in raw images and their WBP). Every
reconstruction then correlates positively with it.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from localet_core.config import SimulationConfig
from localet_core.progress import Stage, stage
from localet_core.reconstruction.geometry import TiltGeometry
from localet_core.reconstruction.projector import forward_project
from localet_core.simulate.optics import (
    OPTICS,
    detector_rolloff,
    dose_symmetric_order,
    image_intensity,
    inelastic_path,
    poisson_noise,
    prior_dose,
)
from localet_core.simulate.phantom import make_phantom
from localet_core.simulate.templates import ice_potential
from localet_core.simulate.user_maps import is_map_entry, read_map_template

#: Oversampling of the projection along X and Z (see step 1 above).
OVERSAMPLE = 2


@dataclass
class SimulatedSeries:
    """A simulated tilt series with its ground truth (numpy, float32 unless stated).

    ``stack``/``odd``/``even``: (n_views, ny, nx) electron counts; ``angles``: (n_views,) deg;
    ``xf``: (n_views, 2, 3) or None; ``truth``: (nz, ny, nx) ground truth in the data's contrast;
    ``slab_mask``: (nz, ny, nx) bool; ``particle_mask``: (nz, ny, nx) bool, voxels of the
    macromolecules (template particles) alone; ``labels``: (nz, ny, nx) int16, 0 = ice or
    vacuum, k > 0 = ``params["phantom"]["objects"][k - 1]`` (which object each voxel belongs to).
    """

    stack: np.ndarray
    angles: np.ndarray
    truth: np.ndarray
    slab_mask: np.ndarray
    odd: Optional[np.ndarray] = None
    even: Optional[np.ndarray] = None
    xf: Optional[np.ndarray] = None
    params: Dict[str, Any] = field(default_factory=dict)
    particle_mask: Optional[np.ndarray] = None
    labels: Optional[np.ndarray] = None


def _draw(rng: np.random.Generator, value: Any) -> float:
    if isinstance(value, (tuple, list)):
        return float(rng.uniform(*value))
    return float(value)


def project_oversampled(potential: torch.Tensor, angles: np.ndarray) -> torch.Tensor:
    """Line integrals (voxel lengths) of ``potential`` (nz, ny, nx) at ``angles``, projected at
    :data:`OVERSAMPLE` x in X and Z and binned back: ``(n_views, ny, nx)``."""
    nz, ny, nx = potential.shape
    s = OVERSAMPLE
    fine = F.interpolate(potential[None, None], size=(nz * s, ny, nx * s), mode="trilinear",
                         align_corners=False)[0, 0]
    geometry = TiltGeometry(angles=tuple(angles), detector_shape=(ny, nx * s), thickness=nz * s)
    proj = forward_project(fine, geometry)  # (n, ny, nx * s), lengths in fine voxels
    return proj.view(len(angles), ny, nx, s).mean(-1) / s


def misalignment(n_views: int, rng: np.random.Generator, shift_px: float, axis_deg: float) -> np.ndarray:
    """Random IMOD .xf transforms (raw -> aligned): a rotation by ``-axis_deg`` (the raw images
    show the tilt axis at ``axis_deg`` from Y) and per-view shifts of std ``shift_px``."""
    a = math.radians(-axis_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    xf = np.zeros((n_views, 2, 3))
    xf[:, :, :2] = rot
    xf[:, :, 2] = rng.normal(0.0, shift_px, (n_views, 2)) if shift_px > 0 else 0.0
    return xf


def raw_from_aligned(aligned: torch.Tensor, xf: np.ndarray) -> torch.Tensor:
    """Raw images whose alignment by ``xf`` gives ``aligned`` (n, ny, nx): ``raw(r) =
    aligned(A r + d)``, bilinear, edges extended (the specimen goes on beyond the field)."""
    n, ny, nx = aligned.shape
    rows, cols = torch.meshgrid(torch.arange(ny, dtype=torch.float64) - (ny - 1) / 2,
                                torch.arange(nx, dtype=torch.float64) - (nx - 1) / 2, indexing="ij")
    t = torch.as_tensor(xf)
    u = t[:, 0, 0, None, None] * cols + t[:, 0, 1, None, None] * rows + t[:, 0, 2, None, None]
    v = t[:, 1, 0, None, None] * cols + t[:, 1, 1, None, None] * rows + t[:, 1, 2, None, None]
    grid = torch.stack([(2 * (u + (nx - 1) / 2) + 1) / nx - 1, (2 * (v + (ny - 1) / 2) + 1) / ny - 1], -1)
    out = F.grid_sample(aligned[:, None], grid.float(), mode="bilinear", padding_mode="border",
                        align_corners=False)
    return out[:, 0]


def simulate_series(config: SimulationConfig, seed: int) -> SimulatedSeries:
    """Simulate one tilt series and its ground truth from ``config`` and ``seed``.

    Inside a command its steps are reported as one stage of its progress (the phantom about
    two thirds of the time, the projection and image formation the rest;
    :mod:`localet_core.progress`)."""
    with stage(10, f"seed {seed}", bar=False) as steps:
        return _simulate_series(config, seed, steps)


def _simulate_series(config: SimulationConfig, seed: int, steps: Stage) -> SimulatedSeries:
    """:func:`simulate_series`, reporting to the stage ``steps`` (10 units)."""
    rng = np.random.default_rng([seed, 7])
    gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
    angles = config.angles
    max_tilt = float(np.abs(angles).max())
    phantom = make_phantom(config.shape, config.voxel_size, seed=seed, family=config.family,
                           tilt_max_deg=max_tilt, thickness_nm=config.thickness_nm, templates=config.templates)
    steps.advance(7)
    nz, ny, nx = config.shape
    optics = OPTICS[config.optics]
    path = None
    if optics.mass_factor > 0:
        # the ice and the excess projected apart: the attenuation follows each ray's own path
        excess = phantom.crop(project_oversampled(phantom.volume, angles)) * config.voxel_size
        ice = phantom.crop(project_oversampled(phantom.ice, angles)) * config.voxel_size
        projections = excess + ice  # V*A
        path = inelastic_path(ice, excess, ice_potential(), optics.mass_factor)
    else:
        potential = phantom.volume + phantom.ice
        projections = phantom.crop(project_oversampled(potential, angles)) * config.voxel_size  # V*A
    steps.advance(1)
    order = dose_symmetric_order(angles)
    dose_per_view = config.dose / len(angles)
    before = prior_dose(order, dose_per_view)
    defocus = _draw(rng, config.defocus_um)
    # _draw takes no random number for a plain value: the ideal profile's series are those of
    # earlier versions
    dqe = _draw(rng, optics.dqe)
    amplitude = _draw(rng, optics.amplitude_contrast)
    thickness_a = float(phantom.params["thickness_nm"]) * 10.0
    intensity = image_intensity(projections, config.voxel_size, angles, defocus, thickness_a,
                                prior_dose_e=before, dose_e=dose_per_view, voltage_kv=config.voltage_kv,
                                amplitude_contrast=amplitude, path=path)
    xf = None
    if config.misalign_px > 0 or config.tilt_axis_deg != 0:
        xf = misalignment(len(angles), rng, config.misalign_px, config.tilt_axis_deg)
        intensity = raw_from_aligned(intensity, xf)
    electrons = dose_per_view * config.voxel_size**2 * dqe
    rolloff = lambda t: detector_rolloff(t, optics.noise_rolloff)
    if config.halves:
        odd = rolloff(poisson_noise(intensity, electrons / 2, gen))
        even = rolloff(poisson_noise(intensity, electrons / 2, gen))
        stack = odd + even
    else:
        odd = even = None
        stack = rolloff(poisson_noise(intensity, electrons, gen))
    steps.advance(1)
    truth = -phantom.crop(phantom.volume)
    params = {
        "seed": seed, "config": config_record(config),
        "angles_deg": angles.tolist(), "acquisition_order": [int(i) for i in order],
        "dose_per_view_e_per_A2": dose_per_view, "defocus_um": defocus,
        "electrons_per_pixel_per_view": electrons, "ice_thickness_A": thickness_a,
        "optics": config.optics, "dqe": dqe, "amplitude_contrast": amplitude,
        "mass_factor": optics.mass_factor, "noise_rolloff": optics.noise_rolloff,
        "oversample": OVERSAMPLE, "phantom": phantom.params,
        "truth": "minus the excess potential over ice (V): the contrast of the data, protein dark",
    }
    particle_ids = [k + 1 for k, o in enumerate(phantom.params.get("objects", [])) if o.get("type") == "particle"]
    labels = phantom.crop(phantom.labels)
    particles = torch.isin(labels, torch.tensor(particle_ids, dtype=labels.dtype)) if particle_ids \
        else torch.zeros_like(labels, dtype=torch.bool)
    as_np = lambda t: None if t is None else t.numpy().astype(np.float32)
    return SimulatedSeries(stack=as_np(stack), angles=angles, truth=as_np(truth),
                           slab_mask=phantom.crop(phantom.slab_mask).numpy(), odd=as_np(odd),
                           even=as_np(even), xf=xf, params=params, particle_mask=particles.numpy(),
                           labels=labels.numpy())


def series_paths(out_dir: Path, name: str, xf: bool = False, halves: bool = True) -> Dict[str, Path]:
    """The files :func:`write_series` writes for series ``name``, by role."""
    from localet_core.contracts.naming import HALVES, half_name

    out_dir = Path(out_dir)
    paths = {"stack": out_dir / f"{name}.st", "tlt": out_dir / f"{name}.tlt",
             "reference": out_dir / f"{name}_truth.mrc", "mask": out_dir / f"{name}_mask.mrc",
             "params": out_dir / f"{name}.json"}
    if xf:
        paths["xf"] = out_dir / f"{name}.xf"
    if halves:
        paths["odd"], paths["even"] = (Path(half_name(paths["stack"], half)) for half in HALVES)
    return paths


def config_record(config: SimulationConfig) -> Dict[str, Any]:
    """``config`` as the series' JSON records it (``templates`` only when set: the records of
    series made before it existed still match on ``--resume``; a map of the user's also by its
    SHA-256)."""
    record = {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.__dict__.items()}
    if record["templates"] is None:
        del record["templates"]
    else:
        maps = {t: read_map_template(t).sha256 for t in record["templates"] if is_map_entry(t)}
        if maps:  # a map edited in place is another specimen: --resume must not keep its series
            record["template_sha256"] = maps
    return record


def kept_series(out_dir: Path, name: str, seed: int, config: SimulationConfig) -> Optional[Dict[str, Path]]:
    """The files of series ``name`` already in ``out_dir`` when they can be kept on a resumed
    run (``localet simulate --resume``), by role; ``None`` when the series must be simulated.

    A series is complete when its JSON is there (:func:`write_series` writes it last, atomically)
    with every other file. Its seed and settings must be those asked for now.

    Raises:
        InputError: naming the JSON, when it records another seed or other settings, or cannot
            be read.
    """
    from localet_core.errors import InputError

    has_xf = config.misalign_px > 0 or config.tilt_axis_deg != 0
    paths = series_paths(out_dir, name, xf=has_xf, halves=config.halves)
    if not paths["params"].is_file():
        return None
    try:
        record = json.loads(paths["params"].read_text())
        recorded = (record["seed"], record["config"])
    except (OSError, ValueError, KeyError, TypeError):
        raise InputError(paths["params"], "is not a series record of localet simulate; remove it "
                                          "or write to another folder") from None
    wanted = (seed, json.loads(json.dumps(config_record(config))))
    if recorded != wanted:
        raise InputError(paths["params"], "was simulated with another seed or other settings; "
                                          "--resume keeps only series made as asked now")
    if not all(p.is_file() for p in paths.values()):
        return None
    return paths


def series_bytes(config: SimulationConfig) -> Dict[str, int]:
    """About how many bytes each file of one simulated series takes, by role (for the free-space
    check before a run)."""
    nz, ny, nx = config.shape
    views = len(config.angles)
    stack, volume = 1024 + 4 * views * ny * nx, 1024 + 4 * nz * ny * nx
    return {"stack": stack, "tlt": 16 * views, "reference": volume, "mask": volume, "params": 64 * views + 65536,
            "xf": 80 * views, "odd": stack, "even": stack}


def write_series(series: SimulatedSeries, out_dir: Path, name: str, voxel_size: float,
                 label: Union[None, str, Sequence[str]] = None) -> Dict[str, Path]:
    """Write ``NAME.st``, ``.tlt``, (``.xf``), ``_odd.st``/``_even.st``, ``_truth.mrc``,
    ``_mask.mrc`` and ``.json`` into ``out_dir``; returns the paths by role.

    The stacks are marked as image stacks (space group 0), the truth and mask as volumes
    (space group 1); every MRC file carries ``label`` (:class:`localet_core.io.VolumeWriter`)."""
    from localet_core.io import atomic_output, write_tlt, write_volume, write_xf

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = series_paths(out_dir, name, xf=series.xf is not None, halves=series.odd is not None)
    write_volume(paths["stack"], series.stack, voxel_size, label=label, image_stack=True)
    write_tlt(paths["tlt"], series.angles)
    write_volume(paths["reference"], series.truth, voxel_size, label=label)
    write_volume(paths["mask"], series.slab_mask.astype(np.float32), voxel_size, label=label)
    if series.xf is not None:
        write_xf(paths["xf"], series.xf)
    if series.odd is not None:
        write_volume(paths["odd"], series.odd, voxel_size, label=label, image_stack=True)
        write_volume(paths["even"], series.even, voxel_size, label=label, image_stack=True)
    with atomic_output(paths["params"]) as tmp:
        tmp.write_text(json.dumps(series.params, indent=1))
    return paths


def write_pairs_star(path: Path, rows: Sequence[Dict[str, Path]], val_fraction: float = 0.1) -> None:
    """A ``pairs.star`` table (:mod:`localet_core.contracts.pairs`) of the series ``rows`` (the
    paths :func:`write_series` returns, in the table's folder) for ``localet train``; the last
    ``val_fraction`` of the rows (at least one when there are two or more) are held out."""
    from localet_core.contracts.pairs import PairSpec
    from localet_core.contracts.pairs import write_pairs_star as write_table

    n_val = max(1 if len(rows) > 1 else 0, int(round(len(rows) * val_fraction)))
    pairs = [PairSpec(stack=r["stack"].name, tlt=r["tlt"].name, reference=r["reference"].name,
                      **{key: r[key].name for key in ("xf", "odd", "even") if key in r},
                      split="val" if i >= len(rows) - n_val else "train")
             for i, r in enumerate(rows)]
    write_table(path, pairs)
