"""Checks every reader makes before opening a user's file."""
from __future__ import annotations

from pathlib import Path

from localet_core.errors import InputError


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
