"""The demo: a small simulated tilt series, reconstructed by every method localet has, scored
against its ground truth (Pearson correlation, FSC), with a figure and a table.

Everything is made on the fly from a fixed seed, so the demo needs no download and no data.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import torch

from localet_core.fsc import compute_fsc
from localet_core.geometry import TiltGeometry
from localet_core.io import write_tlt, write_volume
from localet_core.projector import forward_project
from localet_core.sirt import sirt
from localet_core.wbp import weighted_backprojection

DEMO_SHAPE = (48, 96, 96)  # (nz, ny, nx) output voxels
DEMO_VOXEL = 10.0  # Angstrom
DEMO_ANGLES = np.arange(-60.0, 60.1, 3.0)


@dataclass
class MethodScore:
    name: str
    seconds: float
    pearson: float
    fsc_05: float  # Angstrom
    fsc_0143: float  # Angstrom


@dataclass
class DemoResult:
    out_dir: Path
    scores: List[MethodScore] = field(default_factory=list)
    files: List[Path] = field(default_factory=list)


def demo_phantom(shape: Tuple[int, int, int] = DEMO_SHAPE, seed: int = 0) -> np.ndarray:
    """A slab of blobs of several sizes and densities, off-centre and asymmetric, ``(nz, ny, nx)``."""
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    z, y, x = np.meshgrid(*(np.arange(n) - (n - 1) / 2 for n in shape), indexing="ij")
    volume = np.zeros(shape)
    for _ in range(60):
        sigma = rng.uniform(1.0, 3.0)
        cx, cy = rng.uniform(-0.42, 0.42) * nx, rng.uniform(-0.42, 0.42) * ny
        cz = rng.uniform(-0.3, 0.3) * nz
        volume += rng.uniform(0.4, 1.0) * np.exp(-((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2) / (2 * sigma**2))
    # a thin membrane-like sheet, tilted, so the missing wedge shows
    sheet = np.exp(-((z - 0.25 * x - 4) ** 2) / 2.0) * (np.abs(y) < 0.3 * ny)
    return (volume + 0.6 * sheet).astype(np.float32)


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel().astype(np.float64), b.ravel().astype(np.float64))[0, 1])


def run_demo(out_dir: Path, seed: int = 0, noise: float = 1.0, device: str = "auto",
             extra_methods: Optional[Dict[str, Callable[[np.ndarray, TiltGeometry], np.ndarray]]] = None,
             log: Callable[[str], None] = print) -> DemoResult:
    """Simulate, reconstruct with WBP, SIRT (and ``extra_methods``), score, and write everything.

    Args:
        out_dir: folder for the volumes, the stack, the figure and the table (created).
        noise: Gaussian noise standard deviation relative to the projections' standard deviation.
        extra_methods: more reconstructions ``name -> f(stack, geometry) -> volume``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = DemoResult(out_dir)
    truth = demo_phantom(seed=seed)
    geometry = TiltGeometry(DEMO_ANGLES, detector_shape=DEMO_SHAPE[1:], thickness=DEMO_SHAPE[0],
                            pixel_size=DEMO_VOXEL)
    clean = forward_project(torch.from_numpy(truth), geometry).numpy()
    rng = np.random.default_rng(seed + 1)
    stack = (clean + rng.normal(0, noise * clean.std(), clean.shape)).astype(np.float32)
    write_volume(out_dir / "ground_truth.mrc", truth, DEMO_VOXEL)
    write_volume(out_dir / "tilt_series.st", stack, DEMO_VOXEL)
    write_tlt(out_dir / "tilt_series.tlt", DEMO_ANGLES)
    log(f"simulated {len(DEMO_ANGLES)} tilts ({DEMO_ANGLES[0]:g}..{DEMO_ANGLES[-1]:g} deg) of a "
        f"{DEMO_SHAPE[2]}x{DEMO_SHAPE[1]}x{DEMO_SHAPE[0]} phantom, noise {noise:g} x signal std")
    methods: Dict[str, Callable[[np.ndarray, TiltGeometry], np.ndarray]] = {
        "WBP": lambda s, g: weighted_backprojection(s, g, device=device),
        "SIRT": lambda s, g: sirt(s, g, iterations=20, device=device),
    }
    methods.update(extra_methods or {})
    volumes = {}
    for name, method in methods.items():
        t0 = time.perf_counter()
        volume = method(stack, geometry)
        seconds = time.perf_counter() - t0
        volumes[name] = volume
        path = out_dir / f"{name.lower()}.mrc"
        write_volume(path, volume, DEMO_VOXEL)
        result.files.append(path)
        fsc = compute_fsc(torch.from_numpy(volume), torch.from_numpy(truth), pixel_size=DEMO_VOXEL)
        score = MethodScore(name, seconds, _pearson(volume, truth),
                            fsc.resolutions[("all", "0.5")].angstrom, fsc.resolutions[("all", "0.143")].angstrom)
        result.scores.append(score)
        log(f"  {name:8s} {seconds:6.2f} s   Pearson {score.pearson:.3f}   FSC=0.5 at "
            f"{score.fsc_05:.1f} A   FSC=0.143 at {score.fsc_0143:.1f} A")
        volumes[name + "_fsc"] = fsc
    table = out_dir / "scores.tsv"
    table.write_text("method\tseconds\tpearson\tfsc_0.5_A\tfsc_0.143_A\n" + "".join(
        f"{s.name}\t{s.seconds:.2f}\t{s.pearson:.4f}\t{s.fsc_05:.1f}\t{s.fsc_0143:.1f}\n" for s in result.scores))
    figure = out_dir / "demo.png"
    _figure(figure, truth, {k: v for k, v in volumes.items() if not k.endswith("_fsc")},
            {k[:-4]: v for k, v in volumes.items() if k.endswith("_fsc")})
    result.files += [out_dir / "ground_truth.mrc", out_dir / "tilt_series.st", table, figure]
    return result


def _figure(path: Path, truth: np.ndarray, volumes: Dict[str, np.ndarray], fscs: Dict[str, object]) -> None:
    """Orthogonal slices (XY at the centre, XZ across the tilt axis) and FSC curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = {"ground truth": truth, **volumes}
    fig, axes = plt.subplots(2, len(panels) + 1, figsize=(3.2 * (len(panels) + 1), 5.2),
                             gridspec_kw={"height_ratios": [2, 1]})
    nz, ny, nx = truth.shape
    for col, (name, vol) in enumerate(panels.items()):
        lo, hi = np.percentile(vol, [1, 99.5])
        axes[0, col].imshow(vol[nz // 2 + 4], cmap="gray", vmin=lo, vmax=hi)
        axes[0, col].set_title(f"{name}\nXY slice")
        axes[1, col].imshow(vol[:, ny // 2], cmap="gray", vmin=lo, vmax=hi, origin="lower")
        axes[1, col].set_title("XZ slice (Z up = beam)", fontsize=8)
        for ax in axes[:, col]:
            ax.set_xticks([])
            ax.set_yticks([])
    ax = axes[0, -1]
    for name, fsc in fscs.items():
        freq = fsc.frequency.numpy() / DEMO_VOXEL
        ax.plot(freq, fsc.fsc.numpy(), label=name)
    ax.axhline(0.143, color="gray", lw=0.8, ls="--")
    ax.axhline(0.5, color="gray", lw=0.8, ls=":")
    ax.set_xlabel("spatial frequency (1/A)")
    ax.set_ylabel("FSC against ground truth")
    ax.set_ylim(-0.1, 1.02)
    ax.legend(fontsize=8)
    axes[1, -1].axis("off")
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
