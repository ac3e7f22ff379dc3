"""Fast tests of the specimen simulator: templates, phantoms, image formation."""
import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from localet_core.simulate import (
    apply_ctf,
    attenuate,
    ctf_2d,
    dose_symmetric_order,
    electron_wavelength,
    exposure_filter,
    interaction_constant,
    load_template,
    lowpass_template,
    make_phantom,
    place_template,
    poisson_noise,
    prior_dose,
    random_rotation,
    template_metadata,
)

# documented in localet_core/data/templates.json: id -> (edge length, stored pixel A)
EXPECTED = {"4v5d": (68, 5.0), "3jb9": (72, 5.0), "4v1w": (34, 5.0), "6z6u": (34, 5.0),
            "6qt9": (90, 10.0)}


def test_templates_load_with_documented_sizes():
    meta = template_metadata()
    assert set(meta["templates"]) == set(EXPECTED)
    for pdb_id, (n, pixel) in EXPECTED.items():
        arr, p = load_template(pdb_id)
        assert arr.shape == (n, n, n) and arr.dtype == np.float32
        assert p == pixel == meta["templates"][pdb_id]["pixel_size_A"]
        assert meta["templates"][pdb_id]["shape"] == [n, n, n]
        assert np.isfinite(arr).all() and arr.sum() > 0  # denser than ice overall
    with pytest.raises(KeyError):
        load_template("1abc")


@pytest.mark.parametrize("voxel", [5.0, 10.0, 12.0])
def test_rotation_preserves_mass(voxel):
    gen = torch.Generator().manual_seed(1)
    for pdb_id in ("4v5d", "4v1w"):
        vol, pixel = lowpass_template(pdb_id, voxel)
        mass = float(vol.sum()) * pixel ** 3
        for _ in range(3):
            rot = random_rotation(gen)
            assert torch.allclose(rot @ rot.T, torch.eye(3), atol=1e-5)
            assert abs(float(torch.det(rot)) - 1) < 1e-5
            out = place_template(pdb_id, voxel, rot, shift=(0.3, -0.2, 0.4))
            assert out.shape[0] % 2 == 1
            assert float(out.sum()) * voxel ** 3 == pytest.approx(mass, rel=0.03)


def test_identity_rotation_reproduces_template():
    vol, pixel = lowpass_template("4v1w", 5.0)
    out = place_template("4v1w", 5.0, torch.eye(3), out_size=vol.shape[0])
    assert torch.allclose(out, vol, atol=1e-4)


@pytest.mark.parametrize("scale", [0.5, 2.0])
def test_scaled_template_grows_mass_and_size_as_scale(scale):
    """A particle scaled s times keeps its potential values: s^3 the mass, s the radius of
    gyration (the size augmentation of the 'broad' training preset)."""
    voxel = 10.0
    base = place_template("4v5d", voxel, torch.eye(3))
    big = place_template("4v5d", voxel, torch.eye(3), scale=scale)
    assert big.shape[0] % 2 == 1 and (big.shape[0] > base.shape[0]) == (scale > 1)

    def gyration(vol):
        w = vol.clamp(min=0).double()
        c = (vol.shape[0] - 1) / 2.0
        ax = torch.arange(vol.shape[0], dtype=torch.float64) - c
        r2 = ax[:, None, None] ** 2 + ax[None, :, None] ** 2 + ax[None, None, :] ** 2
        return float(((w * r2).sum() / w.sum()).sqrt())

    assert float(big.sum()) == pytest.approx(float(base.sum()) * scale ** 3, rel=0.05)
    assert gyration(big) == pytest.approx(gyration(base) * scale, rel=0.05)
    with pytest.raises(ValueError):
        place_template("4v5d", voxel, torch.eye(3), scale=0.0)


def test_broad_preset_scales_particles_and_mixes_templates():
    ph = make_phantom((64, 96, 96), 10.0, seed=2, family="broad", thickness_nm=(50.0, 60.0),
                      object_types=("particle",), crowding=0.1)
    scales = [o["scale"] for o in ph.params["objects"] if o["type"] == "particle" and "scale" in o]
    assert len(scales) >= 5
    assert min(scales) >= 0.49 and max(scales) <= 3.05 and max(scales) / min(scales) > 1.5
    weights = ph.params["template_weights"]
    assert len(weights) == 3 and sum(weights) == pytest.approx(1.0, abs=1e-3)
    # the other presets keep the molecules' true sizes and a uniform mix
    plain = _small(2, object_types=("particle",))
    assert all("scale" not in o for o in plain.params["objects"])
    assert plain.params["template_weights"] is None
    with pytest.raises(ValueError, match="template_scale"):
        _small(2, template_scale=(2.0, 1.0))


def test_dense_preset_packs_more_particles_near_true_size_than_broad():
    """'dense' (a training preset): particles 0.6-1.5x, crowding 0.15-0.3, per-specimen mixes;
    on the same box it places more, and smaller, particles than 'broad'."""
    kw = dict(thickness_nm=(60.0, 70.0), object_types=("particle",))
    dense = make_phantom((64, 96, 96), 10.0, seed=5, family="dense", **kw)
    broad = make_phantom((64, 96, 96), 10.0, seed=5, family="broad", **kw)
    particles = [o for o in dense.params["objects"] if o["type"] == "particle"]
    scales = [o.get("scale", 1.0) for o in particles]
    assert min(scales) >= 0.59 and max(scales) <= 1.51
    assert dense.params["family"] == "dense" and len(dense.params["template_weights"]) == 3
    assert 0.15 <= dense.params["crowding_target"] <= 0.3
    assert len(particles) > len([o for o in broad.params["objects"] if o["type"] == "particle"])
    assert set(dense.params["templates"]) == {"4v5d", "3jb9", "4v1w"}  # the test set's stay unseen


def _small(seed, **kw):
    return make_phantom((48, 64, 64), 10.0, seed=seed, **kw)


def test_phantom_deterministic_and_seed_dependent():
    a, b, c = _small(3), _small(3), _small(4)
    assert torch.equal(a.volume, b.volume) and torch.equal(a.labels, b.labels)
    assert a.params == b.params
    assert not torch.equal(a.volume, c.volume)
    json.dumps(a.params)  # serialisable
    assert a.volume.dtype == torch.float32 and a.ice.dtype == torch.float32
    assert a.slab_mask.dtype == torch.bool and a.volume.shape == (48, 64, 64)


def test_phantom_restores_thread_count():
    n = torch.get_num_threads()
    _small(0, object_types=("particle",))
    assert torch.get_num_threads() == n


def test_slab_mask_matches_thickness():
    ph = make_phantom((64, 32, 32), 10.0, seed=0, thickness_nm=35.0, slab_tilt_deg=0.0,
                      object_types=())
    # each column crosses 350 A of ice = 35 voxels (+-1 for the voxel grid)
    per_column = ph.slab_mask.sum(0)
    assert per_column.min() >= 34 and per_column.max() <= 36
    assert float(per_column.float().mean()) == pytest.approx(35.0, abs=1.0)
    # nothing outside the slab, ice only there
    assert float(ph.volume[~ph.slab_mask].abs().max()) < 0.05 * 4.6
    assert float(ph.ice[ph.slab_mask].mean()) == pytest.approx(ph.params["ice_potential_V"],
                                                               rel=0.05)
    tilted = make_phantom((64, 32, 32), 10.0, seed=0, thickness_nm=35.0, slab_tilt_deg=3.0,
                          object_types=())
    cos = math.cos(math.radians(tilted.params["slab_tilt_deg"]))
    assert float(tilted.slab_mask.sum(0).float().mean()) == pytest.approx(35.0 / cos, abs=1.0)


def test_objects_do_not_overlap_beyond_tolerance():
    ph = _small(5, crowding=0.25, n_vesicles=2, n_actin=2, n_microtubules=1, n_beads=2)
    objs = ph.params["objects"]
    assert sum(o["type"] == "particle" for o in objs) > 5
    tol = ph.params["overlap_tolerance"]
    assert all(o["overlap_fraction"] <= tol for o in objs)
    # labels claim each voxel once; each object keeps at least (1 - tol) of its support
    counts = torch.bincount(ph.labels.flatten().long(), minlength=len(objs) + 1)
    for k, o in enumerate(objs, start=1):
        assert counts[k] >= (1 - tol) * o["voxels"] - 1
    # particles and beads lie inside the slab
    inside = ph.labels[ph.slab_mask]
    outside = ph.labels[~ph.slab_mask]
    kinds = torch.tensor([0] + [o["type"] in ("particle", "bead") for o in objs])
    assert int(kinds[outside.long()].sum()) <= tol * int(kinds[inside.long()].sum()) + 1


def test_families_and_padding():
    ph = make_phantom((40, 32, 48), 10.0, seed=1, family="shifted", tilt_max_deg=60.0)
    t = ph.params["thickness_nm"] * 10.0
    # the slab's thickness seen at 60 degrees, plus the field's own widening (48 / cos 60 - 48)
    pad = math.ceil(t / 2 * math.tan(math.radians(60.0)) / 10.0 + 24.0 * (1.0 / math.cos(math.radians(60.0)) - 1.0))
    assert ph.pad_x == pad == ph.params["pad_x"]
    assert ph.volume.shape == (40, 32, 48 + 2 * pad)
    assert ph.crop(ph.volume).shape == (40, 32, 48)
    used = {o["template"] for o in ph.params["objects"] if o["type"] == "particle"}
    assert used <= {"6z6u", "6qt9"}
    assert not any(o["type"] in ("microtubule", "bead") for o in ph.params["objects"])


def test_high_tilt_views_are_flat_across_the_field():
    """A detector row of nx pixels at 60 degrees sees 2 nx of the specimen: with the padding
    covering it, the -60 degree view's edges cross as much ice as its middle (they were 15-18 %
    brighter when the padding covered only the slab's thickness)."""
    from localet_core.config import SimulationConfig
    from localet_core.simulate.forward import simulate_series

    s = simulate_series(SimulationConfig(shape=(64, 64, 96), voxel_size=10.0, dose=400.0, family="default",
                                         tilt_range=(-60.0, 60.0), tilt_step=15.0), 17)
    view = s.stack[int(np.argmin(s.angles))].astype(np.float64)
    profile = view.mean(0).reshape(8, -1).mean(1) / view.mean()
    assert np.abs(profile - 1).max() < 0.04, profile
    flat = s.stack[int(np.argmin(np.abs(s.angles)))].astype(np.float64)
    assert np.abs(flat.mean(0).reshape(8, -1).mean(1) / flat.mean() - 1).max() < 0.04
    # the series' labels name each voxel's object (its support): particles' labels are the
    # particle mask, and outside every support the truth is all but plain ice
    objects = s.params["phantom"]["objects"]
    assert s.labels.shape == s.truth.shape and int(s.labels.max()) <= len(objects)
    is_particle = np.array([False] + [o["type"] == "particle" for o in objects])
    assert np.array_equal(is_particle[s.labels], s.particle_mask)
    inside, outside = np.abs(s.truth[s.labels > 0]).mean(), np.abs(s.truth[s.labels == 0]).mean()
    assert s.particle_mask.any() and outside < 0.1 * inside, (inside, outside)


def test_physical_constants():
    assert electron_wavelength(300) == pytest.approx(0.019687, rel=1e-4)
    assert interaction_constant(300) == pytest.approx(6.526e-4, rel=2e-3)


def test_ctf_first_zero_at_analytic_frequency():
    pixel, dz_um, n = 2.0, 3.0, 512
    lam = electron_wavelength(300)
    ctf = ctf_2d((n, n), pixel, dz_um, cs_mm=0.0, amplitude_contrast=0.0)[0]
    row = ctf[0]  # ky = 0, kx = 0 .. Nyquist
    k = torch.fft.rfftfreq(n, d=pixel)
    k0 = 1.0 / math.sqrt(lam * dz_um * 1e4)  # sin(pi lam dz k^2) = 0 first at k^2 = 1/(lam dz)
    first = int(torch.nonzero((row[1:-1] > 0) & (row[2:] <= 0))[0]) + 1
    assert float(k[first]) <= k0 <= float(k[first + 1])
    # with amplitude contrast, the DC value is the amplitude contrast and underfocus is positive
    ctf_a = ctf_2d((8, 8), pixel, [2.0, 4.0], amplitude_contrast=0.07)
    assert ctf_a.shape == (2, 8, 5)
    assert torch.allclose(ctf_a[:, 0, 0], torch.tensor([0.07, 0.07]), atol=1e-6)
    img = torch.zeros(3, 16, 16)
    assert apply_ctf(img, 4.0, [2, 3, 4]).shape == img.shape


def test_exposure_filter_attenuates_high_frequencies_more_at_higher_dose():
    gen = torch.Generator().manual_seed(0)
    img = torch.randn(1, 128, 128, generator=gen).expand(3, 128, 128).contiguous()
    out = exposure_filter(img, 2.0, prior_dose=[0.0, 20.0, 80.0], dose=3.0)
    f = torch.fft.rfft2(out).abs()
    f0 = torch.fft.rfft2(img).abs()
    ky = torch.fft.fftfreq(128, d=2.0).reshape(-1, 1)
    kx = torch.fft.rfftfreq(128, d=2.0).reshape(1, -1)
    k = torch.sqrt(ky ** 2 + kx ** 2)
    low, high = (k > 0.01) & (k < 0.03), (k > 0.15) & (k < 0.2)
    ratio = f / f0
    for band in (low, high):
        r = [float(ratio[v][band].mean()) for v in range(3)]
        assert r[0] > r[1] > r[2]
    assert float(ratio[2][high].mean()) < float(ratio[2][low].mean())
    # DC untouched
    assert torch.allclose(out.mean(dim=(1, 2)), img.mean(dim=(1, 2)), atol=1e-5)


def test_poisson_noise_mean_and_variance():
    gen = torch.Generator().manual_seed(0)
    inten = torch.full((2, 256, 256), 0.8)
    counts = poisson_noise(inten, [10.0, 40.0], gen)
    for v, mu in enumerate((8.0, 32.0)):
        assert float(counts[v].mean()) == pytest.approx(mu, rel=0.02)
        assert float(counts[v].var()) == pytest.approx(mu, rel=0.05)
    again = poisson_noise(inten, [10.0, 40.0], torch.Generator().manual_seed(0))
    assert torch.equal(counts, again)


def test_dose_symmetric_order():
    angles = np.arange(-6, 7, 2)  # -6 -4 -2 0 2 4 6
    order = dose_symmetric_order(angles, group=2)
    assert angles[order].tolist() == [0, 2, 4, -2, -4, 6, -6]
    assert order.tolist() == [3, 4, 5, 2, 1, 6, 0]
    assert angles[dose_symmetric_order(angles, group=1)].tolist() == [0, 2, -2, 4, -4, 6, -6]
    pd = prior_dose(order, 2.0)
    assert pd[3] == 0 and pd[4] == 2 and pd[0] == 12


def test_attenuation():
    img = torch.ones(2, 4, 4)
    out = attenuate(img, 1000.0, [0.0, 60.0], mean_free_path=3500.0)
    assert float(out[0, 0, 0]) == pytest.approx(math.exp(-1000 / 3500), rel=1e-5)
    assert float(out[1, 0, 0]) == pytest.approx(math.exp(-2000 / 3500), rel=1e-5)


def test_simulation_templates_override_the_preset_and_are_recorded_only_when_set():
    """``SimulationConfig.templates`` (``localet simulate --templates``): a crowd of the named
    molecules in the preset's specimen; the series' record names them, and a record without
    them (every series made before the setting existed) is unchanged."""
    from localet_core.config import SimulationConfig
    from localet_core.errors import FieldError
    from localet_core.simulate.forward import config_record, simulate_series

    base = SimulationConfig(shape=(32, 48, 48), voxel_size=10.0, tilt_step=15.0, family="diverse", thickness_nm=40.0)
    one = dataclasses.replace(base, templates=("4V1W",))
    s = simulate_series(one, 3)
    particles = [o for o in s.params["phantom"]["objects"] if o["type"] == "particle"]
    assert particles and {o["template"] for o in particles} == {"4v1w"}
    assert s.params["config"]["templates"] == ["4v1w"] and s.params["phantom"]["templates"] == ["4v1w"]
    assert "templates" not in config_record(base)
    mixed = {o["template"] for o in simulate_series(base, 3).params["phantom"]["objects"] if o["type"] == "particle"}
    assert len(mixed) > 1
    for bad in ((), ("4v1w", "nope")):
        with pytest.raises(FieldError, match="templates"):
            dataclasses.replace(base, templates=bad)
