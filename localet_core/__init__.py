"""localet's engine: cryo-ET reconstruction with localized supervised learning.

The data flow, and where each step lives::

    io/ (stacks, .tlt, .xf, .mdoc)  ->  tiltseries (TiltSeries: data + TiltGeometry)
        ->  methods (WBP, SIRT, Localet: reconstruction/ and network/)  ->  pipeline (slabs)
        ->  io (MRC volume)  ->  validation/ (FSC, half sets, metrics)
    simulate/ makes tilt series with ground truth; network/training trains a model on pairs.

A Python user needs only the names below (imported lazily: ``import localet_core`` does not
load torch until one of them is used)::

    from localet_core import Localet, load_tilt_series, write_slabs

    series = load_tilt_series("TS_01.st", tlt="TS_01.tlt", xf="TS_01.xf")
    network = Localet("localet-default", device="auto")
    write_slabs("TS_01_rec.mrc", series.geometry, network.slabs(series.data, series.geometry))
"""
from __future__ import annotations

import importlib
from typing import Any, Dict, List

#: public name -> the module that defines it
_EXPORTS: Dict[str, str] = {
    # inputs and geometry
    "load_tilt_series": "localet_core.tiltseries",
    "TiltSeries": "localet_core.tiltseries",
    "OutputOptions": "localet_core.config",
    "TiltGeometry": "localet_core.reconstruction.geometry",
    "RampFilter": "localet_core.reconstruction.filters",
    "ETOMO_RADIAL": "localet_core.reconstruction.filters",
    # reconstruction methods and the slab pipeline
    "WBP": "localet_core.methods",
    "SIRT": "localet_core.methods",
    "Localet": "localet_core.methods",
    "make_method": "localet_core.methods",
    "write_slabs": "localet_core.pipeline",
    "assemble_slabs": "localet_core.pipeline",
    # files
    "read_stack": "localet_core.io",
    "read_volume": "localet_core.io",
    "write_volume": "localet_core.io",
    "read_tlt": "localet_core.io",
    "read_xf": "localet_core.io",
    "write_tlt": "localet_core.io",
    # models and training
    "load_model": "localet_core.network.modelfile",
    "save_model": "localet_core.network.modelfile",
    "ModelConfig": "localet_core.config",
    "TrainConfig": "localet_core.config",
    "train": "localet_core.network.training",
    "read_pairs_star": "localet_core.contracts.pairs",
    # validation
    "compute_fsc": "localet_core.validation.fsc",
    "reconstruct_halves": "localet_core.validation.halfset",
    "half_set_fsc": "localet_core.validation.halfset",
    # simulation
    "SimulationConfig": "localet_core.config",
    "simulate_series": "localet_core.simulate.forward",
    "simulate_folder": "localet_core.simulate.folder",
    # a model for one specimen
    "read_acquisition": "localet_core.specimen",
    "specimen_simulation": "localet_core.specimen",
    "finetune_for_specimen": "localet_core.specimen",
    # errors
    "InputError": "localet_core.errors",
    "LocaletError": "localet_core.errors",
}

__all__: List[str] = sorted(_EXPORTS) + ["__version__"]


def _version() -> str:
    """The installed distribution's version (the one place it is written: pyproject.toml)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("localet")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


def __getattr__(name: str) -> Any:
    if name == "__version__":  # read on first use: importlib.metadata costs 40 ms of every command's start
        value = globals()["__version__"] = _version()
        return value
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'localet_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> List[str]:
    return sorted(set(globals()) | set(_EXPORTS))
