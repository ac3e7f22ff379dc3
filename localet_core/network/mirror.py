"""Mirror images of a model, for self-ensembling (``localet reconstruct --mirrors 2|4``).

A model with a linear first layer sees a voxel through its kernels ``W_k(theta)[i, j]`` (rows
``i`` along the tilt axis, columns ``j`` across it). Reconstructing the stack flipped along its
rows and flipping the volume back is the same as reconstructing the original stack with the
kernels flipped along ``i``; reconstructing it flipped along its columns with the angles negated
(a mirror across the tilt axis) is the same as flipping the kernels along ``j`` and negating
the angle they depend on: ``P_m(-t) = (-1)^m P_m(t)``, so Legendre coefficient ``m`` changes sign
for odd ``m``. The mirrored models are therefore valid reconstructions of the original data in
any geometry (``.xf``, offsets, X-axis tilt: nothing is flipped but the weights), and averaging
their volumes averages out what the network's learned kernels do not share with their mirror
images. Measured on bench_quality's sets: docs/network.md, "Mirror averaging".
"""
from __future__ import annotations

import copy
from typing import List

import torch

from localet_core.config import MIRRORS
from localet_core.errors import FieldError

__all__ = ["MIRRORS", "mirror_model", "mirror_models"]


def _flip_coefficients(coeffs: torch.Tensor, rows: bool, columns: bool) -> torch.Tensor:
    """``coeffs (K, M, P, P)`` Legendre coefficients of kernels, mirrored (see module)."""
    out = coeffs
    if rows:
        out = out.flip(-2)
    if columns:
        sign = torch.tensor([(-1.0) ** m for m in range(coeffs.shape[1])], dtype=coeffs.dtype,
                            device=coeffs.device)
        out = out.flip(-1) * sign[None, :, None, None]
    return out


def mirror_model(model: torch.nn.Module, rows: bool, columns: bool) -> torch.nn.Module:
    """A copy of ``model`` (a :class:`~localet_core.network.model.LocalizedNet`) whose output on
    a tilt series is the volume the model gives on that series mirrored along the tilt axis
    (``rows``) and/or across it with the angles negated (``columns``), mirrored back.

    Raises:
        FieldError: ``mirrors``, for a model with a per-view encoder or a 3D head (their
            convolutions are not mirrored here).
    """
    config = model.config
    if config.encoder or config.volume_head:
        raise FieldError("mirrors", "needs a model without a per-view encoder or 3D head "
                                    f"(this one has {'an encoder' if config.encoder else 'a 3D head'})")
    out = copy.deepcopy(model)
    with torch.no_grad():
        out.coeffs.copy_(_flip_coefficients(model.coeffs, rows, columns))
        if config.context_channels:
            out.context_coeffs.copy_(_flip_coefficients(model.context_coeffs, rows, columns))
    return out


def mirror_models(model: torch.nn.Module, count: int) -> List[torch.nn.Module]:
    """``[model]`` (count 1), with its mirror image along the tilt axis (2), and with its images
    across the axis and across both (4)."""
    if count not in MIRRORS:
        raise FieldError("mirrors", f"must be one of {', '.join(map(str, MIRRORS))}, got {count!r}")
    flips = [(False, False), (True, False), (False, True), (True, True)][:count]
    return [model] + [mirror_model(model, r, c) for r, c in flips[1:]]
