"""A folder of simulated tilt series: what ``localet simulate`` writes, one call.

The rules live here, not in the command: the series' names (``NAME_SEED``, seeds zero-padded to
the same width), which series a resumed run keeps (:func:`~localet_core.simulate.forward.kept_series`),
the outputs' and free space's check before any work, that a complete series stays when a later
one fails, and the ``pairs.star`` table for ``localet train``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union

from localet_core.config import SimulationConfig
from localet_core.errors import FieldError, PathLike
from localet_core.progress import ProgressSpec


def series_names(name: str, seed: int, count: int) -> List[str]:
    """``NAME_SEED`` for ``count`` series from ``seed`` on, the seeds zero-padded to one width
    (``sim_08``, ``sim_09``, ``sim_10``), so the files sort in seed order."""
    width = len(str(seed + count - 1))
    return [f"{name}_{seed + k:0{width}d}" for k in range(count)]


def simulate_folder(out_dir: PathLike, settings: SimulationConfig, count: int = 1, seed: int = 0,
                    name: str = "sim", resume: bool = False,
                    label: Union[None, str, Sequence[str]] = None, progress: ProgressSpec = None,
                    log: Callable[[str], None] = print) -> List[Dict[str, Path]]:
    """Simulate ``count`` tilt series with seeds ``seed``, ``seed + 1``, ... into ``out_dir``
    (created) and write ``out_dir/pairs.star``; returns each series' files by role (as
    :func:`~localet_core.simulate.forward.write_series` does), in seed order.

    Args:
        out_dir: the folder.
        settings: the simulation (voxel size in Angstrom, angles in degrees, ...).
        count: number of series (at least 1).
        seed: the first series' seed.
        name: the files' prefix.
        resume: keep the complete series already in ``out_dir`` that were made with the same
            name, seed and settings (checked against their JSON) and simulate only the others.
        label: the history label of every MRC file written.
        progress: :func:`localet_core.progress.resolve_mode`'s spec (None: a bar on a terminal,
            lines otherwise; False: none).
        log: where the one-line messages go (a series written, series kept).

    Before any work, every output is checked (no input overwritten, the folder writable, the free
    space). A series whose JSON is written (last) stays even when a later one fails or the run
    is stopped; the message then says how many are complete and that ``resume`` does the rest.

    Raises:
        FieldError: ``count`` under 1.
        InputError: a series record of other settings (``resume``), an output
            that cannot be written; any input error of the simulation.
    """
    from localet_core.io.outputs import guard_outputs, keep_published
    from localet_core.progress import stage
    from localet_core.simulate.forward import (
        kept_series,
        series_bytes,
        series_paths,
        simulate_series,
        write_pairs_star,
        write_series,
    )

    if int(count) < 1:
        raise FieldError("count", f"must be at least 1, got {count}")
    out_dir = Path(out_dir)
    names = series_names(name, seed, count)
    has_xf = settings.misalign_px > 0 or settings.tilt_axis_deg != 0
    kept: Dict[str, Optional[Dict[str, Path]]] = (
        {n: kept_series(out_dir, n, seed + k, settings) for k, n in enumerate(names)} if resume else {})
    per_file = series_bytes(settings)
    sizes = {path: per_file[role] for n in names if kept.get(n) is None
             for role, path in series_paths(out_dir, n, xf=has_xf, halves=settings.halves).items()}
    guard_outputs([*sizes, out_dir / "pairs.star"], sizes=sizes, folders=[out_dir])
    n_kept = sum(p is not None for p in kept.values())
    if n_kept:
        log(f"kept {n_kept} complete series already in {out_dir}")
    rows: List[Dict[str, Path]] = []
    try:
        with stage(count, "simulate", unit="series", progress=progress, bar=False) as done:
            for k, series_name in enumerate(names):
                previous = kept.get(series_name)
                if previous is not None:
                    rows.append(previous)
                    done.advance(1)
                    continue
                series = simulate_series(settings, seed + k)
                rows.append(write_series(series, out_dir, series_name, settings.voxel_size, label=label))
                # a complete series (its .json written last) stays even if a later one fails:
                # a scheduler's wall time (SIGTERM) must not undo hours of simulation
                keep_published()
                done.advance(1)
                log(f"{rows[-1]['stack']}: {len(series.angles)} views, defocus "
                    f"{series.params['defocus_um']:.2f} um, ice {series.params['ice_thickness_A'] / 10:.0f} nm")
    except BaseException:
        if rows:
            log(f"localet simulate: {len(rows)} of {count} series complete in {out_dir} and kept; "
                "the same command with --resume simulates the rest")
        raise
    write_pairs_star(out_dir / "pairs.star", rows)
    written = count - n_kept
    log(f"wrote {written} series and {out_dir / 'pairs.star'}" if written else
        f"wrote {out_dir / 'pairs.star'} of the {count} series kept")
    return rows
