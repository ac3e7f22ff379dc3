"""Progress of long jobs, reported where users look.

On a terminal, the slab loops and training show tqdm bars on stderr. Elsewhere (``nohup``, a
cluster's log file, Scipion's run log) a bar's carriage returns make a mess, so a command prints
progress *lines* instead: a first line when its work starts, then at most one line per interval
(:data:`DEFAULT_INTERVAL` seconds, or the environment variable ``LOCALET_PROGRESS_INTERVAL``),
then a final line with the command's wall time::

    localet reconstruct: 0% done (reconstruct: 0/96 rows), elapsed 0:00:04
    localet reconstruct: 42% done (odd: 25/96 rows), elapsed 0:01:13, remaining ~0:01:36
    localet reconstruct: 100% done, wall time 0:02:51

How it fits together:

* a command runs inside :func:`command_progress` (the CLI opens it with its ``--progress``
  flag and the moment the command started): it decides the mode (``bar`` on a terminal,
  ``lines`` elsewhere, ``off`` with ``--no-progress``) and prints the final line;
* the core's loops report through :func:`stage` (``total`` units: rows, steps, series); a stage
  takes the next share of the command's work, so a command that runs several loops (three slab
  passes, two halves) reports one percentage for the whole command;
* :func:`parts` splits the current share into consecutive equal (or weighted) parts, one per
  loop to come; a stage opened inside another stage takes that stage's current unit.

Outside a command (the Python API) a stage shows its bar as its caller asks (``progress``;
default: when stderr is a terminal) and prints no lines. Under torchrun only rank 0 reports.
"""
from __future__ import annotations

import contextlib
import contextvars
import math
import os
import sys
import time
from typing import IO, Any, Callable, Iterator, Mapping, Optional, Sequence, Tuple, Union

from localet_core.errors import InputError

__all__ = ["ENV_INTERVAL", "DEFAULT_INTERVAL", "MODES", "progress_interval", "resolve_mode",
           "process_start", "format_duration", "ProgressLog", "Stage", "command_progress", "stage", "parts"]

#: The environment variable that sets the seconds between progress lines.
ENV_INTERVAL = "LOCALET_PROGRESS_INTERVAL"
#: Seconds between progress lines by default.
DEFAULT_INTERVAL = 10.0
#: ``bar``: tqdm bars (a terminal); ``lines``: progress lines (logs); ``off``: nothing.
MODES = ("bar", "lines", "off")

#: A monotonic clock in seconds (``time.monotonic``; tests pass a fake one).
Clock = Callable[[], float]
#: What callers say about progress: ``None`` (automatic), ``True``/``False`` or one of :data:`MODES`.
ProgressSpec = Union[None, bool, str]


def progress_interval() -> float:
    """Seconds between progress lines: ``LOCALET_PROGRESS_INTERVAL`` when set, else
    :data:`DEFAULT_INTERVAL`.

    Raises:
        InputError: naming the variable, when it is not a positive number.
    """
    text = os.environ.get(ENV_INTERVAL, "").strip()
    if not text:
        return DEFAULT_INTERVAL
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise InputError(ENV_INTERVAL, f"must be a positive number of seconds, got {text!r}")
    return value


def resolve_mode(progress: ProgressSpec = None, stream: Optional[IO[str]] = None) -> str:
    """The mode of :data:`MODES` for ``progress``: ``None`` gives ``bar`` when ``stream``
    (default stderr) is a terminal and ``lines`` otherwise; ``True`` a bar (as asked, even in
    a log); ``False`` nothing."""
    if isinstance(progress, str):
        if progress not in MODES:
            raise ValueError(f"progress mode must be one of {', '.join(MODES)}, got {progress!r}")
        return progress
    if progress is None:
        stream = sys.stderr if stream is None else stream
        isatty = getattr(stream, "isatty", None)
        return "bar" if isatty is not None and isatty() else "lines"
    return "bar" if progress else "off"


def _linux_process_age() -> Optional[float]:
    """Seconds since this process started, from /proc (its start tick in /proc/self/stat against
    /proc/uptime: what psutil reads, without its 20-30 ms import), or None off Linux."""
    try:
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        with open("/proc/uptime", "rb") as f:
            uptime = float(f.read().split()[0])
        return uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def process_start(clock: Clock = time.monotonic) -> float:
    """The ``clock`` reading at which this process started (so a command's wall time includes
    Python's start and the imports), or now when the system does not tell."""
    now, wall = clock(), time.time()
    age = _linux_process_age()
    if age is not None:
        return now - max(0.0, age)
    try:
        import psutil

        started = psutil.Process().create_time()
    except Exception:  # noqa: BLE001 - no psutil, or no access to the process table
        return now
    return now - max(0.0, wall - started)


def format_duration(seconds: float) -> str:
    """``h:mm:ss`` (``0:01:13``; hours go on past 24)."""
    total = max(0, int(round(seconds)))
    hours, rest = divmod(total, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


class ProgressLog:
    """Progress lines for logs: a first line at the first :meth:`update`, then at most one line
    per ``interval`` seconds, and a final line from :meth:`finish`.

    Each line gives the percentage done, the time elapsed since ``start`` and, once some work
    is done, the estimated time remaining (from the rate since the first line, so loading time
    before the work does not count in the rate). The final line gives the wall time since
    ``start``.

    Args:
        name: what runs (``localet reconstruct``), at the start of each line.
        interval: seconds between lines (default: :func:`progress_interval`).
        stream: where the lines go (default: ``sys.stderr`` when a line is written).
        clock: monotonic seconds.
        start: the clock reading when the job started (default: now).
    """

    def __init__(self, name: str, interval: Optional[float] = None, stream: Optional[IO[str]] = None,
                 clock: Clock = time.monotonic, start: Optional[float] = None) -> None:
        self.name = name
        self.interval = progress_interval() if interval is None else float(interval)
        self.stream = stream
        self.clock = clock
        self.start = clock() if start is None else float(start)
        self.fraction = 0.0
        self.lines = 0
        self.finished = False
        self._first: Optional[Tuple[float, float]] = None  # (time, fraction) of the first line
        self._last = -math.inf  # time of the last line

    def update(self, fraction: float, detail: str = "") -> None:
        """Record that ``fraction`` (0..1) of the job is done; write a line when it is the first
        or ``interval`` seconds have passed since the last one. The fraction never goes back."""
        now = self.clock()
        self.fraction = min(1.0, max(self.fraction, float(fraction)))
        if self._first is None:
            self._first = (now, self.fraction)
        elif now - self._last < self.interval:
            return
        self._line(now, detail)

    def remaining(self, now: float) -> Optional[float]:
        """Estimated seconds left, from the rate since the first line (None before any work)."""
        if self._first is None:
            return None
        t0, f0 = self._first
        done = self.fraction - f0
        if done <= 0 or now <= t0:
            return None
        return (now - t0) / done * (1.0 - self.fraction)

    def _line(self, now: float, detail: str) -> None:
        percent = min(99, math.floor(100 * self.fraction))  # 100% only once finished
        text = f"{self.name}: {percent}% done" + (f" ({detail})" if detail else "")
        text += f", elapsed {format_duration(now - self.start)}"
        left = self.remaining(now)
        if left is not None:
            text += f", remaining ~{format_duration(left)}"
        self._write(text)
        self._last = now

    def finish(self) -> None:
        """Write the final line (once): 100% and the wall time since ``start``."""
        if self.finished:
            return
        self.finished = True
        self.fraction = 1.0
        self._write(f"{self.name}: 100% done, wall time {format_duration(self.clock() - self.start)}")

    def _write(self, text: str) -> None:
        stream = sys.stderr if self.stream is None else self.stream
        stream.write(text + "\n")
        stream.flush()
        self.lines += 1


class _Job:
    """The progress of one command: its mode and, in ``lines`` mode, its log."""

    def __init__(self, mode: str, log: Optional[ProgressLog]) -> None:
        self.mode, self.log = mode, log


class _Share:
    """A share ``[lo, hi]`` of a job's work, handed out piece by piece to what opens inside it."""

    def __init__(self, job: _Job, lo: float, hi: float, weights: Optional[Sequence[float]] = None) -> None:
        self.job, self.lo, self.hi = job, lo, hi
        self._bounds: Optional[list] = None
        if weights is not None:
            total = float(sum(weights))
            cumulative, acc = [0.0], 0.0
            for w in weights:
                acc += float(w)
                cumulative.append(acc / total if total > 0 else 1.0)
            self._bounds = cumulative
        self._next = 0

    def take(self) -> Tuple[float, float]:
        """The next piece: the next part when split by :func:`parts` (nothing once they are used
        up), else the whole share."""
        if self._bounds is None:
            return self.lo, self.hi
        i = self._next
        self._next += 1
        if i + 1 >= len(self._bounds):
            return self.hi, self.hi
        width = self.hi - self.lo
        return self.lo + width * self._bounds[i], self.lo + width * self._bounds[i + 1]


_current: "contextvars.ContextVar[Optional[Any]]" = contextvars.ContextVar("localet_progress", default=None)


def _is_writer_rank() -> bool:
    """Rank 0 under torchrun, or a single process (read from the environment: no torch here)."""
    return os.environ.get("RANK", "0").strip() in ("", "0")


@contextlib.contextmanager
def command_progress(name: str, progress: ProgressSpec = None, start: Optional[float] = None,
                     interval: Optional[float] = None, stream: Optional[IO[str]] = None,
                     clock: Clock = time.monotonic) -> Iterator[None]:
    """Run one command's work with its progress reported in one mode (see the module).

    Args:
        name: the command as the lines name it (``localet reconstruct``).
        progress: ``--progress/--no-progress``: None or True (a bar on a terminal, lines
            elsewhere), False (nothing), or one of :data:`MODES`.
        start: the ``clock`` reading when the command started (default: now): the elapsed
            times and the final wall time count from it.
        interval, stream, clock: as :class:`ProgressLog`.

    On a clean exit in ``lines`` mode the final line is written; after an error it is not.
    """
    mode = resolve_mode(None if progress is True else progress, stream) if _is_writer_rank() else "off"
    log = ProgressLog(name, interval, stream, clock, start) if mode == "lines" else None
    job = _Job(mode, log)
    token = _current.set(_Share(job, 0.0, 1.0))
    try:
        yield
    finally:
        _current.reset(token)
    if log is not None:
        log.finish()


@contextlib.contextmanager
def parts(weights: Union[int, Sequence[float]]) -> Iterator[None]:
    """Split the current share of the command's work into consecutive parts, one for each stage
    (or :func:`parts`) opened inside, in order: ``n`` equal parts, or parts in proportion to
    ``weights``. Outside a command it does nothing."""
    parent = _current.get()
    if parent is None:
        yield
        return
    n_weights = [1.0] * max(1, int(weights)) if isinstance(weights, int) else list(weights)
    lo, hi = parent.take()
    token = _current.set(_Share(parent.job, lo, hi, n_weights))
    try:
        yield
    finally:
        _current.reset(token)


class Stage:
    """One loop's progress: ``total`` units (rows, steps, series) advanced by :meth:`advance`.

    Inside a command (:func:`command_progress`) the stage covers the next share of the
    command's work: in ``lines`` mode it reports there, in ``bar`` mode it shows a tqdm bar
    when ``bar`` is true. Outside a command it shows a bar when ``bar`` is true and
    ``progress`` asks for one (default: when stderr is a terminal). ``progress=False`` always
    silences it. Use it as a context manager; a stage opened inside it (a loop within one of
    its units) covers its current unit.

    Args:
        total: the number of units.
        description: what the loop does (``reconstruct``, ``odd``, ``training``).
        unit: the units' name (``row``, ``step``), shown in the lines as ``25/96 rows``;
            empty: no count is shown.
        progress: as :func:`resolve_mode`.
        bar: whether this loop shows a tqdm bar in ``bar`` mode.
        initial: units already done (a resumed training).
        leave: keep the bar on the terminal once done (tqdm's ``leave``).
    """

    def __init__(self, total: float, description: str = "", unit: str = "", progress: ProgressSpec = None,
                 bar: bool = True, initial: float = 0, leave: bool = True) -> None:
        self.total = max(float(total), 1e-12)
        self.description, self.unit = description, unit
        self.done = float(initial)
        self.postfix: Mapping[str, str] = {}
        share = _current.get()
        self._parent = share
        if share is None:
            mode = "bar" if resolve_mode(progress) == "bar" else "off"  # no lines outside a command
            self.job = _Job(mode, None)
            self.lo, self.hi = 0.0, 1.0
        else:
            self.job = share.job if progress is not False else _Job("off", None)
            self.lo, self.hi = share.take()
        self._bar: Any = None
        if self.job.mode == "bar" and bar and progress is not False:
            from tqdm import tqdm

            self._bar = tqdm(total=total, initial=initial, desc=description, unit=unit or "it",
                             file=sys.stderr, leave=leave)
        self._token: Optional[contextvars.Token] = None
        self._report()

    # -- reporting ----------------------------------------------------------------------------
    @property
    def fraction(self) -> float:
        """The command's fraction done at this stage's count."""
        return self.lo + (self.hi - self.lo) * min(1.0, self.done / self.total)

    def detail(self) -> str:
        """``odd: 25/96 rows`` (the enclosing stage's detail first, when nested)."""
        text = self.description
        if self.unit:
            plural = self.unit if self.unit.endswith("s") or self.total == 1 else self.unit + "s"
            text += f"{': ' if text else ''}{self.done:g}/{self.total:g} {plural}"
        if self.postfix:
            text += ", " + ", ".join(f"{k} {v}" for k, v in self.postfix.items())
        if isinstance(self._parent, Stage):
            outer = self._parent.detail()
            text = f"{outer}; {text}" if outer and text else outer or text
        return text

    def _report(self) -> None:
        if self.job.log is not None:
            self.job.log.update(self.fraction, self.detail())

    def advance(self, n: float = 1, postfix: Optional[Mapping[str, str]] = None) -> None:
        """``n`` more units done; ``postfix`` (``{"loss": "0.123"}``) is shown beside the count."""
        self.done += n
        if postfix is not None:
            self.postfix = dict(postfix)
        if self._bar is not None:
            self._bar.update(n)
            if postfix is not None:
                self._bar.set_postfix(postfix)
        self._report()

    def take(self) -> Tuple[float, float]:
        """The share of the current unit (for a stage or :func:`parts` opened inside this one)."""
        width = (self.hi - self.lo) / self.total
        lo = self.lo + width * min(self.done, self.total)
        return lo, min(self.hi, lo + width)

    def close(self) -> None:
        """Close the bar (the count is not changed)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> "Stage":
        self._token = _current.set(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._token is not None:
            _current.reset(self._token)
            self._token = None
        self.close()


def stage(total: float, description: str = "", unit: str = "", progress: ProgressSpec = None,
          bar: bool = True, initial: float = 0, leave: bool = True) -> Stage:
    """A :class:`Stage` for a loop of ``total`` units (use it in a ``with`` statement)."""
    return Stage(total, description, unit, progress, bar, initial, leave)
