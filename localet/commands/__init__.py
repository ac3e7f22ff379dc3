"""Sub-commands of `localet`. Each module defines ``command`` (a click command); add new ones
to ``_MODULES``. Modules import torch-heavy code inside the command body, so `--help` stays fast."""
from __future__ import annotations

import importlib

import click

_MODULES = ["fbp", "reconstruct", "train", "finetune", "simulate", "fsc", "fsc_halves", "demo"]


def register_all(group: click.Group) -> None:
    for name in _MODULES:
        module = importlib.import_module(f"localet.commands.{name}")
        group.add_command(module.command)
