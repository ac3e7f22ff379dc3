"""Half-set FSC: reconstruct two independent halves of the data and correlate them.

The halves are the odd/even frame sums (two stacks with the same geometry and independent
noise) or, when only one stack exists, alternate tilts (each half keeps the whole tilt range at
twice the step). Either way the two half tomograms share no noise, so their FSC measures the
reproducibility of the reconstruction. For a pretrained model that never saw the tomogram it is
a fair estimate; for self-supervised methods (Cryo-CARE, IsoNet, DeepDeWedge) that train on the
very halves they reconstruct, it is optimistic: the network can learn each half's features, and
the two halves then agree more than either agrees with the truth (see docs/fsc.md).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Tuple

import numpy as np
import torch

from localet_core.errors import FieldError
from localet_core.validation.fsc import FSCResult, compute_fsc, split_alternate_tilts
from localet_core.reconstruction.geometry import TiltGeometry
from localet_core.io import TiltStack

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
    """
    if (odd is None) != (even is None):
        raise FieldError("halves", "give both half stacks (odd and even), or neither")
    if odd is not None and even is not None:
        for half in (odd, even):
            geometry.check_stack(half.data.shape, half.path or "half stack")
        return reconstruct(odd.data, geometry), reconstruct(even.data, geometry), "odd/even"
    used = list(geometry.used_views)
    first, second = split_alternate_tilts([geometry.angles[i] for i in used])
    halves = []
    for keep in (first, second):
        kept = {used[i] for i in keep}
        excluded = tuple(i for i in range(geometry.n_views) if i not in kept)
        halves.append(reconstruct(stack, dataclasses.replace(geometry, excluded=excluded)))
    return halves[0], halves[1], "alternate tilts"


def half_set_fsc(half1: np.ndarray, half2: np.ndarray, geometry: TiltGeometry) -> FSCResult:
    """FSC of two half tomograms, split at the missing wedge of the used tilt range."""
    angles = geometry.used_angles
    return compute_fsc(torch.from_numpy(half1), torch.from_numpy(half2), pixel_size=geometry.voxel_size,
                       tilt_range=(float(angles.min()), float(angles.max())))
