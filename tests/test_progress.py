"""The progress reporter of long jobs (localet_core.progress), with a fake clock: lines in logs,
bars on terminals, one percentage for a command's several loops."""
import io

import pytest

from localet_core.errors import InputError
from localet_core.progress import (
    ENV_INTERVAL,
    ProgressLog,
    command_progress,
    format_duration,
    parts,
    progress_interval,
    resolve_mode,
    stage,
)


class FakeClock:
    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def percents(text: str):
    return [int(line.split(": ", 1)[1].split("%")[0]) for line in text.splitlines()]


def test_log_writes_a_first_line_then_at_most_one_per_interval_and_a_final_wall_time():
    clock, out = FakeClock(100.0), io.StringIO()
    log = ProgressLog("localet x", interval=10, stream=out, clock=clock, start=95.0)  # started 5 s ago
    log.update(0.0, "rows: 0/8")
    for t, f in ((103, 0.2), (109.9, 0.4), (110, 0.5), (112, 0.6), (119, 0.7)):
        clock.t = t
        log.update(f)
    clock.t = 130.0
    log.update(0.2)  # never goes back
    clock.t = 131.0
    log.finish()
    log.finish()  # once
    assert out.getvalue().splitlines() == [
        "localet x: 0% done (rows: 0/8), elapsed 0:00:05",
        # 0.5 done in the 10 s since the first line: 10 s to go
        "localet x: 50% done, elapsed 0:00:15, remaining ~0:00:10",
        "localet x: 70% done, elapsed 0:00:35, remaining ~0:00:13",
        "localet x: 100% done, wall time 0:00:36",
    ]


def test_parts_and_stages_give_one_percentage_for_the_whole_command():
    clock, out = FakeClock(), io.StringIO()
    with command_progress("localet y", progress="lines", interval=1e-9, stream=out, clock=clock, start=0.0):
        with parts(2):
            with stage(4, "first", unit="row") as rows:
                for _ in range(4):
                    clock.t += 1
                    rows.advance(1)
            with stage(3, "series", unit="series", bar=False) as series:
                for _ in range(3):
                    with stage(10, "inner"):  # covers the current series
                        pass
                    with stage(10, "inner") as inner:
                        clock.t += 1
                        inner.advance(5)
                    series.advance(1)
    lines = out.getvalue().splitlines()
    assert "(first: 0/4 rows)" in lines[0]
    # the first loop: 0..50%; then each series is a sixth, and half of it is done in each
    assert percents("\n".join(lines[:-1])) == [0, 12, 25, 37, 50, 58, 75, 91]
    assert lines[5] == "localet y: 58% done (series: 0/3 series; inner), elapsed 0:00:05, remaining ~0:00:04"
    assert lines[-1] == "localet y: 100% done, wall time 0:00:07"


def test_modes_terminals_get_bars_logs_get_lines():
    assert resolve_mode(None, Tty()) == "bar"
    assert resolve_mode(None, io.StringIO()) == "lines"
    assert resolve_mode(True, io.StringIO()) == "bar"  # the API's progress=True: a bar (e.g. a notebook)
    out = io.StringIO()
    with command_progress("localet p", progress=True, stream=out):  # the CLI's --progress: lines in a log
        with stage(1, "rows") as rows:
            rows.advance(1)
    assert "localet p: 0% done (rows)" in out.getvalue() and "wall time" in out.getvalue()
    assert resolve_mode(False, Tty()) == "off"
    assert resolve_mode("lines", Tty()) == "lines"
    with pytest.raises(ValueError):
        resolve_mode("loud")


def test_no_lines_with_no_progress_outside_a_command_after_an_error_or_on_other_ranks(monkeypatch, capsys):
    out = io.StringIO()
    with command_progress("localet z", progress=False, stream=out):
        with stage(3, "rows", unit="row") as rows:
            rows.advance(3)
    assert out.getvalue() == ""
    with stage(3, "rows", unit="row") as rows:  # the Python API: no command, no lines
        rows.advance(3)
    assert capsys.readouterr().err == ""
    with pytest.raises(RuntimeError):
        with command_progress("localet z", progress="lines", interval=1e-9, stream=out):
            with stage(2, "rows") as rows:
                raise RuntimeError("boom")
    assert out.getvalue().count("\n") == 1 and "wall time" not in out.getvalue()  # the first line only
    monkeypatch.setenv("RANK", "1")
    out = io.StringIO()
    with command_progress("localet z", progress="lines", stream=out):
        with stage(2, "rows") as rows:
            rows.advance(2)
    assert out.getvalue() == ""


def test_a_bar_on_a_terminal_and_stage_progress_false_silences_it(monkeypatch):
    err = Tty()
    monkeypatch.setattr("sys.stderr", err)
    with command_progress("localet b"):
        with stage(5, "wbp", unit="row", leave=False) as rows:
            rows.advance(5)
        with stage(5, "quiet", unit="row", bar=False) as rows:
            rows.advance(5)
        with stage(5, "off", unit="row", progress=False) as rows:
            rows.advance(5)
    text = err.getvalue()
    assert "wbp" in text and "\r" in text and "quiet" not in text and "off" not in text
    assert "% done" not in text


def test_the_interval_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv(ENV_INTERVAL, raising=False)
    assert progress_interval() == 10.0
    monkeypatch.setenv(ENV_INTERVAL, "0.25")
    assert progress_interval() == 0.25
    for bad in ("soon", "0", "-1", "nan"):
        monkeypatch.setenv(ENV_INTERVAL, bad)
        with pytest.raises(InputError, match=ENV_INTERVAL):
            progress_interval()


def test_durations_read_as_hours_minutes_seconds():
    assert format_duration(0.4) == "0:00:00"
    assert format_duration(73) == "0:01:13"
    assert format_duration(27 * 3600 + 5) == "27:00:05"


def test_process_age_from_proc_agrees_with_psutil():
    import sys
    import time

    import psutil

    from localet_core.progress import _linux_process_age

    age = _linux_process_age()
    if not sys.platform.startswith("linux"):
        assert age is None
        return
    reference = time.time() - psutil.Process().create_time()
    assert age is not None and abs(age - reference) < 0.5  # clock ticks are 10 ms; psutil's import in between


def test_available_ram_is_psutils():
    import psutil

    from localet_core.device import available_ram

    assert abs(available_ram() - psutil.virtual_memory().available) < 256 * 2**20  # other processes move it
