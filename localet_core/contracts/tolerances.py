"""When two pixel sizes are the same.

Pixel sizes reach localet rounded in different ways: float32 MRC headers (cell size over the
number of voxels), three decimals in Scipion's forms and tables, a binned tilt series' pixel size
times the binning against a reference volume's header. Those roundings are far below 0.05 %
for any pixel size above 1 A; a real mismatch (a reference at another binning, a volume from
another data set) is a factor, not a fraction of a percent. :data:`PIXEL_SIZE_TOLERANCE`
(0.5 %) sits between the two: a 0.5 % error in the sampling moves a feature at the edge of a
1000-voxel box by at most 2.5 voxels from its centre. ``localet fsc`` and the Scipion 'FSC
validation' and 'train' boxes use it.
"""
from __future__ import annotations

#: largest relative difference between two pixel sizes that still counts as equal
PIXEL_SIZE_TOLERANCE = 0.005


def same_pixel_size(a: float, b: float, tolerance: float = PIXEL_SIZE_TOLERANCE) -> bool:
    """Whether pixel sizes ``a`` and ``b`` (Angstrom, positive) agree within ``tolerance``
    relative to the larger one: ``|a - b| <= tolerance * max(a, b)``."""
    return abs(a - b) <= tolerance * max(abs(a), abs(b))
