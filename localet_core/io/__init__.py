"""IMOD-style file I/O: MRC stacks and volumes, .tlt, .xf, exclude lists, SerialEM .mdoc.

Every reader raises :class:`localet_core.errors.InputError` (one line naming the file) for bad
input; every writer is atomic (:func:`atomic_output`): no partial file under the final name.
"""
from localet_core.io.atomic import atomic_output
from localet_core.io.imod import parse_view_list, read_exclude_list, read_tlt, read_xf, write_tlt, write_xf
from localet_core.io.mdoc import MdocInfo, read_mdoc
from localet_core.io.mrc_read import (
    TiltStack,
    Volume,
    VolumeHeader,
    iter_volume_slabs,
    read_stack,
    read_volume,
    read_volume_header,
)
from localet_core.io.mrc_write import IncompleteVolumeError, VolumeWriter, write_volume

__all__ = [
    "atomic_output",
    "TiltStack",
    "Volume",
    "read_stack",
    "read_volume",
    "read_volume_header",
    "iter_volume_slabs",
    "VolumeHeader",
    "write_volume",
    "VolumeWriter",
    "IncompleteVolumeError",
    "read_tlt",
    "write_tlt",
    "read_xf",
    "write_xf",
    "parse_view_list",
    "read_exclude_list",
    "MdocInfo",
    "read_mdoc",
]
