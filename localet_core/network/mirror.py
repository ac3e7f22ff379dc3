"""Mirror images of a model, for self-ensembling (``localet reconstruct --mirrors 2|4``).

A model with a linear first layer sees a voxel through its kernels ``W_k(theta)[i, j]`` (rows
``i`` along the tilt axis Y, columns ``j`` across it). A tilt series of the volume mirrored in
Y is the series with its rows flipped; mirrored in X, its columns flipped and its angles
negated; mirrored in Z, its angles negated. Reconstructing such a mirrored series and mirroring
the volume back is therefore the same as reconstructing the original series with the kernels
flipped along ``i`` (Y), along ``j`` (X), and/or taken at the negated angle (X and Z):
``P_m(-t) = (-1)^m P_m(t)``, so Legendre coefficient ``m`` changes sign for odd ``m``. The
mirrored models are valid reconstructions of the original data in any geometry (``.xf``,
offsets, X-axis tilt: nothing is flipped but the weights), and averaging their volumes averages
out what the network's learned kernels do not share with their mirror images. Measured on
bench_quality's sets: docs/network.md, "Mirror averaging".
"""
from __future__ import annotations

import copy
from typing import List

import torch

from localet_core.config import MIRRORS
from localet_core.errors import FieldError

__all__ = ["MIRRORS", "check_mirrors", "mirror_model", "mirror_models"]


def _flip_coefficients(coeffs: torch.Tensor, rows: bool, columns: bool, angles: bool) -> torch.Tensor:
    """``coeffs (K, M, P, P)`` Legendre coefficients of kernels, flipped along the rows and/or
    the columns, and/or for the negated angle (see the module docstring)."""
    out = coeffs
    if rows:
        out = out.flip(-2)
    if columns:
        out = out.flip(-1)
    if angles:
        sign = torch.tensor([(-1.0) ** m for m in range(coeffs.shape[1])], dtype=coeffs.dtype,
                            device=coeffs.device)
        out = out * sign[None, :, None, None]
    return out


def _check_mirrorable(model: torch.nn.Module) -> None:
    config = model.config
    if config.encoder or config.volume_head:
        raise FieldError("mirrors", "needs a model without a per-view encoder or 3D head "
                                    f"(this one has {'an encoder' if config.encoder else 'a 3D head'})")


def check_mirrors(model: torch.nn.Module, count: int) -> None:
    """Raise :class:`FieldError` (``mirrors``) unless ``count`` mirrors of ``model`` can be made:
    a count in :data:`MIRRORS`, and a model without an encoder or 3D head when it is over 1."""
    if count not in MIRRORS:
        raise FieldError("mirrors", f"must be one of {', '.join(map(str, MIRRORS))}, got {count!r}")
    if count > 1:
        _check_mirrorable(model)


def mirror_model(model: torch.nn.Module, y: bool = False, x: bool = False, z: bool = False) -> torch.nn.Module:
    """A copy of ``model`` (a :class:`~localet_core.network.model.LocalizedNet`) whose volume
    from a tilt series is the one the model gives from the series of the volume mirrored in
    ``y`` (along the tilt axis), ``x`` and/or ``z``, mirrored back.

    Raises:
        FieldError: ``mirrors``, for a model with a per-view encoder or a 3D head (their
            convolutions are not mirrored here).
    """
    _check_mirrorable(model)
    config = model.config
    flips = dict(rows=y, columns=x, angles=x != z)  # X: columns and angles; Z: angles
    out = copy.deepcopy(model)
    with torch.no_grad():
        out.coeffs.copy_(_flip_coefficients(model.coeffs, **flips))
        if config.context_channels:
            out.context_coeffs.copy_(_flip_coefficients(model.context_coeffs, **flips))
    return out


#: the mirrors (y, x, z) of each count: the model; + its image in Y; + in X and in both. (The
#: Z mirrors of these four complete the group; averaging all 8 measured no better than 4.)
_GROUP = [(False, False, False), (True, False, False), (False, True, False), (True, True, False)]


def mirror_models(model: torch.nn.Module, count: int) -> List[torch.nn.Module]:
    """``[model]`` (count 1), with its mirror image in Y (2), and in X and in both (4)."""
    check_mirrors(model, count)
    return [model] + [mirror_model(model, *flips) for flips in _GROUP[1:count]]
