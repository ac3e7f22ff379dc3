"""MRC header labels: the history of a file, one line per program that wrote it, as IMOD keeps it.

An MRC header holds 10 labels of 80 characters; ``nlabl`` says how many are used. IMOD's
programs add one label each, the program's name and what it did with the date and time at the
end (``tilt: ...          02-Dec-26  03:10:00``), after the labels of their input. localet does
the same: :func:`history_label` makes the label of one command from its command line, and
:func:`merge_labels` appends it to an input's labels.
"""
from __future__ import annotations

import datetime
import os
import shlex
from typing import Any, Optional, Sequence, Tuple

__all__ = ["LABEL_LENGTH", "MAX_LABELS", "DATE_FORMAT", "history_label", "merge_labels", "decode_labels"]

#: Characters per label.
LABEL_LENGTH = 80
#: Labels per header.
MAX_LABELS = 10
#: IMOD's date and time at the end of a label (``02-Dec-26  03:10:00``).
DATE_FORMAT = "%d-%b-%y  %H:%M:%S"


def printable(text: str) -> str:
    """``text`` with every character that is not printable ASCII replaced by ``?``."""
    return "".join(c if " " <= c <= "~" else "?" for c in text)


def _shown(arg: str) -> str:
    """A command-line word as the label shows it: a path by its file name (the folders would
    fill the label), quoted when it holds blanks or quotes."""
    if os.sep in arg and not arg.startswith("-"):
        arg = os.path.basename(arg.rstrip(os.sep)) or arg
    return shlex.quote(arg) if not arg or any(c.isspace() or c in "'\"" for c in arg) else arg


def history_label(program: str, args: Sequence[str] = (), when: Optional[datetime.datetime] = None) -> str:
    """The 80-character label of one run: ``program: args``, then the date and time at the end.

    As IMOD writes them::

        localet fbp: TS_01.st --tlt TS_01.tlt --bin 4 -o TS_01_wbp.mrc  02-Dec-26  03:10:00

    Paths are shown by their file names; a command line too long for the label is cut and
    ends in ``...``; characters that are not printable ASCII become ``?``.

    Args:
        program: the program and command (``localet fbp``).
        args: the command's arguments, as typed.
        when: the date and time (default: now).
    """
    stamp = (when or datetime.datetime.now()).strftime(DATE_FORMAT)
    room = LABEL_LENGTH - len(stamp) - 2  # at least two spaces before the date
    text = printable(program + (": " + " ".join(_shown(str(a)) for a in args) if args else ""))
    if len(text) > room:
        text = text[:room - 3].rstrip() + "..."
    return text.ljust(LABEL_LENGTH - len(stamp)) + stamp


def merge_labels(inherited: Sequence[str], new: Sequence[str]) -> Tuple[str, ...]:
    """The labels of an output made from an input: the input's labels, then ``new``. When they
    do not all fit in :data:`MAX_LABELS`, the input's first label (its origin) and its latest
    ones are kept, as IMOD drops the second label when the header is full."""
    keep = [printable(label)[:LABEL_LENGTH].rstrip() for label in inherited]
    keep = [label for label in keep if label]
    new = [str(label) for label in new][:MAX_LABELS]
    room = MAX_LABELS - len(new)
    if len(keep) > room:
        keep = (keep[:1] + keep[len(keep) - room + 1:]) if room > 1 else keep[:room]
    return tuple(keep + new)


def decode_labels(header: Any) -> Tuple[str, ...]:
    """The used labels of an mrcfile header (``nlabl`` of them, at most 10), as printable text
    without trailing blanks; empty labels are left out."""
    try:
        count = int(header.nlabl)
    except (TypeError, ValueError):
        return ()
    labels = []
    for raw in header.label[:max(0, min(count, MAX_LABELS))]:
        text = printable(bytes(raw).decode("ascii", errors="replace")).rstrip()
        if text:
            labels.append(text)
    return tuple(labels)
