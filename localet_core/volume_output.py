"""Stream reconstruction slabs into an MRC file (atomic, never a full copy in memory)."""
from __future__ import annotations

import sys
from typing import Iterable, Optional, Tuple

import numpy as np

from localet_core.errors import PathLike
from localet_core.geometry import TiltGeometry
from localet_core.io import VolumeWriter


def write_slabs(
    path: PathLike,
    geometry: TiltGeometry,
    slabs: Iterable[Tuple[int, int, np.ndarray]],
    progress: Optional[bool] = None,
    description: str = "reconstructing",
) -> None:
    """Write ``(y0, y1, slab (nz, y1 - y0, nx))`` slabs covering ``geometry.output_shape`` to
    ``path`` with the output voxel size; the file appears only once every slab is written.

    Args:
        progress: show a progress bar with ETA on stderr (default: when stderr is a terminal).
    """
    from tqdm import tqdm

    shape = geometry.output_shape
    if progress is None:
        progress = sys.stderr.isatty()
    with VolumeWriter(path, shape=shape, voxel_size=geometry.voxel_size) as writer, \
            tqdm(total=shape[1], unit="row", desc=description, disable=not progress,
                 file=sys.stderr, leave=False) as bar:
        for y0, y1, slab in slabs:
            writer[:, y0:y1, :] = slab
            bar.update(y1 - y0)
