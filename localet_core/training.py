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

import csv
import dataclasses
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from localet_core.errors import InputError, LocaletError, PathLike
from localet_core.geometry import TiltGeometry
from localet_core.model import LocalizedNet, ModelConfig
from localet_core.patches import normalise_views, sample_patches
from localet_core.wbp import filter_views, prepare_views


class TrainingDiverged(LocaletError):
    """The loss became NaN/infinite or grew far beyond its best value."""


@dataclass(frozen=True)
class PairSpec:
    """Files of one training pair (paths as given; ``split`` is ``train`` or ``val``)."""

    stack: str
    tlt: str
    reference: str
    xf: Optional[str] = None
    odd: Optional[str] = None
    even: Optional[str] = None
    exclude: Optional[str] = None
    split: str = "train"
    aln: Optional[str] = None


STAR_COLUMNS = ("stack", "tlt", "reference", "xf", "odd", "even", "exclude", "split", "aln")


def read_pairs_star(path: PathLike) -> List[PairSpec]:
    """Pairs from a STAR table with columns ``stack tlt reference`` and optional ``xf odd even
    exclude split aln`` (``aln``: an AreTomo alignment instead of ``xf``; a leading ``_`` or ``rln`` prefix is accepted). Relative paths are relative
    to the STAR file's folder."""
    import starfile

    p = Path(os.fspath(path))
    try:
        table = starfile.read(p, always_dict=True)
    except Exception as exc:
        raise InputError(p, f"cannot be read as a STAR file ({exc})") from None
    if not table:
        raise InputError(p, "holds no data block")
    df = next(iter(table.values()))
    cols = {c.lower().lstrip("_").removeprefix("rln"): c for c in getattr(df, "columns", [])}
    missing = [c for c in ("stack", "tlt", "reference") if c not in cols]
    if missing:
        raise InputError(p, f"lacks the column(s) {', '.join(missing)} (needs stack, tlt, reference)")
    pairs = []
    for _, row in df.iterrows():
        values: Dict[str, Any] = {}
        for name in STAR_COLUMNS:
            if name in cols:
                v = row[cols[name]]
                if v is None or (isinstance(v, float) and math.isnan(v)) or str(v) in ("", "None", "-"):
                    continue
                v = str(v)
                if name not in ("split", "exclude") and not os.path.isabs(v):
                    v = str(p.parent / v)
                values[name] = v
        split = values.get("split", "train").lower()
        if split not in ("train", "val"):
            raise InputError(p, f"split must be train or val, got {split!r}")
        values["split"] = split
        pairs.append(PairSpec(**values))
    if not pairs:
        raise InputError(p, "lists no pairs")
    return pairs


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation and augmentation settings (units: steps, voxels, normalised intensity)."""

    steps: int = 2000
    batch_size: int = 1024
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup: int = 50
    loss: str = "l1"
    seed: int = 0
    binning: int = 1
    val_every: int = 100
    val_voxels: int = 8192
    checkpoint_every: int = 200
    refresh_every: int = 50
    use_halves: bool = True
    drop_tilts: float = 0.2
    noise: float = 0.0
    divergence_factor: float = 100.0
    #: None: references z-scored (mean, std). A number k: scaled robustly (median, and the std of
    #: the values between the 0.5 and 99.5 percentiles) and clamped to +-k, so a few extreme
    #: voxels (gold) neither set the scale nor teach the network extreme outputs.
    reference_clip: Optional[float] = None

    def __post_init__(self) -> None:
        if self.loss not in ("l1", "l2"):
            raise InputError("--loss", f"must be l1 or l2, got {self.loss!r}")
        for name in ("steps", "batch_size", "val_every", "checkpoint_every", "refresh_every"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')}", "must be >= 1")
        if not 0 <= self.drop_tilts < 1:
            raise InputError("--drop-tilts", "must be in [0, 1)")
        if not self.lr > 0 or self.noise < 0:
            raise InputError("--lr/--noise", "lr must be > 0 and noise >= 0")
        if self.reference_clip is not None and not self.reference_clip > 0:
            raise InputError("--clip-reference", "must be > 0")

    def lr_at(self, step: int) -> float:
        """Linear warm-up, then cosine decay to a tenth of ``lr`` (a pure function of the step)."""
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        t = (step - self.warmup) / max(1, self.steps - self.warmup)
        return self.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


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
    from localet_core.tiltseries import OutputOptions, load_tilt_series

    ref = read_volume(spec.reference).data
    nz, ny, nx = ref.shape
    series = load_tilt_series(spec.stack, tlt=spec.tlt, xf=spec.xf, exclude=spec.exclude, aln=spec.aln,
                              output=OutputOptions(thickness=nz, width=nx, binning=binning))
    if series.geometry.output_shape != ref.shape:
        gz, gy, gx = series.geometry.output_shape
        raise InputError(spec.reference, f"is {nx}x{ny}x{nz} (x, y, z) but {Path(spec.stack).name} "
                                         f"with --bin {binning} reconstructs to {gx}x{gy}x{gz}")
    stacks = [series.data]
    for half in (spec.odd, spec.even):
        if half is not None:
            data = read_stack(half)
            if data.data.shape != series.stack_shape:
                raise InputError(half, f"has shape {data.data.shape} but {Path(spec.stack).name} has {series.stack_shape}")
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
    views, _ = normalise_views(prepare_views(source, geometry, None, device))
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


def _predict(model: torch.nn.Module, images: torch.Tensor, geometry: TiltGeometry,
             voxels: torch.Tensor, config: ModelConfig) -> torch.Tensor:
    patches = sample_patches(images, geometry, voxels.to(images.device, torch.float64),
                             config.patch_size, config.step)
    angles = torch.as_tensor(geometry.used_angles)
    weights = torch.as_tensor(geometry.view_weights())
    return model(patches, angles, weights)


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


def _atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


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
) -> Dict[str, Any]:
    """Train, writing ``out_dir/{model_name}.safetensors``, ``checkpoint.pt``, ``log.csv`` and
    ``summary.json``; returns the summary.

    Args:
        init_model: a model name or file to start from (fine-tuning); its architecture must
            equal ``model_config`` (the CLI takes it from the file).
        pairs: training pairs (``split='train'``) and held-out validation pairs (``'val'``).
        resume: continue from ``out_dir/checkpoint.pt`` when it exists.
        stop_after: stop (checkpointed) after this step, as if interrupted (tests, time slots).
        progress: tqdm bar on stderr (default: when stderr is a terminal).
    """
    from tqdm import tqdm

    from localet_core.device import resolve_device
    from localet_core.modelfile import package_version, save_model

    tc = train_config
    rank, world = 0, 1
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() and str(device) != "cpu" else "gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
        if str(device) in ("auto", "cuda") and torch.cuda.is_available():
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    device = resolve_device(device)
    out = Path(os.fspath(out_dir))
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    train_pairs = [load_pair(p, tc.binning, tc.reference_clip) for p in pairs if p.split == "train"]
    val_pairs = [load_pair(p, tc.binning, tc.reference_clip) for p in pairs if p.split == "val"]
    if not train_pairs:
        raise InputError("--pair", "no training pair given (all are split=val)")

    torch.manual_seed(_seed(tc.seed, 0))  # initial weights: the same on every rank
    model = LocalizedNet(model_config).to(device)
    if init_model is not None:
        from localet_core.modelfile import load_model

        start, _ = load_model(init_model)
        if start.config != model_config:
            raise InputError(init_model, "has another architecture than the one asked for")
        model.load_state_dict(start.state_dict())
    optimizer = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    start_step, log_rows = 0, []
    ckpt_path = out / "checkpoint.pt"
    if resume and ckpt_path.exists():
        try:
            state = torch.load(ckpt_path, map_location=device, weights_only=True)
            if state.get("model_config") != json.dumps(model_config.to_dict(), sort_keys=True):
                raise InputError(ckpt_path, "was written with another model architecture; "
                                            "use the same options or another --out-dir")
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
        except InputError:
            raise
        except Exception as exc:
            raise InputError(ckpt_path, f"cannot be resumed from ({type(exc).__name__}: {exc})") from None
        start_step, log_rows = int(state["step"]), [list(r) for r in state["log"]]
    net: torch.nn.Module = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    # fixed validation set: unaugmented views, fixed voxels
    val_sets = []
    for i, p in enumerate(val_pairs):
        images, geometry = augmented_views(p, model_config, tc, 0, i, 0, device, augment=False)
        gen = torch.Generator().manual_seed(_seed(tc.seed, 2, i))
        vox = _random_voxels(p.reference.shape, tc.val_voxels, gen)
        val_sets.append((images, geometry, vox, p.reference[vox[:, 0], vox[:, 1], vox[:, 2]].to(device)))

    def validate() -> float:
        if not val_sets:
            return float("nan")
        model.eval()
        total = 0.0
        with torch.no_grad():
            for images, geometry, vox, target in val_sets:
                pred = torch.cat([_predict(model, images, geometry, vox[a:a + 4096], model_config)
                                  for a in range(0, vox.shape[0], 4096)])
                total += float(_loss(pred, target, tc.loss))
        model.train()
        return total / len(val_sets)

    def checkpoint(step: int) -> None:
        if rank != 0:
            return
        _atomic_torch_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                            "step": step, "log": log_rows,
                            "model_config": json.dumps(model_config.to_dict(), sort_keys=True)}, ckpt_path)
        _write_csv(out / "log.csv", log_rows)

    cache: Dict[int, Tuple[torch.Tensor, TiltGeometry]] = {}
    cache_round = -1
    ema, best_ema = None, float("inf")
    end = tc.steps if stop_after is None else min(tc.steps, stop_after)
    t0 = time.perf_counter()
    if progress is None:
        progress = sys.stderr.isatty()
    bar = tqdm(total=tc.steps, initial=start_step, desc="training", unit="step",
               disable=not progress or rank != 0, file=sys.stderr)
    model.train()
    for step in range(start_step, end):
        round_ = step // tc.refresh_every
        if round_ != cache_round:
            cache = {i: augmented_views(p, model_config, tc, round_, i, rank, device)
                     for i, p in enumerate(train_pairs)}
            cache_round = round_
        gen = torch.Generator().manual_seed(_seed(tc.seed, 3, step, rank))
        index = int(torch.randint(len(train_pairs), (1,), generator=gen))
        pair = train_pairs[index]
        images, geometry = cache[index]
        vox = _random_voxels(pair.reference.shape, tc.batch_size, gen)
        target = pair.reference[vox[:, 0], vox[:, 1], vox[:, 2]].to(device)
        lr = tc.lr_at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad(set_to_none=True)
        loss = _loss(_predict(net, images, geometry, vox, model_config), target, tc.loss)
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
        ema = value if ema is None else 0.9 * ema + 0.1 * value
        best_ema = min(best_ema, ema)
        if step - start_step >= 10 and ema > tc.divergence_factor * best_ema:
            raise TrainingDiverged(f"training diverged at step {step + 1}: loss {ema:.3g} is over "
                                   f"{tc.divergence_factor:g}x its best {best_ema:.3g}; lower --lr "
                                   f"(now {tc.lr:g})")
        val = validate() if ((step + 1) % tc.val_every == 0 or step + 1 == tc.steps) else float("nan")
        log_rows.append([step + 1, value, lr, val, time.perf_counter() - t0])
        bar.update(1)
        bar.set_postfix(loss=f"{value:.4f}", val=f"{val:.4f}" if math.isfinite(val) else "-")
        if (step + 1) % tc.checkpoint_every == 0 or step + 1 == end:
            checkpoint(step + 1)
    bar.close()

    done = end
    checksums = [weights_checksum(model)]
    if world > 1:
        import torch.distributed as dist

        gathered: List[Any] = [None] * world
        dist.all_gather_object(gathered, checksums[0])
        checksums = gathered
    vals = [r[3] for r in log_rows if math.isfinite(r[3])]
    summary = {
        "steps_done": done, "steps": tc.steps, "finished": done >= tc.steps,
        "first_loss": log_rows[0][1] if log_rows else None,
        "final_loss": float(np.mean([r[1] for r in log_rows[-20:]])) if log_rows else None,
        "final_val_loss": vals[-1] if vals else None, "best_val_loss": min(vals) if vals else None,
        "world_size": world, "rank_checksums": checksums, "ranks_in_sync": len(set(checksums)) == 1,
        "train_config": dataclasses.asdict(tc), "model_config": model_config.to_dict(),
        "device": str(device), "seconds": time.perf_counter() - t0,
    }
    if rank == 0:
        if done >= tc.steps:
            card = {
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
            summary["model_file"] = str(save_model(out / model_name, model, card))
        _write_csv(out / "log.csv", log_rows)
        tmp = out / ".summary.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2, default=str))
        os.replace(tmp, out / "summary.json")
    return summary


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


def _write_csv(path: Path, rows: List[List[float]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "loss", "lr", "val_loss", "seconds"])
        for r in rows:
            w.writerow([int(r[0])] + [("" if isinstance(x, float) and math.isnan(x) else f"{x:.6g}") for x in r[1:]])
    os.replace(tmp, path)
