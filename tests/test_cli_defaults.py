"""One home for defaults and field names: every click default is the engine's default, the core
names its settings by their fields, and the CLI shows them by its flags."""
import ast
import importlib
import subprocess
import sys
from pathlib import Path

import click
import numpy as np
import pytest

from localet.cli import cli
from localet.commands._options import FLAGS, CoreOption, default_of
from localet_core.errors import FieldError, InputError

REPO = Path(__file__).resolve().parents[1]

#: options whose default belongs to the CLI alone (no engine setting has one)
CLI_ONLY = {
    ("simulate", "count"), ("simulate", "seed"), ("simulate", "name"),  # seeds and file names per run
    ("fbp", "method"), ("fsc-halves", "method"),  # which method a command runs
    ("demo", "out_dir"),
}


def _options():
    """``(command name, click.Option)`` of every sub-command."""
    for name, command in cli.commands.items():
        for param in command.params:
            if isinstance(param, click.Option):
                yield name, param


def _default(command: str, option: click.Option):
    """The option's default as click resolves it (``None`` when it has none)."""
    value = option.get_default(click.Context(cli.commands[command]), call=False)
    return None if type(value).__module__.startswith("click") else value  # click 8.3+: UNSET


def _resolve(owner):
    """A class or function, or its dotted name (``localet_core.methods.SIRT``)."""
    if not isinstance(owner, str):
        return owner
    module, _, attr = owner.rpartition(".")
    return getattr(importlib.import_module(module), attr)


def test_every_core_option_default_is_the_engine_default():
    checked = 0
    for command, option in _options():
        if not isinstance(option, CoreOption):
            continue
        owner, field = option.setting
        value = default_of(_resolve(owner), field)
        expected = option.to_text(value) if option.to_text is not None else value
        assert _default(command, option) == expected, (command, option.name, option.default, expected)
        checked += 1
    assert checked >= 40


def test_every_other_default_is_the_clis_own():
    for command, option in _options():
        if isinstance(option, CoreOption) or option.is_flag or _default(command, option) is None:
            continue
        assert (command, option.name) in CLI_ONLY, (
            f"{command} {option.opts[0]} has a default of its own ({option.default!r}): build it with "
            "core_option from the engine setting it feeds, or list it in CLI_ONLY")


def test_choices_are_the_engines():
    from localet_core import config
    from localet_core.simulate.phantom import FAMILIES

    assert set(config.FAMILY_NAMES) == set(FAMILIES)
    choices = {(c, o.name): tuple(o.type.choices) for c, o in _options() if isinstance(o.type, click.Choice)}
    assert choices[("fbp", "window")] == config.WINDOWS
    assert choices[("train", "loss")] == config.LOSSES
    assert choices[("train", "activation")] == config.ACTIVATIONS
    assert choices[("reconstruct", "precision")] == config.PRECISIONS
    assert choices[("simulate", "family")] == config.FAMILY_NAMES


def test_simulate_default_shape_is_the_configs():
    from localet_core.config import SimulationConfig

    assert SimulationConfig().shape == (96, 128, 128)
    (option,) = [o for c, o in _options() if c == "simulate" and o.name == "shape"]
    assert _default("simulate", option) == "96,128,128"


def test_flags_table_names_real_options():
    flags = {opt for _, option in _options() for opt in option.opts}
    for field, label in FLAGS.items():
        for flag in label.split("/"):
            assert flag in flags, (field, flag)


def _raised_fields():
    """``(file, line, first argument)`` of every ``FieldError``/``InputError`` raised in the core
    with a string literal first argument."""
    for path in sorted((REPO / "localet_core").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id in ("FieldError", "InputError") and node.args
                    and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
                yield path.relative_to(REPO), node.lineno, node.func.id, node.args[0].value


def test_core_names_fields_not_flags():
    engine_only = {"relaxation"}  # fields no command sets
    for path, line, kind, name in _raised_fields():
        assert not name.startswith("-"), f"{path}:{line}: {kind}({name!r}, ...) names a CLI flag"
        if kind == "FieldError":
            assert name.isidentifier(), f"{path}:{line}: field {name!r}"
            assert name in FLAGS or name in engine_only, f"{path}:{line}: field {name!r} has no flag in FLAGS"


def test_a_bad_value_names_the_field_in_the_core():
    from localet_core.reconstruction.geometry import TiltGeometry

    with pytest.raises(FieldError) as info:
        TiltGeometry(angles=(-30.0, 0.0, 30.0), detector_shape=(16, 16), thickness=8, binning=0)
    assert str(info.value) == "binning: must be a whole number >= 1, got 0"
    assert info.value.field == "binning" and info.value.source is None
    assert isinstance(info.value, InputError) and isinstance(info.value, ValueError)
    assert info.value.labelled(FLAGS) == "--bin: must be a whole number >= 1, got 0"
    assert info.value.labelled({}) == str(info.value)  # a field without a label: as it is
    assert InputError("a.mrc", "is empty").labelled(FLAGS) == "a.mrc: is empty"


def test_the_cli_names_the_flag(tmp_path):
    from localet_core.io import write_tlt, write_volume

    angles = np.array([-30.0, 0.0, 30.0])
    write_volume(tmp_path / "ts.st", np.zeros((3, 16, 16), np.float32), 10.0)
    write_tlt(tmp_path / "ts.tlt", angles)
    result = subprocess.run([sys.executable, "-m", "localet", "fbp", str(tmp_path / "ts.st"), "--tlt",
                             str(tmp_path / "ts.tlt"), "--bin", "0", "-o", str(tmp_path / "out.mrc")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == "Error: --bin: must be a whole number >= 1, got 0", result.stderr
    assert not (tmp_path / "out.mrc").exists()
