"""Mirror averaging (``localet reconstruct --mirrors 2|4``, :mod:`localet_core.network.mirror`):
the mirrored models are the model run on the mirrored data, exactly, in both forms."""
import numpy as np
import pytest
import torch

from localet_core.config import ModelConfig, SimulationConfig
from localet_core.errors import FieldError
from localet_core.methods import Localet
from localet_core.network.mirror import mirror_model, mirror_models
from localet_core.network.model import LocalizedNet
from localet_core.reconstruction.geometry import TiltGeometry
from localet_core.simulate.forward import simulate_series, write_series
from tests.test_cli_hostile import assert_refused, run_cli


@pytest.fixture(scope="module")
def series():
    config = SimulationConfig(shape=(24, 32, 40), voxel_size=12.0, tilt_range=(-54.0, 60.0), tilt_step=6.0,
                              halves=False, thickness_nm=20.0)
    s = simulate_series(config, 5)
    return s, config


def _geometry(angles, config):
    return TiltGeometry(np.asarray(angles, dtype=np.float64), config.shape[1:], config.shape[0],
                        pixel_size=config.voxel_size)


def _model(context: int = 0) -> LocalizedNet:
    torch.manual_seed(3)
    model = LocalizedNet(ModelConfig(patch_size=5, step=1, channels=4, hidden=(8,), n_angle_basis=4,
                                     context_channels=context))
    with torch.no_grad():  # no symmetry left in any weight
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("context", [0, 2])
def test_a_mirrored_model_is_the_model_run_on_the_mirrored_stack(series, context):
    """In Y (along the tilt axis): rows flipped; in X: columns flipped and the angles negated; in
    Z: the angles negated; all three: rows and columns flipped (an asymmetric range, -54..60, so
    the negated angles are other angles; the box's Z centre is the volume's)."""
    s, config = series
    stack = np.asarray(s.stack, dtype=np.float32)
    angles = np.asarray(s.angles, dtype=np.float64)
    model = _model(context)

    def run(m, data, a):
        return Localet(m, device="cpu").volume(np.ascontiguousarray(data), _geometry(a, config))

    plain = run(model, stack, angles)
    span = float(np.ptp(plain))
    flipped = {(True, False, False): (stack[:, ::-1, :], angles, (slice(None), slice(None, None, -1), slice(None))),
               (False, True, False): (stack[:, :, ::-1], -angles, (slice(None), slice(None), slice(None, None, -1))),
               (False, False, True): (stack, -angles, (slice(None, None, -1), slice(None), slice(None))),
               (True, True, True): (stack[:, ::-1, ::-1], angles, (slice(None, None, -1), slice(None, None, -1),
                                                                   slice(None, None, -1)))}
    for (y, x, z), (data, a, back) in flipped.items():
        mirrored = run(mirror_model(model, y=y, x=x, z=z), stack, angles)
        assert np.abs(mirrored - run(model, data, a)[back]).max() < 1e-5 * span, (y, x, z)
        assert np.abs(mirrored - plain).max() > 1e-2 * span  # a mirror image is another model


def test_mirror_averages_in_the_fast_and_the_direct_form(series):
    s, config = series
    stack = np.asarray(s.stack, dtype=np.float32)
    geometry = _geometry(s.angles, config)
    model = _model()
    one = Localet(model, device="cpu").volume(stack, geometry)
    models = mirror_models(model, 4)
    mean = mean_of(models, stack, geometry)
    fast = Localet(model, device="cpu", mirrors=4).volume(stack, geometry)
    direct = Localet(model, device="cpu", mirrors=4, form="direct").volume(stack, geometry)
    span = float(np.ptp(one))
    assert np.abs(fast - mean).max() < 1e-5 * span
    assert np.abs(direct - fast).max() < 1e-5 * span
    assert np.abs(fast - one).max() > 1e-2 * span
    for count in (2,):
        part = Localet(model, device="cpu", mirrors=count).volume(stack, geometry)
        assert np.abs(part - mean_of(models[:count], stack, geometry)).max() < 1e-5 * span


def mean_of(models, stack, geometry):
    return np.mean([Localet(m, device="cpu").volume(stack, geometry) for m in models], axis=0)


def test_mirrors_are_refused_where_they_do_not_apply():
    with pytest.raises(FieldError, match="mirrors"):
        Localet(_model(), device="cpu", mirrors=3)
    with pytest.raises(FieldError, match="mirrors"):
        Localet(_model(), device="cpu", mirrors=8)
    encoder = LocalizedNet(ModelConfig(patch_size=5, channels=2, hidden=(4,), n_angle_basis=3, encoder=(2,),
                                       encoder_channels=2))
    with pytest.raises(FieldError, match="encoder"):
        Localet(encoder, device="cpu", mirrors=2)
    Localet(encoder, device="cpu")  # without mirrors it is fine


def test_reconstruct_mirrors_from_the_command_line(series, tmp_path):
    s, config = series
    paths = write_series(s, tmp_path, "ts", config.voxel_size)
    outs = {}
    for n in ("1", "4"):
        out = tmp_path / f"m{n}.mrc"
        result = run_cli("reconstruct", paths["stack"], "--tlt", paths["tlt"], "-o", out, "--mirrors", n,
                         "--no-progress")
        assert result.returncode == 0, result.stderr[-2000:]
        assert ("4 mirrors" in result.stderr) == (n == "4")
        import mrcfile

        with mrcfile.open(str(out)) as m:
            outs[n] = np.asarray(m.data, dtype=np.float64)
    r = np.corrcoef(outs["1"].ravel(), outs["4"].ravel())[0, 1]
    assert 0.9 < r < 0.99999
    assert_refused(run_cli("reconstruct", paths["stack"], "--tlt", paths["tlt"], "-o", tmp_path / "x.mrc",
                           "--mirrors", "3"), "--mirrors")
