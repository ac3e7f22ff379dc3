"""The demo: a small simulated tilt series, reconstructed by every method localet has, scored
against its ground truth (Pearson correlation, FSC), with a figure and a table.

Everything is made on the fly from a fixed seed, so the demo needs no download and no data.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import torch

from localet_core.config import DEFAULT_MODEL, DEMO_SEED
from localet_core.errors import InputError
from localet_core.io import write_volume
from localet_core.methods import SIRT, WBP, Localet
from localet_core.reconstruction.filters import ETOMO_RADIAL
from localet_core.reconstruction.geometry import TiltGeometry
from localet_core.validation.fsc import compute_fsc

DEMO_SHAPE = (64, 128, 128)  # (nz, ny, nx) output voxels
DEMO_VOXEL = 10.0  # Angstrom


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


def default_model_method(device: str = "auto") -> Dict[str, Callable[[np.ndarray, TiltGeometry], np.ndarray]]:
    """``{"localet": reconstruct with the shipped model}``, or ``{}`` when none is installed."""
    try:
        return {"localet": Localet(DEFAULT_MODEL, device=device).volume}
    except InputError:
        return {}


def run_demo(out_dir: Path, seed: int = DEMO_SEED, device: str = "auto",
             extra_methods: Optional[Dict[str, Callable[[np.ndarray, TiltGeometry], np.ndarray]]] = None,
             log: Callable[[str], None] = print) -> DemoResult:
    """Simulate a tilt series, reconstruct it with WBP, SIRT and the shipped localet model (when
    installed) plus ``extra_methods``, score each against the ground truth, write everything.

    Args:
        out_dir: folder for the volumes, the stack, the figure and the table (created).
        extra_methods: more reconstructions ``name -> f(stack, geometry) -> volume``.
    """
    from localet_core.config import SimulationConfig
    from localet_core.simulate.forward import simulate_series, write_series
    from localet_core.validation.metrics import pearson, resolution_against_truth

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = DemoResult(out_dir)
    config = SimulationConfig(shape=DEMO_SHAPE, voxel_size=DEMO_VOXEL, halves=False)
    series = simulate_series(config, seed)
    paths = write_series(series, out_dir, "tilt_series", DEMO_VOXEL)
    truth, stack = series.truth, series.stack
    geometry = TiltGeometry(series.angles, detector_shape=DEMO_SHAPE[1:], thickness=DEMO_SHAPE[0],
                            pixel_size=DEMO_VOXEL)
    log(f"simulated {len(series.angles)} tilts ({series.angles[0]:g}..{series.angles[-1]:g} deg, "
        f"{config.dose:g} e/A^2) of a {DEMO_SHAPE[2]}x{DEMO_SHAPE[1]}x{DEMO_SHAPE[0]} specimen "
        "(ribosomes, spliceosomes, apoferritin, membranes, filaments, "
        f"ice {series.params['ice_thickness_A'] / 10:.0f} nm)")
    methods: Dict[str, Callable[[np.ndarray, TiltGeometry], np.ndarray]] = {
        "WBP": WBP(ramp=ETOMO_RADIAL, device=device).volume,
        "SIRT": SIRT(iterations=20, device=device).volume,
    }
    methods.update(default_model_method(device))
    if "localet" not in methods:
        log("  (no pretrained localet model is installed: showing WBP and SIRT only)")
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
        mask = series.slab_mask.astype(np.float32)
        fsc = compute_fsc(torch.from_numpy(volume), torch.from_numpy(truth), mask=torch.from_numpy(mask),
                          pixel_size=DEMO_VOXEL)
        score = MethodScore(name, seconds, pearson(volume, truth, series.slab_mask),
                            resolution_against_truth(volume, truth, DEMO_VOXEL, 0.5, mask),
                            resolution_against_truth(volume, truth, DEMO_VOXEL, 0.143, mask))
        result.scores.append(score)
        log(f"  {name:8s} {seconds:6.2f} s   Pearson {score.pearson:.3f}   FSC=0.5 at "
            f"{score.fsc_05:.1f} A   FSC=0.143 at {score.fsc_0143:.1f} A")
        volumes[name + "_fsc"] = fsc
    table = out_dir / "scores.tsv"
    table.write_text("method\tseconds\tpearson\tfsc_0.5_A\tfsc_0.143_A\n" + "".join(
        f"{s.name}\t{s.seconds:.2f}\t{s.pearson:.4f}\t{s.fsc_05:.1f}\t{s.fsc_0143:.1f}\n" for s in result.scores))
    figure = out_dir / "demo.png"  # Pearson inside the ice slab; FSC over the whole volume
    _figure(figure, truth, {k: v for k, v in volumes.items() if not k.endswith("_fsc")},
            {k[:-4]: v for k, v in volumes.items() if k.endswith("_fsc")})
    result.files += [paths["reference"], paths["stack"], paths["tlt"], table, figure]
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
    low = -0.1
    for name, fsc in fscs.items():
        freq = fsc.frequency.numpy()[1:] / DEMO_VOXEL  # shell 0 (the mean) is only a sign
        curve = fsc.fsc.numpy()[1:]
        low = min(low, float(np.nanmin(curve)) - 0.05)
        ax.plot(freq, curve, label=name)
    ax.axhline(0.143, color="gray", lw=0.8, ls="--", label="0.143")
    ax.axhline(0.5, color="gray", lw=0.8, ls=":", label="0.5")
    ax.set_xlabel("spatial frequency (1/A)")
    ax.set_ylabel("FSC against ground truth (ice slab)")
    ax.set_ylim(low, 1.02)  # every curve inside the axes
    ax.legend(fontsize=7)
    axes[1, -1].axis("off")
    fig.tight_layout()
    from localet_core.io.atomic import atomic_output

    try:
        with atomic_output(path) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
    finally:
        plt.close(fig)
