"""What every command checks about its outputs before any work, and how it leaves them.

Every command calls :func:`guard_outputs` with the files it reads and the files it will write,
before doing any work:

* an output that is one of the inputs (the same name, or the same file through a symbolic or
  hard link), or whose backup ``NAME~`` would be, is refused: localet never overwrites an input;
* two outputs of one command that are the same file are refused;
* with ``sizes`` (bytes per output), the free space is checked for all outputs at once, per
  file system (:func:`check_free_space`), with a message that says what is needed and what is
  free.

An existing output is not refused: following IMOD's habit, the previous file is kept as
``NAME~`` when the new one is published (:func:`localet_core.io.atomic.atomic_output`).

A command runs inside :func:`all_or_none` (the CLI's entry point opens it): if it fails (an
error, a full disk, Ctrl-C, SIGTERM), the outputs it already published are taken back (a
previous version is restored from ``NAME~``), so a command with several outputs leaves either
all of them or none; the folders it created (:func:`guard_outputs` ``folders``) are removed
again when left empty. A command made of complete, independent items (``localet simulate``'s
series) calls :func:`keep_published` after each item: what it published so far then stays when
a later item fails, so ``--resume`` can continue from it.
"""
from __future__ import annotations

import contextlib
import contextvars
import os
import shutil
from pathlib import Path
from typing import Iterable, Iterator, List, Mapping, Optional, Tuple

from localet_core.errors import InputError, PathLike

__all__ = ["guard_outputs", "all_or_none", "keep_published", "check_free_space", "volume_bytes", "backup_name",
           "format_bytes"]

#: Extra free space required beyond the outputs' sizes (headers, file-system metadata).
SPACE_MARGIN = 16 * 2**20

# The unit (all_or_none) of the running command, if any: atomic_output records there what it
# published, as (final, backup or None).
_unit: "contextvars.ContextVar[Optional[_Unit]]" = contextvars.ContextVar("localet_output_unit", default=None)


def backup_name(path: PathLike) -> Path:
    """Where the previous version of an output is kept: ``NAME~`` (IMOD's habit)."""
    p = Path(os.fspath(path))
    return p.with_name(p.name + "~")


def format_bytes(n: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{int(n)} bytes"


def _identities(path: Path, folders: Optional[dict] = None) -> List[object]:
    """What makes two names the same file: the real path, and (for an existing file) its
    device and inode, which hard links share. ``folders`` caches the real paths of folders."""
    try:
        st = os.stat(path)
    except OSError:  # no file (yet): its real folder and name
        folders = {} if folders is None else folders
        parent = os.path.dirname(os.path.abspath(path))
        if parent not in folders:
            folders[parent] = os.path.realpath(parent)
        return [os.path.join(folders[parent], os.path.basename(path))]
    return [os.path.realpath(path), (st.st_dev, st.st_ino)]


def _paths(items: Iterable[Optional[PathLike]]) -> List[Path]:
    return [Path(os.fspath(p)).expanduser() for p in items if p is not None and os.fspath(p) != ""]


def published_here(final: Path) -> bool:
    """Whether the running command already published ``final`` (a checkpoint rewritten every N
    steps): its earlier version is then not kept as ``NAME~``."""
    unit = _unit.get()
    return unit is not None and any(p == final for p, _ in unit.published)


def record_published(final: Path, backup: Optional[Path]) -> None:
    """Called by :func:`~localet_core.io.atomic.atomic_output` after each publish."""
    unit = _unit.get()
    if unit is not None:
        unit.published.append((final, backup))


def _existing_folder(path: Path) -> Path:
    """The nearest existing folder at or above ``path``'s folder."""
    folder = path.parent if not path.is_dir() else path
    folder = Path(os.path.abspath(folder))
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def check_free_space(sizes: Mapping[PathLike, int], scratch: Optional[Mapping[PathLike, int]] = None) -> None:
    """Raise :class:`InputError` unless the file systems of the outputs have room for all of
    them at once (``sizes``: bytes per output), and for the scratch files the command will write
    beside them (``scratch``: bytes per scratch name, :class:`~localet_core.io.atomic.ScratchFile`),
    naming what is needed and what is free.

    A previous version of an output is kept (as ``NAME~``), so it frees no space."""
    groups: dict = {}
    entries = [(path, size, False) for path, size in sizes.items()]
    entries += [(path, size, True) for path, size in (scratch or {}).items() if size]
    for path, size, temporary in entries:
        p = Path(os.fspath(path)).expanduser()
        folder = _existing_folder(p)
        try:
            dev = os.stat(folder).st_dev
        except OSError:
            continue
        need, names, extra, where = groups.get(dev, (0, [], 0, folder))
        groups[dev] = (need + int(size), names if temporary else names + [p], extra + (int(size) if temporary else 0),
                       where)
    for need, names, extra, folder in groups.values():
        try:
            free = shutil.disk_usage(folder).free
        except OSError:
            continue
        if need + SPACE_MARGIN > free:
            if not names:
                what, verb = "temporary files", "need"
            else:
                what = names[0] if len(names) == 1 else f"{names[0]} and {len(names) - 1} other output(s)"
                verb = "needs" if len(names) == 1 and not extra else "need"
                if extra:
                    what += f" with {format_bytes(extra)} of temporary files"
            first = names[0] if names else folder
            raise InputError(first, f"not enough free disk space: {what} {verb} "
                                    f"{format_bytes(need)}, only {format_bytes(free)} free in {folder}")


class _Unit:
    """The outputs one command published, and the folders it created."""

    def __init__(self) -> None:
        self.published: List[Tuple[Path, Optional[Path]]] = []
        self.folders: List[Path] = []
        self.keep = False
        self.kept = 0  # unit.published[:kept] stay if the command fails (keep_published)


def volume_bytes(shape: Iterable[int], bytes_per_voxel: int = 4) -> int:
    """The size of a float32 MRC file of ``shape`` (header included)."""
    n = 1
    for s in shape:
        n *= int(s)
    return 1024 + bytes_per_voxel * n


def guard_outputs(outputs: Iterable[Optional[PathLike]], inputs: Iterable[Optional[PathLike]] = (),
                  sizes: Optional[Mapping[PathLike, int]] = None, folders: Iterable[Optional[PathLike]] = (),
                  keep_on_failure: bool = False) -> None:
    """Check a command's ``outputs`` against its ``inputs`` (and the free space, with
    ``sizes``) before any work; see the module's description.

    Args:
        outputs: every file the command will write (``None`` entries are skipped).
        inputs: every file the command reads (names that are no file are skipped: the reader
            reports missing ones).
        sizes: bytes per output, when known now (else call :func:`check_free_space` later).
        folders: output folders the command may create: removed on failure if left empty.
        keep_on_failure: the command's outputs stay when it fails (training: its checkpoint
            is what ``--resume`` continues from).

    Raises:
        InputError: naming the output, when it is an input, is given twice or does not fit.
    """
    outs = _paths(outputs)
    ins = [p for p in _paths(inputs) if os.path.isfile(p)]
    by_identity = {}  # the identities of the inputs (real path; device and inode: hard links)
    for src in ins:
        for key in _identities(src):
            by_identity.setdefault(key, src)
    folders = [Path(os.fspath(f)) for f in folders if f is not None]
    seen: dict = {}
    real_folders: dict = {}
    for out in outs:
        if out.is_dir():
            raise InputError(out, "is a directory, not a file name")
        if not folders and not out.parent.is_dir():
            raise InputError(out, f"output directory {os.fspath(out.parent)!r} does not exist")
        for candidate, what in ((out, "is"), (backup_name(out), "would keep its previous version as")):
            if not os.path.lexists(candidate):
                continue
            src = next((by_identity[k] for k in _identities(candidate) if k in by_identity), None)
            if src is not None:
                detail = "" if candidate == out and os.fspath(src) == os.fspath(out) else f" {src}"
                raise InputError(out, f"{what} the input file{detail}: localet never overwrites "
                                      "an input; choose another output name")
        for key in _identities(out, real_folders):
            if key in seen and seen[key] != out:
                raise InputError(out, "is given for two outputs; choose different names")
            seen[key] = out
    if sizes:
        check_free_space(sizes)
    unit = _unit.get()
    if unit is not None:
        unit.folders += [f for f in folders if not os.path.exists(f)]
        unit.keep = unit.keep or keep_on_failure


def keep_published() -> int:
    """Keep what the running command has published so far, whatever happens to it later: the
    outputs of a complete item of a command made of independent items (a simulated series,
    whose record is written last). The outputs published after this call are still taken back
    on failure. Returns how many outputs are kept in all (0 outside a command)."""
    unit = _unit.get()
    if unit is None:
        return 0
    unit.kept = len(unit.published)
    return unit.kept


@contextlib.contextmanager
def all_or_none() -> Iterator[None]:
    """Run one command as a unit: if the block fails (an error, a full disk, Ctrl-C, SIGTERM),
    the outputs :func:`~localet_core.io.atomic.atomic_output` published inside it are taken
    back (a previous version is restored from ``NAME~``), unless the command asked to keep
    them (:func:`guard_outputs` ``keep_on_failure``, or :func:`keep_published` for those
    published before that call), and the folders it created are removed when left empty."""
    unit = _Unit()
    token = _unit.set(unit)
    try:
        yield
    except BaseException:
        if not unit.keep:
            for final, backup in reversed(unit.published[unit.kept:]):
                with contextlib.suppress(OSError):
                    if backup is not None and os.path.lexists(backup):
                        os.replace(backup, final)
                    else:
                        os.unlink(final)
        for folder in reversed(unit.folders):
            with contextlib.suppress(OSError):
                os.rmdir(folder)  # only when empty
        raise
    finally:
        _unit.reset(token)
