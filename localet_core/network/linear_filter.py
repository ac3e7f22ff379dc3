"""The learned linear filter: the best any FBP-like (linear, shift-invariant) filter can do.

It is the localized network with its non-linearity removed: one first-layer channel over the
same patches, kernels smooth in the tilt angle with quadrature weights, no hidden layers,

    V(r) = sum_theta w_theta <W(theta), patch_theta(r)> + b,   W(theta) = sum_m c_m B_m(theta)

fitted in closed form by least squares (float64 normal equations, a touch of ridge) to the same
training pairs. It is a :class:`LocalizedNet`, so it reconstructs through the same fast path and
model files. Benchmarks compare localet against it to show what the non-linearity adds.
"""
from __future__ import annotations

from typing import Sequence

import torch

from localet_core.config import ModelConfig
from localet_core.network.model import LocalizedNet, angular_basis
from localet_core.network.patches import prepare_network_views, sample_patches
from localet_core.network.training import PairSpec, load_pair


def linear_config(patch_size: int = 9, step: int = 1, n_angle_basis: int = 6) -> ModelConfig:
    return ModelConfig(patch_size=patch_size, step=step, channels=1, hidden=(), n_angle_basis=n_angle_basis,
                       activation="identity", fbp_residual=False)


def fit_linear_filter(pairs: Sequence[PairSpec], config: ModelConfig = linear_config(),
                      voxels_per_pair: int = 20000, ridge: float = 1e-6, seed: int = 0) -> LocalizedNet:
    """Least-squares fit of a linear :class:`LocalizedNet` to ``pairs`` (random voxels of each).

    Args:
        pairs: training pairs (stack + angles + reference), as for ``localet train``.
        config: a linear configuration (:func:`linear_config`).
        voxels_per_pair: voxels sampled uniformly from each reference.
        ridge: Tikhonov term relative to the mean diagonal of the normal matrix.
    """
    if config.hidden or config.activation != "identity" or config.fbp_residual or config.channels != 1:
        raise ValueError("fit_linear_filter needs a linear configuration (see linear_config)")
    p, m = config.patch_size, config.n_angle_basis
    n_features = m * p * p + 1
    gram = torch.zeros(n_features, n_features, dtype=torch.float64)
    rhs = torch.zeros(n_features, dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    for spec in pairs:
        pair = load_pair(spec)
        geometry = pair.geometry
        images, _ = prepare_network_views(pair.stacks[0], geometry, config.ramp(), torch.device("cpu"),
                                          per_view=config.view_norm == "view")
        shape = pair.reference.shape
        voxels = torch.stack([torch.randint(n, (voxels_per_pair,), generator=gen) for n in shape], -1)
        patches = sample_patches(images, geometry, voxels.double(), p, config.step).double()  # (B, n, P, P)
        basis = angular_basis(torch.as_tensor(geometry.used_angles), m)  # (n, M)
        weights = torch.as_tensor(geometry.view_weights(), dtype=torch.float64)
        features = torch.einsum("bnij,n,nm->bmij", patches, weights, basis).reshape(voxels_per_pair, -1)
        features = torch.cat([features, torch.ones(voxels_per_pair, 1, dtype=torch.float64)], dim=1)
        target = pair.reference[voxels[:, 0], voxels[:, 1], voxels[:, 2]].double()
        gram += features.T @ features
        rhs += features.T @ target
    gram += ridge * gram.diagonal().mean() * torch.eye(n_features, dtype=torch.float64)
    solution = torch.linalg.solve(gram, rhs)
    model = LocalizedNet(config)
    with torch.no_grad():
        model.coeffs.copy_(solution[:-1].view(1, m, p, p).float())
        model.bias0.copy_(solution[-1:].float())
        model.layers[0].weight.fill_(1.0)
        model.layers[0].bias.zero_()
    return model.eval()
