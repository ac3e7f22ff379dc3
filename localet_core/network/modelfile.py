"""Model files: ``NAME.safetensors`` holding the weights, with a JSON model card in its metadata.

Loading never unpickles code (safetensors holds raw tensors only). The card records the
architecture (:class:`ModelConfig`), the input conventions (patch size, step, filter, input
normalisation), the pixel size and tilt scheme trained on, the training data, steps, metrics and
the package version. Files that are not localet models, come from an incompatible format
version, or whose tensors do not match the card's architecture are refused with an
:class:`InputError` naming the file.

Shipped models live in ``localet_core/data/models/NAME.safetensors``; ``load_model`` accepts such a
name or a path.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

from localet_core.config import DEFAULT_MODEL, ModelConfig
from localet_core.errors import FieldError, InputError, PathLike
from localet_core.network.model import LocalizedNet

FORMAT = "localet-model"
FORMAT_VERSION = 1
MODELS_DIR = Path(__file__).resolve().parents[1] / "data" / "models"


def package_version() -> str:
    try:
        from importlib.metadata import version

        return version("localet")
    except Exception:  # not installed (running from a checkout)
        return "unknown"


def resolve_model_path(name_or_path: PathLike) -> Path:
    """A shipped model name (``localet-default``) or a path (with or without ``.safetensors``)."""
    text = os.fspath(name_or_path)
    candidates = [Path(text).expanduser()]
    if not text.endswith(".safetensors"):
        candidates.append(Path(text + ".safetensors").expanduser())
    if os.sep not in text and "/" not in text:
        candidates.append(MODELS_DIR / (text if text.endswith(".safetensors") else text + ".safetensors"))
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

    path = Path(os.fspath(path))
    if path.suffix != ".safetensors":
        path = path.with_name(path.name + ".safetensors")
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
    if metadata.get("format") != FORMAT:
        raise InputError(path, "is a safetensors file but not a localet model (no model card)")
    if metadata.get("format_version") != str(FORMAT_VERSION):
        raise InputError(path, f"has model format version {metadata.get('format_version')!r}; this "
                               f"localet reads version {FORMAT_VERSION} (upgrade localet?)")
    try:
        card = json.loads(metadata["card"])
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


def fit_warnings(card: Dict[str, Any], voxel_size: Optional[float]) -> List[str]:
    """Warnings when the data lie outside what a model was trained on (one line each).

    Args:
        card: the model card (``pixel_size_A``: the voxel sizes of its training data).
        voxel_size: the reconstruction's voxel size in Angstrom (pixel size x binning), if known.
    """
    sizes = [float(s) for s in card.get("pixel_size_A") or [] if s]
    if not sizes:
        return []
    lo, hi = min(sizes), max(sizes)
    if voxel_size is None:
        return [f"the stack has no pixel size; the model was trained at {lo:g}-{hi:g} A per voxel"]
    if 0.7 * lo <= voxel_size <= 1.4 * hi:
        return []
    advice = ""
    if voxel_size < lo:
        advice = f"; try --bin {max(2, round(((lo + hi) / 2) / voxel_size))}"
    return [f"voxel size {voxel_size:g} A is outside the model's training range {lo:g}-{hi:g} A{advice}"]
