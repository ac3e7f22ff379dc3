"""Tilt-series geometry, in IMOD's conventions (measured against IMOD's `tilt`; see docs/geometry.md).

Conventions, stated once:

* A stack is ``P[view, row, column]`` (numpy order, as read by mrcfile); the tilt axis runs along
  the detector rows' direction Y after alignment, and the detector row ``j`` is the volume's ``y``.
* The output volume is ``V[z, y, x]``: what ``tilt -RotateBy90`` (or ``trimvol -rx``) writes, Z along
  the beam, the orientation users open in 3dmod after the standard pipeline.
* Centred coordinates: ``x = ix - cx``, ``y = iy - cy``, ``z = iz - cz``, with ``c = (N - 1) / 2``
  (exact centres, also for odd sizes; IMOD puts odd centres half a pixel low, we do not).
* For a tilt angle ``theta`` as written in the ``.tlt`` file (degrees) the detector column is
  ``u = x cos(theta) + z sin(theta)`` (relative to the detector centre ``(nx - 1) / 2``).
  The opposite sign mirrors the volume in z: the classic handedness bug.
* ``.xf`` lines ``a11 a12 a21 a22 dx dy`` map raw image positions to aligned ones,
  ``aligned = A @ raw + d``, in pixels relative to the image centre. A geometry with an ``.xf``
  samples the raw image at ``A^-1 (aligned - d)`` (the alignment folded into the back-projection's
  one interpolation); the loader normally resamples the views into the aligned frame first and
  drops the ``.xf`` (:mod:`localet_core.alignment`).
* Options carry IMOD ``tilt``'s names: THICKNESS, WIDTH, SHIFT (x, z), OFFSET (angle, axis
  column), XAXISTILT, EXCLUDELIST; all sizes and shifts are in output (binned) pixels.

Units: angles in degrees, lengths in pixels unless a name says Angstrom.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional, Sequence, Tuple

import numpy as np

from localet_core.config import DEFAULT_THICKNESS_ANGSTROM
from localet_core.errors import FieldError, InputError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class TiltGeometry:
    """Everything that maps output voxels to positions on the detector.

    Args:
        angles: tilt angles in degrees, one per view in stack order (the ``.tlt`` file), excluded
            views included.
        detector_shape: ``(ny, nx)`` of the raw stack in unbinned pixels.
        thickness: output Z size in output (binned) pixels.
        width: output X size in output pixels; default: the binned detector width.
        xf: ``(n_views, 2, 3)`` IMOD ``.xf`` transforms ``[[a11, a12, dx], [a21, a22, dy]]`` in
            unbinned pixels, or ``None`` for an aligned (``.ali``) stack.
        excluded: 0-based indices of views to leave out (EXCLUDELIST is 1-based; convert first).
        binning: integer binning of the detector (block average, like ``newstack -bin``).
        shift_x: SHIFT x: features move by ``+shift_x`` output pixels along X.
        shift_z: SHIFT z: features move by ``-shift_z`` output pixels along Z (IMOD's sign in the
            RotateBy90 frame).
        angle_offset: OFFSET: degrees added to every tilt angle.
        axis_offset: OFFSET's second value: the tilt axis lies at detector column
            ``(nx - 1) / 2 + axis_offset`` (output pixels); the output X centre moves with it.
        x_axis_tilt: XAXISTILT in degrees: output voxel (x, y, z) samples the specimen at
            ``(x, y cos a + z sin a, -y sin a + z cos a)``.
        pixel_size: Angstrom per unbinned detector pixel, if known.
    """

    angles: Tuple[float, ...]
    detector_shape: Tuple[int, int]
    thickness: int
    width: Optional[int] = None
    xf: Optional[np.ndarray] = field(default=None, compare=False)
    excluded: Tuple[int, ...] = ()
    binning: int = 1
    shift_x: float = 0.0
    shift_z: float = 0.0
    angle_offset: float = 0.0
    axis_offset: float = 0.0
    x_axis_tilt: float = 0.0
    pixel_size: Optional[float] = None

    def __post_init__(self) -> None:
        angles = tuple(float(a) for a in self.angles)
        object.__setattr__(self, "angles", angles)
        object.__setattr__(self, "excluded", tuple(sorted(set(int(v) for v in self.excluded))))
        if len(angles) == 0:
            raise InputError("tilt angles", "no tilt angles given")
        if not all(math.isfinite(a) for a in angles):
            raise InputError("tilt angles", "contain NaN or infinite values")
        ny, nx = (int(s) for s in self.detector_shape)
        object.__setattr__(self, "detector_shape", (ny, nx))
        _check_binning(self.binning)
        if nx // self.binning < 2 or ny // self.binning < 1:
            raise FieldError("binning", f"{self.binning} leaves no image of {nx}x{ny} pixels")
        if int(self.thickness) != self.thickness or self.thickness < 1:
            raise FieldError("thickness", f"must be a whole number >= 1, got {self.thickness}")
        if self.width is not None and (int(self.width) != self.width or self.width < 1):
            raise FieldError("width", f"must be a whole number >= 1, got {self.width}")
        for v in self.excluded:
            if not 0 <= v < len(angles):
                raise InputError("excluded views", f"view {v + 1} is outside 1..{len(angles)}")
        if len(self.used_views) == 0:
            raise InputError("excluded views", "every view is excluded")
        for i in self.used_views:
            if abs(angles[i] + self.angle_offset) >= 90.0:
                raise InputError(
                    "tilt angles",
                    f"view {i + 1} has tilt angle {angles[i] + self.angle_offset:g} degrees; "
                    "|angle| must be below 90")
        if self.xf is not None:
            xf = np.asarray(self.xf, dtype=np.float64)
            if xf.shape != (len(angles), 2, 3):
                raise InputError(
                    "xf", f"has {xf.shape[0] if xf.ndim else 0} transforms for {len(angles)} views")
            object.__setattr__(self, "xf", xf)
        if abs(self.x_axis_tilt) >= 90.0:
            raise FieldError("x_axis_tilt", f"must be below 90 degrees, got {self.x_axis_tilt:g}")

    # ----------------------------------------------------------------- derived sizes
    @property
    def n_views(self) -> int:
        return len(self.angles)

    @property
    def used_views(self) -> Tuple[int, ...]:
        """0-based indices of the views that take part, in stack order."""
        excluded = set(self.excluded)
        return tuple(i for i in range(len(self.angles)) if i not in excluded)

    @property
    def used_angles(self) -> np.ndarray:
        """``(n_used,)`` tilt angles in degrees, with the OFFSET applied."""
        return np.array([self.angles[i] for i in self.used_views]) + self.angle_offset

    @property
    def binned_detector_shape(self) -> Tuple[int, int]:
        ny, nx = self.detector_shape
        return ny // self.binning, nx // self.binning

    @property
    def crop_offsets(self) -> Tuple[int, int]:
        """Raw pixels cropped at the start of (rows, columns) before block-binning: the remainder
        is split, so the binned grid stays centred on the raw image to within half a raw pixel."""
        ny, nx = self.detector_shape
        nyb, nxb = self.binned_detector_shape
        return (ny - nyb * self.binning) // 2, (nx - nxb * self.binning) // 2

    @property
    def detector_centre(self) -> Tuple[float, float]:
        """(row, column) of the raw image centre ``((ny-1)/2, (nx-1)/2)`` in binned pixel indices."""
        b = self.binning
        oy, ox = self.crop_offsets
        ny, nx = self.detector_shape
        return (((ny - 1) / 2 - oy - (b - 1) / 2) / b, ((nx - 1) / 2 - ox - (b - 1) / 2) / b)

    @property
    def output_shape(self) -> Tuple[int, int, int]:
        """``(nz, ny, nx)`` of the output volume, in output pixels."""
        nyb, nxb = self.binned_detector_shape
        return int(self.thickness), nyb, int(self.width if self.width is not None else nxb)

    @property
    def output_centre(self) -> Tuple[float, float, float]:
        """(z, y, x) index of the volume centre. Y follows the binned detector rows exactly, so
        output row ``iy`` lies on detector row ``iy`` (no resampling across the tilt axis)."""
        nz, _, nx = self.output_shape
        return (nz - 1) / 2, self.detector_centre[0], (nx - 1) / 2

    @property
    def voxel_size(self) -> Optional[float]:
        """Output voxel size in Angstrom (``pixel_size * binning``), if the pixel size is known."""
        return None if self.pixel_size is None else self.pixel_size * self.binning

    @property
    def is_separable(self) -> bool:
        """True when every view maps output row y to detector row y (no .xf, no X-axis tilt):
        back-projection is then a 1D interpolation per view, shared by all rows."""
        return self.xf is None and self.x_axis_tilt == 0.0

    def view_weights(self) -> np.ndarray:
        """``(n_used,)`` quadrature weights in radians: each view's local tilt increment (IMOD's
        DENSWEIGHT), half the distance to its two neighbours in angle, the full distance for the
        two end views. Equal to the tilt step for uniform schemes; a single view gets 1."""
        angles = np.deg2rad(self.used_angles)
        n = angles.size
        if n == 1:
            return np.ones(1)
        order = np.argsort(angles, kind="stable")
        a = angles[order]
        inc = np.empty(n)
        inc[1:-1] = (a[2:] - a[:-2]) / 2
        inc[0] = a[1] - a[0]
        inc[-1] = a[-1] - a[-2]
        weights = np.empty(n)
        weights[order] = inc
        return weights

    # ----------------------------------------------------------------- the mapping
    def detector_affine(self, views: Optional[Sequence[int]] = None) -> "torch.Tensor":
        """:meth:`detector_affine_array` as a float64 torch tensor."""
        import torch

        return torch.from_numpy(self.detector_affine_array(views))

    def detector_affine_array(self, views: Optional[Sequence[int]] = None) -> np.ndarray:
        """Per-view affine maps from output voxel indices to detector positions.

        Every option (centres, SHIFT, XAXISTILT, OFFSET, tilt angle, ``.xf``, binning) composes
        into one affine map per view, so this matrix is the single source of truth of the
        geometry: ``(col, row) = M[:, :, :3] @ (ix, iy, iz) + M[:, :, 3]``.

        Args:
            views: positions in :attr:`used_views` (default: all used views).

        Returns:
            ``(n_views, 2, 4)`` float64: rows give the detector column (X) and row (Y) in binned
            raw-image pixel indices.
        """
        pos = list(range(len(self.used_views))) if views is None else list(views)
        cz, cy, cx = self.output_centre
        # voxel index (ix, iy, iz, 1) -> centred specimen coordinates (x, y, z, 1)
        to_specimen = np.eye(4)
        to_specimen[:3, 3] = [-cx - self.shift_x, -cy, -cz + self.shift_z]
        a = math.radians(self.x_axis_tilt)
        level = np.eye(4)  # XAXISTILT: rotation about X
        level[1, 1:3] = [math.cos(a), math.sin(a)]
        level[2, 1:3] = [-math.sin(a), math.cos(a)]
        specimen = level @ to_specimen
        ry, rx = self.detector_centre
        out = np.empty((len(pos), 2, 4))
        for k, p in enumerate(pos):
            view = self.used_views[p]
            theta = math.radians(self.angles[view] + self.angle_offset)
            # projection: u = x cos + z sin + axis offset, v = y (aligned, centred)
            project = np.array([[math.cos(theta), 0.0, math.sin(theta), self.axis_offset],
                                [0.0, 1.0, 0.0, 0.0],
                                [0.0, 0.0, 0.0, 1.0]])
            to_raw = np.eye(3)
            if self.xf is not None:  # aligned = A raw + d  =>  raw = A^-1 (aligned - d)
                inv = np.linalg.inv(self.xf[view, :, :2])
                to_raw[:2, :2] = inv
                to_raw[:2, 2] = -inv @ (self.xf[view, :, 2] / self.binning)
            to_pixel = np.array([[1.0, 0.0, rx], [0.0, 1.0, ry], [0.0, 0.0, 1.0]])
            out[k] = (to_pixel @ to_raw @ project @ specimen)[:2]
        return out

    def detector_coordinates(
        self,
        iz: "torch.Tensor",
        iy: "torch.Tensor",
        ix: "torch.Tensor",
        views: Optional[Sequence[int]] = None,
        dtype: "Optional[torch.dtype]" = None,
    ) -> "Tuple[torch.Tensor, torch.Tensor]":
        """Where output voxels project on each view's binned raw image.

        Args:
            iz, iy, ix: output voxel indices (any broadcastable shapes ``S``; fractional allowed).
            views: positions in :attr:`used_views` (default: all used views).
            dtype: float32 or float64 (the default; never lower: 1024 pixels need better than
                1e-3 precision).

        Returns:
            ``(rows, cols)``, each ``(n_views, *S)``: fractional pixel indices in the binned
            raw image (row = Y, column = X).
        """
        import torch

        dtype = torch.float64 if dtype is None else dtype
        if dtype not in (torch.float32, torch.float64):
            raise ValueError("coordinates must be float32 or float64")
        device = iz.device if isinstance(iz, torch.Tensor) else None
        iz, iy, ix = (torch.as_tensor(t, dtype=torch.float64, device=device) for t in (iz, iy, ix))
        iz, iy, ix = torch.broadcast_tensors(iz, iy, ix)
        m = self.detector_affine(views).to(device)
        shape = (m.shape[0],) + (1,) * ix.dim()

        def apply(r: int) -> torch.Tensor:
            c = [m[:, r, j].view(shape) for j in range(4)]
            return (c[0] * ix + c[1] * iy + c[2] * iz + c[3]).to(dtype)

        return apply(1), apply(0)

    def check_stack(self, shape: Sequence[int], source: object = "stack") -> None:
        """Raise :class:`InputError` unless a stack of ``shape`` (n_views, ny, nx) fits."""
        if len(shape) != 3:
            raise InputError(source, f"expected a 3D stack, got shape {tuple(shape)}")
        if shape[0] != self.n_views:
            raise InputError(source, f"has {shape[0]} views but {self.n_views} tilt angles were given")
        if tuple(shape[1:]) != self.detector_shape:
            raise InputError(source, f"images are {shape[2]}x{shape[1]}, geometry expects "
                                     f"{self.detector_shape[1]}x{self.detector_shape[0]}")


def _check_binning(binning: int) -> None:
    if binning < 1 or int(binning) != binning:
        raise FieldError("binning", f"must be a whole number >= 1, got {binning}")


def default_thickness(detector_shape: Tuple[int, int], pixel_size: Optional[float], binning: int) -> int:
    """A default THICKNESS in output pixels: 300 nm when the pixel size is known, else nx/4."""
    _check_binning(binning)
    nx_b = detector_shape[1] // binning
    if pixel_size:
        return max(1, int(round(DEFAULT_THICKNESS_ANGSTROM / (pixel_size * binning))))
    return max(1, nx_b // 4)
