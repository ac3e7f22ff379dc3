"""The learned linear filter: exact when the truth is linear in the data, and better than WBP."""
import mrcfile
import numpy as np
import torch

from localet_core.io import write_tlt
from localet_core.network.inference import iter_model_slabs
from localet_core.network.linear_filter import fit_linear_filter, linear_config
from localet_core.network.patches import prepare_network_views
from localet_core.network.training import PairSpec
from localet_core.pipeline import assemble_slabs
from localet_core.reconstruction.geometry import TiltGeometry
from localet_core.reconstruction.wbp import iter_backprojection_slabs, weighted_backprojection
from localet_core.simulate.blobs import blob_projections, blob_volume
from localet_core.validation.metrics import pearson

ANGLES = np.arange(-60.0, 61.0, 4.0)
SHAPE = (16, 24, 32)


def write(path, data):
    with mrcfile.new(str(path), overwrite=True) as m:
        m.set_data(np.asarray(data, np.float32))
        m.voxel_size = 10.0
    return str(path)


def make_pair(tmp_path, seed, reference="truth", noise=0.0):
    rng = np.random.default_rng(seed)
    blobs = [(rng.uniform(-12, 12), rng.uniform(-9, 9), rng.uniform(-5, 5), rng.uniform(0.5, 1)) for _ in range(8)]
    stack = blob_projections(blobs, ANGLES, SHAPE[1:])
    stack = stack + noise * stack.std() * rng.standard_normal(stack.shape).astype(np.float32)
    geometry = TiltGeometry(ANGLES, SHAPE[1:], SHAPE[0])
    if reference == "truth":
        ref = blob_volume(blobs, SHAPE)
    else:  # the FBP of the normalised views: a linear function of the data
        images, _ = prepare_network_views(stack, geometry, linear_config().ramp(), torch.device("cpu"))
        weights = torch.as_tensor(geometry.view_weights(), dtype=torch.float32)
        slabs = ((y0, y1, s[..., 0].numpy()) for y0, y1, s in iter_backprojection_slabs(images, geometry, weights))
        ref = assemble_slabs(SHAPE, slabs)
    write_tlt(tmp_path / f"p{seed}.tlt", ANGLES)
    spec = PairSpec(stack=write(tmp_path / f"p{seed}.st", stack), tlt=str(tmp_path / f"p{seed}.tlt"),
                    reference=write(tmp_path / f"p{seed}_ref.mrc", ref))
    return spec, stack, geometry, ref


def reconstruct(model, stack, geometry):
    return assemble_slabs(geometry.output_shape, iter_model_slabs(stack, geometry, model, torch.device("cpu")))


def test_linear_filter_recovers_a_linear_truth(tmp_path):
    spec, stack, geometry, ref = make_pair(tmp_path, 0, reference="fbp")
    model = fit_linear_filter([spec], linear_config(patch_size=3, n_angle_basis=2), voxels_per_pair=4000)
    assert pearson(reconstruct(model, stack, geometry), ref) > 0.999


def test_linear_filter_beats_wbp_on_held_out_data(tmp_path):
    train = [make_pair(tmp_path, s, noise=1.0)[0] for s in range(4)]
    _, stack, geometry, truth = make_pair(tmp_path, 10, noise=1.0)
    model = fit_linear_filter(train, linear_config(patch_size=5, n_angle_basis=3), voxels_per_pair=6000)
    linear = reconstruct(model, stack, geometry)
    wbp = weighted_backprojection(stack, geometry, device="cpu")
    assert pearson(linear, truth) > pearson(wbp, truth) + 0.05
