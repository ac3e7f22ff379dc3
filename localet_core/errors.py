"""Errors that users see.

Every problem with a user's input is raised as :class:`InputError`, whose message is one line
that names the file and the problem. A bad value of a setting is a :class:`FieldError`, which
names the setting by its field in the engine (``binning``, ``thickness``: the name of the
dataclass field or function parameter it was given as); each front end shows the field under
its own name (the CLI: ``--bin``), see :meth:`InputError.labelled`. The CLI prints that line and
exits non-zero, without a traceback.
"""
from __future__ import annotations

import os
from typing import Mapping, Optional, Union

PathLike = Union[str, os.PathLike]


class LocaletError(Exception):
    """Base class of the errors localet raises on purpose."""


class InputError(LocaletError, ValueError):
    """Bad user input: a file that cannot be read, or values that do not fit together.

    Args:
        source: the file path, or a few words naming the input (``mask``, ``tilt angles``);
            ``None`` when the problem is not tied to one source.
        problem: what is wrong, in a few words, without a trailing full stop.

    Attributes:
        field: the setting at fault (see :class:`FieldError`); ``None`` here.
    """

    field: Optional[str] = None

    def __init__(self, source: Optional[PathLike], problem: str) -> None:
        self.source = None if source is None else os.fspath(source)
        self.problem = " ".join(str(problem).split())  # always one line
        super().__init__(self.problem if self.source is None else f"{self.source}: {self.problem}")

    def labelled(self, labels: Mapping[str, str]) -> str:
        """The one-line message with the field (when there is one) named as ``labels[field]``,
        e.g. ``{"binning": "--bin"}``; a field without a label is shown as it is."""
        if self.field is None:
            return str(self)
        return f"{labels.get(self.field, self.field)}: {self.problem}"


class FieldError(InputError):
    """A bad value of one setting, named by its field: ``binning: must be a whole number >= 1,
    got 0``.

    Args:
        field: the name of the dataclass field or function parameter the value was given as
            (``binning``, ``x_axis_tilt``, ``memory_budget``), never a front end's name for it.
        problem: what is wrong, in a few words, without a trailing full stop.
    """

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(None, problem)
        self.field = field
        self.args = (f"{field}: {self.problem}",)  # the message: "field: problem"
