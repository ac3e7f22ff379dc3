"""Load a user's tilt series (stack + angles + optional alignment and exclusions) and build
its :class:`TiltGeometry`: the one entry point the CLI and the Scipion protocols share.

With an alignment (IMOD ``.xf`` or AreTomo ``.aln``) the used views are resampled here, once,
into the aligned frame (:mod:`localet_core.alignment`): the series handed on is an aligned, binned
stack whose geometry has no ``.xf``, so every command, training and FSC runs exactly as on an
aligned stack (fast kernels, network patches in the trained frame)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import numpy as np

from localet_core.config import OutputOptions
from localet_core.errors import FieldError, InputError, PathLike
from localet_core.io import TiltStack, parse_view_list, read_exclude_list, read_mdoc, read_stack, read_tlt, read_xf
from localet_core.reconstruction.geometry import TiltGeometry, default_thickness


@dataclass
class TiltSeries:
    """A loaded tilt series: the stack, and the geometry that maps it to an output volume."""

    stack: TiltStack
    geometry: TiltGeometry
    #: the raw stack's geometry (with its ``.xf``) when the stack was resampled into the aligned
    #: frame; ``None`` when the stack is used as read
    raw_geometry: Optional[TiltGeometry] = None

    @property
    def data(self) -> np.ndarray:
        """``(n_views, ny, nx)`` float32 stack (aligned and binned when :attr:`raw_geometry` is set)."""
        return self.stack.data

    @property
    def stack_shape(self) -> Tuple[int, int, int]:
        """``(n_views, ny, nx)`` of the stack as read (the raw stack, before any resampling)."""
        geometry = self.raw_geometry or self.geometry
        return (geometry.n_views,) + tuple(geometry.detector_shape)

    def output_labels(self, label: str, stack: Optional[TiltStack] = None) -> Tuple[str, ...]:
        """The header labels of a volume reconstructed from this series (or from its half
        ``stack``): the stack's labels, then ``label`` (:func:`localet_core.io.labels.history_label`)."""
        from localet_core.io.labels import merge_labels

        return merge_labels((stack or self.stack).labels, [label])

    def prepare_half(self, half: TiltStack) -> TiltStack:
        """A half (odd/even) stack of the same raw series, resampled like the full stack. At
        binning 1 ``half.data`` is resampled in place (pass a copy to keep the raw views).

        Raises:
            InputError: naming the half stack's file when its shape differs from the raw stack's.
        """
        geometry = self.raw_geometry or self.geometry
        geometry.check_stack(half.data.shape, half.path or "half stack")
        if self.raw_geometry is None:
            return half
        return TiltStack(data=_align_owned(half.data, self.raw_geometry), pixel_size=self.stack.pixel_size,
                         path=half.path, labels=half.labels)


def _align_owned(data: np.ndarray, geometry: TiltGeometry) -> np.ndarray:
    """:func:`localet_core.alignment.align_stack` of a stack this module read (so it may be
    overwritten): in place at binning 1, so a large stack is held once."""
    from localet_core.native import native_enabled

    in_place = geometry.binning == 1 and data.dtype == np.float32 and data.flags.writeable
    if native_enabled():  # the compiled bicubic resampler: no torch import
        from localet_core.alignment_numpy import align_stack_array

        return align_stack_array(data, geometry, out=data if in_place else None)
    from localet_core.alignment import align_stack

    return align_stack(data, geometry, out=data if in_place else None)


def load_tilt_series(
    stack_path: PathLike,
    tlt: Optional[PathLike] = None,
    xf: Optional[PathLike] = None,
    exclude: Optional[Union[str, PathLike, Sequence[int]]] = None,
    mdoc: Optional[PathLike] = None,
    pixel_size: Optional[float] = None,
    output: OutputOptions = OutputOptions(),
    aln: Optional[PathLike] = None,
    resample: bool = True,
) -> TiltSeries:
    """Read and cross-check every input of a reconstruction.

    Args:
        stack_path: ``.st/.mrc/.mrcs/.ali`` stack ``(n_views, ny, nx)``.
        tlt: ``.tlt``/``.rawtlt`` angles (degrees, stack order). Optional when ``mdoc`` is given.
        xf: IMOD ``.xf`` alignment of the raw stack (omit for an aligned ``.ali``).
        aln: AreTomo2/3 ``.aln`` alignment of the raw stack instead of ``xf``: its global
            alignment becomes ``.xf`` transforms, its tilt angles are used when ``tlt`` is absent,
            its dark views are excluded (:mod:`localet_core.io.aln`; local alignment is ignored).
        exclude: views to leave out, 1-based like IMOD's EXCLUDELIST: a list, list text such as
            ``"1-3,40"``, or a file holding such a list.
        mdoc: SerialEM ``.mdoc``: angles (when no ``tlt``) and pixel size (when the header has none).
        pixel_size: Angstrom per pixel, overriding the header.
        output: output grid options.
        resample: with an alignment, resample the used views into the aligned frame once
            (:func:`localet_core.alignment.align_stack`; the default). ``False`` keeps the raw
            stack and the ``.xf`` in the geometry (the single-interpolation reference path).

    Raises:
        InputError: any unreadable file, or files that do not fit together (counts, sizes).
    """
    stack = read_stack(stack_path, pixel_size=pixel_size)
    info = read_mdoc(mdoc) if mdoc is not None else None
    if xf is not None and aln is not None:
        raise InputError(aln, "give one alignment: an .xf or an .aln, not both")
    aretomo = None
    if aln is not None:
        from localet_core.io.aln import read_aln

        aretomo = read_aln(aln)
        nx_a, ny_a, nz_a = aretomo.raw_size
        if nz_a != stack.n_views or (ny_a, nx_a) != tuple(stack.data.shape[1:]):
            raise InputError(aln, f"is for a raw stack of {nx_a}x{ny_a}x{nz_a} (x, y, views) but "
                                  f"{Path(stack_path).name} is {stack.data.shape[2]}x"
                                  f"{stack.data.shape[1]}x{stack.n_views}")
    if tlt is not None:
        angles = read_tlt(tlt)
        angle_source: object = tlt
    elif aretomo is not None:
        angles = aretomo.angles
        angle_source = aln
    elif info is not None:
        angles = info.angles
        angle_source = mdoc
    else:
        raise FieldError("tilt_angles", "tilt angles are needed: give a .tlt file (or an .mdoc or .aln)")
    if angles.size != stack.n_views:
        raise InputError(angle_source, f"has {angles.size} tilt angles but the stack "
                                       f"{Path(stack_path).name} has {stack.n_views} views")
    if stack.pixel_size is None and info is not None and info.pixel_size:
        stack.pixel_size = info.pixel_size
    transforms = None
    if xf is not None:
        transforms = read_xf(xf)
        if transforms.shape[0] != stack.n_views:
            raise InputError(xf, f"has {transforms.shape[0]} transforms but the stack "
                                 f"{Path(stack_path).name} has {stack.n_views} views")
    if aretomo is not None:
        transforms = aretomo.xf
    excluded: Tuple[int, ...] = () if aretomo is None else aretomo.excluded
    if exclude is not None:
        if isinstance(exclude, (list, tuple)):
            views = list(exclude)
        elif isinstance(exclude, str) and not os.path.exists(os.path.expanduser(exclude)):
            try:
                views = parse_view_list(exclude, source=None)  # list text such as "1-3,40"
            except InputError as exc:
                if any(c.isalpha() or c in "/\\" for c in exclude):  # meant as a file name
                    raise InputError(exclude, "file not found (--exclude takes a view list such as "
                                              "1-3,40 or a file holding one)") from None
                raise FieldError("exclude", exc.problem) from None
        else:
            views = read_exclude_list(exclude)
        for v in views:
            if not 1 <= v <= stack.n_views:
                raise FieldError("exclude", f"view {v} is outside 1..{stack.n_views}")
        excluded = tuple(sorted(set(excluded) | {v - 1 for v in views}))
    for i, a in enumerate(angles):
        if abs(a + output.angle_offset) >= 90.0 and i not in excluded:
            raise InputError(angle_source, f"view {i + 1} has tilt angle {a + output.angle_offset:g}"
                                           " degrees; |angle| must be below 90")
    used = [a for i, a in enumerate(angles) if i not in excluded]
    if len(used) > 1 and max(used) - min(used) < 1e-6:
        raise InputError(angle_source, f"all {len(used)} tilt angles are {used[0]:g} degrees: a tilt "
                                       "series needs views at different angles")
    ny, nx = stack.data.shape[1:]
    thickness = output.thickness
    if thickness is None:
        thickness = default_thickness((ny, nx), stack.pixel_size, output.binning)
    geometry = TiltGeometry(
        angles=tuple(angles), detector_shape=(ny, nx), thickness=thickness, width=output.width,
        xf=transforms, excluded=excluded, binning=output.binning, shift_x=output.shift_x,
        shift_z=output.shift_z, angle_offset=output.angle_offset, axis_offset=output.axis_offset,
        x_axis_tilt=output.x_axis_tilt, pixel_size=stack.pixel_size)
    if transforms is None or not resample:
        return TiltSeries(stack=stack, geometry=geometry)
    from localet_core.alignment_numpy import aligned_geometry

    aligned = aligned_geometry(geometry)
    data = _align_owned(stack.data, geometry)
    return TiltSeries(stack=TiltStack(data=data, pixel_size=aligned.pixel_size, path=stack.path, labels=stack.labels),
                      geometry=aligned, raw_geometry=geometry)
