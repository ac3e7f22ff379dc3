"""Training checkpoints and the per-step log: what ``localet train --resume`` continues from.

A run's folder holds ``checkpoint.pt`` (weights, AdamW state, steps done, the log so far and the
model architecture as JSON) and ``log.csv`` (one row per step: step, loss, lr, val_loss,
seconds). Both are written under a temporary name and renamed, so an interrupted run never
leaves half a file; only rank 0 writes them.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any, List, Tuple

import torch

from localet_core.errors import InputError
from localet_core.network.model import ModelConfig

__all__ = ["CHECKPOINT_NAME", "LOG_NAME", "LOG_COLUMNS", "save_checkpoint", "load_checkpoint",
           "write_log_csv"]

CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "log.csv"
#: Columns of ``log.csv`` and of each row of the log kept in the checkpoint.
LOG_COLUMNS = ("step", "loss", "lr", "val_loss", "seconds")


def _architecture(model_config: ModelConfig) -> str:
    """The model architecture as canonical JSON (what a resumed run must match)."""
    return json.dumps(model_config.to_dict(), sort_keys=True)


def _atomic_torch_save(obj: Any, path: Path) -> None:
    from localet_core.io.atomic import atomic_output

    with atomic_output(path) as tmp:
        torch.save(obj, tmp)


def save_checkpoint(out: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    step: int, log_rows: List[List[float]], model_config: ModelConfig) -> None:
    """Write ``out/checkpoint.pt`` after ``step`` steps, and ``out/log.csv`` with ``log_rows``."""
    _atomic_torch_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "step": step, "log": log_rows,
                        "model_config": _architecture(model_config)}, out / CHECKPOINT_NAME)
    write_log_csv(out / LOG_NAME, log_rows)


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    model_config: ModelConfig, device: torch.device
                    ) -> Tuple[int, List[List[float]]]:
    """Load weights and optimiser state from ``path`` into ``model`` and ``optimizer``.

    Returns:
        ``(steps_done, log_rows)``.

    Raises:
        InputError: the checkpoint was written for another architecture, or cannot be read.
    """
    try:
        state = torch.load(path, map_location=device, weights_only=True)
        if state.get("model_config") != _architecture(model_config):
            raise InputError(path, "was written with another model architecture; "
                                   "use the same options or another --out-dir")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    except InputError:
        raise
    except Exception as exc:
        raise InputError(path, f"cannot be resumed from ({type(exc).__name__}: {exc})") from None
    return int(state["step"]), [list(r) for r in state["log"]]


def write_log_csv(path: Path, rows: List[List[float]]) -> None:
    """Write the log (rows of :data:`LOG_COLUMNS`; NaN validation losses as empty cells)."""
    from localet_core.io.atomic import atomic_output

    with atomic_output(path, fsync=False) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(list(LOG_COLUMNS))
        for r in rows:
            w.writerow([int(r[0])] + [("" if isinstance(x, float) and math.isnan(x) else f"{x:.6g}") for x in r[1:]])
