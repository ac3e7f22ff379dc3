"""Names of the files localet writes next to the one a user names.

The CLI writes them and the Scipion plugin looks for them (and attaches them to its outputs), so
both take the rule from here:

- ``localet reconstruct -o OUT.mrc --odd A --even B`` (and the plugin's WBP halves) write the
  half tomograms :func:`half_name` ``(OUT.mrc, "odd")`` = ``OUT_odd.mrc`` and ``OUT_even.mrc``;
  Scipion recognises half maps by the ``_odd`` / ``_even`` in their names.
- ``localet fsc-halves --save-halves PREFIX`` writes :func:`saved_half_name` ``(PREFIX, 1)`` =
  ``PREFIX_half1.mrc`` and ``PREFIX_half2.mrc``.
- ``localet reconstruct -o OUT.mrc --odd A --even B`` also writes the prior-proof validation
  of its half tomograms, :func:`prior_proof_name` ``(OUT.mrc)`` = ``OUT_prior_proof.star``
  (and ``OUT_prior_proof.png``); the plugin's FSC box reads it for tomograms that have one.
- an FSC table's plot is :func:`plot_name` ``(NAME.star)`` = ``NAME.png`` when a caller
  derives one (the plugin does; the CLI takes ``--plot`` as given).

A trained model's file name is :func:`localet_core.contracts.model_card.model_file`.
"""
from __future__ import annotations

import os
from typing import Tuple

from localet_core.errors import PathLike

#: the two halves of a tilt series (frame halves from motion correction), in this order
ODD = "odd"
EVEN = "even"
HALVES: Tuple[str, str] = (ODD, EVEN)
#: the extension of volumes localet writes
VOLUME_SUFFIX = ".mrc"
PLOT_SUFFIX = ".png"


def half_name(output: PathLike, half: str) -> str:
    """The half tomogram of ``half`` (:data:`ODD` or :data:`EVEN`) next to the volume
    ``output``: ``dir/OUT.mrc`` -> ``dir/OUT_odd.mrc`` (``.mrc`` when ``output`` has no
    extension). The folder part is kept as given."""
    if half not in HALVES:
        raise ValueError(f"half must be {ODD!r} or {EVEN!r}, got {half!r}")
    root, ext = os.path.splitext(os.fspath(output))
    return f"{root}_{half}{ext or VOLUME_SUFFIX}"


def saved_half_name(prefix: PathLike, index: int) -> str:
    """``fsc-halves --save-halves PREFIX``: half ``index`` (1 or 2) is ``PREFIX_half1.mrc``."""
    if index not in (1, 2):
        raise ValueError(f"a half-set index is 1 or 2, got {index!r}")
    return f"{os.fspath(prefix)}_half{index}{VOLUME_SUFFIX}"


def plot_name(table: PathLike) -> str:
    """The PNG plot that goes with a table: ``dir/TS_01_fsc.star`` -> ``dir/TS_01_fsc.png``."""
    return os.path.splitext(os.fspath(table))[0] + PLOT_SUFFIX


def prior_proof_name(output: PathLike) -> str:
    """The prior-proof validation table of the half tomograms of ``output``:
    ``dir/OUT.mrc`` -> ``dir/OUT_prior_proof.star``."""
    return os.path.splitext(os.fspath(output))[0] + "_prior_proof.star"
