"""Validation: Fourier grids and the missing wedge, the FSC and its reports, half sets, the
prior-proof resolution estimate for learned reconstructions, and image-quality metrics."""
