"""Checks every reader makes before opening a user's file."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Optional

from localet_core.errors import InputError, PathLike


def check_readable_file(path: Path) -> int:
    """Raise :class:`InputError` unless ``path`` is an existing regular file; return its size."""
    if not path.exists():
        raise InputError(path, "file not found")
    if path.is_dir():
        raise InputError(path, "is a directory, not a file")
    try:
        return path.stat().st_size
    except OSError as exc:
        raise InputError(path, f"cannot read file ({exc.strerror})") from None


def prefetch(*paths: Optional[PathLike]) -> None:
    """Ask the system to start reading ``paths`` into the page cache now, without waiting
    (``POSIX_FADV_WILLNEED``): a command calls it first, so that its stack comes off the disk
    while torch is imported. Best effort: missing files and systems without ``posix_fadvise``
    are skipped silently (the readers report missing files)."""
    if not hasattr(os, "posix_fadvise"):
        return
    for path in paths:
        if path is None:
            continue
        with contextlib.suppress(OSError):
            fd = os.open(os.path.expanduser(os.fspath(path)), os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
            finally:
                os.close(fd)
