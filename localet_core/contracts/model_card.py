"""The localet model file and its card, read without torch.

A model file is ``NAME.safetensors``: the weights, and in the file's metadata ``format``
(:data:`FORMAT`), ``format_version`` (:data:`FORMAT_VERSION`, as a string) and ``card``, a JSON
object describing the model (architecture ``config``, input conventions, ``pixel_size_A``: the
voxel sizes of the training data, training data, steps, metrics, package version; see
:mod:`localet_core.network.modelfile`, which writes and loads them with torch).

A safetensors file starts with the byte length of its JSON header (8 bytes, little-endian
unsigned), then that header; the metadata is the header's ``__metadata__`` object of strings.
Reading it needs no framework, so the Scipion plugin reads cards (and the CLI its warnings)
through this module while only :func:`localet_core.network.modelfile.load_model` needs torch.

Shipped models live in :data:`MODELS_DIR` (``localet_core/data/models/NAME.safetensors``);
:data:`DEFAULT_MODEL` is the one ``localet reconstruct`` uses unless told otherwise.
"""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

from localet_core.errors import InputError, PathLike

#: ``format`` in a localet model file's metadata
FORMAT = "localet-model"
#: the ``format_version`` this localet reads and writes
FORMAT_VERSION = 1
#: the shipped model ``localet reconstruct`` uses by default
DEFAULT_MODEL = "localet-default"
#: the folder of the shipped models
MODELS_DIR = Path(__file__).resolve().parents[1] / "data" / "models"
#: the extension of model files
SUFFIX = ".safetensors"
#: a model fits voxel sizes from FIT_RANGE[0] x its smallest to FIT_RANGE[1] x its largest
#: training voxel size (the range of scales its patches have learned, with a margin of a fifth:
#: the shipped model, trained at 8-16 A, warns from 20 A up)
FIT_RANGE = (0.8, 1.2)

# safetensors refuses headers above 100 MB; so do we (a bigger "size" means another format)
_MAX_HEADER = 100_000_000


def model_file(path: PathLike) -> Path:
    """``path`` with :data:`SUFFIX` appended unless it already ends in it
    (``out/model`` -> ``out/model.safetensors``): the file ``localet train --name`` writes."""
    p = Path(os.fspath(path))
    return p if p.suffix == SUFFIX else p.with_name(p.name + SUFFIX)


def shipped_model_path(name: str = DEFAULT_MODEL) -> Path:
    """Where the shipped model ``name`` lives (whether or not this installation has it)."""
    return MODELS_DIR / (name if name.endswith(SUFFIX) else name + SUFFIX)


def read_metadata(path: PathLike) -> Dict[str, str]:
    """The ``__metadata__`` of a safetensors file (``{}`` when it has none), from its header
    only. :class:`InputError` (a ``ValueError``) naming the file when it is not a safetensors
    file; ``OSError`` when it cannot be opened."""
    p = os.fspath(path)
    with open(p, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise InputError(p, "is not a safetensors file (too short)")
        (size,) = struct.unpack("<Q", head)
        if size <= 0 or size > _MAX_HEADER:
            raise InputError(p, "is not a safetensors file (bad header size)")
        try:
            header = json.loads(f.read(size).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise InputError(p, "is not a safetensors file (unreadable header)") from None
    if not isinstance(header, dict):
        raise InputError(p, "is not a safetensors file (unreadable header)")
    meta = header.get("__metadata__") or {}
    return dict(meta) if isinstance(meta, dict) else {}


def card_from_metadata(metadata: Mapping[str, str], path: PathLike) -> Dict[str, Any]:
    """The card of a localet model file from its metadata, checked: :class:`InputError` naming
    ``path`` when the file is not a localet model, has another format version, or its card is
    not a JSON object."""
    if metadata.get("format") != FORMAT:
        raise InputError(path, "is a safetensors file but not a localet model (no model card)")
    if metadata.get("format_version") != str(FORMAT_VERSION):
        raise InputError(path, f"has model format version {metadata.get('format_version')!r}; this "
                               f"localet reads version {FORMAT_VERSION} (upgrade localet?)")
    try:
        card = json.loads(metadata["card"])
    except (KeyError, ValueError, TypeError) as exc:
        raise InputError(path, f"has an invalid model card ({exc})") from None
    if not isinstance(card, dict):
        raise InputError(path, "has an invalid model card (not a JSON object)")
    return card


def read_model_card(path: PathLike) -> Dict[str, Any]:
    """The card of a model file, leniently (for showing and importing models): the JSON card
    in its metadata; ``{"card": TEXT}`` when that is not JSON; the metadata itself when the file
    has no card (``{}`` when it has no metadata). :class:`InputError` (a ``ValueError``) when the
    file is not a safetensors file; ``OSError`` when it cannot be opened."""
    meta = read_metadata(path)
    card = meta.get("card")
    if card:
        try:
            parsed = json.loads(card)
        except json.JSONDecodeError:
            return {"card": card}
        return parsed if isinstance(parsed, dict) else {"card": card}
    return meta


def training_range(card: Mapping[str, Any]) -> Optional[Tuple[float, float]]:
    """``(smallest, largest)`` voxel size in Angstrom of a model's training data, from the
    card's ``pixel_size_A``; None when the card does not say."""
    sizes = [float(s) for s in card.get("pixel_size_A") or [] if s]
    return (min(sizes), max(sizes)) if sizes else None


def fit_warnings(card: Mapping[str, Any], voxel_size: Optional[float],
                 binning_option: str = "--bin") -> List[str]:
    """Warnings when the data lie outside what a model was trained on (one line each).

    Args:
        card: the model card (``pixel_size_A``: the voxel sizes of its training data).
        voxel_size: the reconstruction's voxel size in Angstrom (pixel size x binning), if known.
        binning_option: how the caller names the binning in its advice: the CLI's ``--bin``
            ("try --bin 4"), the Scipion form's ``Binning =`` ("try Binning = 4").

    Returns:
        ``[]`` when the voxel size lies within :data:`FIT_RANGE` of the training range, or the
        card records no training voxel size.
    """
    fit = training_range(card)
    if fit is None:
        return []
    lo, hi = fit
    trained = f"{lo:g}-{hi:g} A" if hi > lo else f"{lo:g} A"
    if voxel_size is None:
        return [f"the stack has no pixel size; the model was trained at {trained} per voxel"]
    if FIT_RANGE[0] * lo <= voxel_size <= FIT_RANGE[1] * hi:
        return []
    advice = ""
    if voxel_size < lo:
        advice = f"; try {binning_option} {max(2, round(((lo + hi) / 2) / voxel_size))}"
    where = f"training range {trained}" if hi > lo else f"training range ({trained} only)"
    return [f"voxel size {voxel_size:g} A is outside the model's {where}{advice}"]
