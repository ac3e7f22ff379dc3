"""Fourier Shell Correlation (FSC) between two volumes, split by the missing wedge.

Conventions: volumes ``V[z, y, x]`` and the rfft Fourier grid, its frequencies (cycles/pixel),
shells and Hermitian weights are those of :mod:`localet_core.validation.fourier`; the missing
wedge is :func:`~localet_core.validation.wedge.missing_wedge_mask`. In addition:

* Shell ``i`` is reported at frequency ``i / N`` cycles/pixel (``N = max(nz, ny, nx)``), i.e. a
  resolution of ``pixel_size * N / i`` Angstrom.
* Sums are accumulated in float64, each rfft coefficient weighted by its Hermitian weight, so
  the voxel counts per shell are those of the full Fourier sphere, which is the ``n`` the
  half-bit criterion needs.
* An empty shell (possible in a wedge region near the origin) has FSC ``nan`` and count 0.

The FSC of shell ``i`` is ``Re(sum A conj(B)) / sqrt(sum |A|^2 sum |B|^2)`` over the shell.

Masks: a real-space soft mask (values in [0, 1]) multiplies both volumes before the FFT. It
removes noise from the solvent and so raises the FSC, but it also correlates the two masked
volumes through the mask's own shape (a sharp mask does so most): a masked FSC is an
optimistic figure, and must always be reported together with the mask used.

Missing wedge: see :func:`~localet_core.validation.wedge.missing_wedge_mask`. The wedge-split
FSCs are the same sums taken only over the Fourier voxels inside, or only outside, the missing
wedge of the tilt range: the outside curve measures agreement where the microscope measured
data; the inside curve measures agreement where any content was inferred (by a prior, a
network, or iterative reconstruction) or is absent. High inside-wedge FSC means the two volumes fill the wedge
*consistently*; it does not prove that the filling is correct.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from localet_core.contracts.fsc_star import CRITERIA, REGIONS
from localet_core.errors import InputError
from localet_core.validation.fourier import Shape3, axis_freqs, hermitian_weights, n_shells
from localet_core.validation.wedge import check_tilt_range, wedge_mask_xz

__all__ = [
    "CRITERIA",
    "REGIONS",
    "FSCResult",
    "Resolution",
    "shell_correlation",
    "half_bit_threshold",
    "crossing_frequency",
    "compute_fsc",
    "split_alternate_tilts",
]

# CRITERIA (resolution criteria) and REGIONS (all, outside/inside the missing wedge) are the
# labels of the FSC STAR table: localet_core.contracts.fsc_star defines them.

# Fourier voxels processed at once: about 170 bytes of temporaries each (complex128 copies,
# float64 terms, shell indices), so about 180 MB (4x that, 0.7 GB, was the peak of a 512^2 x 128 FSC)
_CHUNK_VOXELS = 1 << 20

TensorLike = Union[torch.Tensor, np.ndarray]


# --------------------------------------------------------------------------------------------
# Shell sums
# --------------------------------------------------------------------------------------------
def _as_volume(x: TensorLike, source: str) -> torch.Tensor:
    t = torch.as_tensor(x)
    if t.ndim != 3:
        raise InputError(source, f"expected a 3-D volume (nz, ny, nx), got shape {tuple(t.shape)}")
    if t.is_complex():
        raise InputError(source, "expected a real volume, got complex values")
    if not t.is_floating_point():
        t = t.to(torch.float32)
    if t.numel() == 0:
        raise InputError(source, "is empty")
    if not bool(torch.isfinite(t).all()):
        n_bad = int((~torch.isfinite(t)).sum())
        raise InputError(source, f"contains {n_bad} NaN or infinite value(s)")
    return t


def _check_pair(a: TensorLike, b: TensorLike, mask: Optional[TensorLike]
                ) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    a = _as_volume(a, "volume A")
    b = _as_volume(b, "volume B")
    if a.shape != b.shape:
        raise InputError("volumes", f"shapes differ: A is {tuple(a.shape)}, B is {tuple(b.shape)}")
    dtype = torch.float64 if torch.float64 in (a.dtype, b.dtype) else torch.float32
    a, b = a.to(dtype), b.to(dtype)
    m = None
    if mask is not None:
        m = _as_volume(mask, "mask")
        if m.shape != a.shape:
            raise InputError("mask", f"shape {tuple(m.shape)} differs from the volumes' {tuple(a.shape)}")
        lo, hi = float(m.min()), float(m.max())
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise InputError("mask", f"values must lie in [0, 1], found [{lo:g}, {hi:g}]")
        if hi <= 0:
            raise InputError("mask", "is zero everywhere")
        m = m.to(dtype)
        a, b = a * m, b * m
    for name, v in (("volume A", a), ("volume B", b)):
        if not bool((v != v.reshape(-1)[0]).any()):
            raise InputError(name, "has no variance (every voxel is the same"
                             + (" inside the mask" if m is not None else "") + "): there is nothing to correlate")
    return a, b, m


def _shell_sums(fa: torch.Tensor, fb: torch.Tensor, shape: Shape3,
                regions_xz: Sequence[Optional[torch.Tensor]]) -> List[Tuple[torch.Tensor, ...]]:
    """Per-shell float64 sums ``(cross, power_a, power_b, count)`` for each region.

    ``regions_xz[r]`` is None (every voxel) or a bool region selector broadcastable to the
    rfft grid along y, i.e. ``(nz, 1, nkx)`` or ``(nz, ny, nkx)``.
    """
    out = [tuple(torch.zeros(n_shells(shape), dtype=torch.float64) for _ in range(4)) for _ in regions_xz]
    add_shell_sums(out, fa, fb, shape, regions_xz, 0)
    return out


def add_shell_sums(out: List[Tuple[torch.Tensor, ...]], fa: torch.Tensor, fb: torch.Tensor, shape: Shape3,
                   regions_xz: Sequence[Optional[torch.Tensor]], z_offset: int, kx_offset: int = 0,
                   chunk_voxels: int = _CHUNK_VOXELS) -> None:
    """Add to ``out`` (:func:`_shell_sums`' accumulators) the sums of the slices
    ``z_offset : z_offset + len(fa)`` of the rfft grid of ``shape`` (``fa``, ``fb``: those
    slices, ``(nzb, ny, nkb)``, columns ``kx_offset : kx_offset + nkb``; ``regions_xz``
    cut to those columns): the whole grid a block at a time gives the sums of the whole grid."""
    nzb, ny, nkb = fa.shape
    ns = n_shells(shape)
    big_n = max(shape)
    fz, fy, fx = axis_freqs(shape, True)
    fx = fx[..., kx_offset:kx_offset + nkb]
    hw = hermitian_weights(shape)[..., kx_offset:kx_offset + nkb]
    step = max(1, chunk_voxels // max(1, ny * nkb))
    for c0 in range(0, nzb, step):
        c1 = min(nzb, c0 + step)
        z0, z1 = z_offset + c0, z_offset + c1
        shell = torch.floor(torch.sqrt(fz[z0:z1] ** 2 + fy ** 2 + fx ** 2) * big_n + 0.5)
        shell = shell.to(torch.int64)
        a = fa[c0:c1].to(torch.complex128)
        b = fb[c0:c1].to(torch.complex128)
        terms = ((a * b.conj()).real * hw, (a.real ** 2 + a.imag ** 2) * hw,
                 (b.real ** 2 + b.imag ** 2) * hw, hw.expand(shell.shape))
        inside = shell < ns
        for r, region in enumerate(regions_xz):
            sel = inside if region is None else inside & region[z0:z1]
            idx = shell[sel]
            for acc, term in zip(out[r], terms):
                acc += torch.bincount(idx, weights=term[sel], minlength=ns)


def _fsc_from_sums(cross: torch.Tensor, pa: torch.Tensor, pb: torch.Tensor,
                   count: torch.Tensor) -> torch.Tensor:
    denom = torch.sqrt(pa * pb)
    fsc = torch.where(denom > 0, cross / torch.where(denom > 0, denom, torch.ones_like(denom)),
                      torch.zeros_like(cross))
    return torch.where(count > 0, fsc, torch.full_like(fsc, float("nan")))


def shell_correlation(a: TensorLike, b: TensorLike, mask: Optional[TensorLike] = None,
                      fourier_region: Optional[torch.Tensor] = None
                      ) -> Tuple[torch.Tensor, torch.Tensor]:
    """FSC curve between two volumes, optionally over part of Fourier space.

    Args:
        a, b: real volumes of the same shape ``(nz, ny, nx)`` (any units; float64 inputs are
            transformed in float64, others in float32).
        mask: optional real-space soft mask of the same shape, values in [0, 1], applied to
            both volumes (raises the FSC, see the module notes).
        fourier_region: optional bool tensor on the rfft grid ``(nz, ny, nx//2+1)``, e.g.
            :func:`~localet_core.validation.wedge.missing_wedge_mask` or its negation; only
            voxels where it is True count.

    Returns:
        ``(fsc, n_voxels)``: float64 tensors of length ``max(shape)//2 + 1``; shell ``i`` is at
        ``i / max(shape)`` cycles/pixel. ``n_voxels`` counts full-sphere Fourier voxels in each
        shell (and region); ``fsc`` is nan where that count is 0.

    Raises:
        InputError: not 3-D, shapes differ, NaN/inf values, or a mask out of [0, 1].
    """
    a, b, _ = _check_pair(a, b, mask)
    shape = tuple(a.shape)
    fa, fb = torch.fft.rfftn(a), torch.fft.rfftn(b)
    if fourier_region is None:
        (cross, pa, pb, count), = _shell_sums(fa, fb, shape, [None])
    else:
        region = torch.as_tensor(fourier_region, dtype=torch.bool)
        if tuple(region.shape) != tuple(fa.shape):
            raise InputError("fourier_region", f"shape {tuple(region.shape)} is not the rfft grid {tuple(fa.shape)}")
        (cross, pa, pb, count), = _shell_sums(fa, fb, shape, [region])
    return _fsc_from_sums(cross, pa, pb, count), count


# --------------------------------------------------------------------------------------------
# Resolution
# --------------------------------------------------------------------------------------------
def half_bit_threshold(n_voxels: torch.Tensor) -> torch.Tensor:
    """Half-bit information threshold of van Heel & Schatz (2005), per shell.

    ``T = (0.2071 + 1.9102 / sqrt(n)) / (1.2071 + 0.9102 / sqrt(n))`` with ``n`` the number
    of Fourier voxels in the shell (the full-sphere count of :func:`shell_correlation`; no
    point-group symmetry). Tends to 0.1716 for large shells, is 1 for ``n = 1``; nan for
    empty shells.
    """
    n = torch.as_tensor(n_voxels, dtype=torch.float64)
    with torch.no_grad():
        s = torch.sqrt(torch.where(n > 0, n, torch.full_like(n, float("nan"))))
        return (0.2071 + 1.9102 / s) / (1.2071 + 0.9102 / s)


#: Rules of the resolutions localet reports (:func:`compute_fsc`, the demo, the prior-proof
#: estimate): shells with fewer Fourier voxels than this are not searched (near the origin a
#: shell holds a handful of voxels and its correlation is noise) ...
MIN_SHELL_VOXELS = 100
#: ... and a drop below the criterion counts only once the curve has been at or above it for
#: this many consecutive shells (a noisy dip at the start is not a resolution).
BAND = 3


def crossing_frequency(frequency: torch.Tensor, fsc: torch.Tensor,
                       threshold: Union[float, torch.Tensor],
                       n_voxels: Optional[torch.Tensor] = None, band: int = 0,
                       min_shell_voxels: int = 0) -> Tuple[float, bool]:
    """Frequency where an FSC curve first drops below a threshold.

    Empty shells (nan) are skipped; between the last shell at or above the threshold and the
    first one below it, ``fsc - threshold`` is interpolated linearly in frequency.

    With the defaults (``band=0``) the search starts at shell 1 and the origin counts as an FSC
    of 1 against the threshold of the first non-empty shell (a curve already below the threshold
    at shell 1 thus crosses between the origin and shell 1). With the reporting rules
    (``band=BAND, min_shell_voxels=MIN_SHELL_VOXELS`` and ``n_voxels``): the search starts at the
    first shell holding at least ``min_shell_voxels`` Fourier voxels; drops below the threshold
    before the curve has been at or above it for ``band`` consecutive shells are ignored; a curve
    that never gets there falls back to the plain rule (its first drop from the origin), at
    the first shell at the lowest (a resolution of the box size: nothing resolved).

    Args:
        frequency: shell frequencies (cycles/pixel), increasing, shell 0 at 0.
        fsc: the curve, same length.
        threshold: a number, or a per-shell curve (e.g. :func:`half_bit_threshold`).
        n_voxels: Fourier voxels per shell (needed with ``min_shell_voxels``).

    Returns:
        ``(frequency, crossed)``: the crossing in cycles/pixel and True; or ``(0.5, False)``
        when the curve never drops below the threshold up to Nyquist ("better than Nyquist").
    """
    f = torch.as_tensor(frequency, dtype=torch.float64)
    c = torch.as_tensor(fsc, dtype=torch.float64)
    t = torch.as_tensor(threshold, dtype=torch.float64).expand(c.shape)
    diff = (c - t).tolist()
    start = 1
    if min_shell_voxels > 0:
        if n_voxels is None:
            raise ValueError("min_shell_voxels needs n_voxels")
        counts = torch.as_tensor(n_voxels, dtype=torch.float64).tolist()
        start = next((i for i in range(1, len(counts)) if counts[i] >= min_shell_voxels), len(counts))
    if band <= 0:
        tl = t.tolist()
        # the origin: FSC 1 against the threshold of the first non-empty shell
        t_first = next((tl[i] for i in range(start, len(tl)) if math.isfinite(diff[i])), 0.0)
        prev_f, prev_d, run = 0.0, 1.0 - t_first, band
    else:
        prev_f, prev_d, run = None, None, 0
    established = False
    for i in range(start, len(diff)):
        d = diff[i]
        if not math.isfinite(d):
            continue
        fi = float(f[i])
        if d >= 0:
            run += 1
            established = established or run >= band
        elif run >= band:
            frac = prev_d / (prev_d - d) if prev_d - d > 0 else 0.0
            return prev_f + frac * (fi - prev_f), True
        else:
            run = 0
        prev_f, prev_d = fi, d
    if band > 0 and not established:
        # never at or above the threshold for a band of shells: nothing is resolved. The plain
        # first drop from the origin, but never below the first shell (a resolution larger than
        # the box would mean nothing)
        crossing, crossed = crossing_frequency(f, c, t)
        return max(crossing, float(f[1]) if len(f) > 1 else crossing), crossed
    return 0.5, False


@dataclass(frozen=True)
class Resolution:
    """Where one FSC curve crosses one criterion.

    Attributes:
        region: one of :data:`REGIONS`.
        criterion: one of :data:`CRITERIA`.
        frequency: cycles/pixel of the crossing; 0.5 (Nyquist) when not ``crossed``.
        crossed: False when the curve stays above the criterion up to Nyquist, i.e. the
            resolution is better than Nyquist and ``angstrom`` is only a bound.
        pixel_size: Angstrom per pixel, or None.
    """

    region: str
    criterion: str
    frequency: float
    crossed: bool
    pixel_size: Optional[float] = None

    @property
    def pixels(self) -> float:
        """Resolution in pixels, ``1 / frequency`` (inf for a crossing at the origin)."""
        return math.inf if self.frequency <= 0 else 1.0 / self.frequency

    @property
    def angstrom(self) -> Optional[float]:
        """Resolution in Angstrom (a bound, 2 x pixel size, when not crossed); None without
        a pixel size."""
        return None if self.pixel_size is None else self.pixel_size * self.pixels

    def describe(self) -> str:
        """``"23.4 A"``, ``"better than Nyquist (20.0 A)"`` or the same in pixels."""
        if self.pixel_size is None:
            value = f"{self.pixels:.2f} px"
        else:
            value = f"{self.angstrom:.1f} A"
        return value if self.crossed else f"better than Nyquist ({value})"


@dataclass(frozen=True)
class FSCResult:
    """All curves and resolutions of :func:`compute_fsc`. Curves are float64 tensors of
    length ``n_shells``, indexed by shell; ``curves[region]`` is ``(fsc, n_voxels)``.

    Attributes:
        shape: real-space shape ``(nz, ny, nx)``.
        pixel_size: Angstrom per pixel, or None (then resolutions are in pixels).
        frequency: shell frequencies, ``i / max(shape)`` cycles/pixel.
        curves: region -> ``(fsc, n_voxels)``; always ``"all"``, plus ``"outside_wedge"``
            and ``"inside_wedge"`` when a tilt range was given.
        resolutions: ``(region, criterion)`` -> :class:`Resolution`.
        tilt_range: ``(min, max)`` degrees, or None.
        masked: whether a real-space mask was applied.
    """

    shape: Shape3
    pixel_size: Optional[float]
    frequency: torch.Tensor
    curves: Dict[str, Tuple[torch.Tensor, torch.Tensor]]
    resolutions: Dict[Tuple[str, str], Resolution] = field(default_factory=dict)
    tilt_range: Optional[Tuple[float, float]] = None
    masked: bool = False

    @property
    def fsc(self) -> torch.Tensor:
        """The whole-volume curve."""
        return self.curves["all"][0]

    @property
    def n_voxels(self) -> torch.Tensor:
        """Full-sphere voxel count per shell, whole volume."""
        return self.curves["all"][1]

    def threshold(self, criterion: str, region: str = "all") -> torch.Tensor:
        """The criterion as a per-shell curve (constant for 0.143 and 0.5)."""
        return _threshold(criterion, self.curves[region][1])


def _threshold(criterion: str, n_voxels: torch.Tensor) -> torch.Tensor:
    if criterion == "half-bit":
        return half_bit_threshold(n_voxels)
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}; expected one of {CRITERIA}")
    return torch.full_like(n_voxels, float(criterion))


def _check_pixel_size(pixel_size: Optional[float]) -> Optional[float]:
    if pixel_size is None:
        return None
    p = float(pixel_size)
    if not math.isfinite(p) or p <= 0:
        raise InputError("pixel size", f"must be a positive number of Angstrom, got {pixel_size!r}")
    return p


def compute_fsc(a: TensorLike, b: TensorLike, mask: Optional[TensorLike] = None,
                pixel_size: Optional[float] = None,
                tilt_range: Optional[Tuple[float, float]] = None) -> FSCResult:
    """Whole-volume and (with a tilt range) wedge-split FSC with resolution estimates.

    Args:
        a, b: real volumes ``(nz, ny, nx)``, same shape, ``V[z, y, x]`` orientation.
        mask: optional soft mask (same shape, values in [0, 1]) applied to both; inflates
            the FSC (see the module notes).
        pixel_size: Angstrom per pixel (isotropic); None gives resolutions in pixels.
        tilt_range: ``(tilt_min, tilt_max)`` in degrees of the tilt series both volumes come
            from; adds the ``outside_wedge`` and ``inside_wedge`` curves.

    Returns:
        :class:`FSCResult` with the curves and the resolution of every region at every
        criterion of :data:`CRITERIA`.

    Raises:
        InputError: bad volumes, mask, pixel size or tilt range.
    """
    p = _check_pixel_size(pixel_size)
    a, b, m = _check_pair(a, b, mask)
    shape: Shape3 = tuple(a.shape)  # type: ignore[assignment]
    rng, regions = fsc_regions(shape, tilt_range)
    fa, fb = torch.fft.rfftn(a), torch.fft.rfftn(b)
    sums = _shell_sums(fa, fb, shape, [r for _, r in regions])
    return fsc_result(shape, p, rng, [name for name, _ in regions], sums, m is not None)


def fsc_regions(shape: Shape3, tilt_range: Optional[Tuple[float, float]]
                ) -> Tuple[Optional[Tuple[float, float]], List[Tuple[str, Optional[torch.Tensor]]]]:
    """The checked tilt range and the ``(name, selector)`` regions :func:`compute_fsc` sums over."""
    regions: List[Tuple[str, Optional[torch.Tensor]]] = [("all", None)]
    rng = None
    if tilt_range is not None:
        rng = check_tilt_range(*tilt_range)
        wedge = wedge_mask_xz(shape, rng[0], rng[1], rfft=True)
        regions += [("outside_wedge", ~wedge), ("inside_wedge", wedge)]
    return rng, regions


def fsc_result(shape: Shape3, pixel_size: Optional[float], tilt_range: Optional[Tuple[float, float]],
               names: Sequence[str], sums: Sequence[Tuple[torch.Tensor, ...]], masked: bool = False) -> FSCResult:
    """:class:`FSCResult` from the shell sums of each region (curves and resolutions)."""
    curves = {name: (_fsc_from_sums(*s), s[3]) for name, s in zip(names, sums)}
    frequency = torch.arange(n_shells(shape), dtype=torch.float64) / max(shape)
    resolutions = {}
    for name, (curve, count) in curves.items():
        for crit in CRITERIA:
            f, crossed = crossing_frequency(frequency, curve, _threshold(crit, count), count,
                                            BAND, MIN_SHELL_VOXELS)
            resolutions[(name, crit)] = Resolution(name, crit, f, crossed, pixel_size)
    return FSCResult(shape=shape, pixel_size=pixel_size, frequency=frequency, curves=curves,
                     resolutions=resolutions, tilt_range=tilt_range, masked=masked)


# --------------------------------------------------------------------------------------------
# Half sets
# --------------------------------------------------------------------------------------------
def split_alternate_tilts(tilt_angles: Sequence[float]) -> Tuple[List[int], List[int]]:
    """Split a tilt series into two half sets of alternate tilts.

    Views are ranked by tilt angle (stable for ties) and dealt alternately: ranks 0, 2, 4, ...
    go to the first half, ranks 1, 3, 5, ... to the second, so each half covers the whole tilt
    range at twice the angular step, whatever the order of the views in the stack (e.g. a
    dose-symmetric acquisition order).

    Args:
        tilt_angles: one angle (degrees) per view, in stack order (after excluding views).

    Returns:
        ``(first, second)``: sorted view indices into the stack; together they are all views,
        ``len(first) - len(second)`` is 0 or 1.

    Raises:
        InputError: fewer than 2 views, or a non-finite angle.
    """
    angles = [float(t) for t in tilt_angles]
    if len(angles) < 2:
        raise InputError("tilt angles", f"need at least 2 views to split into half sets, got {len(angles)}")
    bad = [i for i, t in enumerate(angles) if not math.isfinite(t)]
    if bad:
        raise InputError("tilt angles", f"view {bad[0]} has a non-finite angle")
    order = sorted(range(len(angles)), key=lambda i: angles[i])
    return sorted(order[0::2]), sorted(order[1::2])
