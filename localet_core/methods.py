"""Reconstruction methods by name: the one registry used by the CLI, the demo, ``fsc-halves``,
the Scipion plugin (through the CLI) and the benchmarks.

Each method turns a raw stack ``(n_views, ny, nx)`` and its :class:`TiltGeometry` into slabs of
the output volume (:mod:`localet_core.pipeline`)::

    method = make_method("wbp", ramp=ETOMO_RADIAL, device="cpu")
    volume = method.volume(stack, geometry)          # (nz, ny, nx) float32
    write_slabs("rec.mrc", geometry, method.slabs(stack, geometry))

``learned`` tells whether a method carries a learned prior (which can inflate a plain half-set
FSC, see :mod:`localet_core.validation.halfset`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Dict, Iterator, Optional, Tuple, Type, Union

import numpy as np
import torch

from localet_core.config import DEFAULT_MODEL, FORMS, PRECISIONS, SIRT_ITERATIONS, SIRT_RELAXATION
from localet_core.device import resolve_device
from localet_core.errors import FieldError
from localet_core.pipeline import Slab, assemble_slabs
from localet_core.reconstruction.filters import RampFilter
from localet_core.reconstruction.geometry import TiltGeometry


class Method:
    """Base of the reconstruction methods: subclasses implement :meth:`slabs`."""

    name: ClassVar[str] = ""
    #: whether the method carries a learned prior
    learned: ClassVar[bool] = False

    def slabs(self, stack: Union[np.ndarray, torch.Tensor], geometry: TiltGeometry) -> Iterator[Slab]:
        """``(y0, y1, (nz, y1 - y0, nx) float32)`` slabs of the reconstruction, in order."""
        raise NotImplementedError

    def volume(self, stack: Union[np.ndarray, torch.Tensor], geometry: TiltGeometry,
               on_slab: Optional[Callable[[int, int], None]] = None) -> np.ndarray:
        """The whole ``geometry.output_shape`` volume in memory."""
        return assemble_slabs(geometry.output_shape, self.slabs(stack, geometry), on_slab, description=self.name)

    def describe(self) -> str:
        """A few words for logs and reports."""
        return self.name


@dataclass
class WBP(Method):
    """Weighted back-projection (:func:`localet_core.reconstruction.wbp.iter_wbp_slabs`).

    Args:
        ramp: ramp filter; ``None`` for a plain (unfiltered) back-projection.
        kernel: back-projection kernel (``auto``: the fastest that applies).
        budget: working-memory bytes (default: half the free memory, capped).
    """

    ramp: Optional[RampFilter] = field(default_factory=RampFilter)
    device: Union[str, torch.device] = "auto"
    budget: Optional[int] = None
    kernel: str = "auto"
    name: ClassVar[str] = "wbp"

    def slabs(self, stack, geometry):
        from localet_core.reconstruction.wbp import iter_wbp_slabs

        return iter_wbp_slabs(stack, geometry, self.ramp, resolve_device(self.device), self.kernel, self.budget)


@dataclass
class SIRT(Method):
    """SIRT (:func:`localet_core.reconstruction.sirt.iter_sirt_slabs`), a quality baseline."""

    iterations: int = SIRT_ITERATIONS
    relaxation: float = SIRT_RELAXATION
    device: Union[str, torch.device] = "auto"
    budget: Optional[int] = None
    name: ClassVar[str] = "sirt"

    def slabs(self, stack, geometry):
        from localet_core.reconstruction.sirt import iter_sirt_slabs

        return iter_sirt_slabs(stack, geometry, self.iterations, self.relaxation,
                               resolve_device(self.device), self.budget)

    def describe(self) -> str:
        return f"sirt ({self.iterations} it.)"


@dataclass
class Localet(Method):
    """The localized network (:func:`localet_core.network.inference.iter_model_slabs`).

    Args:
        model: a :class:`~localet_core.network.model.LocalizedNet`, a shipped model name or a
            ``.safetensors`` path (loaded with its card).
        precision: ``fp32`` or ``bf16`` for the per-voxel layers.
        form: ``fast`` (factorised, exact) or ``direct`` (patch by patch, for checks).
        mirrors: 1, or 2 or 4 to average the model with its mirror images
            (:mod:`localet_core.network.mirror`): a little better, 2x or 4x the time.
    """

    model: Any = DEFAULT_MODEL
    device: Union[str, torch.device] = "auto"
    budget: Optional[int] = None
    precision: str = PRECISIONS[0]
    form: str = FORMS[0]
    mirrors: int = 1
    card: Dict[str, Any] = field(default_factory=dict)
    name: ClassVar[str] = "localet"
    learned: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise FieldError("precision", f"must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.form not in FORMS:
            raise FieldError("form", f"must be one of {', '.join(FORMS)}, got {self.form!r}")
        if not isinstance(self.model, torch.nn.Module):
            from localet_core.network.modelfile import load_model

            self.model, self.card = load_model(self.model)
        from localet_core.network.mirror import check_mirrors

        check_mirrors(self.model, self.mirrors)  # FieldError now, not after the views are read

    def slabs(self, stack, geometry):
        from localet_core.network.inference import iter_model_slabs

        return iter_model_slabs(stack, geometry, self.model, resolve_device(self.device), self.budget,
                                self.precision, self.form, self.mirrors)

    def describe(self) -> str:
        mirrors = f", {self.mirrors} mirrors" if self.mirrors > 1 else ""
        return f"localet ({self.card.get('name', 'model')}, {self.form}/{self.precision}{mirrors})"


#: name -> method class
METHODS: Dict[str, Type[Method]] = {cls.name: cls for cls in (WBP, SIRT, Localet)}


def method_names() -> Tuple[str, ...]:
    """The registered method names (``wbp``, ``sirt``, ``localet``)."""
    return tuple(METHODS)


def make_method(name: str, **options: Any) -> Method:
    """The method ``name`` with ``options`` (fields of its class; unknown ones are ignored,
    so callers can pass one set of options to any method). Raises :class:`InputError` for an
    unknown name."""
    try:
        cls = METHODS[name]
    except KeyError:
        raise FieldError("method", f"unknown method {name!r}; choose from {', '.join(METHODS)}") from None
    known = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in options.items() if k in known})


def scratch_sizes(method: Method, geometry: TiltGeometry, near: Any, count: int = 1) -> Dict[Any, int]:
    """``{scratch name: bytes}`` of the scratch files ``method`` writes for ``count``
    reconstructions of ``geometry`` (one at a time) next to ``near`` (an output): the free-space
    check of a command adds it to its outputs (empty when nothing is written)."""
    if not isinstance(method, SIRT):
        return {}
    from pathlib import Path

    from localet_core.device import memory_budget
    from localet_core.reconstruction.sirt import sirt_scratch_bytes

    device = resolve_device(method.device)
    size = sirt_scratch_bytes(geometry, memory_budget(device, method.budget), device)
    return {Path(near).with_name(f".{Path(near).name}.sirt-scratch"): size} if size else {}
