"""The FSC STAR table of ``localet fsc`` and ``localet fsc-halves``: block and column names.

Written by :func:`localet_core.validation.fsc_report.write_fsc_star`, read back by the Scipion
plugin (``localet_scipion.convert.fscCurve`` / ``fscResolutions``). RELION-style labels where
RELION has one; labels starting with ``loc`` are localet's own. Read it with ``starfile.read``.

``data_general`` (:data:`BLOCK_GENERAL`, one row)
    ``rlnFinalResolution`` (Angstrom, whole volume at 0.143), ``locPixelSize`` (Angstrom),
    ``locBoxZ``, ``locBoxY``, ``locBoxX`` (voxels), ``locMasked`` (0/1), ``locTiltMin``,
    ``locTiltMax`` (degrees, nan without a tilt range), ``locVolumeA``, ``locVolumeB``
    (names, when given).
``data_fsc`` (:data:`BLOCK_FSC`, one row per shell)
    ``rlnSpectralIndex`` (shell i), ``locFrequency`` (cycles/pixel, i / max box size),
    ``rlnResolution`` (spatial frequency in 1/Angstrom, as in RELION),
    ``rlnAngstromResolution`` (Angstrom, inf for shell 0), ``rlnFourierShellCorrelation``
    (whole volume), ``locShellVoxels`` (Fourier voxels in the shell, full sphere),
    ``locHalfBitThreshold``; with a tilt range also ``locFscOutsideWedge``,
    ``locShellVoxelsOutsideWedge``, ``locFscInsideWedge``, ``locShellVoxelsInsideWedge``
    (FSC is nan in a shell with no voxel of that region; :func:`region_fsc_column`,
    :func:`region_voxels_column`).
``data_resolution`` (:data:`BLOCK_RESOLUTION`, one row per region and criterion)
    ``locRegion`` (one of :data:`REGIONS`), ``locCriterion`` (one of :data:`CRITERIA`),
    ``locFrequency`` (cycles/pixel), ``rlnAngstromResolution`` (Angstrom), ``locCrossed`` (1;
    0 when the curve never drops below the criterion: the resolution is better than Nyquist and
    the value given is the Nyquist bound, 2 x pixel size).
"""
from __future__ import annotations

from typing import Dict, Tuple

#: Resolution criteria, in the order they are reported: fixed thresholds 0.143 and 0.5
#: (Rosenthal & Henderson 2003 use 0.143 for half sets; 0.5 is the older conservative one)
#: and the half-bit information curve of van Heel & Schatz (2005).
CRITERIA: Tuple[str, ...] = ("0.143", "0.5", "half-bit")

#: Fourier regions: every voxel, outside the missing wedge (measured), inside it (not
#: measured). The wedge regions exist only when a tilt range is given.
REGIONS: Tuple[str, ...] = ("all", "outside_wedge", "inside_wedge")

BLOCK_GENERAL = "general"
BLOCK_FSC = "fsc"
BLOCK_RESOLUTION = "resolution"

# data_general
FINAL_RESOLUTION = "rlnFinalResolution"
PIXEL_SIZE = "locPixelSize"
BOX_Z, BOX_Y, BOX_X = "locBoxZ", "locBoxY", "locBoxX"
MASKED = "locMasked"
TILT_MIN, TILT_MAX = "locTiltMin", "locTiltMax"
VOLUME_A, VOLUME_B = "locVolumeA", "locVolumeB"

# data_fsc (FREQUENCY and ANGSTROM also in data_resolution)
SHELL = "rlnSpectralIndex"
FREQUENCY = "locFrequency"
SPATIAL_FREQUENCY = "rlnResolution"
ANGSTROM = "rlnAngstromResolution"
FSC = "rlnFourierShellCorrelation"
SHELL_VOXELS = "locShellVoxels"
HALF_BIT = "locHalfBitThreshold"

# data_resolution
REGION = "locRegion"
CRITERION = "locCriterion"
CROSSED = "locCrossed"

_REGION_SUFFIX: Dict[str, str] = {"outside_wedge": "OutsideWedge", "inside_wedge": "InsideWedge"}


def region_fsc_column(region: str) -> str:
    """The ``data_fsc`` column of the FSC curve of ``region`` (``all``: :data:`FSC`)."""
    return FSC if region == "all" else f"locFsc{_REGION_SUFFIX[region]}"


def region_voxels_column(region: str) -> str:
    """The ``data_fsc`` column of the shell voxel counts of ``region``."""
    return SHELL_VOXELS if region == "all" else f"{SHELL_VOXELS}{_REGION_SUFFIX[region]}"


# --------------------------------------------------------------------------------------------
# The prior-proof estimate (localet_core.validation.prior_proof), a table of its own:
# ``data_general`` (one row) ``rlnFinalResolution`` (Angstrom, the estimate's resolution; nan
# when there is none), :data:`ESTIMATE` (``prior-proof``), :data:`LIMIT` (``crossed``,
# ``no signal``, ``nyquist`` or ``none``: see EstimatedResolution), ``locPixelSize``,
# ``locTiltMin``, ``locTiltMax``, ``locVolumeA``/``locVolumeB``; and ``data_prior_proof`` (one
# row per shell, outside the missing wedge): ``rlnSpectralIndex``, ``locFrequency``,
# ``rlnResolution``, ``rlnAngstromResolution``, ``locShellVoxels``, :data:`C_EST` (nan where
# there is no estimate), :data:`C_SIGMA`, :data:`C_1`, :data:`C_2`, :data:`REFERENCE_FSC` (the
# WBP halves' FSC) and :data:`HALF_SET_FSC` (the plain half-set FSC of the method's halves,
# optimistic for learned methods).
# --------------------------------------------------------------------------------------------
BLOCK_PRIOR_PROOF = "prior_proof"
ESTIMATE = "locEstimate"
LIMIT = "locResolutionLimit"
C_EST = "locCEst"
C_SIGMA = "locCEstSigma"
C_1 = "locCEstOddVsEvenWbp"
C_2 = "locCEstEvenVsOddWbp"
REFERENCE_FSC = "locWbpHalfSetFsc"
HALF_SET_FSC = "locHalfSetFsc"
