"""Tiny, realistic simulated tilt series in an IMOD folder, for the plugin's tests.

A specimen of Gaussian blobs is projected with localet's own projector (``TiltGeometry``: the
IMOD conventions of docs/geometry.md) onto the raw detector frame (with an ``.xf`` the images are
the unaligned ones the alignment maps back); two independent noisy halves make the odd/even
stacks and their sum the full stack, as motion correction of odd/even frames would.
"""
import os
from typing import Optional, Sequence

import numpy as np

DEFAULT_ANGLES = tuple(np.arange(-60.0, 60.1, 6.0))  # 21 tilts


def _write_stack(path, data, pixel):
    import mrcfile

    with mrcfile.new(path, overwrite=True) as mrc:
        mrc.set_data(np.asarray(data, dtype=np.float32))
        mrc.voxel_size = pixel
        mrc.header.ispg = 0  # a stack of images


def rotation_xf(n_views, angle_deg=4.0, shift=(1.5, -1.0)):
    """(n, 2, 3) IMOD .xf transforms: a small rotation, shifts varying per view."""
    c, s = np.cos(np.deg2rad(angle_deg)), np.sin(np.deg2rad(angle_deg))
    xf = np.zeros((n_views, 2, 3))
    for k in range(n_views):
        xf[k] = [[c, -s, shift[0] + 0.3 * np.sin(k)], [s, c, shift[1] - 0.2 * np.cos(k)]]
    return xf


def write_series(folder: str, tsId: str, shape=(48, 64), thickness: int = 16,
                 angles: Sequence[float] = DEFAULT_ANGLES, pixel: float = 10.0,
                 xf: Optional[np.ndarray] = None, halves: bool = True, noise: float = 0.3,
                 seed: int = 0, corrupt: bool = False) -> dict:
    """Write ``tsId.st``, ``tsId.tlt``, optionally ``tsId.xf`` and ``tsId_odd.st``/``_even.st``,
    and the ground truth ``tsId_truth.mrc`` (the specimen on the unbinned output grid).
    ``corrupt`` puts a NaN in the full stack (localet refuses it: a failing series)."""
    import torch

    from localet_core.io import write_tlt, write_xf
    from localet_core.reconstruction.geometry import TiltGeometry
    from localet_core.reconstruction.projector import forward_project

    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    ny, nx = shape
    z, y, x = np.meshgrid(*(np.arange(n) - (n - 1) / 2 for n in (thickness, ny, nx)), indexing="ij")
    volume = np.zeros((thickness, ny, nx))
    for _ in range(10):
        bx, by = rng.uniform(-nx / 3, nx / 3), rng.uniform(-ny / 3, ny / 3)
        bz, amp = rng.uniform(-thickness / 4, thickness / 4), rng.uniform(0.5, 1.0)
        volume += amp * np.exp(-((x - bx) ** 2 + (y - by) ** 2 + (z - bz) ** 2) / (2 * 2.0 ** 2))
    volume = volume.astype(np.float32)
    geometry = TiltGeometry(angles=tuple(angles), detector_shape=shape, thickness=thickness,
                            xf=xf, pixel_size=pixel)
    with torch.no_grad():
        clean = forward_project(torch.from_numpy(volume), geometry).numpy()
    scale = noise * float(clean.std())
    odd = clean / 2 + scale * rng.standard_normal(clean.shape)
    even = clean / 2 + scale * rng.standard_normal(clean.shape)
    full = odd + even
    if corrupt:
        full[len(angles) // 2, ny // 2, nx // 2] = np.nan
    paths = {"stack": os.path.join(folder, f"{tsId}.st"), "tlt": os.path.join(folder, f"{tsId}.tlt"),
             "truth": os.path.join(folder, f"{tsId}_truth.mrc")}
    _write_stack(paths["stack"], full, pixel)
    write_tlt(paths["tlt"], angles)
    if xf is not None:
        paths["xf"] = os.path.join(folder, f"{tsId}.xf")
        write_xf(paths["xf"], xf)
    if halves:
        paths["odd"] = os.path.join(folder, f"{tsId}_odd.st")
        paths["even"] = os.path.join(folder, f"{tsId}_even.st")
        _write_stack(paths["odd"], odd, pixel)
        _write_stack(paths["even"], even, pixel)
    import mrcfile
    with mrcfile.new(paths["truth"], overwrite=True) as mrc:
        mrc.set_data(volume)
        mrc.voxel_size = pixel
    return paths
