"""Cellular phantoms: an ice slab with membranes, filaments, macromolecules and gold beads.

Conventions (see ``docs/geometry.md``): volumes are numpy order ``V[z, y, x]``, Z
along the beam, the tilt axis along Y. Voxel centres sit at ``(i - (n - 1) / 2) * voxel_size``
(A) on each axis.

Units: potentials in Volts. ``Phantom.volume`` is the *excess* potential over vitreous ice inside
the slab (zero outside it, where there is vacuum); ``Phantom.ice`` is the ice alone (about
4.57 V inside the slab, soft one-voxel edges). The total specimen potential is
``volume + ice``. A projector's line integral of it, times the voxel size (A), is in V*A; times
the interaction constant (:func:`localet_core.simulate.optics.interaction_constant`, rad/(V*A))
it is the phase shift.

Padding along X: real lamellae extend beyond the field of view, so rays at high tilt cross
material that the FOV does not show: a detector row of ``nx`` pixels at tilt theta sees
``nx / cos(theta)`` of the specimen, and its edge rays cross the slab over ``thickness *
tan(theta)`` more. With ``tilt_max_deg`` set, the phantom is generated with
``pad_x = ceil((thickness / 2) * tan(tilt_max) / voxel_size + (nx / 2) * (1 / cos(tilt_max) - 1))``
extra voxels on *each* side of X:
``volume.shape == (nz, ny, nx + 2 * pad_x)``. The field of view is
``volume[..., pad_x:pad_x + nx]`` (:meth:`Phantom.crop`); since the padding is symmetric, the
centres (and the tilt axis) of the padded and cropped volumes coincide, so projecting the padded
volume and keeping the central ``nx`` detector columns gives the FOV's tilt series.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .templates import (
    available_templates,
    ice_potential,
    output_size,
    place_template,
    quantise_scale,
    random_rotation,
    template_radius,
)
from .user_maps import is_map_entry, read_map_template

__all__ = ["Phantom", "PhantomConfig", "make_phantom", "phantom_config", "FAMILIES", "OBJECT_TYPES"]

OBJECT_TYPES = ("sheet", "vesicle", "microtubule", "actin", "bead", "particle", "cell")

Count = Union[int, Tuple[int, int]]
Range = Union[float, Tuple[float, float]]


def _as_tuple(value: Any) -> Any:
    """Lists (e.g. from JSON) as tuples, so a config stays hashable; anything else as given."""
    return tuple(value) if isinstance(value, list) else value


@dataclass(frozen=True)
class PhantomConfig:
    """What a phantom holds, as values or ``(lo, hi)`` ranges drawn per seed.

    The defaults are the ``"default"`` preset (:data:`FAMILIES`). Counts are ints or inclusive
    ``(lo, hi)`` ranges; other ranges are uniform.

    Attributes:
        family: the preset's name, recorded in ``Phantom.params``.
        templates: template ids (see :func:`available_templates`) for the crowded particles.
        object_types: subset of :data:`OBJECT_TYPES` to include.
        n_sheets, n_vesicles, n_microtubules, n_actin, n_beads: counts of the analytic objects.
        crowding: target fraction of slab voxels covered by particles.
        template_scale: size factor of each particle, drawn log-uniformly from ``(lo, hi)``
            (a single value is ``(value, value)``; 1 keeps the molecules' true sizes).
        mix_templates: draw each specimen's template probabilities from a Dirichlet(1) (some
            specimens nearly pure) instead of using a uniform mix.
        thickness_nm: ice thickness, nm; None: uniform in (0.05, 0.085) of ``nz * voxel_size``
            (A), i.e. (0.5, 0.85) of the box height.
        slab_tilt_deg: tilt of the slab normal away from Z (deg), random azimuth.
        vesicle_radius_nm, bead_diameter_nm: sizes, nm.
        overlap_tolerance: largest fraction of an object's voxels that may overlap earlier
            objects (or, for particles and beads, lie outside the slab).
        max_failures: consecutive rejections after which a template is no longer tried.
        n_cells: cell bodies (0 or 1): a membrane-bounded ellipsoid in the ice whose inside
            (the cytoplasm) holds the particles and the continuous background; the rest of the
            slab is plain ice (with the membranes, filaments and beads of the other counts).
        cell_semi_axes_nm: the cell's two lateral semi-axes, nm, each drawn from the range (at a
            random azimuth); its centre is drawn within the middle half of the field of view.
        cell_height: the cell's semi-axis along the slab normal, as a fraction of the ice's
            half-thickness (minus the membrane).
        background_v: mean excess potential (V) of a continuous background of small proteins
            where no object lies: inside the cell, or in the whole slab without one. A
            log-normal random field of correlation length ``background_scale_nm``; 0 = plain
            ice between the objects (every preset but ``cell``).
        background_scale_nm: the background field's Gaussian correlation length, nm.
        bead_density_per_um2: gold beads per um^2 of the padded slab (a Poisson count, replacing
            ``n_beads``); None: ``n_beads``.

    Raises:
        ValueError: an unknown template or object type, or a template scale not > 0 with
            lo <= hi.
    """

    family: str = "default"
    templates: Tuple[str, ...] = ("4v5d", "3jb9", "4v1w")
    object_types: Tuple[str, ...] = OBJECT_TYPES
    n_sheets: Count = (0, 1)
    n_vesicles: Count = (0, 3)
    n_microtubules: Count = (0, 2)
    n_actin: Count = (0, 4)
    n_beads: Count = (0, 3)
    crowding: Range = (0.05, 0.2)
    template_scale: Range = (1.0, 1.0)
    mix_templates: bool = False
    thickness_nm: Optional[Range] = None
    slab_tilt_deg: Range = (0.0, 3.0)
    vesicle_radius_nm: Range = (15.0, 60.0)
    bead_diameter_nm: Range = (5.0, 10.0)
    overlap_tolerance: float = 0.02
    max_failures: int = 30
    n_cells: Count = 0
    cell_semi_axes_nm: Range = (150.0, 300.0)
    cell_height: Range = (0.6, 0.95)
    background_v: Range = 0.0
    background_scale_nm: float = 2.5
    bead_density_per_um2: Optional[Range] = None

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _as_tuple(getattr(self, f.name)))
        object.__setattr__(self, "templates", tuple(self.templates))
        object.__setattr__(self, "object_types", tuple(self.object_types))
        known = available_templates()
        for t in self.templates:
            if is_map_entry(t):
                read_map_template(t)  # a map of the user's: readable, with a molecule in it
            elif t.lower() not in known:
                raise ValueError(f"unknown template {t!r}; available: {', '.join(known)}")
        for o in self.object_types:
            if o not in OBJECT_TYPES:
                raise ValueError(f"unknown object type {o!r}; choose from {', '.join(OBJECT_TYPES)}")
        scale = self.template_scale
        scale = (float(scale), float(scale)) if not isinstance(scale, (tuple, list)) else \
            (float(scale[0]), float(scale[1]))
        if not 0 < scale[0] <= scale[1]:
            raise ValueError(f"template_scale must be > 0 with lo <= hi, got {scale}")
        object.__setattr__(self, "template_scale", scale)


# Presets. "default" is the training family; "shifted" uses other templates, object types and
# crowding, for a test set that is not drawn from the training distribution.
FAMILIES: Dict[str, PhantomConfig] = {
    "default": PhantomConfig(),
    # training breadth: the default family's templates with more membranes, filaments and
    # crowding (the shifted test family's templates stay unseen)
    "diverse": PhantomConfig(family="diverse", n_sheets=(0, 2), n_vesicles=(0, 4), n_actin=(0, 8),
                             crowding=(0.05, 0.3)),
    "shifted": PhantomConfig(family="shifted", templates=("6z6u", "6qt9"),
                             object_types=("sheet", "vesicle", "actin", "particle"),
                             n_sheets=(1, 2), n_vesicles=(1, 4), n_microtubules=0, n_actin=(2, 8),
                             n_beads=0, crowding=(0.1, 0.3)),
    # training breadth in size: the diverse preset with every particle enlarged or shrunk by a
    # log-uniform factor (0.5-3x: 15-90 nm ribosome-like bodies, 7-40 nm ferritin-like shells),
    # and each specimen its own mix of the templates (Dirichlet weights: some specimens are
    # nearly pure), so the learned prior is not tied to three molecular sizes and one mixture.
    # Still the default templates.
    "broad": PhantomConfig(family="broad", n_sheets=(0, 2), n_vesicles=(0, 4), n_actin=(0, 8),
                           n_beads=(0, 2), crowding=(0.05, 0.3), template_scale=(0.5, 3.0),
                           mix_templates=True),
    # training breadth in crowding: the broad preset's objects in dense crowds of particles near
    # their true sizes (0.6-1.5x; each specimen its own template mix, some nearly pure): samples
    # like purified complexes or a crowded cytoplasm, where most of the signal is the texture of
    # thousands of 10-40 nm particles. Still the default templates.
    "dense": PhantomConfig(family="dense", n_sheets=(0, 2), n_vesicles=(0, 4), n_actin=(0, 8),
                           n_beads=(0, 2), crowding=(0.15, 0.3), template_scale=(0.6, 1.5),
                           mix_templates=True),
    # calibrated against a real cell (docs/simulation.md, "Calibration against real images"): a
    # membrane-bounded cell body filling most of a thick ice layer, its cytoplasm crowded by the
    # broad preset's particles (20-35 % by volume) over a continuous background of small
    # proteins, a slab tilted up to 5 degrees, and gold beads per area (about 60 per um^2).
    "cell": PhantomConfig(family="cell", object_types=OBJECT_TYPES, n_sheets=0, n_vesicles=(0, 3),
                          n_microtubules=0, n_actin=(0, 4), crowding=(0.2, 0.35),
                          template_scale=(0.5, 2.0), mix_templates=True, slab_tilt_deg=(0.0, 5.0),
                          n_cells=1, background_v=(0.1, 0.25), bead_density_per_um2=(30.0, 90.0)),
}


def phantom_config(family: Union[str, PhantomConfig] = "default", **overrides: Any) -> PhantomConfig:
    """A preset (its name in :data:`FAMILIES`, or a config) with the ``overrides`` that are not
    None (:class:`PhantomConfig` field names).

    Raises:
        ValueError: an unknown family, or an invalid value (see :class:`PhantomConfig`).
    """
    if isinstance(family, PhantomConfig):
        base = family
    elif family in FAMILIES:
        base = FAMILIES[family]
    else:
        raise ValueError(f"unknown family {family!r}; choose from {', '.join(FAMILIES)}")
    return dataclasses.replace(base, **{k: v for k, v in overrides.items() if v is not None})


# Excess potentials over ice (V) and sizes (A) of the analytic objects.
PROTEIN_EXCESS_V = 1.0      # packed protein relative to vitreous ice (templates give ~0.7-1.2)
GOLD_EXCESS_V = 25.0        # gold's mean inner potential (~30 V) minus ice
# bilayer: (offset from mid-plane A, Gaussian sigma A, amplitude V): two head-group leaflets
# denser than ice, the hydrocarbon core lighter than ice.
BILAYER = ((-19.0, 4.0, 1.6), (19.0, 4.0, 1.6), (0.0, 7.0, -0.5))
MT_R_IN, MT_R_OUT = 85.0, 125.0   # microtubule wall radii, A (25 nm outer diameter)
ACTIN_R = 35.0                     # actin filament radius, A (7 nm diameter)

@dataclass
class Phantom:
    """A simulated specimen.

    Attributes:
        volume: (nz, ny, nx_padded) float32, excess potential over ice inside the slab, V.
        ice: (nz, ny, nx_padded) float32, the ice slab alone, V.
        slab_mask: (nz, ny, nx_padded) bool, voxels whose centre is inside the slab.
        labels: (nz, ny, nx_padded) int16, 0 = ice or vacuum, k > 0 = the k-th placed object
            (``params['objects'][k - 1]``) claimed this voxel.
        params: every parameter (resolved from ranges) and the seed; JSON-serialisable.
        pad_x: voxels of padding on each side of X; the field of view is ``[..., pad_x:pad_x+nx]``.
    """

    volume: torch.Tensor
    ice: torch.Tensor
    slab_mask: torch.Tensor
    labels: torch.Tensor
    params: Dict[str, Any] = field(default_factory=dict)
    pad_x: int = 0

    def crop(self, t: torch.Tensor) -> torch.Tensor:
        """The field-of-view part (..., nx) of a padded (..., nx + 2 * pad_x) tensor."""
        if self.pad_x == 0:
            return t
        return t[..., self.pad_x:t.shape[-1] - self.pad_x]


# --------------------------------------------------------------------------- helpers

def _draw(rng: np.random.Generator, value: Union[Count, Range], integer: bool):
    """A value, or a uniform draw from a (lo, hi) range (inclusive for integers)."""
    if isinstance(value, (tuple, list)):
        lo, hi = value
        return int(rng.integers(lo, hi + 1)) if integer else float(rng.uniform(lo, hi))
    return int(value) if integer else float(value)


def _axes(shape: Sequence[int], voxel: float, lo: Sequence[int] = (0, 0, 0),
          hi: Optional[Sequence[int]] = None) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Broadcastable centred coordinates (A) z[:,1,1], y[1,:,1], x[1,1,:] of a box [lo, hi)."""
    hi = shape if hi is None else hi
    out = []
    for a in range(3):
        c = (shape[a] - 1) / 2.0
        v = (torch.arange(lo[a], hi[a], dtype=torch.float32) - c) * voxel
        view = [1, 1, 1]
        view[a] = -1
        out.append(v.view(view))
    return out[0], out[1], out[2]


def _smooth_step(x: torch.Tensor, width: float) -> torch.Tensor:
    """0 -> 1 over about one ``width`` around x = 0 (band-limits hard edges to the grid)."""
    return torch.sigmoid(x * (4.0 / max(width, 1e-6)))


def _bilayer(d: torch.Tensor, voxel: float) -> torch.Tensor:
    """Bilayer profile (V) at signed distance d (A) from the mid-plane.

    Each Gaussian is widened by the voxel (sigma^2 + (0.5 voxel)^2) with its area kept, so the
    two leaflets stay as separable as the grid allows without aliasing.
    """
    out = torch.zeros_like(d)
    for mu, sigma, amp in BILAYER:
        s = math.sqrt(sigma ** 2 + (0.5 * voxel) ** 2)
        out += (amp * sigma / s) * torch.exp(-((d - mu) ** 2) / (2 * s * s))
    return out


def _unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)


def _perp_frame(u: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    a = np.array([1.0, 0.0, 0.0]) if abs(u[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    e1 = np.cross(u, a)
    e1 /= np.linalg.norm(e1)
    return e1, np.cross(u, e1)


class _Canvas:
    """The volume being built: values, instance labels, slab, and the object list."""

    def __init__(self, shape: Tuple[int, int, int], voxel: float, slab: torch.Tensor,
                 slab_soft: torch.Tensor, tolerance: float) -> None:
        self.shape = shape
        self.voxel = voxel
        self.volume = torch.zeros(shape, dtype=torch.float32)
        self.labels = torch.zeros(shape, dtype=torch.int16)
        self.slab = slab
        self.slab_soft = slab_soft
        self.tolerance = tolerance
        self.objects: List[Dict[str, Any]] = []

    def try_add(self, lo: Sequence[int], values: torch.Tensor, support: torch.Tensor,
                info: Dict[str, Any], inside_slab: bool) -> bool:
        """Add ``values`` at box origin ``lo`` (may stick out of the volume: it is clipped) if
        its support overlaps earlier objects (and, with ``inside_slab``, the outside of the
        slab) on at most ``tolerance`` of its voxels. Returns whether it was added."""
        sl_src, sl_dst = [], []
        for a in range(3):
            s0 = max(0, -lo[a])
            d0 = max(0, lo[a])
            d1 = min(self.shape[a], lo[a] + values.shape[a])
            if d1 <= d0:
                return False
            sl_src.append(slice(s0, s0 + d1 - d0))
            sl_dst.append(slice(d0, d1))
        src, dst = tuple(sl_src), tuple(sl_dst)
        sup = support[src]
        n_sup = int(sup.sum())
        if n_sup == 0:
            return False
        taken = self.labels[dst] != 0
        if inside_slab:
            taken = taken | ~self.slab[dst]
        overlap = int((taken & sup).sum()) / n_sup
        if overlap > self.tolerance:
            return False
        self.objects.append({**info, "overlap_fraction": round(overlap, 4),
                             "voxels": n_sup})
        k = len(self.objects)
        lab = self.labels[dst]
        lab[sup & (lab == 0)] = k
        self.volume[dst] += values[src]
        return True


# --------------------------------------------------------------------------- objects

def _add_sheet(cv: _Canvas, rng: np.random.Generator) -> bool:
    """A gently curved membrane sheet (paraboloid cap) through the whole volume."""
    shape, v = cv.shape, cv.voxel
    extent = np.array(shape) * v
    n = _unit(rng)
    # membranes in lamellae are mostly not flat in the slab plane: keep the normal away from z
    n[0] *= 0.5
    n /= np.linalg.norm(n)
    c = (rng.uniform(-0.4, 0.4, size=3) * extent).astype(np.float64)
    kappa = rng.uniform(-1.0, 1.0) / 5000.0  # curvature, 1/A (radius >= 500 nm)
    z, y, x = _axes(shape, v)
    rz, ry, rx = z - c[0], y - c[1], x - c[2]
    dn = n[0] * rz + n[1] * ry + n[2] * rx
    rho2 = rz ** 2 + ry ** 2 + rx ** 2 - dn ** 2
    d = dn - 0.5 * kappa * rho2
    vals = _bilayer(d, v) * cv.slab_soft
    sup = (d.abs() <= 30.0) & cv.slab
    return cv.try_add((0, 0, 0), vals, sup, {"type": "sheet", "normal_zyx": n.round(4).tolist(),
                                              "point_A": c.round(1).tolist(),
                                              "curvature_per_A": round(kappa, 7)}, False)


def _add_vesicle(cv: _Canvas, rng: np.random.Generator, radius_nm: Range) -> bool:
    """A spherical bilayer vesicle (its inside is ice)."""
    shape, v = cv.shape, cv.voxel
    r = _draw(rng, radius_nm, False) * 10.0
    c_idx = rng.uniform(0, 1, size=3) * (np.array(shape) - 1)
    c = (c_idx - (np.array(shape) - 1) / 2.0) * v
    half = int(math.ceil((r + 40.0) / v)) + 1
    lo = [int(math.floor(c_idx[a])) - half for a in range(3)]
    hi = [lo[a] + 2 * half + 2 for a in range(3)]
    z, y, x = _axes(shape, v, lo, hi)
    d = torch.sqrt((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2) - r
    box = _clip_box(cv, lo, hi)
    vals = _bilayer(d, v) * box[1]
    sup = (d.abs() <= 30.0) & box[0]
    return cv.try_add(lo, vals, sup, {"type": "vesicle", "centre_A": c.round(1).tolist(),
                                      "radius_A": round(r, 1)}, False)


def _clip_box(cv: _Canvas, lo: Sequence[int], hi: Sequence[int]):
    """Slab (hard, soft) over an arbitrary box, zero outside the volume."""
    size = [hi[a] - lo[a] for a in range(3)]
    hard = torch.zeros(size, dtype=torch.bool)
    soft = torch.zeros(size, dtype=torch.float32)
    src, dst = [], []
    for a in range(3):
        d0, d1 = max(0, lo[a]), min(cv.shape[a], hi[a])
        if d1 <= d0:
            return hard, soft
        src.append(slice(d0 - lo[a], d1 - lo[a]))
        dst.append(slice(d0, d1))
    hard[tuple(src)] = cv.slab[tuple(dst)]
    soft[tuple(src)] = cv.slab_soft[tuple(dst)]
    return hard, soft


def _add_filament(cv: _Canvas, rng: np.random.Generator, kind: str) -> bool:
    """A straight microtubule (hollow, 13 protofilaments, 8 nm dimer repeat) or actin filament
    (solid, 7 nm, ~36 nm crossover modulation) crossing the volume, clipped by the slab."""
    shape, v = cv.shape, cv.voxel
    extent = np.array(shape) * v
    u = _unit(rng)
    u[0] *= 0.3  # filaments in a lamella run mostly in the slab plane
    u /= np.linalg.norm(u)
    c = rng.uniform(-0.45, 0.45, size=3) * extent
    e1, e2 = _perp_frame(u)
    z, y, x = _axes(shape, v)
    rz, ry, rx = z - c[0], y - c[1], x - c[2]
    t = u[0] * rz + u[1] * ry + u[2] * rx
    p1 = e1[0] * rz + e1[1] * ry + e1[2] * rx
    p2 = e2[0] * rz + e2[1] * ry + e2[2] * rx
    rho = torch.sqrt(p1 ** 2 + p2 ** 2)
    w = 0.5 * v
    if kind == "microtubule":
        phi = torch.atan2(p2, p1)
        wall = _smooth_step(rho - MT_R_IN, w) * _smooth_step(MT_R_OUT - rho, w)
        mod = (1.0 + 0.25 * torch.cos(13.0 * phi)) * (1.0 + 0.15 * torch.cos(2 * math.pi * t / 80.0))
        vals = PROTEIN_EXCESS_V * wall * mod
        sup = (rho >= MT_R_IN - 5.0) & (rho <= MT_R_OUT + 5.0)
        info = {"type": "microtubule", "r_in_A": MT_R_IN, "r_out_A": MT_R_OUT}
    else:
        body = _smooth_step(ACTIN_R - rho, w)
        vals = PROTEIN_EXCESS_V * body * (1.0 + 0.25 * torch.cos(2 * math.pi * t / 360.0))
        sup = rho <= ACTIN_R + 5.0
        info = {"type": "actin", "radius_A": ACTIN_R}
    info.update({"direction_zyx": u.round(4).tolist(), "point_A": c.round(1).tolist()})
    return cv.try_add((0, 0, 0), vals * cv.slab_soft, sup & cv.slab, info, False)


def _add_bead(cv: _Canvas, rng: np.random.Generator, diameter_nm: Range,
              slab_centre: np.ndarray, normal: np.ndarray, thickness: float) -> bool:
    """A gold bead near one of the slab surfaces (where fiducials sit)."""
    shape, v = cv.shape, cv.voxel
    r = 0.5 * _draw(rng, diameter_nm, False) * 10.0
    side = 1.0 if rng.uniform() < 0.5 else -1.0
    depth = thickness / 2.0 - r - v - rng.uniform(0.0, 50.0)
    if depth < 0:
        return False
    e1, e2 = _perp_frame(normal)
    extent = np.array(shape) * v
    c = slab_centre + side * depth * normal + \
        rng.uniform(-0.5, 0.5) * extent[2] * e1 + rng.uniform(-0.5, 0.5) * extent[2] * e2
    c_idx = c / v + (np.array(shape) - 1) / 2.0
    half = int(math.ceil(r / v)) + 2
    lo = [int(math.floor(c_idx[a])) - half for a in range(3)]
    hi = [lo[a] + 2 * half + 2 for a in range(3)]
    z, y, x = _axes(shape, v, lo, hi)
    d = torch.sqrt((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2)
    vals = GOLD_EXCESS_V * _smooth_step(r - d, 0.5 * v)
    sup = d <= r + 0.5 * v
    return cv.try_add(lo, vals, sup, {"type": "bead", "centre_A": c.round(1).tolist(),
                                      "radius_A": round(r, 1)}, True)


def _add_cell(cv: _Canvas, rng: np.random.Generator, c: "PhantomConfig", slab_centre: np.ndarray,
              normal: np.ndarray, thickness: float) -> Optional[torch.Tensor]:
    """A cell body: an ellipsoid bounded by a bilayer, its short axis along the slab normal.

    Returns the cytoplasm (bool, the canvas's shape: inside the membrane), or None when the
    ice is too thin for a cell. The membrane's signed distance is the ellipsoid's first-order
    one, ``(rho - 1) / |grad rho|``, exact on the surface (where the bilayer lives).
    """
    shape, v = cv.shape, cv.voxel
    a = 10.0 * _draw(rng, c.cell_semi_axes_nm, False)
    b = 10.0 * _draw(rng, c.cell_semi_axes_nm, False)
    h = _draw(rng, c.cell_height, False) * (thickness / 2.0 - 40.0)
    if h < 100.0:
        return None
    phi = rng.uniform(0, 2 * math.pi)
    fov = np.array(shape) * v
    off = rng.uniform(-0.25, 0.25, size=2) * fov[1:]
    e1, e2 = _perp_frame(normal)
    # e1, e2: an orthonormal frame in the slab plane, turned by phi
    u1 = math.cos(phi) * e1 + math.sin(phi) * e2
    u2 = -math.sin(phi) * e1 + math.cos(phi) * e2
    centre = slab_centre + np.array([0.0, off[0], off[1]])
    centre[0] = slab_centre[0] - (normal[1] * off[0] + normal[2] * off[1]) / normal[0]
    z, y, x = _axes(shape, v)
    rz, ry, rx = z - centre[0], y - centre[1], x - centre[2]
    p = [q[0] * rz + q[1] * ry + q[2] * rx for q in (u1, u2, normal)]
    axes = (a, b, h)
    rho = torch.sqrt(sum((p[i] / axes[i]) ** 2 for i in range(3)))
    grad = torch.sqrt(sum((p[i] / axes[i] ** 2) ** 2 for i in range(3))) / rho.clamp_min(1e-6)
    d = (rho - 1.0) / grad.clamp_min(1e-9)
    vals = _bilayer(d, v) * cv.slab_soft
    sup = (d.abs() <= 30.0) & cv.slab
    ok = cv.try_add((0, 0, 0), vals, sup, {"type": "cell", "centre_A": centre.round(1).tolist(),
                                           "semi_axes_A": [round(a, 1), round(b, 1), round(h, 1)],
                                           "azimuth_deg": round(math.degrees(phi), 2)}, False)
    return ((d < -30.0) & cv.slab) if ok else None


def _background(cv: _Canvas, gen: torch.Generator, mean_v: float, scale_nm: float,
                region: torch.Tensor) -> torch.Tensor:
    """The continuous background of small proteins (V, the canvas's shape): a log-normal field
    (log-std 0.5, Gaussian correlation ``scale_nm``) of mean ``mean_v`` on ``region`` where no
    object lies, zero elsewhere."""
    sigma = max(scale_nm * 10.0 / cv.voxel, 0.5)
    noise = torch.randn(cv.shape, generator=gen)
    k = [torch.fft.fftfreq(n) for n in cv.shape]
    kz, ky = k[0].view(-1, 1, 1), k[1].view(1, -1, 1)
    kx = torch.fft.rfftfreq(cv.shape[2]).view(1, 1, -1)
    g = torch.exp(-2.0 * (math.pi * sigma) ** 2 * (kz ** 2 + ky ** 2 + kx ** 2))
    field = torch.fft.irfftn(torch.fft.rfftn(noise) * g, s=cv.shape)
    field = field / field.std().clamp_min(1e-12)
    s = 0.5
    out = mean_v * torch.exp(s * field - 0.5 * s * s)
    return out * (region & (cv.labels == 0)).float()


def _add_particles(cv: _Canvas, rng: np.random.Generator, gen: torch.Generator,
                   templates: Sequence[str], crowding: float, slab_voxels: int,
                   max_failures: int, slab_centre: np.ndarray, normal: np.ndarray,
                   thickness: float, scale_range: Tuple[float, float] = (1.0, 1.0),
                   weights: Optional[Sequence[float]] = None, region: Optional[torch.Tensor] = None) -> float:
    """Place templates at random orientations until ``crowding`` of the slab is taken (by
    particle support) or every template was rejected ``max_failures`` times in a row. Returns the reached
    fraction of slab voxels. Each particle is scaled by a factor drawn log-uniformly from
    ``scale_range`` (capped so that it fits in the ice); templates are drawn with probabilities
    proportional to ``weights`` (default: uniform). With ``region`` (a bool volume within the
    slab, e.g. a cell's cytoplasm) each centre is redrawn (up to 64 times) until it lies in the
    region, so tries outside it do not count as failures (without it the draws are those of the
    first presets: their seeds give the same specimens)."""
    shape, v = cv.shape, cv.voxel
    centre_idx = (np.array(shape) - 1) / 2.0
    target = crowding * slab_voxels
    radius = {t: template_radius(t) for t in templates}
    # the atom-extent radius overstates the envelope; 0.7 of it leaves the rest to the overlap
    # test. Templates that cannot fit in the ice are skipped instead of failing 30 times.
    lo_s, hi_s = (float(x) for x in scale_range)
    usable = [t for t in templates if thickness / 2.0 - 0.7 * radius[t] * lo_s > 0]
    placed = 0
    failures = {t: 0 for t in usable}

    def draw_scale(t: str) -> float:
        if lo_s == hi_s == 1.0:
            return 1.0
        fit = 0.95 * thickness / 2.0 / (0.7 * radius[t])
        s = math.exp(rng.uniform(math.log(lo_s), math.log(hi_s)))
        return quantise_scale(min(s, max(lo_s, fit)))

    def position(t: str, s: float) -> np.ndarray:
        """A centre (voxel indices, float) inside the slab, uniform along it."""
        half = max(0.0, thickness / 2.0 - 0.7 * radius[t] * s)
        dn = rng.uniform(-half, half)
        yx = (rng.uniform(0, 1, size=2) * (np.array(shape[1:]) - 1) - centre_idx[1:]) * v
        rel = yx - slab_centre[1:]
        z = slab_centre[0] + (dn - normal[1] * rel[0] - normal[2] * rel[1]) / normal[0]
        return np.array([z, yx[0], yx[1]]) / v + centre_idx

    # a template is dropped after max_failures rejections in a row (big ones run out of room
    # first; each try of a virus costs a 91^3 interpolation), the rest go on filling
    while usable and placed < target:
        if weights is None:
            t = usable[int(rng.integers(len(usable)))]
        else:
            w = np.array([weights[templates.index(u)] for u in usable], dtype=np.float64)
            t = usable[int(rng.choice(len(usable), p=w / w.sum()))]
        s = draw_scale(t)
        m = output_size(t, v, s)
        rot = random_rotation(gen)
        frac = rng.uniform(0, 1, size=3)
        vals = place_template(t, v, rot, shift=tuple(frac.tolist()), out_size=m, scale=s)
        # support: the molecular envelope, where the low-passed potential is clearly above ice
        sup = vals > 0.1 * float(vals.max())
        ok = False
        # one rotation, a few positions: rotating costs more than testing a position
        for _ in range(4):
            point = position(t, s)
            if region is not None:
                for _ in range(64):
                    idx = np.clip(np.round(point).astype(int), 0, np.array(shape) - 1)
                    if bool(region[idx[0], idx[1], idx[2]]):
                        break
                    point = position(t, s)
            base = np.floor(point - frac).astype(int)
            lo = [int(base[a]) - (m - 1) // 2 for a in range(3)]
            centre = ((base + frac) - centre_idx) * v
            info = {"type": "particle", "template": t, "centre_A": centre.round(1).tolist(),
                    "rotation_xyz": rot.double().numpy().round(5).tolist()}
            if s != 1.0:
                info["scale"] = round(s, 4)
            if cv.try_add(lo, vals, sup, info, True):
                placed += cv.objects[-1]["voxels"]
                ok = True
                break
        failures[t] = 0 if ok else failures[t] + 1
        if failures[t] >= max_failures:
            usable.remove(t)
    return placed / max(slab_voxels, 1)


# --------------------------------------------------------------------------- main entry

def _single_threaded(fn):
    """Run ``fn`` with torch single-threaded, then restore the thread count.

    The phantom is built from thousands of small tensor operations; with intra-op threads they
    spend more time synchronising than computing (15x slower measured on 2 busy cores). Batch
    parallelism belongs to DataLoader workers instead.
    """
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any):
        n = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(n)
    return wrapper


@_single_threaded
def make_phantom(shape: Sequence[int] = (64, 128, 128), voxel_size: float = 10.0,
                 seed: int = 0, *, family: Union[str, PhantomConfig] = "default",
                 tilt_max_deg: Optional[float] = None,
                 thickness_nm: Optional[Range] = None, slab_tilt_deg: Optional[Range] = None,
                 templates: Optional[Sequence[str]] = None,
                 object_types: Optional[Sequence[str]] = None,
                 crowding: Optional[Range] = None,
                 template_scale: Optional[Range] = None,
                 n_sheets: Optional[Count] = None, n_vesicles: Optional[Count] = None,
                 vesicle_radius_nm: Optional[Range] = None,
                 n_microtubules: Optional[Count] = None, n_actin: Optional[Count] = None,
                 n_beads: Optional[Count] = None, bead_diameter_nm: Optional[Range] = None,
                 overlap_tolerance: Optional[float] = None,
                 max_failures: Optional[int] = None) -> Phantom:
    """Simulate a cellular specimen in a tilted vitreous-ice slab.

    Args:
        shape: (nz, ny, nx) of the field of view, voxels; Z along the beam.
        voxel_size: A per voxel (templates are resampled to it; 5-20 A is sensible).
        seed: everything random derives from it (numpy for geometry, a torch.Generator for
            rotations), so the same arguments give the same phantom.
        family: a preset name from :data:`FAMILIES` ("default" for training, "shifted" for a
            test set with other templates and object types) or a :class:`PhantomConfig`.
        tilt_max_deg: if given, pad X by ceil((thickness/2) tan(tilt_max) / voxel_size) voxels on
            each side (see the module docstring); ``Phantom.crop`` returns the field of view.
        thickness_nm, slab_tilt_deg, templates, object_types, crowding, template_scale,
            n_sheets, n_vesicles, vesicle_radius_nm, n_microtubules, n_actin, n_beads,
            bead_diameter_nm, overlap_tolerance, max_failures: override the preset's
            :class:`PhantomConfig` field of that name (None: the preset's value).

    Returns:
        A :class:`Phantom`; ``params`` records every resolved parameter and the placed objects.

    Raises:
        ValueError: an unknown family, template or object type, or a bad template scale.

    Runs with one torch thread (restored afterwards): see :func:`_single_threaded`.
    """
    config = phantom_config(
        family, thickness_nm=thickness_nm, slab_tilt_deg=slab_tilt_deg, templates=templates,
        object_types=object_types, crowding=crowding, template_scale=template_scale,
        n_sheets=n_sheets, n_vesicles=n_vesicles, vesicle_radius_nm=vesicle_radius_nm,
        n_microtubules=n_microtubules, n_actin=n_actin, n_beads=n_beads,
        bead_diameter_nm=bead_diameter_nm, overlap_tolerance=overlap_tolerance,
        max_failures=max_failures)
    return _generate(config, shape, voxel_size, seed, tilt_max_deg)


def _generate(config: PhantomConfig, shape: Sequence[int], voxel_size: float, seed: int,
              tilt_max_deg: Optional[float]) -> Phantom:
    """:func:`make_phantom` from a resolved config (the draws, in a fixed order, from ``seed``)."""
    c = config
    nz, ny, nx = (int(s) for s in shape)
    v = float(voxel_size)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(int(seed))

    templates, object_types, scale = c.templates, c.object_types, c.template_scale

    def count(value: Count, kind: str) -> int:
        return _draw(rng, value, True) if kind in object_types else 0

    thickness = 10.0 * _draw(rng, (0.05 * nz * v, 0.085 * nz * v)
                             if c.thickness_nm is None else c.thickness_nm, False)  # A
    tilt = math.radians(_draw(rng, c.slab_tilt_deg, False))
    azimuth = rng.uniform(0, 2 * math.pi)
    normal = np.array([math.cos(tilt), math.sin(tilt) * math.sin(azimuth),
                       math.sin(tilt) * math.cos(azimuth)])  # (z, y, x)
    # keep the slab within the volume in z when it fits; otherwise centre it
    room = max(0.0, (nz * v - thickness) / 2.0 - v)
    slab_centre = np.array([rng.uniform(-0.5, 0.5) * room, 0.0, 0.0])

    pad_x = 0
    if tilt_max_deg is not None:
        # a detector row of nx pixels at tilt theta sees nx / cos(theta) of the specimen, and its
        # edge rays cross the slab over thickness * tan(theta) more: both must be specimen, not
        # vacuum, or the high-tilt views brighten towards their X edges (docs/simulation.md)
        t_max = math.radians(abs(tilt_max_deg))
        pad_x = int(math.ceil(thickness / 2.0 * math.tan(t_max) / v + nx / 2.0 * (1.0 / math.cos(t_max) - 1.0)))
    full = (nz, ny, nx + 2 * pad_x)

    z, y, x = _axes(full, v)
    d = normal[0] * (z - slab_centre[0]) + normal[1] * (y - slab_centre[1]) + \
        normal[2] * (x - slab_centre[2])
    slab_mask = d.abs() <= thickness / 2.0
    slab_soft = _smooth_step(thickness / 2.0 - d.abs(), 0.5 * v)
    v_ice = ice_potential()
    ice = (v_ice * slab_soft).float()

    cv = _Canvas(full, v, slab_mask, slab_soft, c.overlap_tolerance)
    counts = {
        "n_sheets": count(c.n_sheets, "sheet"),
        "n_vesicles": count(c.n_vesicles, "vesicle"),
        "n_microtubules": count(c.n_microtubules, "microtubule"),
        "n_actin": count(c.n_actin, "actin"),
        "n_beads": count(c.n_beads, "bead") if c.bead_density_per_um2 is None else 0,
    }
    bead_density = None
    if c.bead_density_per_um2 is not None and "bead" in object_types:
        bead_density = _draw(rng, c.bead_density_per_um2, False)
        area_um2 = full[1] * full[2] * (v / 1e4) ** 2
        counts["n_beads"] = int(rng.poisson(bead_density * area_um2))
    # the cell comes first: the other objects find room around its membrane
    cytoplasm = None
    n_cells = count(c.n_cells, "cell")
    for _ in range(n_cells):
        cytoplasm = _add_cell(cv, rng, c, slab_centre, normal, thickness)
    crowd = _draw(rng, c.crowding, False) if "particle" in object_types else 0.0
    tries = 5  # each analytic object gets a few chances to find room
    for _ in range(counts["n_sheets"]):
        any(_add_sheet(cv, rng) for _ in range(tries))
    for _ in range(counts["n_microtubules"]):
        any(_add_filament(cv, rng, "microtubule") for _ in range(tries))
    for _ in range(counts["n_vesicles"]):
        any(_add_vesicle(cv, rng, c.vesicle_radius_nm) for _ in range(tries))
    for _ in range(counts["n_actin"]):
        any(_add_filament(cv, rng, "actin") for _ in range(tries))
    for _ in range(counts["n_beads"]):
        any(_add_bead(cv, rng, c.bead_diameter_nm, slab_centre, normal, thickness)
            for _ in range(tries))
    # Dirichlet(1) weights: a uniform draw over all mixtures of the templates
    mix = rng.dirichlet(np.ones(len(templates))) if c.mix_templates and crowd > 0 else None
    # particles go into the cytoplasm when there is a cell (the canvas's "slab" is narrowed to
    # it while they are placed), else anywhere in the slab
    region = slab_mask if cytoplasm is None else cytoplasm
    slab_voxels = int(region.sum())
    cv.slab = region
    reached = _add_particles(cv, rng, gen, templates, crowd, slab_voxels, c.max_failures,
                             slab_centre, normal, thickness, scale, mix, cytoplasm) \
        if crowd > 0 and slab_voxels > 0 else 0.0
    cv.slab = slab_mask
    mean_bg = _draw(rng, c.background_v, False) if c.background_v != 0.0 else 0.0
    if mean_bg > 0:
        cv.volume += _background(cv, gen, mean_bg, c.background_scale_nm, region)

    # nothing outside the slab (vacuum); particles are inside already, membranes are clipped
    volume = cv.volume * slab_soft
    params: Dict[str, Any] = {
        "seed": int(seed), "family": c.family, "shape": [nz, ny, nx], "voxel_size_A": v,
        "padded_shape": list(full), "pad_x": pad_x, "tilt_max_deg": tilt_max_deg,
        "thickness_nm": round(thickness / 10.0, 3),
        "slab_tilt_deg": round(math.degrees(tilt), 3),
        "slab_normal_zyx": normal.round(6).tolist(),
        "slab_centre_A": slab_centre.round(2).tolist(),
        "ice_potential_V": v_ice, "templates": list(templates),
        "object_types": list(object_types), "crowding_target": round(crowd, 4),
        "crowding_reached": round(reached, 4), "template_scale": list(scale),
        "template_weights": None if mix is None else mix.round(4).tolist(),
        "overlap_tolerance": c.overlap_tolerance,
        "vesicle_radius_nm": c.vesicle_radius_nm if not isinstance(c.vesicle_radius_nm, tuple)
        else list(c.vesicle_radius_nm),
        "bead_diameter_nm": c.bead_diameter_nm if not isinstance(c.bead_diameter_nm, tuple)
        else list(c.bead_diameter_nm),
        **counts,
        "n_cells": n_cells, "cell_made": cytoplasm is not None,
        "bead_density_per_um2": None if bead_density is None else round(bead_density, 2),
        "background_V": round(mean_bg, 4),
        "units": "V (excess potential over ice); lengths in A unless named _nm",
        "objects": cv.objects,
    }
    return Phantom(volume=volume.float().contiguous(), ice=ice.contiguous(),
                   slab_mask=slab_mask.contiguous(), labels=cv.labels, params=params,
                   pad_x=pad_x)
