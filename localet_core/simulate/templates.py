"""Macromolecule templates shipped with localet, and their rotation/resampling in torch.

The templates are the *excess electrostatic potential over vitreous ice*, in Volts, of real
macromolecules from the PDB (see ``localet_core/data/templates.json`` for the ids, the stored
pixel sizes and the command that made them with ``scripts/make_templates.py``). Each one is a
cube of even size N, numpy order ``T[z, y, x]``, with the molecule's (scattering-weighted) centre
at voxel index ``(N - 1) / 2`` on every axis.

At run time a template is low-pass filtered once to the Nyquist frequency of the requested voxel
size (cached), then rotated and resampled onto the phantom grid in a single trilinear
``grid_sample`` call, so each particle costs one interpolation of a small cube.
"""
from __future__ import annotations

import json
import math
from functools import lru_cache
from importlib import resources
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .user_maps import is_map_entry, map_key, read_map_template

__all__ = [
    "available_templates",
    "template_metadata",
    "ice_potential",
    "load_template",
    "lowpass_cube",
    "lowpass_template",
    "random_rotation",
    "rotate_resample",
    "place_template",
    "quantise_scale",
    "template_radius",
]


def _data_path(name: str):
    return resources.files("localet_core").joinpath("data", name)


@lru_cache(maxsize=1)
def template_metadata() -> dict:
    """The contents of ``templates.json`` (ids, names, pixel sizes in A, provenance)."""
    return json.loads(_data_path("templates.json").read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def _arrays() -> Dict[str, np.ndarray]:
    # allow_pickle=False: the package data are plain arrays; never unpickle anything.
    with _data_path("templates.npz").open("rb") as fh:
        with np.load(fh, allow_pickle=False) as npz:
            return {k: npz[k].astype(np.float32) for k in npz.files}


def available_templates() -> List[str]:
    """PDB ids (lower case) of the shipped templates, e.g. ``['4v5d', '3jb9', ...]``."""
    return list(template_metadata()["templates"].keys())


def ice_potential() -> float:
    """Mean inner potential of vitreous ice (V) consistent with the templates (about 4.57 V)."""
    return float(template_metadata()["ice_mean_inner_potential_V"])


def load_template(pdb_id: str) -> Tuple[np.ndarray, float]:
    """Return ``(array float32 (N, N, N) in V, pixel size in A)`` for one template: a shipped
    id, or a map file of the user's (:mod:`.user_maps`, prepared the same way).

    Raises:
        KeyError: for an unknown id (the message lists the known ones).
        InputError: for a map file that cannot be used (:func:`.user_maps.read_map_template`).
    """
    if is_map_entry(pdb_id):
        prepared = read_map_template(pdb_id)
        return prepared.data.copy(), prepared.pixel_size
    key = pdb_id.lower()
    meta = template_metadata()["templates"]
    if key not in meta:
        raise KeyError(f"unknown template {pdb_id!r}; available: {', '.join(meta)}")
    return _arrays()[key].copy(), float(meta[key]["pixel_size_A"])


def template_radius(pdb_id: str) -> float:
    """The molecule's extent from its centre, A (shipped id or map file)."""
    if is_map_entry(pdb_id):
        return read_map_template(pdb_id).radius_A
    return float(template_metadata()["templates"][pdb_id.lower()]["radius_A"])


def lowpass_cube(vol: torch.Tensor, pixel: float, resolution: float) -> torch.Tensor:
    """``vol`` (N, N, N) sampled at ``pixel`` A, low-passed to ``resolution`` A: a raised-cosine
    edge from 0.8 to 1.0 of that frequency (at ``resolution`` = twice a coarser grid's pitch,
    the band limit that keeps trilinear sampling onto that grid from aliasing)."""
    n = vol.shape[0]
    fz = torch.fft.fftfreq(n, d=pixel)
    fx = torch.fft.rfftfreq(n, d=pixel)
    s = torch.sqrt(fz[:, None, None] ** 2 + fz[None, :, None] ** 2 + fx[None, None, :] ** 2)
    cut = 1.0 / resolution
    edge = torch.clamp((cut - s) / (0.2 * cut), 0.0, 1.0)
    filt = 0.5 - 0.5 * torch.cos(math.pi * edge)
    return torch.fft.irfftn(torch.fft.rfftn(vol) * filt, s=vol.shape)


@lru_cache(maxsize=256)
def _lowpassed(pdb_id: str, voxel_size: float) -> Tuple[torch.Tensor, float]:
    arr, pixel = load_template(pdb_id)
    vol = torch.from_numpy(arr)
    if voxel_size > pixel * 1.0001:
        # band-limit to the target Nyquist before resampling onto the coarser grid
        vol = lowpass_cube(vol, pixel, 2.0 * voxel_size)
    return vol.contiguous(), pixel


def lowpass_template(pdb_id: str, voxel_size: float) -> Tuple[torch.Tensor, float]:
    """Template band-limited to the Nyquist of ``voxel_size`` (A), still at its stored pixel.

    Returns ``(tensor float32 (N, N, N) in V, stored pixel size in A)``; cached, do not modify.
    """
    key = map_key(pdb_id) if is_map_entry(pdb_id) else pdb_id.lower()
    return _lowpassed(key, float(voxel_size))


def random_rotation(generator: Optional[torch.Generator] = None,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A rotation matrix (3, 3) drawn uniformly from SO(3) (unit quaternion from a 4D normal).

    The matrix acts on column vectors ``(x, y, z)``.
    """
    q = torch.randn(4, generator=generator, dtype=torch.float64)
    q = q / q.norm()
    w, x, y, z = q.tolist()
    rot = torch.tensor([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ], dtype=torch.float64)
    return rot.to(dtype)


def quantise_scale(scale: float) -> float:
    """``scale`` rounded to a 2 % logarithmic grid (bounds the low-pass cache; sizes of real
    macromolecules vary more than that anyway)."""
    if not scale > 0:
        raise ValueError(f"template scale must be > 0, got {scale}")
    return float(math.exp(round(math.log(scale) / 0.02) * 0.02))


def output_size(pdb_id: str, voxel_size: float, scale: float = 1.0) -> int:
    """Odd edge length (voxels) of a rotated template at ``voxel_size`` (A), enlarged ``scale``
    times: holds any rotation of the molecule's bounding sphere."""
    radius = template_radius(pdb_id) * scale + 2.0 * voxel_size
    m = 2 * int(math.ceil(radius / voxel_size)) + 1
    return m


def rotate_resample(volume: torch.Tensor, pixel_size: float, rotation: torch.Tensor,
                    voxel_size: float, out_size: int,
                    shift: Sequence[float] = (0.0, 0.0, 0.0)) -> torch.Tensor:
    """Rotate a cube about its centre and resample it onto another grid (trilinear).

    Args:
        volume: (N, N, N) float tensor ``V[z, y, x]`` sampled at ``pixel_size`` (A), centre at
            index (N-1)/2.
        pixel_size: its sampling, A.
        rotation: (3, 3) matrix acting on ``(x, y, z)``; the object is turned by it.
        voxel_size: output sampling, A.
        out_size: M, output edge length (voxels); the output centre is index (M-1)/2 minus
            ``shift``.
        shift: ``(dz, dy, dx)`` sub-voxel offset (voxels) subtracted from the output centre:
            the object's centre lands at index (M-1)/2 + shift. Lets a particle sit at a
            non-integer position without rounding.

    Returns:
        (M, M, M) float32 tensor. Values are point samples, so sum * voxel_size^3 estimates the
        integral (the "mass"), which rotation preserves to interpolation accuracy.
    """
    n = volume.shape[-1]
    m = out_size
    c = (m - 1) / 2.0
    dev = volume.device
    rot = rotation.to(device=dev, dtype=torch.float32)
    ax = (torch.arange(m, device=dev, dtype=torch.float32) - c)
    qz = (ax - float(shift[0])) * voxel_size
    qy = (ax - float(shift[1])) * voxel_size
    qx = (ax - float(shift[2])) * voxel_size
    # positions (x, y, z) in A of each output voxel, relative to the object's centre
    q = torch.stack(torch.broadcast_tensors(qx[None, None, :], qy[None, :, None],
                                            qz[:, None, None]), dim=-1)
    # sampling the turned object at q means sampling the template at R^T q
    src = q @ rot  # row vectors: (R^T q)^T = q^T R
    # grid_sample with align_corners=True maps -1..1 onto index 0..N-1
    grid = src / (pixel_size * (n - 1) / 2.0)
    out = F.grid_sample(volume[None, None].float(), grid[None], mode="bilinear",
                        padding_mode="zeros", align_corners=True)
    return out[0, 0]


def place_template(pdb_id: str, voxel_size: float, rotation: torch.Tensor,
                   shift: Sequence[float] = (0.0, 0.0, 0.0),
                   out_size: Optional[int] = None, scale: float = 1.0) -> torch.Tensor:
    """A template rotated by ``rotation`` and sampled at ``voxel_size`` (A), in V.

    ``scale`` enlarges (> 1) or shrinks (< 1) the molecule isotropically, keeping its potential
    values (a denser-packed or a bigger assembly of the same material): a size augmentation for
    training data. It is quantised by :func:`quantise_scale`.

    Returns an (M, M, M) float32 cube (M odd, from :func:`output_size` unless given) whose
    centre index (M-1)/2 + shift is the molecule's centre.
    """
    scale = quantise_scale(scale)
    # stretching the template by s is sampling it at voxel_size / s: band-limit to that Nyquist
    vol, pixel = lowpass_template(pdb_id, round(voxel_size / scale, 4))
    m = out_size if out_size is not None else output_size(pdb_id, voxel_size, scale)
    return rotate_resample(vol, pixel * scale, rotation, voxel_size, m, shift)
