"""A user's own map (an EMDB entry, a subtomogram average) as a simulator template.

The shipped templates are excess potentials over ice in Volts (:mod:`.templates`). A map from
elsewhere has arbitrary units, an offset, solvent noise, a box much larger than the molecule and
often a finer pixel. :func:`read_map_template` turns it into a template of the same kind:

1. Read the MRC into ``z, y, x`` order (whatever its MAPC/MAPR/MAPS: EMDB maps may store
   their axes in another order, and reading them as stored would mirror the molecule), with the
   pixel size from its header (which must be set and cubic). Subtract the background (the
   median of the box's six faces) and pad it to a cube by mirroring its edges (the solvent
   noise goes on).
2. Resample to :data:`MAP_PIXEL_A` (5 A, the shipped templates' pixel) when the map's pixel is
   finer, after a low-pass to that Nyquist (no aliasing).
3. Find the molecule: the connected regions above Otsu's threshold of the map low-passed to
   :data:`SCALE_RESOLUTION_A` (20 A), and at least 4 times the background's noise there (the
   faces' robust std), that hold at least 5 % of the largest one's voxels, dilated by one
   voxel. A map whose peak is not 8 times that noise has no molecule and is refused. Outside it the map is
   solvent, set to 0 (a one-voxel soft edge). The map is then moved so the molecule's centre
   of mass lies at index ``(N - 1) / 2``, and cropped to a cube of even size N holding it.
4. Scale it so that the mean of the 20 A low-passed map inside the molecule's mask (3.) is
   :data:`TARGET_MEAN_V` (1.05 V): the two shipped apoferritins (horse 4V1W, human 6Z6U) give
   0.94 and 1.16 V by the same rule, the ribosome 1.33 V, the spliceosome 0.88 V, the SH1 virus
   0.65 V. A user map therefore gets the contrast of an average protein, within the spread of the
   shipped molecules; its own units never matter.

The result is cached per file (path, size, modification time) and keyed everywhere by its
absolute path, so a series' JSON names the map it was made from (and its SHA-256).
"""
from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Tuple

import numpy as np
import torch
import torch.nn.functional as F

from localet_core.errors import InputError

__all__ = ["MAP_SUFFIXES", "MAP_PIXEL_A", "SCALE_RESOLUTION_A", "TARGET_MEAN_V", "MapTemplate",
           "is_map_entry", "map_key", "read_map_template"]

MAP_SUFFIXES = (".mrc", ".map", ".rec", ".mrcs")
MAP_PIXEL_A = 5.0
SCALE_RESOLUTION_A = 20.0
TARGET_MEAN_V = 1.05
# (mask level, needed peak) in units of the 20 A background noise (the faces' robust std):
# pure noise peaks near 4.4 of it in a 64^3 box, a shipped molecule under heavy noise at 10+
MOLECULE_SIGMA = (4.0, 8.0)
_MAX_BOX = 512


@dataclass(frozen=True)
class MapTemplate:
    """A user's map prepared as a template.

    Attributes:
        data: float32 array (N, N, N), ``[z, y, x]``, excess potential over ice in V, the
            molecule's centre of mass at index (N - 1) / 2, N even.
        pixel_size: its sampling, A.
        radius_A: the molecule's extent from its centre (the farthest voxel of its mask), A.
        sha256: of the file's bytes.
        scale: factor that took the map's (background-subtracted) units to V.
    """

    data: np.ndarray
    pixel_size: float
    radius_A: float
    sha256: str
    scale: float


def is_map_entry(entry: str) -> bool:
    """True when a ``templates`` entry names a map file rather than a shipped template id: it
    ends with an MRC suffix (:data:`MAP_SUFFIXES`) or holds a path separator."""
    s = str(entry)
    return s.lower().endswith(MAP_SUFFIXES) or os.sep in s or "/" in s


def map_key(entry: str) -> str:
    """The key a map entry is known by: its absolute path (``~`` expanded, links resolved)."""
    return str(Path(str(entry)).expanduser().resolve())


def _faces(vol: np.ndarray) -> np.ndarray:
    """The values on the six faces of a box (z, y, x), flattened: its solvent."""
    return np.concatenate([vol[0].ravel(), vol[-1].ravel(), vol[:, 0].ravel(), vol[:, -1].ravel(),
                           vol[:, :, 0].ravel(), vol[:, :, -1].ravel()])


def _otsu(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of ``values`` (1D): the level that maximises the between-class
    variance of a ``bins``-bin histogram."""
    hist, edges = np.histogram(values, bins=bins)
    centres = 0.5 * (edges[:-1] + edges[1:])
    w0 = np.cumsum(hist).astype(np.float64)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mean0 = m0 / np.maximum(w0, 1)
    mean1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mean0 - mean1) ** 2
    return float(centres[int(np.argmax(between[:-1]))])


def _main_components(mask: np.ndarray, keep: float = 0.05) -> np.ndarray:
    """``mask`` without its small islands: the connected regions (faces touching) of at least
    ``keep`` times the largest one's voxels. Noise specks go, the parts of a complex that are
    apart at 20 A stay."""
    from scipy import ndimage

    labels, count = ndimage.label(mask)
    if count <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return np.isin(labels, np.flatnonzero(sizes >= keep * sizes.max()))


def _resample(vol: torch.Tensor, pixel: float, new_pixel: float) -> Tuple[torch.Tensor, float]:
    """``vol`` (N, N, N) at ``pixel`` A, band-limited to ``new_pixel``'s Nyquist and sampled
    trilinearly on an even grid of pitch ``new_pixel`` about the same centre."""
    from .templates import lowpass_cube, rotate_resample

    m = max(8, 2 * int(math.ceil(vol.shape[0] * pixel / new_pixel / 2.0)))
    smooth = lowpass_cube(vol, pixel, 2.0 * new_pixel)
    return rotate_resample(smooth, pixel, torch.eye(3), new_pixel, m), new_pixel


def _check_axes_and_voxels(path: Path, axes: Tuple[int, int, int]) -> None:
    """Refuse a map whose header's MAPC/MAPR/MAPS (``axes``) are not an order of 1, 2, 3, or
    whose voxels are not cubic. The common reader takes such an order as the stored one; for a
    molecule's template a guess could give its mirror image, so it is refused here.

    Raises:
        InputError: naming the file and the problem.
    """
    import mrcfile

    if sorted(axes) != [1, 2, 3]:
        raise InputError(path, f"has an invalid axis order in its header (MAPC, MAPR, MAPS = "
                               f"{axes[0]}, {axes[1]}, {axes[2]}; expected an order of 1, 2, 3)")
    with mrcfile.open(path, header_only=True, permissive=True) as mrc:
        size = tuple(float(v) for v in (mrc.voxel_size.x, mrc.voxel_size.y, mrc.voxel_size.z))
    if max(size) > 1.01 * min(size):
        raise InputError(path, f"has voxels that are not cubic ({size[0]:g} x {size[1]:g} x {size[2]:g} A); "
                               "resample it to one pixel size first")


@lru_cache(maxsize=8)
def _prepared(path: str, size: int, mtime_ns: int) -> MapTemplate:
    from localet_core.io.mrc_read import read_volume, read_volume_header

    from .templates import lowpass_cube  # (templates imports this module)

    p = Path(path)
    header = read_volume_header(p)  # sizes checked before any data is read
    if min(header.shape) < 8:
        raise InputError(p, f"is not a 3D map of a molecule (shape {header.shape[::-1]} voxels, "
                            "x y z; at least 8 on each axis)")
    if max(header.shape) > _MAX_BOX:
        raise InputError(p, f"has a box of {max(header.shape)} voxels; crop or bin it to at most {_MAX_BOX} first")
    pixel = header.voxel_size
    if pixel is None or not pixel > 0:
        raise InputError(p, "has no pixel size in its header; set it (e.g. IMOD's alterheader -del)")
    _check_axes_and_voxels(p, header.axes)
    data = read_volume(p).data  # in z, y, x whatever the stored order (MAPC/MAPR/MAPS)
    data = data - np.float32(np.median(_faces(data)))
    if not float(np.abs(data).max()) > 0:
        raise InputError(p, "is flat (no molecule in it)")
    # a cube, the background's noise continued into the padding (mirrored)
    n = max(data.shape) + max(data.shape) % 2
    pads = [((n - s) // 2, n - s - (n - s) // 2) for s in data.shape]
    t = torch.from_numpy(np.ascontiguousarray(np.pad(data, pads, mode="symmetric"), dtype=np.float32))
    if pixel < MAP_PIXEL_A:
        t, pixel = _resample(t, pixel, MAP_PIXEL_A)
    coarse = lowpass_cube(t, pixel, max(SCALE_RESOLUTION_A, 2.0 * pixel)).numpy()
    edge = _faces(coarse)
    sigma = 1.4826 * float(np.median(np.abs(edge - np.median(edge))))
    level = max(_otsu(coarse.ravel()), MOLECULE_SIGMA[0] * sigma)
    core = _main_components(coarse > level)
    if not core.any() or not float(coarse[core].max()) >= MOLECULE_SIGMA[1] * sigma:
        raise InputError(p, f"has no molecule standing out of its background (nothing {MOLECULE_SIGMA[1]:g} "
                            "times the background's noise above it at 20 A; is it inverted, or all noise?)")
    scale = TARGET_MEAN_V / float(coarse[core].mean())
    # the molecule's support: the core dilated by one voxel, with a one-voxel soft edge
    support = F.max_pool3d(torch.from_numpy(core.astype(np.float32))[None, None], 3, 1, 1)
    soft = F.avg_pool3d(support, 3, 1, 1)[0, 0]
    masked = (t * soft * scale).numpy()
    weight = np.clip(masked, 0.0, None)
    idx = np.indices(masked.shape, dtype=np.float64)
    com = np.array([(idx[a] * weight).sum() / weight.sum() for a in range(3)])
    inside = soft.numpy() > 0
    dist = np.sqrt(sum((idx[a] - com[a]) ** 2 for a in range(3)))
    radius = float(dist[inside].max()) + 1.0
    m = 2 * int(math.ceil(radius)) + 2
    # integer move of the centre of mass onto (m - 1) / 2 (at most half a voxel off)
    start = [int(round(com[a] - (m - 1) / 2.0)) for a in range(3)]
    out = np.zeros((m, m, m), dtype=np.float32)
    src = [slice(max(s, 0), min(s + m, n)) for s in start]
    dst = [slice(sl.start - s, sl.stop - s) for sl, s in zip(src, start)]
    out[tuple(dst)] = masked[tuple(src)]
    digest = hashlib.sha256()
    with open(p, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return MapTemplate(data=out, pixel_size=float(pixel), radius_A=radius * float(pixel),
                       sha256=digest.hexdigest(), scale=scale)


def read_map_template(entry: str) -> MapTemplate:
    """The map file ``entry`` prepared as a template (module docstring); cached per file.

    Raises:
        InputError: naming the file, when it is missing, not an MRC map, has no pixel size in
            its header, a box over 512 voxels, an invalid axis order, voxels that are not
            cubic, or no molecule standing out of its background.
    """
    p = Path(map_key(entry))
    if not p.is_file():
        raise InputError(str(entry), "no such map file (a template is a shipped id or an MRC map)")
    st = p.stat()
    return _prepared(str(p), st.st_size, st.st_mtime_ns)
