"""Model files: ``NAME.safetensors`` holding the weights, with a JSON model card in its metadata.

Loading never unpickles code (safetensors holds raw tensors only). The card records the
architecture (:class:`ModelConfig`), the input conventions (patch size, step, filter, input
normalisation), the pixel size and tilt scheme trained on, the training data, steps, metrics and
the package version. Files that are not localet models, come from an incompatible format
version, or whose tensors do not match the card's architecture are refused with an
:class:`InputError` naming the file.

Shipped models live in ``localet_core/data/models/NAME.safetensors``; ``load_model`` accepts such a
name or a path. The format (metadata keys, version, shipped models, reading a card without
torch, the fit warnings) is :mod:`localet_core.contracts.model_card`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Tuple

import torch

from localet_core.config import ModelConfig
from localet_core.contracts.model_card import (
    DEFAULT_MODEL,
    FORMAT,
    FORMAT_VERSION,
    MODELS_DIR,
    SUFFIX,
    card_from_metadata,
    fit_warnings,  # noqa: F401  (also importable from here)
    model_file,
    shipped_model_path,
)
from localet_core.errors import FieldError, InputError, PathLike
from localet_core.network.model import LocalizedNet


def package_version() -> str:
    """The installed localet version (recorded in model cards)."""
    from localet_core import __version__

    return __version__


def resolve_model_path(name_or_path: PathLike) -> Path:
    """A shipped model name (``localet-default``) or a path (with or without ``.safetensors``)."""
    text = os.fspath(name_or_path)
    candidates = [Path(text).expanduser()]
    if not text.endswith(SUFFIX):
        candidates.append(Path(text + SUFFIX).expanduser())
    if os.sep not in text and "/" not in text:
        candidates.append(shipped_model_path(text))
    for c in candidates:
        if c.is_file():
            return c
    if text == DEFAULT_MODEL:
        raise FieldError("model", f"the shipped model {DEFAULT_MODEL} is missing from this installation "
                                  f"(expected in {MODELS_DIR}); reinstall localet or name a model file")
    raise FieldError("model", f"no model file or shipped model named {text!r}")


def save_model(path: PathLike, model: LocalizedNet, card: Dict[str, Any]) -> Path:
    """Write ``path`` (``.safetensors`` appended when missing) atomically; returns the path.

    ``card`` is completed with the format, its version, the architecture and the package version.
    """
    from safetensors.torch import save_file

    from localet_core.io import atomic_output

    path = model_file(path)
    card = dict(card)
    card.update(format=FORMAT, format_version=FORMAT_VERSION, config=model.config.to_dict(),
                package_version=card.get("package_version", package_version()),
                n_parameters=model.n_parameters())
    tensors = {k: v.detach().cpu().float().contiguous() for k, v in model.state_dict().items()}
    metadata = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "card": json.dumps(card)}
    with atomic_output(path) as tmp:
        save_file(tensors, os.fspath(tmp), metadata=metadata)
    return path


def load_model(name_or_path: PathLike, device: str = "cpu") -> Tuple[LocalizedNet, Dict[str, Any]]:
    """``(model in eval mode, card)`` from a shipped name or a path; :class:`InputError` when the
    file is unreadable, not a localet model, of another format version, or inconsistent."""
    from safetensors import safe_open

    path = resolve_model_path(name_or_path)
    try:
        with safe_open(os.fspath(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises several types for damaged files
        raise InputError(path, f"is not a readable model file ({type(exc).__name__}: "
                               f"{str(exc).splitlines()[0] if str(exc) else 'corrupt'})") from None
    card = card_from_metadata(metadata, path)
    try:
        config = ModelConfig.from_dict(card["config"])
    except (KeyError, ValueError, TypeError) as exc:
        raise InputError(path, f"has an invalid model card ({exc})") from None
    model = LocalizedNet(config)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in tensors.items()}
    if expected != found:
        missing = sorted(set(expected) - set(found))
        wrong = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
        extra = sorted(set(found) - set(expected))
        raise InputError(path, f"weights do not match the card's architecture (missing {missing}, "
                               f"wrong shape {wrong}, unexpected {extra})")
    for k, v in tensors.items():
        if not torch.isfinite(v).all():
            raise InputError(path, f"weight {k} contains NaN or infinite values")
    model.load_state_dict(tensors)
    return model.to(device).eval(), card
