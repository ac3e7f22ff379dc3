"""Half-set FSC: halves from odd/even stacks and from alternate tilts, through the CLI."""
import subprocess
import sys

import mrcfile
import numpy as np
import starfile

from localet_core.io import TiltStack, write_tlt
from localet_core.reconstruction.geometry import TiltGeometry
from localet_core.reconstruction.wbp import weighted_backprojection
from localet_core.simulate.blobs import blob_projections
from localet_core.validation.halfset import half_set_fsc, reconstruct_halves

ANGLES = np.arange(-60.0, 61.0, 3.0)
BLOBS = [(8.0, -4.0, 5.0, 1.0), (-9.0, 6.0, -4.0, 0.7), (2.0, 9.0, 0.0, 0.8), (-3.0, -8.0, 6.0, 0.9)]


def noisy_halves(sigma=2.0, seed=0):
    clean = blob_projections(BLOBS, ANGLES, (32, 40), sigma=2.0)
    rng = np.random.default_rng(seed)
    noise = lambda: rng.normal(0, sigma, clean.shape).astype(np.float32)
    return clean, clean + noise(), clean + noise()


def test_odd_even_halves_agree_at_low_frequency_only():
    clean, odd, even = noisy_halves()
    g = TiltGeometry(ANGLES, (32, 40), thickness=20, pixel_size=10.0)
    recon = lambda data, geometry: weighted_backprojection(data, geometry, device="cpu")
    h1, h2, how = reconstruct_halves(clean, g, recon, TiltStack(odd), TiltStack(even))
    assert how == "odd/even"
    fsc = half_set_fsc(h1, h2, g).fsc.numpy()
    assert fsc[1:4].mean() > 0.6 and fsc[-5:].mean() < 0.3


def test_alternate_tilts_use_disjoint_views():
    clean, odd, _ = noisy_halves()
    g = TiltGeometry(ANGLES, (32, 40), thickness=20, excluded=(0,), pixel_size=10.0)
    seen = []

    def recon(data, geometry):
        seen.append(set(geometry.used_views))
        return weighted_backprojection(data, geometry, device="cpu")

    _, _, how = reconstruct_halves(odd, g, recon)
    assert how == "alternate tilts"
    assert not seen[0] & seen[1] and seen[0] | seen[1] == set(g.used_views)
    assert abs(len(seen[0]) - len(seen[1])) <= 1


def test_cli_fsc_halves_writes_star_and_plot(tmp_path):
    _, odd, even = noisy_halves()
    paths = {}
    for name, data in (("ts", (odd + even) / 2), ("odd", odd), ("even", even)):
        with mrcfile.new(str(tmp_path / f"{name}.st")) as m:
            m.set_data(data)
            m.voxel_size = 10.0
        paths[name] = tmp_path / f"{name}.st"
    write_tlt(tmp_path / "ts.tlt", ANGLES)
    for extra in (["--odd", paths["odd"], "--even", paths["even"], "--method", "wbp"], ["--method", "sirt"]):
        out = tmp_path / "fsc.star"
        result = subprocess.run([sys.executable, "-m", "localet", "fsc-halves", paths["ts"], "--tlt",
                                 tmp_path / "ts.tlt", "--thickness", "20", *extra, "-o", out, "--plot",
                                 tmp_path / "fsc.png", "--save-halves", tmp_path / "h"],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert "0.143" in result.stdout
        tables = starfile.read(out)
        assert len(tables["fsc"]) > 5
        assert (tmp_path / "fsc.png").stat().st_size > 1000
        assert mrcfile.open(str(tmp_path / "h_half1.mrc")).data.shape == (20, 32, 40)


def test_cli_fsc_halves_with_a_model(tmp_path):
    import torch

    from localet_core.config import ModelConfig
    from localet_core.network.model import LocalizedNet
    from localet_core.network.modelfile import save_model

    torch.manual_seed(0)
    model_path = save_model(tmp_path / "tiny", LocalizedNet(ModelConfig(patch_size=3, channels=4, hidden=(8,))),
                            {"name": "tiny"})
    _, odd, even = noisy_halves()
    for name, data in (("odd", odd), ("even", even), ("ts", (odd + even) / 2)):
        with mrcfile.new(str(tmp_path / f"{name}.st")) as m:
            m.set_data(data)
            m.voxel_size = 10.0
    write_tlt(tmp_path / "ts.tlt", ANGLES)
    result = subprocess.run([sys.executable, "-m", "localet", "fsc-halves", tmp_path / "ts.st", "--tlt",
                             tmp_path / "ts.tlt", "--odd", tmp_path / "odd.st", "--even", tmp_path / "even.st",
                             "--thickness", "20", "--model", model_path, "-o", tmp_path / "fsc.star"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "localet half tomograms (odd/even)" in result.stdout


def test_out_of_core_validation_equals_the_in_memory_one(tmp_path):
    """Issue 16: halves larger than the budget are transformed as their slabs arrive and the
    FSC computed from a scratch file; curves, resolutions and the prior-proof estimate are the
    in-memory ones (to float rounding), for halves reconstructed here or read from files, and
    no scratch file is left."""
    import os

    from localet_core.io import TiltStack, write_volume
    from localet_core.io.atomic import scratch_near
    from localet_core.methods import WBP, Localet
    from localet_core.reconstruction.geometry import TiltGeometry
    from localet_core.simulate.blobs import blob_projections
    from localet_core.validation.halfset import plan_validation, validate_halves

    angles = np.arange(-60.0, 61.0, 3.0)
    rng = np.random.default_rng(1)
    clean = blob_projections([(8.0, -4.0, 5.0, 1.0), (-9.0, 6.0, -4.0, 0.7)], angles, (24, 36)).astype(np.float32)
    g = TiltGeometry(tuple(angles), (24, 36), thickness=20, pixel_size=10.0)
    odd, even = (TiltStack(clean * 0.5 + 0.05 * rng.standard_normal(clean.shape).astype(np.float32), 10.0)
                 for _ in range(2))
    small = 100_000
    work = tmp_path / "work"
    work.mkdir()

    def same(a, b):
        for region in a.half_set.curves:
            np.testing.assert_allclose(b.half_set.curves[region][0], a.half_set.curves[region][0], atol=1e-5)
            assert bool((b.half_set.curves[region][1] == a.half_set.curves[region][1]).all())
        for key, res in a.half_set.resolutions.items():
            assert abs(b.half_set.resolutions[key].frequency - res.frequency) < 1e-6
        if a.prior_proof is not None:
            np.testing.assert_allclose(b.prior_proof.curve.c_est, a.prior_proof.curve.c_est, atol=1e-5)
            assert abs(b.prior_proof.resolution.frequency - a.prior_proof.resolution.frequency) < 1e-6

    for method in (WBP(device="cpu"), Localet(device="cpu")):
        assert plan_validation(g, method, budget=small).streamed
        assert not plan_validation(g, method, budget=1 << 30).streamed
        for halves in ((None, None), (odd, even)):
            whole = validate_halves(clean, g, method, *halves, budget=1 << 30)
            with scratch_near(work / "out.star"):
                streamed = validate_halves(clean, g, method, *halves, budget=small)
            assert streamed.halves is None and streamed.how == whole.how
            same(whole, streamed)
    # halves already written (reconstruct --odd --even): read back slab by slab
    net = Localet(device="cpu")
    whole = validate_halves(clean, g, net, odd, even, estimate="prior-proof", budget=1 << 30)
    files = [tmp_path / f"h{k}.mrc" for k in range(len(whole.halves))]
    for path, half in zip(files, whole.halves):
        write_volume(path, half, 10.0)
    with scratch_near(work / "out.star"):
        streamed = validate_halves(clean, g, net, odd, even, estimate="prior-proof", halves=tuple(files), budget=small)
    same(whole, streamed)
    assert os.listdir(work) == []
