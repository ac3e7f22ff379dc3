"""A resolution estimate for learned reconstructions that a learned prior cannot inflate.

Why the plain half-set FSC fails for a network: ``net(odd)`` and ``net(even)`` are the same
deterministic non-linear map applied to two noisy halves; whatever the map adds from its prior
(textures, a flat background, filled-in wedge content) is *shared* by both halves, so their FSC
measures reproducibility of the prior as well as of the data, and can stay high where neither
half correlates with the truth.

The estimator. Let ``w1 = WBP(odd)``, ``w2 = WBP(even)``: linear, no prior, independent noise.
Per Fourier shell (and region), write ``w_i = S + N_i`` with ``S`` the signal WBP sees and
``N_1, N_2`` independent noises of equal power. Then

    FSC(w1, w2) = |S|^2 / (|S|^2 + |N|^2) = rho(w_i, S)^2.

A network half ``n1 = net(odd)`` depends on the odd data only, so it is uncorrelated with
``N_2``, whatever its prior does: ``<n1, w2> = <n1, S>``, hence

    FSC(n1, w2) = <n1, S> / (|n1| |w2|) = rho(n1, S) * rho(w2, S)
    C_1 = FSC(n1, w2) / sqrt(FSC(w1, w2))   estimates rho(n1, S),

the correlation of the network's half map with the signal, and ``C_2`` (``n2`` against ``w1``)
the same for the other half. ``C_est`` is their mean. Anything the prior adds that is not in
the signal enlarges ``|n1|`` and lowers ``C_est``; it can never raise it. Where WBP sees no
signal (inside the missing wedge, or beyond the resolution of the data), ``FSC(w1, w2)`` is
near zero and the ratio is undefined: there is **no estimate** there, and none is given.
Inside the wedge the true signal is absent from ``S``, so over a whole shell ``C_est`` counts
correctly filled wedge content as noise: the estimate is conservative.

The threshold. ``C_est`` estimates a map-versus-truth correlation, like the correlation of a
reconstruction with a ground truth; the criterion is 0.5, the map-versus-truth correlation that
the half-set criterion FSC = 0.143 stands for (``sqrt(2 * 0.143 / 1.143) = 0.5``, Rosenthal &
Henderson 2003). Applied here to a *half* map (half the dose), it is conservative: for WBP,
``C_est = sqrt(FSC(w1, w2))`` reaches 0.5 where the half-set FSC is 0.25, not 0.143; the full
map is at least as good as its halves. The true resolution it is checked against (tests,
docs/fsc.md) is the same criterion on the half map's correlation with the ground truth.

Uncertainty per shell: the two symmetric estimates differ by noise and by any asymmetry of the
halves; the reported ``sigma`` combines ``|C_1 - C_2| / 2`` with the sampling error of a
correlation over the shell's ``n`` Fourier voxels, ``1 / sqrt(n / 2)`` (Friedel mates are not
independent), propagated through the ratio. A shell is estimable when ``FSC(w1, w2)`` exceeds
both :data:`MIN_REFERENCE_FSC` and three times its own sampling error.

Works for any reconstruction (WBP itself gives ``C_est ~ sqrt(FSC(w1, w2))``, the classic
half-map-to-full-map conversion), so WBP, SIRT and the network are compared on one scale.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
import torch

from localet_core.errors import InputError
from localet_core.validation.fsc import BAND, MIN_SHELL_VOXELS, FSCResult, compute_fsc, crossing_frequency

#: Below this half-set FSC of the WBP reference there is too little signal to divide by.
MIN_REFERENCE_FSC = 0.05
#: The criterion on ``C_est`` equivalent to a half-set FSC of 0.143 (see the module doc).
THRESHOLD = 0.5
#: The resolution is read where the one-sided lower bound ``C_est - CONFIDENCE_Z * sigma``
#: drops below the threshold: a figure the data support with about 84 % confidence. Measured
#: on simulated series (benchmarks/bench_validation.py), ``C_est`` itself runs 0.05-0.1 above
#: the true correlation with the specimen in mid shells, because the signal WBP sees is the
#: CTF-modulated image of the specimen, not the specimen.
CONFIDENCE_Z = 1.0

@dataclass(frozen=True)
class PriorProofCurve:
    """Per-shell figures of one Fourier region (float64 arrays of length ``n_shells``; nan
    where there is no estimate)."""

    c_est: np.ndarray
    sigma: np.ndarray
    c_1: np.ndarray
    c_2: np.ndarray
    reference_fsc: np.ndarray
    half_set_fsc: np.ndarray
    n_voxels: np.ndarray

    @property
    def estimable(self) -> np.ndarray:
        """Bool per shell: whether an estimate exists."""
        return np.isfinite(self.c_est)


@dataclass(frozen=True)
class EstimatedResolution:
    """Where ``C_est`` falls below the threshold, or where the estimate runs out.

    Attributes:
        frequency: cycles/pixel; ``nan`` when no shell could be estimated at all.
        limit: ``"crossed"`` (C_est dropped below the threshold), ``"no signal"`` (the WBP
            halves share no signal beyond this frequency, so nothing better can be claimed:
            the resolution is at most this good), ``"nyquist"`` (estimable and above the
            threshold up to Nyquist) or ``"none"`` (no estimable shell).
    """

    frequency: float
    limit: str
    pixel_size: Optional[float] = None

    @property
    def angstrom(self) -> Optional[float]:
        if self.pixel_size is None or not self.frequency > 0:
            return None
        return self.pixel_size / self.frequency

    def describe(self) -> str:
        """``"41.2 A"``, ``"41.2 A (no signal beyond)"``, ``"no estimate"``..."""
        if self.limit == "none":
            return "no estimate"
        value = (f"{self.angstrom:.1f} A" if self.angstrom is not None
                 else f"{1.0 / self.frequency:.2f} px")
        return {"crossed": value, "no signal": f"{value} (no WBP signal beyond)",
                "nyquist": f"{value} (Nyquist)"}[self.limit]


@dataclass(frozen=True)
class PriorProofResult:
    """The estimate over the measured region (``outside_wedge``; the only region where WBP
    sees signal: inside the wedge there is never an estimate, and over whole shells the wedge's
    missing truth would make it optimistic for any method that does not fill the wedge)."""

    frequency: np.ndarray
    pixel_size: Optional[float]
    curve: PriorProofCurve
    resolution: EstimatedResolution
    tilt_range: Tuple[float, float]

    def summary(self) -> str:
        """Two lines for a terminal or a log: the resolution and what it means."""
        n = int(self.curve.estimable.sum())
        return (f"prior-proof resolution (outside the missing wedge): {self.resolution.describe()}, "
                f"{n} shells estimable\n"
                f"  = where each half map's estimated correlation with the signal in the data drops "
                f"below {THRESHOLD}; no learned prior can raise it (docs/fsc.md)")


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float64)


def estimate_curve(fsc_n1_w2: np.ndarray, fsc_n2_w1: np.ndarray, fsc_w1_w2: np.ndarray,
                   half_set: np.ndarray, n_voxels: np.ndarray,
                   min_reference_fsc: float = MIN_REFERENCE_FSC) -> PriorProofCurve:
    """``C_est`` and its uncertainty per shell from the three cross FSC curves (see the module
    doc). All inputs are float arrays of one length (shells); ``n_voxels`` full-sphere counts."""
    n = np.asarray(n_voxels, dtype=np.float64)
    ref = np.asarray(fsc_w1_w2, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        sampling = np.where(n > 0, 1.0 / np.sqrt(np.maximum(n, 1.0) / 2.0), np.inf)
        ok = np.isfinite(ref) & (ref > np.maximum(min_reference_fsc, 3.0 * sampling))
        root = np.sqrt(np.where(ok, ref, np.nan))
        c1 = np.asarray(fsc_n1_w2, dtype=np.float64) / root
        c2 = np.asarray(fsc_n2_w1, dtype=np.float64) / root
        c_est = 0.5 * (c1 + c2)
        # sampling error of the numerator, and of the root of the reference (d sqrt(F) = dF / 2 sqrt F)
        stat = np.sqrt((sampling / root) ** 2 + (c_est * sampling / (2.0 * ref)) ** 2)
        sigma = np.sqrt(stat ** 2 + (0.5 * (c1 - c2)) ** 2)
    nan = np.full_like(ref, np.nan)
    return PriorProofCurve(c_est=np.where(ok, c_est, nan), sigma=np.where(ok, sigma, nan),
                           c_1=np.where(ok, c1, nan), c_2=np.where(ok, c2, nan), reference_fsc=ref,
                           half_set_fsc=np.asarray(half_set, dtype=np.float64), n_voxels=n)


def estimated_resolution(frequency: np.ndarray, curve: PriorProofCurve, pixel_size: Optional[float],
                         threshold: float = THRESHOLD, confidence_z: float = CONFIDENCE_Z) -> EstimatedResolution:
    """The resolution of an estimated curve: where its lower confidence bound
    ``C_est - confidence_z * sigma`` drops below ``threshold`` (rules of :func:`curve_resolution`)."""
    return curve_resolution(frequency, curve.c_est - confidence_z * curve.sigma, curve.n_voxels,
                            pixel_size, threshold)


def curve_resolution(frequency: np.ndarray, values: np.ndarray, n_voxels: np.ndarray,
                     pixel_size: Optional[float], threshold: float = THRESHOLD, band: int = BAND,
                     min_shell_voxels: int = MIN_SHELL_VOXELS) -> EstimatedResolution:
    """The resolution of a per-shell correlation curve (nan = no estimate), e.g. ``C_est`` or a
    map's true FSC against a ground truth: from the first shell with at least
    ``min_shell_voxels`` Fourier voxels, the first crossing of ``threshold``; when the curve
    stops (nan) before a crossing, the last shell before the gap, flagged ``"no signal"``:
    nothing better can be claimed. The search rules are those of every resolution localet
    reports (:func:`localet_core.validation.fsc.crossing_frequency` with ``BAND`` and
    ``MIN_SHELL_VOXELS``)."""
    f = np.asarray(frequency, dtype=np.float64)
    c = np.asarray(values, dtype=np.float64)
    n = np.asarray(n_voxels, dtype=np.float64)
    start = next((i for i in range(1, len(f)) if n[i] >= min_shell_voxels), None)
    if start is None or not np.isfinite(c[start]):
        return EstimatedResolution(math.nan, "none", pixel_size)
    stop = next((i for i in range(start, len(f)) if not np.isfinite(c[i])), len(f))
    crossing, crossed = crossing_frequency(torch.from_numpy(f[:stop]), torch.from_numpy(c[:stop]), threshold,
                                           torch.from_numpy(n[:stop]), band, min_shell_voxels)
    if crossed:
        return EstimatedResolution(crossing, "crossed", pixel_size)
    return EstimatedResolution(float(f[stop - 1]), "no signal" if stop < len(f) else "nyquist", pixel_size)


def prior_proof_fsc(half_1: np.ndarray, half_2: np.ndarray, reference_1: np.ndarray,
                    reference_2: np.ndarray, tilt_range: Tuple[float, float],
                    pixel_size: Optional[float] = None,
                    min_reference_fsc: float = MIN_REFERENCE_FSC) -> PriorProofResult:
    """The prior-proof estimate of a reconstruction's half maps.

    Args:
        half_1, half_2: ``(nz, ny, nx)`` reconstructions of two independent halves of the data
            by the method being judged (e.g. the network on the odd and the even stack).
        reference_1, reference_2: weighted back-projections of the same two halves, on the same
            grid (WBP: linear, no prior).
        pixel_size: Angstrom per voxel (resolutions in Angstrom), or None (pixels).
        tilt_range: ``(min, max)`` degrees of the used tilts: the estimate is made outside
            the missing wedge.

    Returns:
        :class:`PriorProofResult` with the per-shell curve and the resolution.
    """
    shapes = {tuple(np.shape(v)) for v in (half_1, half_2, reference_1, reference_2)}
    if len(shapes) != 1:
        raise InputError("halves", f"the four half volumes differ in shape: {sorted(shapes)}")
    t = [torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for v in
         (half_1, half_2, reference_1, reference_2)]
    for v in t:
        if not float(v.std()) > 0:
            raise InputError("halves", "a half volume has no variance (all voxels equal)")
    n1_w2 = compute_fsc(t[0], t[3], pixel_size=pixel_size, tilt_range=tilt_range)
    n2_w1 = compute_fsc(t[1], t[2], pixel_size=pixel_size, tilt_range=tilt_range)
    w1_w2 = compute_fsc(t[2], t[3], pixel_size=pixel_size, tilt_range=tilt_range)
    n1_n2 = compute_fsc(t[0], t[1], pixel_size=pixel_size, tilt_range=tilt_range)
    return prior_proof_from_fsc(n1_w2, n2_w1, w1_w2, n1_n2, min_reference_fsc)


def prior_proof_from_fsc(n1_w2: "FSCResult", n2_w1: "FSCResult", w1_w2: "FSCResult", n1_n2: "FSCResult",
                         min_reference_fsc: float = MIN_REFERENCE_FSC) -> PriorProofResult:
    """:func:`prior_proof_fsc` from the four cross FSCs (each with the tilt range), however
    computed (in memory, or out of core: :mod:`localet_core.validation.streamed`)."""
    frequency = _np(w1_w2.frequency)
    region = "outside_wedge"
    curve = estimate_curve(_np(n1_w2.curves[region][0]), _np(n2_w1.curves[region][0]),
                           _np(w1_w2.curves[region][0]), _np(n1_n2.curves[region][0]),
                           _np(w1_w2.curves[region][1]), min_reference_fsc)
    return PriorProofResult(frequency, w1_w2.pixel_size, curve,
                            estimated_resolution(frequency, curve, w1_w2.pixel_size), w1_w2.tilt_range)
