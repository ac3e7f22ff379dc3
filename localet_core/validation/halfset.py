"""Half-set FSC: reconstruct two independent halves of the data and correlate them.

The halves are the odd/even frame sums (two stacks with the same geometry and independent
noise) or, when only one stack exists, alternate tilts (each half keeps the whole tilt range at
twice the step). Either way the two half tomograms share no noise, so their FSC measures the
reproducibility of the reconstruction. For a linear method (WBP) that is a fair estimate; for
any learned method it is optimistic: what the prior adds is shared by both halves (a pretrained
network), and self-supervised methods (Cryo-CARE, IsoNet, DeepDeWedge) even learn each half's
features. :func:`validate_halves` therefore gives learned methods the prior-proof estimate of
:mod:`localet_core.validation.prior_proof` (each half against the other half's WBP) by default
(see docs/fsc.md).
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Callable, Optional, Tuple

import numpy as np
import torch

from localet_core.config import ESTIMATES
from localet_core.errors import FieldError
from localet_core.io import TiltStack
from localet_core.progress import parts, stage
from localet_core.reconstruction.geometry import TiltGeometry
from localet_core.validation.fsc import FSCResult, compute_fsc, split_alternate_tilts

if TYPE_CHECKING:
    from localet_core.methods import Method
    from localet_core.validation.prior_proof import PriorProofResult

#: ``reconstruct(stack (n_views, ny, nx), geometry) -> volume (nz, ny, nx)``
Reconstructor = Callable[[np.ndarray, TiltGeometry], np.ndarray]


def reconstruct_halves(
    stack: np.ndarray,
    geometry: TiltGeometry,
    reconstruct: Reconstructor,
    odd: Optional[TiltStack] = None,
    even: Optional[TiltStack] = None,
) -> Tuple[np.ndarray, np.ndarray, str]:
    """Two independent half tomograms on ``geometry``'s grid.

    Args:
        stack: ``(n_views, ny, nx)`` full stack (used for the alternate-tilt split).
        odd, even: half-dose stacks of the same shape, or ``None`` for the alternate-tilt split.

    Returns:
        ``(half1, half2, how)`` with ``how`` in ``{"odd/even", "alternate tilts"}``.

    Inside a command, each half is half of this step's progress (:mod:`localet_core.progress`).
    """
    if (odd is None) != (even is None):
        raise FieldError("halves", "give both half stacks (odd and even), or neither")
    if odd is not None and even is not None:
        for half in (odd, even):
            geometry.check_stack(half.data.shape, half.path or "half stack")
        with parts(2):
            return _half(1, reconstruct, odd.data, geometry), _half(2, reconstruct, even.data, geometry), "odd/even"
    used = list(geometry.used_views)
    first, second = split_alternate_tilts([geometry.angles[i] for i in used])
    halves = []
    with parts(2):
        for k, keep in enumerate((first, second), start=1):
            kept = {used[i] for i in keep}
            excluded = tuple(i for i in range(geometry.n_views) if i not in kept)
            halves.append(_half(k, reconstruct, stack, dataclasses.replace(geometry, excluded=excluded)))
    return halves[0], halves[1], "alternate tilts"


def _half(k: int, reconstruct: Reconstructor, stack: np.ndarray, geometry: TiltGeometry) -> np.ndarray:
    """``reconstruct(stack, geometry)``, named ``half k of 2`` in the progress lines."""
    with stage(1, f"half {k} of 2", bar=False):
        return reconstruct(stack, geometry)


def half_set_fsc(half1: np.ndarray, half2: np.ndarray, geometry: TiltGeometry) -> FSCResult:
    """FSC of two half tomograms, split at the missing wedge of the used tilt range."""
    angles = geometry.used_angles
    return compute_fsc(torch.from_numpy(half1), torch.from_numpy(half2), pixel_size=geometry.voxel_size,
                       tilt_range=(float(angles.min()), float(angles.max())))




@dataclasses.dataclass
class HalfSetValidation:
    """The halves of one tilt series and what they say about its reconstruction.

    Attributes:
        halves: the method's two half tomograms ``(nz, ny, nx)``.
        how: ``odd/even`` or ``alternate tilts``.
        half_set: their plain FSC (optimistic for learned methods).
        prior_proof: the prior-proof estimate, or None when not asked for.
    """

    halves: Tuple[np.ndarray, np.ndarray]
    how: str
    half_set: FSCResult
    prior_proof: Optional["PriorProofResult"] = None


def validate_halves(
    stack: np.ndarray,
    geometry: TiltGeometry,
    method: "Method",
    odd: Optional[TiltStack] = None,
    even: Optional[TiltStack] = None,
    estimate: str = ESTIMATES[0],
    halves: Optional[Tuple[np.ndarray, np.ndarray]] = None,
) -> HalfSetValidation:
    """Reconstruct two halves with ``method`` and validate them.

    Args:
        stack: ``(n_views, ny, nx)`` full stack (alternate-tilt split when no odd/even stacks).
        method: a :class:`localet_core.methods.Method` (its ``learned`` flag picks the estimate
            for ``estimate="auto"``).
        estimate: one of :data:`localet_core.config.ESTIMATES`.
        halves: the method's half tomograms when already computed (then only the WBP halves
            are reconstructed here; ``odd``/``even`` must be the stacks they came from).
    """
    from localet_core.methods import WBP
    from localet_core.validation.prior_proof import prior_proof_fsc

    if estimate not in ESTIMATES:
        raise FieldError("estimate", f"must be one of {', '.join(ESTIMATES)}, got {estimate!r}")
    prior_proof = estimate == "prior-proof" or (estimate == "auto" and method.learned)
    wbp_halves = prior_proof and not isinstance(method, WBP)
    # the progress (inside a command): one part per pair of halves reconstructed here
    with parts((halves is None) + wbp_halves):
        if halves is None:
            h1, h2, how = reconstruct_halves(stack, geometry, method.volume, odd, even)
        else:
            (h1, h2), how = halves, "odd/even" if odd is not None else "alternate tilts"
        result = HalfSetValidation((h1, h2), how, half_set_fsc(h1, h2, geometry))
        if prior_proof:
            if wbp_halves:
                reference = WBP(device=getattr(method, "device", "auto"), budget=getattr(method, "budget", None))
                w1, w2, _ = reconstruct_halves(stack, geometry, reference.volume, odd, even)
            else:
                w1, w2 = h1, h2
            angles = geometry.used_angles
            result.prior_proof = prior_proof_fsc(h1, h2, w1, w2, (float(angles.min()), float(angles.max())),
                                                 pixel_size=geometry.voxel_size)
    return result
