"""Supervised training of a :class:`LocalizedNet` from (tilt series, reference volume) pairs.

Data. A pair is a tilt series (stack, angles, optional .xf/exclusions, optional odd/even half
stacks) and a reference volume on the grid the tilt series reconstructs to with the same options
as ``localet fbp`` (THICKNESS = reference Z size, WIDTH = reference X size, ``--bin``). Inputs are
normalised like at reconstruction (:func:`prepare_network_views`); the reference is normalised to
zero mean and unit (population) standard deviation over its whole volume, so a trained model
predicts volumes in those units.

Each step draws ``batch_size`` random voxels of one random training pair, samples their patches
(the direct form) and takes an AdamW step on the L1 or L2 loss. Augmentation is redrawn every
``refresh_every`` steps: the stack or one of its halves, a random number of dropped tilts (the
angle-smooth first layer handles any subset), and Gaussian noise added to the normalised views
before filtering.

Determinism. Every random draw comes from a generator seeded by ``(seed, step or augmentation
round, pair, rank)``, never from a running global state, so a run resumed from a checkpoint
(weights, AdamW state, step, log) continues exactly as the uninterrupted run does.

Distributed. Under ``torchrun`` each rank draws its own voxels and the gradients are averaged by
``DistributedDataParallel`` (gloo on CPU, NCCL on CUDA); rank 0 writes checkpoints, logs and the
model; the summary records a checksum of every rank's final weights.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from localet_core.config import ModelConfig, OutputOptions, TrainConfig
from localet_core.contracts.pairs import PairSpec, read_pairs_star  # noqa: F401  (read_pairs_star: re-exported)
from localet_core.errors import FieldError, InputError, LocaletError, PathLike
from localet_core.network.checkpoint import CHECKPOINT_NAME, LOG_NAME, load_checkpoint, save_checkpoint, write_log_csv
from localet_core.network.model import LocalizedNet
from localet_core.network.patches import context_views, normalise_views, sample_context, sample_patches
from localet_core.reconstruction.geometry import TiltGeometry
from localet_core.reconstruction.wbp import filter_views, prepare_views


class TrainingDiverged(LocaletError):
    """The loss became NaN/infinite or grew far beyond its best value."""


@dataclass
class Pair:
    """A loaded pair: stacks (full and halves), geometry, normalised reference."""

    spec: PairSpec
    geometry: TiltGeometry
    stacks: List[np.ndarray]
    reference: torch.Tensor  # (nz, ny, nx) float32, zero mean, unit std


def normalise_reference(ref: torch.Tensor, clip: Optional[float] = None) -> torch.Tensor:
    """``(nz, ny, nx)`` reference -> float32 training targets (see ``TrainConfig.reference_clip``)."""
    r = ref.double()
    if clip is None:
        return ((r - r.mean()) / r.std(correction=0)).float()
    flat = r.flatten()
    if flat.numel() > 1 << 22:  # quantiles of a large volume from a fixed subsample
        flat = flat[torch.linspace(0, flat.numel() - 1, 1 << 22).long()]
    lo, hi = torch.quantile(flat, torch.tensor([0.005, 0.995], dtype=torch.float64))
    core = flat[(flat >= lo) & (flat <= hi)]
    scale = float(core.std(correction=0))
    if not scale > 0:
        scale = float(r.std(correction=0)) or 1.0
    return ((r - flat.median()) / scale).clamp(-clip, clip).float()


def load_pair(spec: PairSpec, binning: int = 1, reference_clip: Optional[float] = None) -> Pair:
    """Read and cross-check one pair (:class:`InputError` naming the file on any mismatch)."""
    from localet_core.io import read_stack, read_volume
    from localet_core.tiltseries import load_tilt_series

    ref = read_volume(spec.reference).data
    nz, ny, nx = ref.shape
    if nz < 2:
        raise InputError(spec.reference, f"is a single 2D image ({nx}x{ny}); a reference must be a 3D "
                                         "volume on the reconstruction grid")
    series = load_tilt_series(spec.stack, tlt=spec.tlt, xf=spec.xf, exclude=spec.exclude, aln=spec.aln,
                              output=OutputOptions(thickness=nz, width=nx, binning=binning))
    if series.geometry.output_shape != ref.shape:
        gz, gy, gx = series.geometry.output_shape
        raise InputError(spec.reference, f"is {nx}x{ny}x{nz} (x, y, z) but {Path(spec.stack).name} "
                                         f"with binning {binning} reconstructs to {gx}x{gy}x{gz}")
    stacks = [series.data]
    for half in (spec.odd, spec.even):
        if half is not None:
            data = read_stack(half)
            if data.data.shape != series.stack_shape:
                raise InputError(half, f"has shape {data.data.shape} but {Path(spec.stack).name} has "
                                       f"{series.stack_shape}")
            stacks.append(series.prepare_half(data).data)  # resampled like the stack (with an .xf)
    r = torch.from_numpy(np.ascontiguousarray(ref, dtype=np.float32))
    std = float(r.double().std(correction=0))
    if not std > 0:
        raise InputError(spec.reference, "is constant: nothing to learn")
    return Pair(spec, series.geometry, stacks, normalise_reference(r, reference_clip))


def _seed(*parts: int) -> int:
    """A 63-bit seed from integers (stable across runs and platforms)."""
    h = hashlib.sha256(",".join(str(int(p)) for p in parts).encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


def augmented_views(pair: Pair, config: ModelConfig, train: TrainConfig, round_: int, index: int,
                    rank: int, device: torch.device, augment: bool = True
                    ) -> Tuple[torch.Tensor, TiltGeometry]:
    """Filtered, normalised views and their geometry for one augmentation round of a pair."""
    gen = torch.Generator().manual_seed(_seed(train.seed, 1, round_, index, rank))
    geometry = pair.geometry
    choices = pair.stacks if (augment and train.use_halves) else pair.stacks[:1]
    source = choices[int(torch.randint(len(choices), (1,), generator=gen))]
    views, _ = normalise_views(prepare_views(source, geometry, None, device), config.view_norm == "view")
    if augment and train.noise > 0:
        views = views + train.noise * torch.randn(views.shape, generator=gen).to(device)
    images = filter_views(views, geometry, config.ramp())
    n_used = len(geometry.used_views)
    if augment and train.drop_tilts > 0 and n_used > 3:
        n_drop = int(torch.randint(int(train.drop_tilts * n_used) + 1, (1,), generator=gen))
        if n_drop:
            drop = torch.randperm(n_used, generator=gen)[:n_drop].tolist()
            keep = [i for i in range(n_used) if i not in set(drop)]
            excluded = set(geometry.excluded) | {geometry.used_views[i] for i in drop}
            geometry = dataclasses.replace(geometry, excluded=tuple(sorted(excluded)))
            images = images[keep]
    return images, geometry


class VoxelPredictor(torch.nn.Module):
    """The direct form as one module (what DistributedDataParallel wraps): filtered views,
    their geometry and ``(B, 3)`` voxel indices -> ``(B,)`` predictions.

    With an encoder it runs once on the detector rows the voxels need (whole views at most)
    and its channels are sampled at the projections (:func:`~localet_core.network.encoder.sample_points`,
    equal to the per-voxel windows of the direct form)."""

    def __init__(self, model: LocalizedNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor, geometry: TiltGeometry, voxels: torch.Tensor) -> torch.Tensor:
        cfg = self.model.config
        vox = voxels.to(images.device, torch.float64)
        patches = sample_patches(images, geometry, vox, cfg.patch_size, cfg.step)
        angles = torch.as_tensor(geometry.used_angles)
        weights = torch.as_tensor(geometry.view_weights())
        encoded = None
        if self.model.encoder is not None:
            from localet_core.network.encoder import sample_points

            rows, _ = geometry.detector_coordinates(vox[:, 0], vox[:, 1], vox[:, 2], dtype=torch.float64)
            height = images.shape[1]
            r0 = max(0, min(height, int(math.floor(float(rows.min())))))
            r1 = max(r0 + 1, min(height, int(math.floor(float(rows.max()))) + 2))
            features = self.model.encode(images, angles, (r0, r1))
            encoded = sample_points(features, geometry, vox, row_origin=r0)
        context = None
        if cfg.context_channels:
            context = sample_context(context_views(images, cfg.context_step), geometry, vox, cfg)
        return self.model(patches, angles, weights, encoded, context)


class SlabPredictor(torch.nn.Module):
    """The fast form as one module (what DistributedDataParallel wraps in slab training): a
    trainable :class:`~localet_core.network.inference.FastForm` of the model and output rows
    ``y0:y1`` -> ``(nz, y1 - y0, nx)`` predictions, differentiable in every weight."""

    def __init__(self, model: LocalizedNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, fast: Any, y0: int, y1: int) -> torch.Tensor:
        return fast.slab(y0, y1)


def _bare(net: torch.nn.Module) -> LocalizedNet:
    """The :class:`LocalizedNet` inside a predictor (under DDP or not)."""
    return getattr(net, "module", net).model


def _predict(net: torch.nn.Module, images: torch.Tensor, geometry: TiltGeometry,
             voxels: torch.Tensor, config: ModelConfig) -> torch.Tensor:
    """Predictions at ``voxels`` with ``net``: a :class:`VoxelPredictor` (possibly under DDP)
    or a bare :class:`LocalizedNet`."""
    if isinstance(net, LocalizedNet):
        net = VoxelPredictor(net)
    return net(images, geometry, voxels)


def _loss(pred: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    return (pred - target).abs().mean() if kind == "l1" else ((pred - target) ** 2).mean()


def _random_voxels(shape: Sequence[int], n: int, gen: torch.Generator) -> torch.Tensor:
    return torch.stack([torch.randint(s, (n,), generator=gen) for s in shape], dim=-1)


def weights_checksum(model: torch.nn.Module) -> str:
    """SHA-256 of the parameters' bytes (identical weights <=> identical checksum)."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def train(
    pairs: Sequence[PairSpec],
    out_dir: PathLike,
    model_config: ModelConfig = ModelConfig(),
    train_config: TrainConfig = TrainConfig(),
    device: Any = "cpu",
    resume: bool = False,
    stop_after: Optional[int] = None,
    progress: Optional[bool] = None,
    model_name: str = "model",
    init_model: Optional[PathLike] = None,
    card_extra: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """Train, writing ``out_dir/{model_name}.safetensors``, ``checkpoint.pt``, ``log.csv`` and
    ``summary.json``; returns the summary.

    Args:
        init_model: a model name or file to start from (fine-tuning); its architecture must
            equal ``model_config`` (the CLI takes it from the file).
        card_extra: more entries of the model's card (e.g. ``specimen``: what a specimen
            fine-tune simulated, :func:`localet_core.specimen.finetune_for_specimen`).
        pairs: training pairs (``split='train'``) and held-out validation pairs (``'val'``).
        resume: continue from ``out_dir/checkpoint.pt`` when it exists.
        stop_after: stop (checkpointed) after this step, as if interrupted (tests, time slots).
        progress: tqdm bar on stderr (default: when stderr is a terminal; inside a command its
            mode applies: :mod:`localet_core.progress`, progress lines in a log).

    The steps: load the pairs, build (or resume) the model and optimiser, fix the validation
    set, run the optimisation steps (validating, logging and checkpointing as configured),
    then write the model (with its card, once every step is done), the log and the summary.
    """
    from localet_core.device import distributed_context, resolve_device
    from localet_core.network.modelfile import save_model
    from localet_core.progress import stage

    tc = train_config
    device = resolve_device(device)
    rank, world = distributed_context(device)
    out = Path(os.fspath(out_dir))
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    if model_config.volume_head and tc.slab_rows is None:
        raise FieldError("slab_rows", "a model with a 3D head trains on slabs of rows: set it")
    train_pairs = [load_pair(p, tc.binning, tc.reference_clip) for p in pairs if p.split == "train"]
    val_pairs = [load_pair(p, tc.binning, tc.reference_clip) for p in pairs if p.split == "val"]
    if not train_pairs:
        raise FieldError("pairs", "no training pair given (all are split=val)")

    model = _initial_model(model_config, tc.seed, device, init_model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    start_step, log_rows = 0, []
    ckpt_path = out / CHECKPOINT_NAME
    if resume and ckpt_path.exists():
        start_step, log_rows = load_checkpoint(ckpt_path, model, optimizer, model_config, device)
    net: torch.nn.Module = VoxelPredictor(model) if tc.slab_rows is None else SlabPredictor(model)
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    val_sets = _validation_sets(val_pairs, model_config, tc, device)

    views = _AugmentedViews(train_pairs, model_config, tc, rank, device)
    guard = _DivergenceGuard(tc, start_step)
    end = tc.steps if stop_after is None else min(tc.steps, stop_after)
    t0 = time.perf_counter()
    bar = stage(tc.steps, "training", unit="step", progress=progress if rank == 0 else False,
                initial=start_step)
    model.train()
    with bar, contextlib.closing(views):
        for step in range(start_step, end):
            value, lr = _optimisation_step(net, optimizer, train_pairs, views, step, model_config, tc,
                                           rank, world, device)
            guard.check(step, value)
            val = (_validate(model, val_sets, model_config, tc.loss)
                   if ((step + 1) % tc.val_every == 0 or step + 1 == tc.steps) else float("nan"))
            log_rows.append([step + 1, value, lr, val, time.perf_counter() - t0])
            bar.advance(1, postfix={"loss": f"{value:.4f}", "val": f"{val:.4f}" if math.isfinite(val) else "-"})
            if ((step + 1) % tc.checkpoint_every == 0 or step + 1 == end) and rank == 0:
                save_checkpoint(out, model, optimizer, step + 1, log_rows, model_config)

    summary = _summary(end, log_rows, _rank_checksums(model, world), world, model_config, tc,
                       device, time.perf_counter() - t0)
    if rank == 0:
        if end >= tc.steps:
            card = {**_model_card(model_name, end, model_config, tc, train_pairs, val_pairs, summary,
                                  init_model), **(card_extra or {})}
            summary["model_file"] = str(save_model(out / model_name, model, card))
        write_log_csv(out / LOG_NAME, log_rows)
        from localet_core.io.atomic import atomic_output

        with atomic_output(out / "summary.json") as tmp:
            tmp.write_text(json.dumps(summary, indent=2, default=str))
    return summary


# --------------------------------------------------------------------------- the steps of train()

def _initial_model(model_config: ModelConfig, seed: int, device: torch.device,
                   init_model: Optional[PathLike]) -> LocalizedNet:
    """A new model, its weights drawn from ``seed`` (the same on every rank), or those of
    ``init_model`` (fine-tuning; :class:`InputError` if its architecture differs). A model
    without an encoder can start one of the same architecture with an encoder
    (:func:`~localet_core.network.model.grow`: it starts as the old model exactly)."""
    torch.manual_seed(_seed(seed, 0))  # initial weights: the same on every rank
    model = LocalizedNet(model_config).to(device)
    if init_model is not None:
        from localet_core.network.model import grow
        from localet_core.network.modelfile import load_model

        start, _ = load_model(init_model)
        if start.config == model_config:
            model.load_state_dict(start.state_dict())
        else:
            try:
                model.load_state_dict(grow(start, model_config).state_dict())
            except ValueError:
                raise InputError(init_model, "has another architecture than the one asked for "
                                             "(beyond an encoder or 3D head to add)") from None
    return model


ValSet = Tuple[torch.Tensor, TiltGeometry, torch.Tensor, torch.Tensor]


def _validation_sets(val_pairs: Sequence[Pair], model_config: ModelConfig, tc: TrainConfig,
                     device: torch.device) -> List[ValSet]:
    """The fixed validation set of each pair: unaugmented views, their geometry, ``val_voxels``
    fixed voxels ``(n, 3)`` (z, y, x indices) and their targets ``(n,)`` on ``device``."""
    val_sets = []
    for i, p in enumerate(val_pairs):
        images, geometry = augmented_views(p, model_config, tc, 0, i, 0, device, augment=False)
        gen = torch.Generator().manual_seed(_seed(tc.seed, 2, i))
        vox = _random_voxels(p.reference.shape, tc.val_voxels, gen)
        val_sets.append((images, geometry, vox, p.reference[vox[:, 0], vox[:, 1], vox[:, 2]].to(device)))
    return val_sets


def _validate(model: torch.nn.Module, val_sets: Sequence[ValSet], model_config: ModelConfig,
              loss: str) -> float:
    """Mean validation loss over the pairs (NaN without validation pairs); the model is left
    in training mode."""
    if not val_sets:
        return float("nan")
    model.eval()
    total = 0.0
    with torch.no_grad():
        for images, geometry, vox, target in val_sets:
            if model_config.volume_head:  # the fast form over the volume (the 3D head needs it)
                total += float(_loss(_fast_at_voxels(model, images, geometry, vox), target, loss))
                continue
            chunk = 4096
            if model_config.encoder:  # chunks of neighbouring rows: each encodes a band only
                order = torch.argsort(vox[:, 1], stable=True)
                vox, target, chunk = vox[order], target[order], 1024
            pred = torch.cat([_predict(model, images, geometry, vox[a:a + chunk], model_config)
                              for a in range(0, vox.shape[0], chunk)])
            total += float(_loss(pred, target, loss))
    model.train()
    return total / len(val_sets)


def _fast_at_voxels(model: LocalizedNet, images: torch.Tensor, geometry: TiltGeometry,
                    voxels: torch.Tensor) -> torch.Tensor:
    """``(n,)`` predictions at ``voxels`` ``(n, 3)`` (z, y, x) from the fast form, computed on
    the slabs of 16 rows that hold them."""
    from localet_core.network.inference import FastForm

    fast = FastForm(model, images, geometry)
    ny = geometry.output_shape[1]
    pred = torch.empty(voxels.shape[0], dtype=torch.float32, device=images.device)
    for y0 in range(0, ny, 16):
        here = (voxels[:, 1] >= y0) & (voxels[:, 1] < y0 + 16)
        if bool(here.any()):
            slab = fast.slab(y0, min(ny, y0 + 16))
            v = voxels[here]
            pred[here] = slab[v[:, 0], v[:, 1] - y0, v[:, 2]]
    return pred


class _AugmentedViews:
    """The training pairs' augmented views of the current round, redrawn every
    ``refresh_every`` steps (a round's views depend only on the seed, round, pair and rank).

    A pair's views are made when a step of the round first uses the pair (a round of 50 steps
    uses at most 50 of the pairs: with hundreds of pairs, making all of them at each round took
    most of the training time), and :meth:`prefetch` makes the next step's in a background
    thread while this step computes. Both give the views the eager loop gave (the same seeds),
    so training is unchanged to the bit."""

    def __init__(self, pairs: Sequence[Pair], model_config: ModelConfig, tc: TrainConfig,
                 rank: int, device: torch.device) -> None:
        self.pairs, self.model_config, self.tc, self.rank, self.device = pairs, model_config, tc, rank, device
        self.round = -1
        self.cache: Dict[int, Tuple[torch.Tensor, TiltGeometry]] = {}
        self.forms: Dict[Tuple[int, int], Any] = {}
        self._pending: Dict[Tuple[int, int], Any] = {}
        self._pool: Any = None

    def _make(self, round_: int, index: int) -> Tuple[torch.Tensor, TiltGeometry]:
        return augmented_views(self.pairs[index], self.model_config, self.tc, round_, index, self.rank,
                               self.device)

    def at(self, step: int, index: int) -> Tuple[torch.Tensor, TiltGeometry]:
        """Views ``(n_used, ny, nx)`` and geometry of pair ``index`` at ``step``."""
        round_ = step // self.tc.refresh_every
        if round_ != self.round:
            self.cache = {}
            self.round = round_
            for key in [k for k in self._pending if k[0] < round_]:  # never used: drop
                self._pending.pop(key).cancel()
        if index not in self.cache:
            future = self._pending.pop((round_, index), None)
            self.cache[index] = future.result() if future is not None else self._make(round_, index)
        return self.cache[index]

    def prefetch(self, step: int, index: int) -> None:
        """Start making pair ``index``'s views for ``step`` in a background thread (unless they
        are made or being made); :meth:`at` then waits for them."""
        round_ = step // self.tc.refresh_every
        key = (round_, index)
        if (round_ == self.round and index in self.cache) or key in self._pending:
            return
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(1, thread_name_prefix="localet-views")
        self._pending[key] = self._pool.submit(self._make, round_, index)

    def close(self) -> None:
        """Stop the background thread (waiting for a view it is making)."""
        pool, self._pool = self._pool, None
        self._pending.clear()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def fast_form(self, step: int, index: int, model: LocalizedNet) -> Any:
        """A trainable fast form of ``model`` on pair ``index``'s views at ``step`` (built once
        per round: its back-projection matrix depends on the round's dropped tilts)."""
        from localet_core.network.inference import FastForm

        images, geometry = self.at(step, index)
        key = (self.round, index)
        if key not in self.forms:
            if len(self.forms) >= 64:  # matrices of up to 64 pairs (tens of MB each)
                self.forms.pop(next(iter(self.forms)))
            self.forms[key] = FastForm(model, images, geometry, trainable=True)
        return self.forms[key]


def _step_pair(tc: TrainConfig, step: int, rank: int, n_pairs: int) -> int:
    """The pair that ``step`` trains on: the first draw of its generator (see
    :func:`_optimisation_step`)."""
    gen = torch.Generator().manual_seed(_seed(tc.seed, 3, step, rank))
    return int(torch.randint(n_pairs, (1,), generator=gen))


def _optimisation_step(net: torch.nn.Module, optimizer: torch.optim.Optimizer,
                       pairs: Sequence[Pair], views: _AugmentedViews, step: int,
                       model_config: ModelConfig, tc: TrainConfig, rank: int, world: int,
                       device: torch.device) -> Tuple[float, float]:
    """One AdamW step on ``batch_size`` random voxels of one random pair.

    Returns:
        ``(loss, lr)``: the loss before the step (averaged over the ranks) and the learning rate.

    Raises:
        TrainingDiverged: the loss is NaN or infinite (then no step is taken).
    """
    gen = torch.Generator().manual_seed(_seed(tc.seed, 3, step, rank))
    index = int(torch.randint(len(pairs), (1,), generator=gen))
    pair = pairs[index]
    images, geometry = views.at(step, index)
    if step + 1 < tc.steps:  # the next step's pair (its first draw of the same seeded generator)
        views.prefetch(step + 1, _step_pair(tc, step + 1, rank, len(pairs)))
    lr = tc.lr_at(step)
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    if tc.slab_rows is None:
        vox = _random_voxels(pair.reference.shape, tc.batch_size, gen)
        target = pair.reference[vox[:, 0], vox[:, 1], vox[:, 2]].to(device)
        pred = _predict(net, images, geometry, vox, model_config)
    else:  # one slab of rows through the fast form (see TrainConfig.slab_rows)
        ny = pair.reference.shape[1]
        rows = min(tc.slab_rows, ny)
        y0 = int(torch.randint(ny - rows + 1, (1,), generator=gen))
        target = pair.reference[:, y0:y0 + rows].to(device)
        pred = net(views.fast_form(step, index, _bare(net)), y0, y0 + rows)
    loss = _loss(pred, target, tc.loss)
    loss.backward()
    value = loss.detach()
    if world > 1:  # every rank sees the same mean loss, so all stop together on NaN
        import torch.distributed as dist

        dist.all_reduce(value)
        value = value / world
    value = float(value)
    if not math.isfinite(value):
        raise TrainingDiverged(f"training loss became {value} at step {step + 1} (lr {lr:.3g}); "
                               "lower --lr, or check the pairs for NaN/empty references")
    optimizer.step()
    return value, lr


class _DivergenceGuard:
    """Raises :class:`TrainingDiverged` once the loss's moving average (EMA, 0.9) exceeds
    ``divergence_factor`` times its best value, from 10 steps after the (re)start on."""

    def __init__(self, tc: TrainConfig, start_step: int) -> None:
        self.tc, self.start_step = tc, start_step
        self.ema: Optional[float] = None
        self.best = float("inf")

    def check(self, step: int, value: float) -> None:
        tc = self.tc
        self.ema = value if self.ema is None else 0.9 * self.ema + 0.1 * value
        self.best = min(self.best, self.ema)
        if step - self.start_step >= 10 and self.ema > tc.divergence_factor * self.best:
            raise TrainingDiverged(f"training diverged at step {step + 1}: loss {self.ema:.3g} is over "
                                   f"{tc.divergence_factor:g}x its best {self.best:.3g}; lower --lr "
                                   f"(now {tc.lr:g})")


def _rank_checksums(model: torch.nn.Module, world: int) -> List[str]:
    """:func:`weights_checksum` of every rank's model, in rank order (collective under DDP)."""
    checksums = [weights_checksum(model)]
    if world > 1:
        import torch.distributed as dist

        gathered: List[Any] = [None] * world
        dist.all_gather_object(gathered, checksums[0])
        checksums = gathered
    return checksums


def _summary(done: int, log_rows: List[List[float]], checksums: List[str], world: int,
             model_config: ModelConfig, tc: TrainConfig, device: torch.device,
             seconds: float) -> Dict[str, Any]:
    """The run's ``summary.json``: steps, losses (the final one a mean of the last 20 steps),
    the ranks' checksums, the configurations, device and wall time (s)."""
    vals = [r[3] for r in log_rows if math.isfinite(r[3])]
    return {
        "steps_done": done, "steps": tc.steps, "finished": done >= tc.steps,
        "first_loss": log_rows[0][1] if log_rows else None,
        "final_loss": float(np.mean([r[1] for r in log_rows[-20:]])) if log_rows else None,
        "final_val_loss": vals[-1] if vals else None, "best_val_loss": min(vals) if vals else None,
        "world_size": world, "rank_checksums": checksums, "ranks_in_sync": len(set(checksums)) == 1,
        "train_config": dataclasses.asdict(tc), "model_config": model_config.to_dict(),
        "device": str(device), "seconds": seconds,
    }


def _model_card(model_name: str, done: int, model_config: ModelConfig, tc: TrainConfig,
                train_pairs: Sequence[Pair], val_pairs: Sequence[Pair], summary: Dict[str, Any],
                init_model: Optional[PathLike]) -> Dict[str, Any]:
    """The card saved with the model: units of its input and output, the data, pixel sizes
    (A), binning and tilt schemes it was trained on, its settings and final metrics."""
    from localet_core.network.modelfile import package_version

    return {
        "name": model_name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "input_normalisation": "binned used views: (x - mean) / std (population) over all "
                               "their pixels, then ramp filter",
        "output_units": ("reference volume normalised to zero mean, unit std" if tc.reference_clip is None
                         else f"reference volume minus its median, over the std of its 0.5-99.5 percentile "
                              f"range, clamped to +-{tc.reference_clip:g}"),
        "patch_size": model_config.patch_size, "step": model_config.step,
        "training_data": [dataclasses.asdict(p.spec) for p in train_pairs],
        "validation_data": [dataclasses.asdict(p.spec) for p in val_pairs],
        "pixel_size_A": sorted({p.geometry.voxel_size for p in train_pairs if p.geometry.voxel_size}),
        "binning": tc.binning,
        "tilt_schemes": _unique([_scheme(p.geometry) for p in train_pairs]),
        "steps": done, "train_config": dataclasses.asdict(tc),
        "metrics": {"final_train_loss": summary["final_loss"], "final_val_loss": summary["final_val_loss"],
                    "best_val_loss": summary["best_val_loss"], "loss": tc.loss},
        "package_version": package_version(),
        "initialised_from": None if init_model is None else os.fspath(init_model),
    }


def _unique(items: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Distinct dicts in first-seen order (the card lists each tilt scheme once)."""
    seen, out = set(), []
    for item in items:
        key = json.dumps(item, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


def _scheme(geometry: TiltGeometry) -> Dict[str, Any]:
    a = np.sort(geometry.used_angles)
    return {"n_views": int(a.size), "min_deg": float(a[0]), "max_deg": float(a[-1]),
            "mean_step_deg": float(np.diff(a).mean()) if a.size > 1 else 0.0}
