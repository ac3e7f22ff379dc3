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
import contextvars
import errno
import os
import secrets
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any, Iterator, Optional

from localet_core.errors import InputError, PathLike

__all__ = ["atomic_output", "temporary_name", "ScratchFile", "scratch_folder", "scratch_near"]

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


# --------------------------------------------------------------------------------------------
# Scratch files: temporary data of a computation larger than its memory budget
# --------------------------------------------------------------------------------------------
# Where the running command puts its scratch files (the folder of its first output: the
# free-space check covers it); None: the system's temporary folder.
_scratch_folder: "contextvars.ContextVar[Optional[Path]]" = contextvars.ContextVar("localet_scratch", default=None)


def scratch_folder() -> Path:
    """The folder scratch files are created in (:func:`scratch_near`, else the system's
    temporary folder)."""
    folder = _scratch_folder.get()
    return folder if folder is not None else Path(tempfile.gettempdir())


@contextlib.contextmanager
def scratch_near(output: PathLike) -> Iterator[Path]:
    """Inside the block, scratch files go to the folder of ``output`` (a command's output, whose
    free-space check then includes them)."""
    folder = Path(os.path.abspath(os.path.dirname(os.path.abspath(os.fspath(output))) or "."))
    token = _scratch_folder.set(folder)
    try:
        yield folder
    finally:
        _scratch_folder.reset(token)


class ScratchFile:
    """A scratch file that no way of ending the process leaves behind.

    It is created like an output's temporary (``DIR/.NAME.tmp-<random>``, :func:`temporary_name`,
    in :func:`scratch_folder`) and unlinked at once: only the open descriptor keeps it, so it
    disappears when closed, on an exception, Ctrl-C, SIGTERM, and even SIGKILL or a crash.
    Data go in and out with plain ``pwrite``/``preadv`` (no memory map: nothing of it stays in
    the process's resident memory). A full disk is an :class:`InputError` naming the folder.
    """

    def __init__(self, what: str = "scratch") -> None:
        self.folder = scratch_folder()
        path = _create_temporary(self.folder / what)
        self.fd = os.open(path, os.O_RDWR)
        os.unlink(path)
        self.size = 0

    def write(self, data: Any, offset: int) -> None:
        """Write a contiguous array (or bytes) at ``offset``."""
        view = memoryview(data).cast("B")
        try:
            done = 0
            while done < len(view):
                done += os.pwrite(self.fd, view[done:], offset + done)
        except OSError as exc:
            if _disk_full(exc):
                from localet_core.io.outputs import format_bytes

                try:
                    free = f"{format_bytes(shutil.disk_usage(self.folder).free)} free"
                except OSError:
                    free = "free space unknown"
                raise InputError(self.folder, f"the disk is full while writing temporary data ({free}); "
                                              "nothing was written") from None
            raise
        self.size = max(self.size, offset + len(view))

    def read_into(self, out: Any, offset: int) -> None:
        """Fill the contiguous writable array ``out`` from ``offset``."""
        view = memoryview(out).cast("B")
        done = 0
        while done < len(view):
            n = os.preadv(self.fd, [view[done:]], offset + done)
            if n <= 0:
                raise OSError(errno.EIO, f"scratch file ended at {offset + done} bytes")
            done += n

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "ScratchFile":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()
