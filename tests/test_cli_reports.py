"""What long commands report where users look, through the real CLI in a subprocess: progress
lines in a log (stderr not a terminal), bars on a terminal, and the command line in the header
labels of every MRC file they write (simulate's stacks marked as image stacks)."""
import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import mrcfile
import pytest

#: a short interval, so that even these small jobs span several
INTERVAL = "0.05"
STEP = re.compile(r"^localet (?P<cmd>[\w-]+): (?P<pct>\d+)% done(?: \((?P<detail>.+)\))?, "
                  r"elapsed (?P<elapsed>\d+:\d\d:\d\d)(?:, remaining ~(?P<left>\d+:\d\d:\d\d))?$")
FINAL = re.compile(r"^localet (?P<cmd>[\w-]+): 100% done, wall time (?P<wall>\d+:\d\d:\d\d)$")
LABEL_DATE = re.compile(r"  \d\d-[A-Z][a-z]{2}-\d\d  \d\d:\d\d:\d\d$")


def run_cli(*args, cwd=None, timeout=300):
    """``localet ARGS`` with stderr captured (not a terminal); returns (result, wall seconds)."""
    env = dict(os.environ, LOCALET_PROGRESS_INTERVAL=INTERVAL, OMP_NUM_THREADS="1")
    t0 = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "localet", *map(str, args)], capture_output=True,
                            text=True, cwd=cwd, env=env, timeout=timeout)
    return result, time.monotonic() - t0


def seconds(hms: str) -> int:
    h, m, s = (int(x) for x in hms.split(":"))
    return 3600 * h + 60 * m + s


def check_progress(result, wall: float, command: str, min_lines: int = 3):
    """The progress lines of ``command`` on stderr (at least ``min_lines``: these jobs span
    several intervals): a first line, steps with percentage, elapsed and remaining time, and a
    final line whose wall time is the command's."""
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith(f"localet {command}: ")]
    assert len(lines) >= min_lines, result.stderr
    *steps, last = lines
    matches = [STEP.match(line) for line in steps]
    assert all(matches), steps
    final = FINAL.match(last)
    assert final, last
    assert result.stderr.rstrip().endswith(last)  # the very last line
    pct = [int(m["pct"]) for m in matches]
    elapsed = [seconds(m["elapsed"]) for m in matches]
    assert pct[0] == 0 and pct == sorted(pct) and max(pct) <= 99 and elapsed == sorted(elapsed)
    if len(matches) >= 2:  # once some work is done: the time left
        assert any(m["left"] for m in matches[1:]), steps
    reported = seconds(final["wall"])
    # from the start of the process (loading included), in whole seconds; the test's clock also
    # holds the interpreter's start and exit, which take seconds on a loaded machine
    assert elapsed[-1] <= reported <= wall + 1 and reported >= wall - 5, (reported, wall)
    return [m["detail"] for m in matches]


def labels_of(path):
    with mrcfile.open(str(path), permissive=True) as m:
        return [bytes(x).decode() for x in m.header.label[: int(m.header.nlabl)]], int(m.header.ispg)


def check_label(label: str, command: str, *words: str):
    assert len(label) == 80 and label.startswith(f"localet {command}: ") and LABEL_DATE.search(label), label
    for word in words:
        assert word in label, label


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    out = tmp_path_factory.mktemp("reports") / "sim"
    result, wall = run_cli("simulate", "-o", out, "--count", 1, "--shape", "32,48,48", "--seed", 7)
    return out, result, wall


def test_simulate_reports_progress_labels_its_files_and_marks_stacks(simulated):
    out, result, wall = simulated
    details = check_progress(result, wall, "simulate")
    assert any("simulate: 0/1 series" in d for d in details)
    for name in ("sim_7.st", "sim_7_odd.st", "sim_7_even.st", "sim_7_truth.mrc", "sim_7_mask.mrc"):
        labels, ispg = labels_of(out / name)
        assert len(labels) == 1, (name, labels)
        check_label(labels[0], "simulate", "-o sim --count 1 --shape 32,48,48 --se...")  # cut to fit
        assert ispg == (0 if name.endswith(".st") else 1), name  # image stacks; volumes
        assert mrcfile.validate(str(out / name), print_file=open(os.devnull, "w")), name


def test_reconstruct_reports_one_percentage_over_its_passes_and_labels_each_output(simulated, tmp_path):
    sim, _, _ = simulated
    out = tmp_path / "rec.mrc"
    result, wall = run_cli("reconstruct", sim / "sim_7.st", "--tlt", sim / "sim_7.tlt", "--odd", sim / "sim_7_odd.st",
                           "--even", sim / "sim_7_even.st", "--thickness", 16, "--bin", 2, "--memory", "256K",
                           "--device", "cpu", "-o", out)
    details = check_progress(result, wall, "reconstruct")
    # the three passes, then the validation's WBP halves, in order
    # (a pass shorter than the interval may print no line of its own: order only what was seen)
    seen = [d.split(":")[0] for d in details if d]
    order = ["reconstruct", "odd", "even", "half 1 of 2", "half 2 of 2"]
    firsts = [seen.index(p) for p in order if p in seen]
    assert firsts == sorted(firsts) and len(firsts) >= 2, seen
    assert set(seen) <= set(order), seen
    for name, half in (("rec.mrc", ""), ("rec_odd.mrc", "_odd"), ("rec_even.mrc", "_even")):
        labels, ispg = labels_of(tmp_path / name)
        assert len(labels) == 2 and ispg == 1, labels
        check_label(labels[0], "simulate")  # the input stack's history comes first
        check_label(labels[1], "reconstruct", "sim_7.st --tlt sim_7.tlt --odd sim_...")


def test_fsc_halves_reports_progress_and_labels_saved_halves(simulated, tmp_path):
    sim, _, _ = simulated
    # unbinned and 32 slices thick, so that each half spans several progress intervals (binned 2
    # and 16 thick, the network's halves took about 0.1 s in all and half 2 could pass unreported)
    result, wall = run_cli("fsc-halves", sim / "sim_7.st", "--tlt", sim / "sim_7.tlt", "--thickness", 32,
                           "--memory", "256K", "--device", "cpu", "--save-halves", tmp_path / "h",
                           "-o", tmp_path / "fsc.star")
    details = check_progress(result, wall, "fsc-halves", min_lines=2)
    assert any(d and d.startswith("half 2 of 2") for d in details)
    for i in (1, 2):
        labels, ispg = labels_of(tmp_path / f"h_half{i}.mrc")
        assert ispg == 1 and len(labels) == 2
        check_label(labels[-1], "fsc-halves", "sim_7.st --tlt sim_7.tlt")


def test_train_reports_progress_with_its_loss(simulated, tmp_path):
    """... and reads every --pairs list given (here two lists, each in another folder with its
    paths relative to it, of the simulated folder's pair)."""
    import starfile

    from localet_core.network.modelfile import load_model

    sim, _, _ = simulated
    table = starfile.read(sim / "pairs.star", always_dict=True)["pairs"]
    stars = []
    for k in range(2):
        folder = tmp_path / f"list{k}"
        folder.mkdir()
        part = table.copy()
        for col in ("stack", "tlt", "reference", "odd", "even"):
            if col in part:
                part[col] = [os.path.relpath(sim / v, folder) for v in part[col]]
        starfile.write({"pairs": part}, folder / "pairs.star")
        stars += ["--pairs", folder / "pairs.star"]
    result, wall = run_cli("train", *stars, "--steps", 12, "--batch-size", 128,
                           "--device", "cpu", "-o", tmp_path / "run")
    details = check_progress(result, wall, "train", min_lines=2)
    assert details[0] == "training: 0/12 steps", details
    assert all(re.fullmatch(r"training: \d+/12 steps, loss \d\S*, val \S+", d) for d in details[1:]), details
    card = load_model(tmp_path / "run" / "model.safetensors")[1]
    listed = card["training_data"] + card["validation_data"]
    assert len(listed) == 2 * len(table) and all(Path(p["stack"]).name == "sim_7.st" for p in listed)


def test_on_a_terminal_fbp_shows_its_bar_and_no_lines(simulated, tmp_path):
    sim, _, _ = simulated
    out = tmp_path / "wbp.mrc"
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a width for tqdm's bar
    args = ["fbp", sim / "sim_7.st", "--tlt", sim / "sim_7.tlt", "--thickness", 16, "--memory", "64K", "-o", out]
    child = subprocess.Popen([sys.executable, "-m", "localet", *map(str, args)],
                             stdout=subprocess.DEVNULL, stderr=slave,
                             env=dict(os.environ, LOCALET_PROGRESS_INTERVAL=INTERVAL, OMP_NUM_THREADS="1"))
    os.close(slave)
    chunks = []

    def read():
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # the child closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert child.wait(timeout=300) == 0
    reader.join(timeout=10)
    os.close(master)
    text = b"".join(chunks).decode(errors="replace")
    assert "wbp:" in text and "\r" in text, text  # tqdm's bar
    assert "% done" not in text and "wall time" not in text, text
    labels, ispg = labels_of(out)
    assert ispg == 1 and len(labels) == 2
    check_label(labels[0], "simulate")
    check_label(labels[1], "fbp", "sim_7.st --tlt sim_7.tlt --thickness 16 --m...")
