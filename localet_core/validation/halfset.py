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
import os
from typing import TYPE_CHECKING, Any, Callable, List, Optional, Sequence, Tuple, Union

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
        halves: the method's two half tomograms ``(nz, ny, nx)`` (None when computed out of
            core: they were not held in memory).
        how: ``odd/even`` or ``alternate tilts``.
        half_set: their plain FSC (optimistic for learned methods).
        prior_proof: the prior-proof estimate, or None when not asked for.
    """

    halves: Optional[Tuple[np.ndarray, np.ndarray]]
    how: str
    half_set: FSCResult
    prior_proof: Optional["PriorProofResult"] = None


def _half_inputs(stack: np.ndarray, geometry: TiltGeometry, odd: Optional[TiltStack], even: Optional[TiltStack]
                 ) -> Tuple[List[Tuple[np.ndarray, TiltGeometry]], str]:
    """The two halves' ``(stack, geometry)`` (:func:`reconstruct_halves`' split) and ``how``."""
    if (odd is None) != (even is None):
        raise FieldError("halves", "give both half stacks (odd and even), or neither")
    if odd is not None and even is not None:
        for half in (odd, even):
            geometry.check_stack(half.data.shape, half.path or "half stack")
        return [(odd.data, geometry), (even.data, geometry)], "odd/even"
    used = list(geometry.used_views)
    first, second = split_alternate_tilts([geometry.angles[i] for i in used])
    inputs = []
    for keep in (first, second):
        kept = {used[i] for i in keep}
        excluded = tuple(i for i in range(geometry.n_views) if i not in kept)
        inputs.append((stack, dataclasses.replace(geometry, excluded=excluded)))
    return inputs, "alternate tilts"


@dataclasses.dataclass(frozen=True)
class ValidationPlan:
    """How :func:`validate_halves` runs within a memory budget.

    Attributes:
        volumes: half volumes it correlates (2; 4 with the prior-proof estimate of a method
            other than WBP: the method's halves and WBP's).
        streamed: whether they are too large to hold in memory: then each is transformed as its
            slabs arrive and the FSC computed out of core (:mod:`localet_core.validation.streamed`).
        scratch_bytes: the scratch file of the streamed FSC (0 in memory).
    """

    volumes: int
    streamed: bool
    scratch_bytes: int


def plan_validation(geometry: TiltGeometry, method: "Method", estimate: str = ESTIMATES[0],
                    budget: Optional[int] = None) -> ValidationPlan:
    """Whether :func:`validate_halves` of ``method`` on ``geometry`` fits ``budget`` bytes in
    memory (default: the method's budget, else half the free memory, capped)."""
    from localet_core.methods import WBP
    from localet_core.validation.streamed import in_memory_bytes, spectra_bytes

    prior_proof = estimate == "prior-proof" or (estimate == "auto" and method.learned)
    count = 4 if prior_proof and not isinstance(method, WBP) else 2
    shape = geometry.output_shape
    streamed = in_memory_bytes(shape, count) > _budget(method, budget)
    return ValidationPlan(count, streamed, spectra_bytes(shape, count) if streamed else 0)


def _budget(method: "Method", budget: Optional[int]) -> int:
    from localet_core.device import memory_budget, resolve_device

    if budget is None:
        budget = getattr(method, "budget", None)
    return memory_budget(resolve_device(getattr(method, "device", "auto")), budget)


#: ``(path, header label)`` of a half tomogram to write while validating
SavedHalf = Tuple[Union[str, "os.PathLike[str]"], Optional[Sequence[str]]]


def validate_halves(
    stack: np.ndarray,
    geometry: TiltGeometry,
    method: "Method",
    odd: Optional[TiltStack] = None,
    even: Optional[TiltStack] = None,
    estimate: str = ESTIMATES[0],
    halves: Optional[Tuple[Any, Any]] = None,
    budget: Optional[int] = None,
    save: Optional[Sequence[SavedHalf]] = None,
) -> HalfSetValidation:
    """Reconstruct two halves with ``method`` and validate them.

    Args:
        stack: ``(n_views, ny, nx)`` full stack (alternate-tilt split when no odd/even stacks).
        method: a :class:`localet_core.methods.Method` (its ``learned`` flag picks the estimate
            for ``estimate="auto"``).
        estimate: one of :data:`localet_core.config.ESTIMATES`.
        halves: the method's half tomograms when already computed, as arrays or MRC files
            (then only the WBP halves are reconstructed here; ``odd``/``even`` must be the
            stacks they came from).
        budget: memory bytes (default: the method's budget, else half the free memory, capped).
            When the volumes do not fit (:func:`plan_validation`), each is transformed as its
            slabs arrive and the FSC is computed out of core, with a scratch file
            (:mod:`localet_core.validation.streamed`); ``halves`` of the result is then None.
        save: ``(path, label)`` of each half tomogram of ``method`` to write as well.
    """
    from localet_core.methods import WBP
    from localet_core.validation.prior_proof import prior_proof_fsc

    if estimate not in ESTIMATES:
        raise FieldError("estimate", f"must be one of {', '.join(ESTIMATES)}, got {estimate!r}")
    plan = plan_validation(geometry, method, estimate, budget)
    if plan.streamed:
        return _validate_streamed(stack, geometry, method, odd, even, estimate, halves, _budget(method, budget),
                                  plan, save)
    prior_proof = estimate == "prior-proof" or (estimate == "auto" and method.learned)
    wbp_halves = prior_proof and not isinstance(method, WBP)
    if halves is not None and not isinstance(halves[0], np.ndarray):
        from localet_core.io import read_volume

        halves = tuple(read_volume(h).data for h in halves)
    # the progress (inside a command): one part per pair of halves reconstructed here
    with parts((halves is None) + wbp_halves):
        if halves is None:
            h1, h2, how = reconstruct_halves(stack, geometry, method.volume, odd, even)
        else:
            (h1, h2), how = halves, "odd/even" if odd is not None else "alternate tilts"
        if save:
            from localet_core.io import write_volume

            for (path, label), half in zip(save, (h1, h2)):
                write_volume(path, half, geometry.voxel_size, label=label)
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


def _validate_streamed(stack, geometry, method, odd, even, estimate, halves, budget, plan, save):
    """:func:`validate_halves` out of core: no volume is held whole."""
    from localet_core.methods import WBP
    from localet_core.pipeline import write_slabs
    from localet_core.validation.prior_proof import prior_proof_from_fsc
    from localet_core.validation.streamed import Spectra, file_slabs

    inputs, how = _half_inputs(stack, geometry, odd, even)
    if halves is not None:
        how = "odd/even" if odd is not None else "alternate tilts"
    shape = geometry.output_shape
    nz, ny, nx = shape
    rows = max(1, budget // 6 // (24 * nz * nx))  # a read slab, its transform and the copy written
    reference = WBP(device=getattr(method, "device", "auto"), budget=getattr(method, "budget", None))
    jobs = [(k, method if halves is None else None) for k in range(2)]
    if plan.volumes == 4:
        jobs += [(2 + k, reference) for k in range(2)]
    angles = geometry.used_angles
    tilt_range = (float(angles.min()), float(angles.max()))
    with Spectra(shape, plan.volumes, budget) as spectra:
        with parts(len({id(m) for _, m in jobs if m is not None}) or 1):
            for first in range(0, len(jobs), 2):
                if all(m is None for _, m in jobs[first:first + 2]):
                    continue
                with parts(2):
                    for k, m in jobs[first:first + 2]:
                        data, geom = inputs[k % 2]
                        with stage(1, f"half {k % 2 + 1} of 2", bar=False):
                            slabs = m.slabs(data, geom) if m is not None else file_slabs(halves[k], rows)
                            if save and k < 2:
                                path, label = save[k]
                                write_slabs(path, geometry, spectra.feed(k, slabs, "halves"), label=label)
                            else:
                                spectra.consume(k, slabs, "halves")
        if halves is not None:
            for k in range(2):
                spectra.consume(k, file_slabs(halves[k], rows), "halves")
        for k in range(plan.volumes):
            spectra.check(k, "halves")
        if plan.volumes == 4:
            n1_n2, n1_w2, n2_w1, w1_w2 = spectra.fsc([(0, 1), (0, 3), (1, 2), (2, 3)], geometry.voxel_size, tilt_range)
        else:
            (n1_n2,) = spectra.fsc([(0, 1)], geometry.voxel_size, tilt_range)
            n1_w2 = n2_w1 = w1_w2 = n1_n2
    result = HalfSetValidation(None, how, n1_n2)
    prior_proof = estimate == "prior-proof" or (estimate == "auto" and method.learned)
    if prior_proof:
        result.prior_proof = prior_proof_from_fsc(n1_w2, n2_w1, w1_w2, n1_n2)
    return result
