"""A user's own map as a simulator template (``localet simulate --templates MAP.mrc``):
:mod:`localet_core.simulate.user_maps`, through the real CLI where it is the user's path."""
import json
from pathlib import Path

import mrcfile
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from localet_core.errors import InputError
from localet_core.simulate import load_template
from localet_core.simulate.user_maps import MAP_PIXEL_A, read_map_template
from tests.test_cli_hostile import assert_refused, run_cli, snapshot


def _write(path: Path, data: np.ndarray, voxel: float) -> Path:
    with mrcfile.new(str(path), overwrite=True) as m:
        m.set_data(np.asarray(data, dtype=np.float32))
        m.voxel_size = voxel
    return path


def _as_user_map(pdb_id: str, gain: float = 37.0, offset: float = 5.0, noise: float = 0.02) -> np.ndarray:
    """A shipped template as a map from elsewhere: other units and an offset, solvent noise,
    the molecule off-centre in a larger, non-cubic box."""
    a, _ = load_template(pdb_id)
    n = a.shape[0]
    box = np.zeros((n + 30, n + 24, n + 18), dtype=np.float32)
    box[11:11 + n, 5:5 + n, 13:13 + n] = a
    rng = np.random.default_rng(0)
    return box * gain + offset + rng.normal(0.0, noise * gain * float(a.max()), box.shape).astype(np.float32)


def _best_correlation(a: np.ndarray, b: np.ndarray, reach: int = 1) -> float:
    """Pearson correlation of two centred cubes over their common central cube, at the best
    integer shift within ``reach`` voxels."""
    n = min(a.shape[0], b.shape[0])

    def centre(x):
        c = (x.shape[0] - n) // 2
        return x[c:c + n, c:c + n, c:c + n]

    a, b = centre(a), centre(b)
    shifts = range(-reach, reach + 1)
    return max(float(np.corrcoef(a.ravel(), np.roll(b, (i, j, k), (0, 1, 2)).ravel())[0, 1])
               for i in shifts for j in shifts for k in shifts)


@pytest.mark.parametrize("pdb_id", ["4v1w", "4v5d"])
def test_a_shipped_molecule_written_as_a_user_map_comes_back_as_its_template(tmp_path, pdb_id):
    shipped, pixel = load_template(pdb_id)
    got = read_map_template(_write(tmp_path / f"{pdb_id}.mrc", _as_user_map(pdb_id), pixel))
    n = got.data.shape[0]
    assert n % 2 == 0 and got.data.shape == (n, n, n) and got.pixel_size == pixel
    assert _best_correlation(shipped, got.data) > 0.97
    # the molecule's centre of mass is the cube's centre (within the half-voxel integer move)
    w = np.clip(got.data, 0, None)
    com = [float((np.indices(w.shape)[a] * w).sum() / w.sum()) for a in range(3)]
    assert np.allclose(com, (n - 1) / 2.0, atol=0.75), com
    # units: an average protein's contrast, within the spread of the shipped molecules
    assert 0.75 < got.data.sum() / shipped.sum() < 1.33
    meta_radius = {"4v1w": 67.8, "4v5d": 153.3}[pdb_id]
    assert meta_radius * 0.9 < got.radius_A < meta_radius * 1.4
    # outside the molecule the solvent noise is gone
    edge = np.concatenate([got.data[0].ravel(), got.data[-1].ravel()])
    assert np.abs(edge).max() < 1e-3 * got.data.max()


def test_a_map_in_other_units_or_at_a_finer_pixel_gives_the_same_template(tmp_path):
    plain = read_map_template(_write(tmp_path / "a.mrc", _as_user_map("4v1w"), 5.0))
    other = read_map_template(_write(tmp_path / "b.mrc", _as_user_map("4v1w", gain=-0.01 * -3, offset=-80.0), 5.0))
    assert plain.data.shape == other.data.shape
    assert np.allclose(plain.data, other.data, atol=2e-3 * plain.data.max())
    assert plain.scale == pytest.approx(other.scale * 0.03 / 37.0, rel=1e-3)
    # the same molecule on a grid twice as fine (2.5 A, as EMDB maps are) comes back at the 5 A
    # pixel; it loses only what lies between 0.8 and 1 of that Nyquist (the anti-alias filter)
    fine = F.interpolate(torch.from_numpy(_as_user_map("4v1w", noise=0.0))[None, None], scale_factor=2,
                         mode="nearest")[0, 0].numpy()
    half = read_map_template(_write(tmp_path / "fine.mrc", fine, 2.5))
    assert half.pixel_size == MAP_PIXEL_A
    assert _best_correlation(plain.data, half.data) > 0.95
    assert 0.8 < half.data.sum() / plain.data.sum() < 1.25


def test_a_map_stored_with_other_axes_is_read_in_its_own_hand(tmp_path):
    """EMDB maps may store their axes in another order (MAPC/MAPR/MAPS); read as stored, the
    molecule would be transposed: its mirror image for an odd order."""
    user = _as_user_map("4v5d")
    plain = read_map_template(_write(tmp_path / "plain.mrc", user, 5.0))
    # columns along Z, rows along X, sections along Y: stored[y, x, z] = user[z, y, x]
    stored = np.ascontiguousarray(user.transpose(1, 2, 0))
    path = _write(tmp_path / "permuted.mrc", stored, 5.0)
    with mrcfile.open(str(path), mode="r+") as m:
        m.header.mapc, m.header.mapr, m.header.maps = 3, 1, 2
    permuted = read_map_template(str(path))
    assert permuted.data.shape == plain.data.shape
    assert np.allclose(permuted.data, plain.data, atol=1e-4 * plain.data.max())
    as_stored = read_map_template(_write(tmp_path / "as_stored.mrc", stored, 5.0))  # what ignoring MAPC gives
    assert _best_correlation(plain.data, as_stored.data) < 0.9
    with mrcfile.open(str(path), mode="r+") as m:
        m.header.mapc = 2
    with pytest.raises(InputError, match="axis order"):
        read_map_template(str(path))
    anisotropic = _write(tmp_path / "aniso.mrc", user, 5.0)
    with mrcfile.open(str(anisotropic), mode="r+") as m:
        m.voxel_size = (5.0, 5.0, 6.0)
    with pytest.raises(InputError, match="not cubic"):
        read_map_template(str(anisotropic))


def test_simulate_makes_a_crowd_of_the_users_map_and_resume_follows_its_content(tmp_path):
    """The user's path: `localet simulate --templates my.mrc`. The series are a crowd of that
    molecule, the JSON names the map and its SHA-256, the map is never written to, and a map
    edited in place is another specimen for --resume."""
    mine = _write(tmp_path / "my molecule.mrc", _as_user_map("4v1w"), 5.0)
    before = mine.read_bytes()
    out = tmp_path / "sims"
    common = ["--count", "1", "--family", "diverse", "--templates", mine.name, "--voxel", "14",
              "--shape", "32,64,64", "--tilt-step", "6", "--thickness", "40", "--no-progress"]
    result = run_cli("simulate", "-o", out, *common, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    record = json.loads((out / "sim_0.json").read_text())
    key = str(mine.resolve())
    assert record["config"]["templates"] == [key]
    assert record["config"]["template_sha256"] == {key: read_map_template(str(mine)).sha256}
    particles = [o for o in record["phantom"]["objects"] if o["type"] == "particle"]
    assert particles and {o["template"] for o in particles} == {key}
    assert mine.read_bytes() == before
    # same map: kept; the map edited in place: refused, naming the series' record
    kept = run_cli("simulate", "-o", out, "--resume", *common, cwd=tmp_path)
    assert kept.returncode == 0 and "kept 1" in kept.stdout + kept.stderr, kept.stderr[-2000:]
    _write(mine, _as_user_map("4v1w", gain=40.0), 5.0)
    files = snapshot(out)
    assert_refused(run_cli("simulate", "-o", out, "--resume", *common, cwd=tmp_path), "sim_0.json", "other settings")
    assert snapshot(out) == files


def test_unusable_maps_are_refused_in_one_line_naming_the_file(tmp_path):
    flat = _write(tmp_path / "flat.mrc", np.full((16, 16, 16), 3.0), 5.0)
    image = _write(tmp_path / "image.mrc", np.ones((1, 16, 16)), 5.0)
    unset = _write(tmp_path / "unset.mrc", _as_user_map("4v1w"), 0.0)
    noise = _write(tmp_path / "noise.mrc", np.random.default_rng(1).normal(size=(24, 24, 24)), 5.0)
    huge = _write(tmp_path / "huge.mrc", np.zeros((8, 8, 513)), 5.0)
    cases = [(huge, "crop or bin it"), (flat, "flat"), (image, "not a 3D map"), (unset, "no pixel size"),
             (tmp_path / "gone.mrc", "no such map"),
             (noise, "no molecule")]
    for path, words in cases:
        with pytest.raises(InputError, match=words):
            read_map_template(str(path))
        out = tmp_path / f"out_{path.stem}"
        assert_refused(run_cli("simulate", "-o", out, "--templates", path.name, "--shape", "16,32,32",
                               "--no-progress", cwd=tmp_path), path.name, words)
        assert not out.exists() or not any(out.iterdir())
