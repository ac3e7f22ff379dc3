"""Errors that users see.

Every problem with a user's input is raised as :class:`InputError`, whose message is one line
that names the file (or option) and the problem. The CLI prints that line and exits non-zero,
without a traceback.
"""
from __future__ import annotations

import os
from typing import Optional, Union

PathLike = Union[str, os.PathLike]


class LocaletError(Exception):
    """Base class of the errors localet raises on purpose."""


class InputError(LocaletError, ValueError):
    """Bad user input: a file that cannot be read, or values that do not fit together.

    Args:
        source: the file path, or an option name such as ``--thickness``; ``None`` when the
            problem is not tied to one source.
        problem: what is wrong, in a few words, without a trailing full stop.
    """

    def __init__(self, source: Optional[PathLike], problem: str) -> None:
        self.source = None if source is None else os.fspath(source)
        self.problem = " ".join(str(problem).split())  # always one line
        super().__init__(self.problem if self.source is None else f"{self.source}: {self.problem}")
