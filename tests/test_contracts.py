"""The contracts shared by the engine, the CLI and the Scipion plugin (localet_core.contracts):
torch-free imports, one writer and one reader of pairs.star, model cards read without torch
equal to what load_model reads, output names, the pixel-size tolerance, the FSC STAR names."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from localet_core.contracts import fsc_star, model_card, naming, pairs, tolerances
from localet_core.errors import InputError

CONTRACTS = ("pairs", "model_card", "naming", "tolerances", "fsc_star")


def test_contracts_import_without_torch():
    code = ("import sys\n"
            + "".join(f"import localet_core.contracts.{m}\n" for m in CONTRACTS)
            + "print(sorted(m for m in ('torch', 'pandas', 'starfile', 'safetensors') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------------------ pairs.star
def test_pairs_star_round_trip(tmp_path):
    written = [
        pairs.PairSpec(stack=str(tmp_path / "a b" / "TS_01.st"), tlt=str(tmp_path / "TS_01.tlt"),
                       reference=str(tmp_path / "TS_01_ref.mrc"), xf=str(tmp_path / "TS_01.xf"),
                       odd=str(tmp_path / "TS_01_odd.st"), even=str(tmp_path / "TS_01_even.st"),
                       exclude="3,17"),
        pairs.PairSpec(stack="TS_02.st", tlt="TS_02.tlt", reference="TS_02_ref.mrc", exclude="4",
                       split="val"),
    ]
    star = pairs.write_pairs_star(tmp_path / "pairs.star", written)
    assert star == tmp_path / "pairs.star" and star.read_text().startswith("#")
    read = pairs.read_pairs_star(star)
    assert read[0] == written[0]  # absolute paths (one with a space) come back as written
    assert read[1] == pairs.PairSpec(stack=str(tmp_path / "TS_02.st"), tlt=str(tmp_path / "TS_02.tlt"),
                                     reference=str(tmp_path / "TS_02_ref.mrc"), exclude="4", split="val")
    # a table with no optional values has no optional columns (but always the split)
    plain = pairs.write_pairs_star(tmp_path / "plain.star", [pairs.PairSpec("s.st", "s.tlt", "r.mrc")])
    text = plain.read_text()
    assert "_split" in text and "_xf" not in text and "_odd" not in text
    assert pairs.read_pairs_star(plain) == [pairs.PairSpec(str(tmp_path / "s.st"), str(tmp_path / "s.tlt"),
                                                           str(tmp_path / "r.mrc"))]
    with pytest.raises(ValueError, match="split must be train or val"):
        pairs.write_pairs_star(tmp_path / "bad.star", [pairs.PairSpec("s", "t", "r", split="test")])


def test_pairs_star_reader_refuses_bad_tables(tmp_path):
    star = tmp_path / "p.star"
    star.write_text("data_pairs\n\nloop_\n_stack\n_tlt\na.st a.tlt\n")
    with pytest.raises(InputError, match="p.star: lacks the column.s. reference"):
        pairs.read_pairs_star(star)
    star.write_text("data_pairs\n\nloop_\n_rlnStack\n_rlnTlt\n_rlnReference\n_split\na.st a.tlt r.mrc test\n")
    with pytest.raises(InputError, match="split must be train or val, got 'test'"):
        pairs.read_pairs_star(star)
    # a block without loop_ is one pair
    star.write_text("data_pairs\n\n_stack a.st\n_tlt a.tlt\n_reference r.mrc\n")
    assert pairs.read_pairs_star(star) == [pairs.PairSpec(str(tmp_path / "a.st"), str(tmp_path / "a.tlt"),
                                                          str(tmp_path / "r.mrc"))]


def test_simulate_writes_pairs_star_through_the_contract(tmp_path):
    from localet_core.simulate.forward import write_pairs_star

    rows = [{"stack": tmp_path / f"s{i}.st", "tlt": tmp_path / f"s{i}.tlt",
             "reference": tmp_path / f"s{i}_truth.mrc", "xf": tmp_path / f"s{i}.xf"} for i in range(3)]
    write_pairs_star(tmp_path / "pairs.star", rows, val_fraction=0.3)
    read = pairs.read_pairs_star(tmp_path / "pairs.star")
    assert [p.split for p in read] == ["train", "train", "val"]
    assert [p.xf for p in read] == [str(tmp_path / f"s{i}.xf") for i in range(3)]
    assert all(p.odd is None and p.exclude is None for p in read)


def test_training_uses_the_contract():
    from localet_core.network import training

    assert training.PairSpec is pairs.PairSpec and training.read_pairs_star is pairs.read_pairs_star


# ------------------------------------------------------------------------------ model cards
def test_model_card_read_without_torch_equals_load_model():
    from localet_core.network.modelfile import load_model, resolve_model_path

    path = model_card.shipped_model_path()
    assert path == resolve_model_path(model_card.DEFAULT_MODEL) and path.suffix == model_card.SUFFIX
    _, card = load_model(model_card.DEFAULT_MODEL)
    assert model_card.read_model_card(path) == card
    meta = model_card.read_metadata(path)
    assert meta["format"] == model_card.FORMAT and meta["format_version"] == str(model_card.FORMAT_VERSION)
    assert model_card.card_from_metadata(meta, path) == card
    assert model_card.training_range(card) == (min(card["pixel_size_A"]), max(card["pixel_size_A"]))


def test_model_card_of_other_files(tmp_path):
    from safetensors.numpy import save_file

    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(InputError, match="junk.safetensors: is not a safetensors file"):
        model_card.read_model_card(junk)
    with pytest.raises(InputError, match="too short"):
        (tmp_path / "short").write_bytes(b"abc")
        model_card.read_metadata(tmp_path / "short")
    plain = tmp_path / "plain.safetensors"
    save_file({"w": np.zeros((2, 2), np.float32)}, str(plain), metadata={"card": json.dumps({"name": "x"})})
    assert model_card.read_model_card(plain) == {"name": "x"}  # lenient: shown and imported
    with pytest.raises(InputError, match="plain.safetensors: is a safetensors file but not a localet model"):
        model_card.card_from_metadata(model_card.read_metadata(plain), plain)
    with pytest.raises(InputError, match="format version '7'"):
        model_card.card_from_metadata({"format": model_card.FORMAT, "format_version": "7"}, plain)
    with pytest.raises(InputError, match="invalid model card"):
        model_card.card_from_metadata({"format": model_card.FORMAT,
                                       "format_version": str(model_card.FORMAT_VERSION), "card": "{"}, plain)
    bare = tmp_path / "bare.safetensors"
    save_file({"w": np.zeros(2, np.float32)}, str(bare))
    assert model_card.read_model_card(bare) == {}


def test_model_file_names():
    assert model_card.model_file("out/model") == Path("out/model.safetensors")
    assert model_card.model_file("out/model.safetensors") == Path("out/model.safetensors")
    assert model_card.model_file("out/v1.2") == Path("out/v1.2.safetensors")


def test_fit_warnings_name_the_callers_binning():
    card = {"pixel_size_A": [8.0, 16.0]}
    assert model_card.fit_warnings(card, 10.0) == []
    (cli,) = model_card.fit_warnings(card, 2.5)
    (gui,) = model_card.fit_warnings(card, 2.5, binning_option="Binning =")
    assert cli.endswith("try --bin 5") and gui.endswith("try Binning = 5")
    (high,) = model_card.fit_warnings(card, 30.0)
    assert "30 A is outside the model's training range 8-16 A" in high and "try" not in high


# ------------------------------------------------------------------------------ names, tolerance
def test_output_names():
    assert naming.half_name("dir/TS_01.mrc", naming.ODD) == "dir/TS_01_odd.mrc"
    assert naming.half_name("dir.d/TS_01", naming.EVEN) == "dir.d/TS_01_even.mrc"
    assert naming.half_name(Path("/p/TS_01.st"), "odd") == "/p/TS_01_odd.st"
    with pytest.raises(ValueError):
        naming.half_name("a.mrc", "half1")
    assert naming.saved_half_name("out/h", 1) == "out/h_half1.mrc"
    assert naming.saved_half_name(Path("h"), 2) == "h_half2.mrc"
    assert naming.plot_name("x/TS_01_fsc.star") == "x/TS_01_fsc.png"


def test_pixel_size_tolerance():
    assert tolerances.PIXEL_SIZE_TOLERANCE == 0.005
    assert tolerances.same_pixel_size(10.0, 10.049) and tolerances.same_pixel_size(10.049, 10.0)
    assert not tolerances.same_pixel_size(10.0, 10.06)
    assert tolerances.same_pixel_size(2.173 * 4, 8.69)  # a binned size against one rounded to 0.01 A


# ------------------------------------------------------------------------------ FSC table
def test_fsc_star_names_are_what_the_writer_writes(tmp_path):
    import starfile
    import torch

    from localet_core.validation.fsc import compute_fsc
    from localet_core.validation.fsc_report import write_fsc_star

    rng = np.random.default_rng(0)
    a = torch.from_numpy(rng.standard_normal((16, 16, 16)).astype(np.float32))
    b = a + 0.5 * torch.from_numpy(rng.standard_normal((16, 16, 16)).astype(np.float32))
    result = compute_fsc(a, b, pixel_size=4.0, tilt_range=(-60.0, 60.0))
    write_fsc_star(tmp_path / "fsc.star", result, names=("a.mrc", "b.mrc"))
    blocks = starfile.read(tmp_path / "fsc.star", always_dict=True)
    assert set(blocks) == {fsc_star.BLOCK_GENERAL, fsc_star.BLOCK_FSC, fsc_star.BLOCK_RESOLUTION}
    general = blocks[fsc_star.BLOCK_GENERAL]
    general = general if isinstance(general, dict) else general.iloc[0].to_dict()
    assert general[fsc_star.VOLUME_A] == "a.mrc" and general[fsc_star.PIXEL_SIZE] == 4.0
    curve = blocks[fsc_star.BLOCK_FSC]
    for region in fsc_star.REGIONS:
        assert fsc_star.region_fsc_column(region) in curve and fsc_star.region_voxels_column(region) in curve
    np.testing.assert_allclose(curve[fsc_star.FSC], result.fsc.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(curve[fsc_star.SPATIAL_FREQUENCY], result.frequency.numpy() / 4.0, rtol=1e-5)
    table = blocks[fsc_star.BLOCK_RESOLUTION]
    assert list(table[fsc_star.REGION].unique()) == list(fsc_star.REGIONS)
    assert sorted(table[fsc_star.CRITERION].astype(str).unique()) == sorted(fsc_star.CRITERIA)
