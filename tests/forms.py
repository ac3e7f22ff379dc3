"""Shared checks of the network's two forms (imported by the network tests)."""
import numpy as np

from localet_core.network.inference import iter_direct_slabs, iter_fast_slabs


def volume(slabs) -> np.ndarray:
    """The ``(nz, ny, nx)`` volume of ``(y0, y1, slab)`` slabs in order."""
    return np.concatenate([s for _, _, s in slabs], axis=1)


def assert_fast_equals_direct(model, images, geometry, budget: int = 1 << 20) -> np.ndarray:
    """The fast form equals the direct (patch) form within 1e-4 of the volume's range, with the
    default back-projection kernel and, on separable geometries, the grid-sample one too.
    Returns the direct form's volume."""
    direct = volume(iter_direct_slabs(model, images, geometry, budget))
    fast = volume(iter_fast_slabs(model, images, geometry, budget))
    assert fast.shape == geometry.output_shape
    assert np.abs(fast - direct).max() <= 1e-4 * np.ptp(direct)
    if geometry.is_separable:
        other = volume(iter_fast_slabs(model, images, geometry, budget, kernel="grid_sample"))
        assert np.abs(other - direct).max() <= 1e-4 * np.ptp(direct)
    return direct
