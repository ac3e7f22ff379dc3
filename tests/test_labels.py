"""MRC header labels as IMOD keeps them (localet_core.io.labels), and image stacks marked as such."""
import datetime
import re

import mrcfile
import numpy as np
import pytest

from localet_core.io import VolumeWriter, read_stack, write_volume
from localet_core.io.labels import DATE_FORMAT, history_label, merge_labels

WHEN = datetime.datetime(2026, 12, 2, 3, 10, 0)


def test_a_history_label_is_80_characters_with_the_date_at_the_end():
    label = history_label("localet fbp", ["/data/run 1/TS 01.st", "--tlt", "/data/TS_01.tlt", "-o", "r.mrc"], WHEN)
    assert len(label) == 80
    assert label.startswith("localet fbp: 'TS 01.st' --tlt TS_01.tlt -o r.mrc  ")  # file names, quoted if needed
    assert label.endswith("02-Dec-26  03:10:00") and label.endswith(WHEN.strftime(DATE_FORMAT))
    long = history_label("localet reconstruct", ["TS_01.st", "--tlt", "TS_01.tlt"] + ["--thickness", "300"] * 9, WHEN)
    assert len(long) == 80 and re.match(r"^localet reconstruct: TS_01\.st .*\.\.\.  +02-Dec-26  03:10:00$", long)
    assert history_label("localet simulate", ["-o", "s\u00e9rie"], WHEN).startswith("localet simulate: -o s?rie ")
    assert history_label("localet train", (), WHEN).startswith("localet train  ")


def test_an_output_keeps_the_labels_of_its_input_first_and_latest_when_full():
    assert merge_labels(["newstack: copied", "  "], ["mine"]) == ("newstack: copied", "mine")
    inherited = [f"label {i}" for i in range(12)]
    merged = merge_labels(inherited, ["mine"])
    assert len(merged) == 10 and merged[0] == "label 0" and merged[1:9] == tuple(inherited[4:]) and merged[-1] == "mine"


def test_the_writer_writes_every_label_and_marks_image_stacks(tmp_path):
    labels = ["localet simulate: -o sim", "localet fbp: sim.st -o r.mrc"]
    path = tmp_path / "ts.st"
    write_volume(path, np.ones((5, 6, 7), np.float32), voxel_size=4.5, label=labels, image_stack=True)
    assert mrcfile.validate(str(path), print_file=open("/dev/null", "w"))
    with mrcfile.open(str(path)) as m:
        assert int(m.header.ispg) == 0 and int(m.header.mz) == 1 and m.is_image_stack()
        assert float(m.voxel_size.x) == float(m.voxel_size.z) == pytest.approx(4.5)
        assert int(m.header.nlabl) == 2 and [bytes(x).decode() for x in m.header.label[:2]] == labels
    back = read_stack(path)
    assert back.labels == tuple(labels) and back.pixel_size == pytest.approx(4.5) and back.data.shape == (5, 6, 7)
    write_volume(tmp_path / "v.mrc", np.ones((5, 6, 7), np.float32), voxel_size=4.5)
    with mrcfile.open(str(tmp_path / "v.mrc")) as m:  # a volume, with the default label
        assert int(m.header.ispg) == 1 and int(m.header.mz) == 5 and int(m.header.nlabl) == 1
        assert bytes(m.header.label[0]).decode().startswith("localet ")
    for bad in (["x"] * 11, [], ["x" * 81], ["caf\u00e9"]):
        with pytest.raises(ValueError):
            VolumeWriter(tmp_path / "bad.mrc", (2, 2, 2), label=bad)
