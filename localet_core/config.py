"""The settings a user chooses, with their defaults, in one torch-free module.

The engine's settings dataclasses (:class:`OutputOptions`, :class:`ModelConfig`,
:class:`TrainConfig`, :class:`SimulationConfig`) live here, with the defaults and the choices of
the settings whose classes need torch (:class:`~localet_core.reconstruction.filters.RampFilter`,
the methods of :mod:`localet_core.methods`). Nothing here imports torch or numpy at import
time, so the CLI builds its options (defaults, choices) from this module and ``localet --help``
stays fast.

Every check raises :class:`~localet_core.errors.FieldError` naming the field (``binning``,
``steps``); front ends show it under their own name (``--bin``, "Binning").
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from localet_core.contracts.model_card import DEFAULT_MODEL  # noqa: F401  (re-exported: its home is the model-card contract)
from localet_core.errors import FieldError

# ----------------------------------------------------------------------- output grid
#: Default specimen thickness used when the user gives none (Angstrom): a typical lamella.
DEFAULT_THICKNESS_ANGSTROM = 3000.0


@dataclass(frozen=True)
class OutputOptions:
    """IMOD ``tilt``-style output options, in output (binned) pixels and degrees.

    ``thickness=None`` picks :func:`~localet_core.reconstruction.geometry.default_thickness`
    (:data:`DEFAULT_THICKNESS_ANGSTROM`, or nx/4 without a pixel size). The values are checked by
    :class:`~localet_core.reconstruction.geometry.TiltGeometry`.
    """

    thickness: Optional[int] = None
    width: Optional[int] = None
    binning: int = 1
    shift_x: float = 0.0
    shift_z: float = 0.0
    angle_offset: float = 0.0
    axis_offset: float = 0.0
    x_axis_tilt: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.binning, bool) or int(self.binning) != self.binning or self.binning < 1:
            raise FieldError("binning", f"must be a whole number >= 1, got {self.binning}")
        for name in ("thickness", "width"):
            value = getattr(self, name)
            if value is not None and (int(value) != value or value < 1):
                raise FieldError(name, f"must be a whole number >= 1, got {value}")
        for name in ("shift_x", "shift_z", "angle_offset", "axis_offset", "x_axis_tilt"):
            if not math.isfinite(getattr(self, name)):
                raise FieldError(name, f"must be a finite number, got {getattr(self, name)}")


# ------------------------------------------------------------------- classical methods
#: ``OMP_WAIT_POLICY`` the CLI sets for torch's OpenMP threads unless the environment sets one:
#: ``PASSIVE`` threads sleep between parallel regions instead of spinning. Measured on the
#: reference machine (2 cores) with other jobs running: `localet fbp` of 1024 x 1024 x 256 in
#: 14.7 s with 2 threads, against 17.6 s with libgomp's spinning default (1 thread: 14.4 s).
OMP_WAIT_POLICY = "PASSIVE"

#: Apodisation windows of the ramp filter (:class:`RampFilter` ``window``).
WINDOWS = ("ram-lak", "shepp-logan", "cosine", "hamming", "hann")
#: :class:`RampFilter` defaults: no apodisation, and the Gaussian fall-off (cycles/pixel) of
#: IMOD's RADIAL when only a cutoff is given.
RAMP_WINDOW = "ram-lak"
RADIAL_FALLOFF = 0.035
#: SIRT defaults (:class:`~localet_core.methods.SIRT`, :func:`~localet_core.reconstruction.sirt.sirt`).
SIRT_ITERATIONS = 20
SIRT_RELAXATION = 1.0

# ----------------------------------------------------------------------------- network
#: Activations of the per-voxel layers (:class:`ModelConfig` ``activation``).
ACTIVATIONS = ("gelu", "relu", "identity")
#: How a model normalises its views (``ModelConfig.view_norm``): one z-score over the stack, or each
#: view over its own mean first.
VIEW_NORMS = ("stack", "view")
#: Half-set validation estimates (:func:`localet_core.validation.halfset.validate_halves`), the
#: first the default: ``auto`` = the prior-proof estimate for learned methods, the plain
#: half-set FSC otherwise.
ESTIMATES = ("auto", "prior-proof", "half-set")
#: Training losses (:class:`TrainConfig` ``loss``).
LOSSES = ("l1", "l2")
#: Arithmetic of the per-voxel layers at inference (:class:`~localet_core.methods.Localet`);
#: the first is the default.
PRECISIONS = ("fp32", "bf16")
#: Forms of inference, the first the default: ``fast`` (factorised first layer, exact) or
#: ``direct`` (patch by patch, for checks).
FORMS = ("fast", "direct")
#: ``localet reconstruct --mirrors``: the model alone, + its mirror image in Y (along the tilt axis),
#: + its images in X and in both (:mod:`localet_core.network.mirror`; the four Z mirrors on top
#: measured no better than 4, docs/network.md)
MIRRORS = (1, 2, 4)


@dataclass(frozen=True)
class ModelConfig:
    """Architecture and input conventions of a :class:`~localet_core.network.model.LocalizedNet`
    (JSON-serialisable).

    Attributes:
        patch_size: P, odd (whole-pixel offsets make the fast form exact).
        step: Delta, patch sampling step in binned detector pixels (whole number).
        channels: k, learned first-layer channels.
        hidden: widths of the per-voxel hidden layers (may be empty).
        n_angle_basis: M, Legendre polynomials in the angle per kernel.
        activation: one of :data:`ACTIVATIONS`.
        fbp_residual: add a fixed FBP channel with a learned gain to the output.
        encoder: widths of the per-view encoder's hidden convolutions (``()``: no encoder, the
            first layer is linear in the views). Each is an ``encoder_kernel`` x
            ``encoder_kernel`` convolution on the filtered view, FiLM-conditioned on the tilt
            angle, then the activation (:mod:`localet_core.network.encoder`).
        encoder_channels: the encoder's output channels, back-projected beside the linear ones.
        encoder_kernel: odd size of the encoder's convolutions (detector pixels).
        volume_head: widths of the 3D head's 3 x 3 x 3 convolutions (``()``: none). They run on
            the per-voxel features (the last per-voxel layer's input) over the volume, each
            followed by the activation, and a 1 x 1 x 1 convolution adds their correction to the
            output (zero at initialisation); zero padding at the volume's borders.
        context_channels: first-layer channels that see a wide, coarse patch of each view (``0``:
            none): linear like the others, on the view low-passed by a ``context_step`` x
            ``context_step`` box average and sampled every ``context_step`` pixels, so each voxel
            sees ``context_step (context_patch - 1) + 1`` detector pixels around its projection
            (objects larger than the fine patch: capsids, membranes, the cell's edge). Their
            outputs join the per-voxel layers after the encoder's.
        context_patch: odd size of the coarse patch (samples).
        context_step: odd whole number, the coarse patch's sampling step and box size (pixels).
        filter_window, filter_cutoff, filter_falloff: the ramp filter the views get
            (:class:`localet_core.reconstruction.filters.RampFilter`).
        view_norm: how the views are normalised before filtering (:data:`VIEW_NORMS`):
            ``stack``, one z-score over the whole stack (the views' intensity change with tilt,
            attenuation, reaches the network); ``view``, each view first divided by its own mean
            (the stack's raw intensities must then be positive), then the stack's z-score.
    """

    patch_size: int = 13  # the shipped model's (docs/network.md)
    step: int = 1
    channels: int = 16
    hidden: Tuple[int, ...] = (32, 32)
    n_angle_basis: int = 6
    activation: str = "gelu"
    fbp_residual: bool = True
    encoder: Tuple[int, ...] = ()
    encoder_channels: int = 0
    encoder_kernel: int = 3
    volume_head: Tuple[int, ...] = ()
    context_channels: int = 0
    context_patch: int = 9
    context_step: int = 5
    filter_window: str = RAMP_WINDOW
    filter_cutoff: Any = None
    filter_falloff: float = RADIAL_FALLOFF
    view_norm: str = "stack"

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        object.__setattr__(self, "encoder", tuple(int(h) for h in self.encoder))
        object.__setattr__(self, "volume_head", tuple(int(h) for h in self.volume_head))
        if any(h < 1 for h in self.volume_head):
            raise FieldError("volume_head", f"widths must be >= 1, got {self.volume_head}")
        if any(h < 1 for h in self.encoder):
            raise FieldError("encoder", f"widths must be >= 1, got {self.encoder}")
        if bool(self.encoder) != (self.encoder_channels > 0):
            raise FieldError("encoder_channels", "must be >= 1 with encoder widths and 0 without, got "
                                                 f"{self.encoder_channels} with widths {self.encoder}")
        if int(self.encoder_kernel) != self.encoder_kernel or self.encoder_kernel < 1 or self.encoder_kernel % 2 == 0:
            raise FieldError("encoder_kernel", f"must be an odd whole number, got {self.encoder_kernel}")
        if int(self.patch_size) != self.patch_size or self.patch_size < 1 or self.patch_size % 2 == 0:
            raise FieldError("patch_size", f"must be an odd whole number, got {self.patch_size}")
        if int(self.step) != self.step or self.step < 1:
            raise FieldError("step", f"must be a whole number >= 1, got {self.step}")
        for name in ("context_patch", "context_step"):
            value = getattr(self, name)
            if int(value) != value or value < 1 or value % 2 == 0:
                raise FieldError(name, f"must be an odd whole number, got {value}")
        if int(self.context_channels) != self.context_channels or self.context_channels < 0:
            raise FieldError("context_channels", f"must be a whole number >= 0, got {self.context_channels}")
        for name in ("channels", "n_angle_basis"):
            if getattr(self, name) < 1:
                raise FieldError(name, f"must be >= 1, got {getattr(self, name)}")
        if any(h < 1 for h in self.hidden):
            raise FieldError("hidden", f"widths must be >= 1, got {self.hidden}")
        if self.view_norm not in VIEW_NORMS:
            raise FieldError("view_norm", f"must be one of {', '.join(VIEW_NORMS)}, got {self.view_norm!r}")
        if self.activation not in ACTIVATIONS:
            raise FieldError("activation", f"must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}")

    def to_dict(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        d["encoder"] = list(self.encoder)
        d["volume_head"] = list(self.volume_head)
        if not self.volume_head:  # written only when there is one: files without read as before
            del d["volume_head"]
        if self.view_norm == "stack":  # likewise: the default is not written
            del d["view_norm"]
        if not self.context_channels:  # likewise
            for name in ("context_channels", "context_patch", "context_step"):
                del d[name]
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "ModelConfig":
        """Inverse of :meth:`to_dict`; unknown keys are an error (a newer, incompatible file)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown model settings {unknown}")
        return cls(**d)

    def ramp(self):
        """The :class:`~localet_core.reconstruction.filters.RampFilter` of the views."""
        from localet_core.reconstruction.filters import RampFilter

        return RampFilter(window=self.filter_window, cutoff=self.filter_cutoff, falloff=self.filter_falloff)

    @property
    def total_channels(self) -> int:
        """First-layer channels including the fixed FBP channel (index 0 when present) and the
        encoder's and the context channels (last, in that order)."""
        return self.channels + int(self.fbp_residual) + self.encoder_channels + self.context_channels

    @property
    def per_voxel_inputs(self) -> int:
        """Inputs of the first per-voxel layer: every first-layer channel but the FBP one."""
        return self.channels + self.encoder_channels + self.context_channels

    @property
    def halo(self) -> int:
        """Half-width (detector pixels) of what one voxel's first layer sees around its
        projection: the fine patch's or the context patch's, the wider."""
        fine = self.step * (self.patch_size - 1) // 2
        if not self.context_channels:
            return fine
        return max(fine, self.context_step * (self.context_patch - 1) // 2)

    @property
    def encoder_radius(self) -> int:
        """Half-width (detector pixels) of the encoder's receptive field: one output pixel
        depends on the ``(2 R + 1)^2`` view pixels around it (0 without an encoder)."""
        return len(self.encoder) * (self.encoder_kernel // 2)

    @property
    def volume_radius(self) -> int:
        """Half-width (voxels) of the 3D head's receptive field: one output voxel depends on the
        per-voxel features of the ``(2 R + 1)^3`` voxels around it (0 without a 3D head)."""
        return len(self.volume_head)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and augmentation settings (units: steps, voxels, normalised intensity).

    The defaults are the shipped model's recipe (``scripts/train_pretrained.py``: L2 loss,
    references clamped at +-60 as in its last stage, a quarter of the tilts dropped) except its
    length: 2,000 steps (a fine-tuning or a first run in minutes on a few cores) where the shipped
    model took 24,000, then 5,000 and 10,000 of fine-tuning (docs/network.md).
    """

    steps: int = 2000
    batch_size: int = 1024
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup: int = 50
    loss: str = "l2"
    seed: int = 0
    binning: int = 1
    val_every: int = 100
    val_voxels: int = 8192
    checkpoint_every: int = 200
    refresh_every: int = 50
    use_halves: bool = True
    drop_tilts: float = 0.25
    noise: float = 0.0
    divergence_factor: float = 100.0
    #: None: references z-scored (mean, std). A number k: scaled robustly (median, and the std of
    #: the values between the 0.5 and 99.5 percentiles) and clamped to +-k, so a few extreme
    #: voxels (gold) do not set the scale. At 60 a gold bead (55-150 of those units deep) is
    #: still taught at most of its depth; at 20 the network learned to draw beads at about 40 %
    #: of it (docs/network.md, "Stage R"). Outside beads, hardly a voxel lies beyond +-20.
    reference_clip: Optional[float] = 60.0
    #: None: each step takes ``batch_size`` random voxels of one pair through the direct (patch)
    #: form. A number n: each step runs the exact fast form (:class:`~localet_core.network.inference.FastForm`,
    #: differentiable) on n consecutive rows (Y) of one pair, at a random place, and the loss
    #: covers every voxel of them (``batch_size`` is then unused): a per-view encoder runs once
    #: per view on the rows the slab needs, and a step supervises nz * n * nx voxels.
    slab_rows: Optional[int] = None

    def __post_init__(self) -> None:
        if self.slab_rows is not None and self.slab_rows < 1:
            raise FieldError("slab_rows", f"must be >= 1, got {self.slab_rows}")
        if self.loss not in LOSSES:
            raise FieldError("loss", f"must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        for name in ("steps", "batch_size", "val_every", "checkpoint_every", "refresh_every"):
            if getattr(self, name) < 1:
                raise FieldError(name, f"must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.drop_tilts < 1:
            raise FieldError("drop_tilts", f"must be in [0, 1), got {self.drop_tilts:g}")
        if not self.lr > 0:
            raise FieldError("lr", f"must be > 0, got {self.lr:g}")
        if not self.noise >= 0:
            raise FieldError("noise", f"must be >= 0, got {self.noise:g}")
        if self.reference_clip is not None and not self.reference_clip > 0:
            raise FieldError("reference_clip", f"must be > 0, got {self.reference_clip:g}")

    def lr_at(self, step: int) -> float:
        """Linear warm-up, then cosine decay to a tenth of ``lr`` (a pure function of the step)."""
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        t = (step - self.warmup) / max(1, self.steps - self.warmup)
        return self.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


# --------------------------------------------------------------------------- simulator
#: Seed of the demo's specimen (:func:`localet_core.demo.run_demo`): not a seed of the training
#: set (scripts/train_pretrained.py).
DEMO_SEED = 424242
#: The specimen presets of :data:`localet_core.simulate.phantom.FAMILIES`, by name.
FAMILY_NAMES = ("default", "diverse", "broad", "dense", "shifted", "cell")
#: The optics presets of :data:`localet_core.simulate.optics.OPTICS`, by name.
OPTICS_NAMES = ("ideal", "calibrated")


#: Lower bound of the simulator's memory per voxel of the field of view (bytes): the oversampled
#: potential alone takes more; a shape beyond the machine's memory is refused up front.
SIMULATION_BYTES_PER_VOXEL = 16


def physical_memory() -> Optional[int]:
    """This machine's RAM in bytes, or None where it cannot be told."""
    import os

    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


@dataclass(frozen=True)
class SimulationConfig:
    """What to simulate. Lengths in Angstrom unless named otherwise; ranges are drawn per seed.

    Attributes:
        shape: (nz, ny, nx) voxels of the field of view (the reconstruction grid), each >= 8.
        voxel_size: Angstrom per voxel = detector pixel size.
        tilt_range: (min, max) degrees; ``tilt_step`` degrees between views.
        dose: total exposure over the series, e/A^2.
        defocus_um: underfocus, um (value or range).
        family: phantom preset, one of :data:`FAMILY_NAMES` ("default" for training,
            "shifted" for a test set).
        thickness_nm: ice thickness, nm (value, range, or None for the phantom's default:
            0.5-0.85 of the field of view's depth).
        halves: also make odd/even half-dose stacks.
        misalign_px: standard deviation of random per-view shifts (pixels); 0 for none.
        tilt_axis_deg: rotation of the raw images (written in the .xf); 0 for none.
        optics: microscope and detector model, one of :data:`OPTICS_NAMES`: "ideal" (every
            electron counted, attenuation by the ice thickness, white noise) or "calibrated"
            (DQE, mass-dependent attenuation, noise roll-off; docs/simulation.md).
        templates: the macromolecules the particles are made of (template ids,
            :func:`localet_core.simulate.templates.available_templates`, or MRC maps of the
            user's, kept as absolute paths: :mod:`localet_core.simulate.user_maps`), in place
            of the preset's; None keeps the preset's. One entry gives a crowd of one molecule,
            the specimen a user fine-tunes a model for (docs/network.md).
    """

    shape: Tuple[int, int, int] = (96, 128, 128)
    voxel_size: float = 10.0
    tilt_range: Tuple[float, float] = (-60.0, 60.0)
    tilt_step: float = 3.0
    dose: float = 100.0
    defocus_um: Any = (2.0, 5.0)
    voltage_kv: float = 300.0
    family: str = "default"
    thickness_nm: Any = None
    halves: bool = True
    misalign_px: float = 0.0
    tilt_axis_deg: float = 0.0
    optics: str = "ideal"
    templates: Optional[Tuple[str, ...]] = None

    def __post_init__(self) -> None:
        if self.templates is not None:
            from localet_core.simulate.templates import available_templates
            from localet_core.simulate.user_maps import is_map_entry, map_key, read_map_template

            maps = [str(t) for t in self.templates if is_map_entry(str(t))]
            ids = tuple(map_key(str(t)) if is_map_entry(str(t)) else str(t).lower() for t in self.templates)
            known = available_templates()
            unknown = [t for t in ids if t not in known and not is_map_entry(t)]
            if not ids or unknown:
                got = ", ".join(self.templates) or "none"
                raise FieldError("templates", f"expected ids among {', '.join(known)} or MRC maps "
                                              f"(.mrc, .map), got {got}")
            for entry in maps:
                read_map_template(entry)  # InputError naming the file when it cannot be used
            object.__setattr__(self, "templates", ids)
        if len(self.shape) != 3 or min(self.shape) < 8:
            raise FieldError("shape", f"expected three sizes (nz, ny, nx) of at least 8, got {tuple(self.shape)}")
        lo, hi = self.tilt_range
        if not -90 < lo < hi < 90:
            raise FieldError("tilt_range", f"need -90 < min < max < 90 degrees, got ({lo:g}, {hi:g})")
        if not self.tilt_step > 0:
            raise FieldError("tilt_step", f"must be positive, got {self.tilt_step:g}")
        if self.family not in FAMILY_NAMES:
            raise FieldError("family", f"must be one of {', '.join(FAMILY_NAMES)}, got {self.family!r}")
        if self.optics not in OPTICS_NAMES:
            raise FieldError("optics", f"must be one of {', '.join(OPTICS_NAMES)}, got {self.optics!r}")
        for name in ("voxel_size", "dose"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise FieldError(name, f"must be a positive number, got {value:g}")
        defocus = self.defocus_um if isinstance(self.defocus_um, (tuple, list)) else (self.defocus_um,)
        if not all(math.isfinite(d) and d >= 0 for d in defocus):
            raise FieldError("defocus_um", f"must be an underfocus >= 0 um, got {self.defocus_um}")
        if self.thickness_nm is not None:
            ice = self.thickness_nm if isinstance(self.thickness_nm, (tuple, list)) else (self.thickness_nm,)
            if not all(math.isfinite(t) and t > 0 for t in ice):
                raise FieldError("thickness_nm", f"must be positive, got {self.thickness_nm}")
        if not (math.isfinite(self.misalign_px) and self.misalign_px >= 0):
            raise FieldError("misalign_px", f"must be >= 0, got {self.misalign_px:g}")
        need = SIMULATION_BYTES_PER_VOXEL * math.prod(int(n) for n in self.shape)
        have = physical_memory()
        if have and need > have:
            raise FieldError("shape", f"a field of view of {tuple(self.shape)} voxels needs at least "
                                      f"{need / 2**30:.1f} GiB of memory, more than this machine's "
                                      f"{have / 2**30:.1f} GiB")

    @property
    def angles(self):
        """``(n_views,)`` float64 tilt angles in degrees, ``min`` to ``max`` by ``tilt_step``."""
        import numpy as np

        lo, hi = self.tilt_range
        return np.round(np.arange(lo, hi + 1e-6, self.tilt_step), 4)
