"""Reconstruction without learning: tilt geometry (IMOD conventions), ramp filters, the
back-projection kernels and the projector, WBP and SIRT."""
