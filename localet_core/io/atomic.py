"""All-or-nothing output files.

Every file localet writes goes through :func:`atomic_output`: the content is written to a
hidden temporary file in the destination directory and renamed onto the final name only when
writing finished without error. A crash, an exception or Ctrl-C therefore never leaves a
partial or corrupt file under the name the user asked for (an existing file of that name is
kept until the new one is complete), and a failed write leaves no temporary file behind.

An existing file of the final name is kept as ``NAME~`` (IMOD's habit) when the new one is
published; a full disk is reported as an :class:`InputError` naming the file and the free space.
"""
from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat
from pathlib import Path
from typing import Iterator, Optional

from localet_core.errors import InputError, PathLike

__all__ = ["atomic_output", "temporary_name"]

# How often to try another random name if one is taken (practically never happens).
_NAME_TRIES = 16


def temporary_name(path: Path) -> Path:
    """A fresh hidden sibling of ``path``: ``DIR/.NAME.tmp-<16 hex digits>``.

    The ``.tmp-`` part lets ``.gitignore``/clean-up rules match leftovers of a killed process.
    """
    return path.with_name(f".{path.name}.tmp-{secrets.token_hex(8)}")


def _create_temporary(path: Path) -> Path:
    """Create an empty temporary sibling of ``path`` and return its name.

    Creating it (rather than only choosing a name) checks early that the directory is
    writable, and ``O_EXCL`` guarantees that we never clobber somebody else's file. Mode 0o666
    filtered by the umask gives the same permissions an ordinary ``open(path, "w")`` would.
    """
    for _ in range(_NAME_TRIES):
        tmp = temporary_name(path)
        try:
            fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            continue
        except PermissionError:
            raise InputError(path, "cannot write here: permission denied") from None
        except OSError as exc:
            if exc.errno == errno.EROFS:
                raise InputError(path, "cannot write here: read-only file system") from None
            raise InputError(path, f"cannot create output file ({exc.strerror})") from None
        os.close(fd)
        return tmp
    raise InputError(path, "cannot find a free temporary file name next to the output")


def _fsync_file(path: Path) -> None:
    """Push the file's data to disk, so that the rename never exposes unwritten blocks."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _keep_previous(final: Path) -> Optional[Path]:
    """Keep an existing ``final`` as ``final~`` (replacing an older one); return that name.

    A hard link keeps ``final`` in place until the new file replaces it; where the file system
    has no hard links, the previous file is renamed."""
    from localet_core.io.outputs import backup_name, published_here

    if not os.path.lexists(final) or published_here(final):
        return None

    backup = backup_name(final)
    tmp = temporary_name(backup)
    try:
        os.link(final, tmp, follow_symlinks=False)
        os.replace(tmp, backup)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        os.replace(final, backup)
    return backup


def _disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


def _check_destination(path: Path) -> None:
    """Fail early, with the user's file name, on destinations we can never write."""
    parent = path.parent
    if not parent.exists():
        raise InputError(path, f"output directory {os.fspath(parent)!r} does not exist")
    if not parent.is_dir():
        raise InputError(path, f"{os.fspath(parent)!r} is not a directory")
    if path.is_dir():
        raise InputError(path, "is a directory, not a file name")


@contextlib.contextmanager
def atomic_output(path: PathLike, fsync: bool = True) -> Iterator[Path]:
    """Write a file under a temporary name and move it onto ``path`` only on success.

    Usage::

        with atomic_output("tomo.mrc") as tmp:
            write_something(tmp)      # may raise: then tomo.mrc is untouched, tmp removed

    The yielded path (``DIR/.NAME.tmp-<random>``, in the same directory so that the final
    :func:`os.replace` is an atomic rename on the same file system) already exists as an empty
    file; the writer overwrites it. On a clean exit it is fsync'ed (unless ``fsync`` is false)
    and renamed onto ``path``; an existing file is kept as ``path~``. On any exception, including
    ``KeyboardInterrupt``, it is deleted and the exception propagates.

    Raises:
        InputError: the destination directory is missing or not writable, or ``path`` is a
            directory.
    """
    final = Path(os.fspath(path)).expanduser()
    _check_destination(final)
    tmp = _create_temporary(final)
    mode = stat.S_IMODE(os.stat(tmp).st_mode)  # 0o666 filtered by the umask
    try:
        yield tmp
        if not tmp.exists():
            # The writer removed or renamed our file: nothing to publish.
            raise FileNotFoundError(f"temporary output {os.fspath(tmp)!r} disappeared")
        # Some writers (safetensors) recreate the file as 0o600: give it the permissions an
        # ordinary new file gets, so colleagues on a shared file system can read the result.
        os.chmod(tmp, mode)
        if fsync:
            _fsync_file(tmp)
        backup = _keep_previous(final)
        os.replace(tmp, final)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if _disk_full(exc):
            from localet_core.io.outputs import format_bytes

            try:
                free = f"{format_bytes(shutil.disk_usage(final.parent).free)} free"
            except OSError:
                free = "free space unknown"
            raise InputError(final, f"the disk is full ({free} in {os.fspath(final.parent) or '.'}); "
                                    "nothing was written") from None
        raise
    from localet_core.io.outputs import record_published

    record_published(final, backup)
