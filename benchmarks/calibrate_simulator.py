"""Calibrate the simulator against real images (issue 14, part 3): the measurement.

Compares the statistics a network learns from, for a real tilt series (EMPIAR-10499 from the
warpylib 1.1.2 sdist, :func:`localet_core.realdata.real_series`), for real sub-tilt images of
ribosomes (the cryodrgn 4.3.1 sdist, when extracted into the cache) and for simulated series
(:func:`localet_core.simulate.forward.simulate_series`) at matched settings and at the
training-like settings of the shipped model's first group:

1. counts per pixel against dose: per-view mean and noise variance (is the noise Poisson-like,
   variance ~ gain x mean? the implied counts per pixel per view);
2. noise and signal power spectra of the views (radial averages; noise from the odd/even
   difference in the simulation, from the flat high-frequency plateau fitted across the
   high-tilt views in the real series);
3. the mean intensity against tilt: fit ``I = I0 exp(-(t/lambda) / cos(theta - theta0))``;
4. what a cell looks like in a WBP at bin 2 (20 A voxels): the Z extent of the density, the
   histogram of the specimen's voxel values against the noise, gold beads.

Prints a markdown table and writes ``docs/simulation_calibration.png``. No data are downloaded:
the warpylib sdist must be in the cache (``make demo-real``), the cryodrgn sub-tilts are used
when ``CACHE/cryodrgn-4.3.1/tests/data/`` holds them (``pip download --no-deps --no-binary :all:
cryodrgn==4.3.1 -d CACHE`` and extract ``tests/data/ay19102021_*`` and
``tests/data/sta_testing_bin8.star``).

    PYTHONPATH=$PWD python benchmarks/calibrate_simulator.py [--cache /work/cache]

About 7.5 minutes on one core (the two thick simulations, 280 nm of ice in boxes as deep, take most of it).
"""
from __future__ import annotations

import argparse
import math
import re
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from scipy import ndimage

from localet_core.config import OutputOptions, SimulationConfig
from localet_core.methods import WBP
from localet_core.realdata import real_series
from localet_core.reconstruction.filters import ETOMO_RADIAL
from localet_core.reconstruction.geometry import TiltGeometry
from localet_core.simulate.forward import simulate_series
from localet_core.simulate.phantom import FAMILIES
from localet_core.tiltseries import load_tilt_series

ROOT = Path(__file__).resolve().parents[1]
FIGURE = ROOT / "docs" / "simulation_calibration.png"
#: the simulator's inelastic mean free path (optics.attenuate), A
MEAN_FREE_PATH_A = 3500.0
#: radial band (cycles/pixel) taken as the noise plateau of a real view
PLATEAU = (0.40, 0.50)
#: views at |tilt| >= this (deg) fix the real series' gain (their signal at the plateau is weakest)
GAIN_TILT = 45.0
BIN = 2
#: WBP thickness of the real series at bin 2 (voxels of 20 A): 500 nm, more than the cell
REAL_THICKNESS = 250
#: Gaussian low-pass of the volumes before the texture statistics (voxels of 20 A)
SMOOTH = 1.0
#: cryodrgn sub-tilt images and their STAR file, under the cache
SUBTILTS = ("cryodrgn-4.3.1/tests/data/ay19102021_L3_position6_ribo_it09_bin8_1.82A.mrcs",
            "cryodrgn-4.3.1/tests/data/sta_testing_bin8.star")
SUBTILT_PIXEL_A = 14.56
#: simulated field of view (pixels of 10 A): four 128 x 128 tiles for the spectra (training uses 128)
FIELD = 256
SEEDS = {"matched": 5, "training": 17, "cell": 5}  # 17: beads in the 256-pixel field


# ------------------------------------------------------------------------------ views

def radial_power(img: np.ndarray, nbins: int) -> Tuple[np.ndarray, np.ndarray]:
    """Radially averaged power spectrum of one view (mean removed, Hann window), normalised so
    that white noise of variance s^2 gives s^2 at every frequency; frequencies in cycles/pixel
    (bin centres, 0..0.5)."""
    img = np.asarray(img, np.float64)
    img = img - img.mean()
    ny, nx = img.shape
    w = np.hanning(ny)[:, None] * np.hanning(nx)[None, :]
    f = np.abs(np.fft.fft2(img * w)) ** 2 / (w ** 2).sum()
    r = np.hypot(np.fft.fftfreq(ny)[:, None], np.fft.fftfreq(nx)[None, :])
    edges = np.linspace(0.0, 0.5, nbins + 1)
    idx = np.digitize(r.ravel(), edges) - 1
    ok = (idx >= 0) & (idx < nbins)
    power = np.bincount(idx[ok], f.ravel()[ok], nbins) / np.maximum(np.bincount(idx[ok], None, nbins), 1)
    return 0.5 * (edges[1:] + edges[:-1]), power


def plateau(freq: np.ndarray, power: np.ndarray) -> float:
    band = (freq >= PLATEAU[0]) & (freq <= PLATEAU[1])
    return float(power[band].mean())


def fit_attenuation(angles: np.ndarray, means: np.ndarray) -> Dict[str, float]:
    """Least squares of ``ln I = ln I0 - b / cos(theta - theta0)`` (b = t / lambda), theta0 on a
    0.1-degree grid in [-15, 15]; also b with theta0 fixed at 0."""
    y = np.log(means)

    def solve(theta0: float) -> Tuple[float, float, float]:
        x = 1.0 / np.cos(np.radians(angles - theta0))
        a = np.stack([np.ones_like(x), -x], 1)
        coef, *_ = np.linalg.lstsq(a, y, rcond=None)
        rms = float(np.sqrt(np.mean((a @ coef - y) ** 2)))
        return float(coef[1]), float(np.exp(coef[0])), rms

    best = min((solve(t0) + (t0,) for t0 in np.arange(-15.0, 15.01, 0.1)), key=lambda r: r[2])
    b0, _, rms0 = solve(0.0)
    return {"t_over_lambda": best[0], "I0": best[1], "rms_log": best[2], "theta0": float(best[3]),
            "t_over_lambda_theta0_0": b0, "rms_log_theta0_0": rms0}


def analyse_views(name: str, stack: np.ndarray, angles: np.ndarray, crop: int,
                  noise_stack: Optional[np.ndarray] = None, nbins: int = 25) -> Dict[str, object]:
    """Per-view mean, variance, radial power spectra and noise; the gain (noise variance per unit
    mean) and the implied counts per pixel (mean / gain)."""
    n, ny, nx = stack.shape
    y0, x0 = (ny - crop) // 2, (nx - crop) // 2
    sl = (slice(y0, y0 + crop), slice(x0, x0 + crop))
    means = np.array([stack[k][sl].mean(dtype=np.float64) for k in range(n)])
    var = np.array([stack[k][sl].var(dtype=np.float64) for k in range(n)])
    # spectra of 128 x 128 tiles (the simulated field's size), median over the tiles: the few
    # tiles with a gold bead do not set the signal spectrum of the whole view
    tile = 128
    spectra = []
    for k in range(n):
        view = stack[k][sl]
        tiles = [radial_power(view[i:i + tile, j:j + tile], nbins)
                 for i in range(0, crop - tile + 1, tile) for j in range(0, crop - tile + 1, tile)]
        freq = tiles[0][0]
        spectra.append(np.median([t[1] for t in tiles], 0))
    spectra = np.array(spectra)
    plateaus = np.array([plateau(freq, p) for p in spectra])
    if noise_stack is not None:  # simulation: odd - even has exactly the full stack's noise
        nps = np.array([np.median([radial_power(noise_stack[k][sl][i:i + tile, j:j + tile], nbins)[1]
                                   for i in range(0, crop - tile + 1, tile) for j in range(0, crop - tile + 1, tile)], 0)
                        for k in range(n)])
        noise_var = np.array([noise_stack[k][sl].var(dtype=np.float64) for k in range(n)])
        gain = float(np.sum(noise_var) / np.sum(means))
        gain_how = "var(odd - even) / mean"
    else:  # real: flat plateau, gain through the origin on the high-tilt views
        hi = np.abs(angles) >= GAIN_TILT
        gain = float(np.sum(plateaus[hi] * means[hi]) / np.sum(means[hi] ** 2))
        nps = gain * means[:, None] * np.ones_like(spectra)
        noise_var = gain * means
        gain_how = f"plateau {PLATEAU[0]:.2f}-{PLATEAU[1]:.2f} cyc/px vs mean, |tilt| >= {GAIN_TILT:g}"
    # how far the plateau is from gain x mean, view by view (1 = Poisson-like at the plateau)
    plateau_ratio = plateaus / (gain * means)
    counts = means / gain
    signal = spectra - nps
    # what the network sees: the stack binned 2x and z-scored as a whole (network.patches.
    # normalise_views): the share of the stack's variance that is view-to-view mean change, and
    # the noise std in the normalised units (white noise: binning 2 divides its variance by 4)
    b = stack[:, sl[0], sl[1]].astype(np.float64)
    b = b[:, : crop // 2 * 2, : crop // 2 * 2].reshape(n, crop // 2, 2, crop // 2, 2).mean((2, 4))
    total = float(b.var())
    norm = {"mean_change_share": float(np.var(b.mean((1, 2))) / total),
            "noise_std_normalised": float(np.sqrt(np.mean(noise_var) / 4.0 / total))}
    return {"name": name, "angles": angles, "means": means, "normalised": norm, "var": var, "freq": freq,
            "spectra": spectra, "nps": nps, "signal": signal, "plateaus": plateaus,
            "noise_var": noise_var, "gain": gain, "gain_how": gain_how, "counts": counts,
            "plateau_ratio": plateau_ratio, "attenuation": fit_attenuation(angles, means)}


def band_ssnr(v: Dict[str, object], k: int, lo: float, hi: float) -> float:
    """Mean signal-to-noise power ratio of view ``k`` in the band lo..hi cycles/pixel."""
    f = v["freq"]
    band = (f >= lo) & (f < hi)
    return float(np.mean(v["signal"][k][band] / v["nps"][k][band]))


# ----------------------------------------------------------------------------- volumes

def analyse_volume(vol: np.ndarray, voxel: float, lateral: float = 0.8) -> Dict[str, object]:
    """Texture of a WBP (z, y, x) (gold dark): the Z profile of the low-passed volume's lateral
    standard deviation, the specimen's extent along Z (where the profile is above half way from
    the vacuum baseline to its peak), the specimen voxels' histogram in units of the vacuum's
    standard deviation (the noise), and gold beads (connected voxels > 10 robust sigma dark)."""
    lp = ndimage.gaussian_filter(np.asarray(vol, np.float64), SMOOTH)
    nz, ny, nx = lp.shape
    # gold first (whole volume, robust sigma of all voxels): connected voxels > 10 sigma dark
    v = lp - np.median(lp)
    rs = 1.4826 * np.median(np.abs(v))
    lab, nlab = ndimage.label(v < -10 * rs)
    sizes = np.asarray(ndimage.sum(np.ones_like(v), lab, range(1, nlab + 1))) if nlab else np.zeros(0)
    mins = np.asarray(ndimage.minimum(v, lab, range(1, nlab + 1))) if nlab else np.zeros(0)
    keep = sizes >= 2
    beads_peak = -mins[keep] / rs
    # the texture statistics leave out the beads and their WBP streaks (+-300 nm in Z, +-60 nm
    # laterally at 20 A voxels)
    near_gold = ndimage.binary_dilation(np.isin(lab, np.where(keep)[0] + 1), np.ones((31, 7, 7), bool)) \
        if keep.any() else np.zeros(lp.shape, bool)
    my, mx = int(ny * (1 - lateral) / 2), int(nx * (1 - lateral) / 2)
    core = np.where(near_gold, np.nan, lp)[:, my:ny - my, mx:nx - mx].reshape(nz, -1)
    med = np.nanmedian(core, 1)
    prof = 1.4826 * np.nanmedian(np.abs(core - med[:, None]), 1)  # robust std of each slice
    prof = ndimage.gaussian_filter1d(prof, 2.0, mode="nearest")  # 40 nm: one noisy slice is no edge
    base = float(np.median(np.sort(prof)[: max(2, nz // 10)]))
    peak = float(prof[max(1, nz // 20):nz - max(1, nz // 20)].max())
    # the outermost slices above half way from the vacuum to the peak (the outer 5 % of the
    # slices, where a WBP has edge artefacts, left out): the specimen's faces; in a simulation
    # these are the ice surfaces of the (slightly tilted) slab
    trim = max(1, nz // 20)
    above = np.zeros(nz, bool)
    above[trim:nz - trim] = (prof > base + 0.5 * (peak - base))[trim:nz - trim]
    zi = np.where(above)[0]
    lo_z, hi_z = (int(zi.min()), int(zi.max())) if zi.size else (0, -1)
    inside = np.zeros(nz, bool)
    inside[lo_z:hi_z + 1] = True
    extent = (hi_z - lo_z + 1) * voxel
    x = ((core[inside] - med[inside, None]) / base).ravel()
    x = x[np.isfinite(x)]
    mean, sd = x.mean(), x.std()
    skew = float(np.mean((x - mean) ** 3) / sd ** 3)
    kurt = float(np.mean((x - mean) ** 4) / sd ** 4 - 3.0)
    area_um2 = ny * nx * (voxel / 1e4) ** 2
    return {"profile": prof / base, "z_nm": (np.arange(nz) - (nz - 1) / 2) * voxel / 10.0,
            "extent_nm": extent / 10.0, "structure_to_noise": float(math.sqrt(max(sd ** 2 - 1.0, 0.0))),
            "peak_to_vacuum": peak / base, "skew": skew, "kurtosis": kurt,
            "dark_fraction": float(np.mean(x < -2.0)), "hist": np.histogram(x, bins=np.linspace(-8, 8, 81)),
            "n_beads": int(keep.sum()), "gold_excluded": float(near_gold.mean()), "beads_per_um2": float(keep.sum() / area_um2),
            "bead_peak_sigma": float(np.median(beads_peak)) if beads_peak.size else float("nan"),
            "xz": vol[:, ny // 2, :], "shape": vol.shape}


def wbp(stack: np.ndarray, geometry: TiltGeometry) -> np.ndarray:
    return np.asarray(WBP(ramp=ETOMO_RADIAL, device="cpu").volume(stack, geometry), np.float32)


def bead_dips(view: np.ndarray, pixel: float) -> Dict[str, float]:
    """Gold beads in one view: the dark spots (> 6 robust sigma below the median after a
    1-pixel Gaussian, at least 3 pixels); for each, the intensity within 1.5 px of the darkest
    pixel over the median of the ring 12-20 px away (depth = 1 - that), and the radius (nm) at
    which the mean radial profile is half way back to 1."""
    v = np.asarray(view, np.float64)
    lp = ndimage.gaussian_filter(v, 1.0)
    med = np.median(lp)
    rs = 1.4826 * np.median(np.abs(lp - med))
    lab, n = ndimage.label(lp < med - 6 * rs)
    yy, xx = np.indices((41, 41))
    r = np.hypot(yy - 20, xx - 20)
    depths, profiles = [], []
    for k, (y, x) in enumerate(ndimage.minimum_position(lp, lab, range(1, n + 1)) if n else []):
        if (lab == k + 1).sum() < 3 or not (20 <= y < v.shape[0] - 20 and 20 <= x < v.shape[1] - 20):
            continue
        patch = v[y - 20:y + 21, x - 20:x + 21]
        bg = np.median(patch[(r > 12) & (r < 20)])
        depths.append(1.0 - patch[r <= 1.5].mean() / bg)
        profiles.append([patch[(r >= q - 0.5) & (r < q + 0.5)].mean() / bg for q in range(15)])
    if not depths:
        return {"n": 0, "depth": float("nan"), "half_radius_nm": float("nan")}
    prof = np.mean(profiles, 0)
    half = 1.0 - 0.5 * (1.0 - prof[0])
    q = int(np.argmax(prof >= half))
    rad = q - 1 + (half - prof[q - 1]) / (prof[q] - prof[q - 1]) if q > 0 else 0.0
    return {"n": len(depths), "depth": float(np.median(depths)), "half_radius_nm": float(rad * pixel / 10.0)}


# ---------------------------------------------------------------------------- sub-tilts

def read_star_rows(path: Path) -> Tuple[List[str], List[List[str]]]:
    names, rows = [], []
    for line in path.read_text().splitlines():
        s = line.strip()
        if s.startswith("_rln"):
            names.append(s.split()[0][4:])
        elif names and s and not s.startswith(("data_", "loop_", "#")):
            rows.append(s.split())
    return names, rows


def analyse_subtilts(cache: Path) -> Optional[Dict[str, object]]:
    """The cryodrgn ribosome sub-tilts: per-image variance, the plateau noise, the power spectrum
    shape, and the ribosome's contrast-to-noise (disk of 12 nm radius against the ring 15-25 nm
    around it, each image centred on a ribosome) against dose."""
    import mrcfile

    mrcs, star = (cache / p for p in SUBTILTS)
    if not (mrcs.is_file() and star.is_file()):
        return None
    with mrcfile.open(mrcs, permissive=True) as m:
        data = np.asarray(m.data, np.float64)
    names, rows = read_star_rows(star)
    col = {n: i for i, n in enumerate(names)}
    rows = [r for r in rows if len(r) == len(names)]
    dose = np.array([-float(r[col["CtfBfactor"]]) / 4.0 for r in rows])  # B = -4 x dose (Warp)
    tilt = np.degrees(np.arccos(np.clip([float(r[col["CtfScalefactor"]]) for r in rows], -1, 1)))
    defocus = np.array([0.5 * (float(r[col["DefocusU"]]) + float(r[col["DefocusV"]])) for r in rows]) / 1e4
    n = min(len(rows), data.shape[0])
    data, dose, tilt, defocus = data[:n], dose[:n], tilt[:n], defocus[:n]
    freq = None
    spectra, plate, cnr = [], [], []
    yy, xx = np.indices(data.shape[1:])
    r = np.hypot(yy - (data.shape[1] - 1) / 2, xx - (data.shape[2] - 1) / 2) * SUBTILT_PIXEL_A / 10.0  # nm
    disk, ring = r <= 12.0, (r >= 15.0) & (r <= 25.0)
    for img in data:
        freq, p = radial_power(img, 16)
        spectra.append(p)
        pl = plateau(freq, p)
        plate.append(pl)
        cnr.append((img[ring].mean() - img[disk].mean()) / math.sqrt(pl * (1 / disk.sum() + 1 / ring.sum())))
    dose_step = np.diff(np.unique(np.round(dose, 2)))
    return {"freq": freq, "spectra": np.array(spectra), "plateau": np.array(plate), "var": data.var((1, 2)),
            "mean": data.mean((1, 2)), "dose": dose, "tilt": tilt, "defocus_um": defocus, "cnr": np.array(cnr),
            "dose_per_view": float(np.median(dose_step)) if dose_step.size else float("nan"), "n": n}


def ribosome_cnr_sim(series, voxel: float) -> float:
    """The same disk-vs-ring contrast-to-noise of the 4V5D ribosomes in the 0-degree view of a
    simulated series (noise from its odd/even difference), mean over the particles whose rings
    lie inside the field of view; NaN when there are none."""
    k = int(np.argmin(np.abs(series.angles)))
    img = series.stack[k].astype(np.float64)
    noise_var = float((series.odd[k].astype(np.float64) - series.even[k]).var())
    ny, nx = img.shape
    yy, xx = np.indices(img.shape)
    out = []
    for o in series.params["phantom"]["objects"]:
        if o.get("type") != "particle" or o.get("template") != "4v5d":
            continue
        _, cy, cx = o["centre_A"]
        py, px = cy / voxel + (ny - 1) / 2, cx / voxel + (nx - 1) / 2
        r = np.hypot(yy - py, xx - px) * voxel / 10.0
        if not (25 / voxel * 10 <= py <= ny - 1 - 25 / voxel * 10 and 25 / voxel * 10 <= px <= nx - 1 - 25 / voxel * 10):
            continue
        disk, ring = r <= 12.0, (r >= 15.0) & (r <= 25.0)
        out.append((img[ring].mean() - img[disk].mean()) / math.sqrt(noise_var * (1 / disk.sum() + 1 / ring.sum())))
    return (float(np.mean(out)), len(out)) if out else (float("nan"), 0)


# ------------------------------------------------------------------------------- main

def real_dose(xml: Path) -> np.ndarray:
    """Per-view exposure before each view (e/A^2, Warp's <Dose>)."""
    text = xml.read_text(encoding="utf-8-sig")
    m = re.search(r"<Dose>(.*?)</Dose>", text, re.S)
    return np.array([float(x) for x in m.group(1).split()])


def real_defocus(xml: Path) -> float:
    m = re.search(r'<Param Name="Defocus" Value="([0-9.]+)"', xml.read_text(encoding="utf-8-sig"))
    return float(m.group(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", default="/work/cache", help="folder holding the warpylib (and cryodrgn) sdists")
    ap.add_argument("--figure", default=str(FIGURE))
    args = ap.parse_args()
    torch.set_num_threads(2)
    t_start = time.perf_counter()
    cache = Path(args.cache)
    paths = real_series(cache)

    # ---- the real series: views
    series = load_tilt_series(paths["stack"], tlt=paths["tlt"], xf=paths["xf"],
                              output=OutputOptions(binning=BIN, thickness=REAL_THICKNESS))
    # view statistics on the raw 10 A views as recorded (the loader hands back the stack
    # resampled into the aligned frame and binned, which smooths the noise); the WBP from that
    import mrcfile

    raw = np.asarray(mrcfile.read(paths["stack"]), dtype=np.float32)
    angles = np.asarray(series.geometry.angles)
    if raw.shape[0] != angles.size:
        raise SystemExit(f"{paths['stack']}: {raw.shape[0]} views but {angles.size} angles")
    prior = real_dose(paths["xml"])
    dose_per_view = float(np.median(np.diff(np.sort(prior))))
    defocus = real_defocus(paths["xml"])
    real = analyse_views("real (EMPIAR-10499)", raw, angles, crop=512)
    t_lambda = real["attenuation"]["t_over_lambda"]
    print(f"real series: {raw.shape[0]} views {raw.shape[2]} x {raw.shape[1]} px, {dose_per_view:g} e/A^2 per view, "
          f"defocus {defocus:.2f} um, t/lambda {t_lambda:.3f}")

    # ---- simulations: matched to the real series, and training-like (scripts/train_pretrained.py g10)
    thickness_nm = round(t_lambda * MEAN_FREE_PATH_A / 10.0 / 10.0) * 10.0
    # the box must hold the whole ice layer: thickness in nm = voxels of 10 A (this was
    # thickness_nm / 10, a 34-voxel box for 280 nm, before the calibrated optics showed it)
    nz_matched = int(math.ceil(thickness_nm * 10.0 / 10.0)) + 6
    configs = {
        "matched": SimulationConfig(shape=(nz_matched, FIELD, FIELD), voxel_size=10.0, dose=dose_per_view * len(angles),
                                    defocus_um=round(defocus, 2), family="diverse", thickness_nm=thickness_nm),
        "training": SimulationConfig(shape=(96, FIELD, FIELD), voxel_size=10.0, dose=100.0, family="default"),
        # the calibrated simulator at the real series' settings: a cell body in thick ice, the
        # calibrated optics (DQE, mass-dependent attenuation, noise roll-off)
        "cell": SimulationConfig(shape=(nz_matched, FIELD, FIELD), voxel_size=10.0, dose=dose_per_view * len(angles),
                                 defocus_um=round(defocus, 2), family="cell", optics="calibrated",
                                 thickness_nm=thickness_nm),
    }
    cfg_family = {key: cfg.family for key, cfg in configs.items()}
    label = {"matched": f"sim matched (diverse, {thickness_nm:g} nm, {dose_per_view * len(angles):g} e/A^2, "
                        f"{defocus:.1f} um)",
             "training": "sim training-like (default, g10: 100 e/A^2)",
             "cell": f"sim calibrated (cell, calibrated optics, {thickness_nm:g} nm, {dose_per_view * len(angles):g} e/A^2)"}
    sims, sim_views = {}, {}
    for key, cfg in configs.items():
        t0 = time.perf_counter()
        s = simulate_series(cfg, SEEDS[key])
        sims[key] = s
        sim_views[key] = analyse_views(label[key], s.stack, s.angles, crop=FIELD, noise_stack=s.odd - s.even)
        print(f"{key}: simulated in {time.perf_counter() - t0:.1f} s, thickness {s.params['ice_thickness_A'] / 10:.1f} nm, "
              f"crowding {s.params['phantom']['crowding_reached']:.3f}")

    # ---- volumes at bin 2
    t0 = time.perf_counter()
    real_vol = wbp(series.data, series.geometry)
    print(f"real WBP {real_vol.shape} in {time.perf_counter() - t0:.1f} s")
    vols = {"real": analyse_volume(real_vol, 10.0 * BIN)}
    truth = {}
    for key, s in sims.items():
        nz = s.truth.shape[0]
        thick_out = max(nz // BIN, int(math.ceil(2 * s.params["ice_thickness_A"] / (10.0 * BIN))))
        g = TiltGeometry(angles=tuple(s.angles), detector_shape=s.stack.shape[1:], thickness=thick_out,
                         binning=BIN, pixel_size=10.0)
        vols[key] = analyse_volume(wbp(s.stack, g), 10.0 * BIN)
        ph = s.params["phantom"]
        half = s.truth.shape[2] * 10.0 / 2
        beads = [o for o in ph["objects"] if o["type"] == "bead" and abs(o["centre_A"][2]) < half]
        preset = FAMILIES[cfg_family[key]]
        padded_um2 = ph["padded_shape"][1] * ph["padded_shape"][2] * 1e-6
        if preset.bead_density_per_um2 is not None:  # drawn per area: the mean count
            lo_d, hi_d = (preset.bead_density_per_um2 if isinstance(preset.bead_density_per_um2, tuple)
                          else (preset.bead_density_per_um2,) * 2)
            lo_b, hi_b = lo_d * padded_um2, hi_d * padded_um2
        else:
            lo_b, hi_b = (preset.n_beads if isinstance(preset.n_beads, tuple) else (preset.n_beads,) * 2)
        truth[key] = {"thickness_nm": ph["thickness_nm"], "crowding": ph["crowding_reached"],
                      "bead_density": 0.5 * (lo_b + hi_b) / padded_um2, "bead_diameter_nm": ph["bead_diameter_nm"],
                      "beads_in_fov": len(beads), "area_um2": (s.truth.shape[1] * s.truth.shape[2]) * 1e-6}

    dips = {"real": bead_dips(raw[int(np.argmin(np.abs(angles)))], 10.0)}
    for key, s in sims.items():
        dips[key] = bead_dips(s.stack[int(np.argmin(np.abs(s.angles)))], 10.0)
    sub = analyse_subtilts(cache)
    cnr_sim = {key: ribosome_cnr_sim(s, 10.0) for key, s in sims.items()}

    # ---- the table
    views = {"real": real, **sim_views}
    cols = ["real", *configs]
    head = ["real EMPIAR-10499", *(label[c] for c in configs)]

    def k0(v):
        return int(np.argmin(np.abs(v["angles"])))

    def k60(v):
        return int(np.argmax(np.abs(v["angles"])))

    rows: List[Tuple[str, List[str]]] = []
    fmt = lambda x, p=2: "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{p}f}"
    rows.append(("dose per view (e/A^2)", [f"{dose_per_view:g}"] + [
        fmt(sims[c].params["dose_per_view_e_per_A2"]) for c in cols[1:]]))
    rows.append(("electrons per pixel per view at the entrance (e/px, dose x pixel^2)",
                 [f"{dose_per_view * 100:g}"] + [fmt(sims[c].params["electrons_per_pixel_per_view"], 0) for c in cols[1:]]))
    rows.append(("mean value at 0 deg (stored units: DN real, counts sim)", [fmt(views[c]["means"][k0(views[c])], 1) for c in cols]))
    rows.append(("gain: noise variance / mean (DN per count; 1 = Poisson counts)", [fmt(views[c]["gain"], 3) for c in cols]))
    rows.append(("implied counts per pixel per view at 0 deg (mean / gain, e/px)", [fmt(views[c]["counts"][k0(views[c])], 0) for c in cols]))
    rows.append(("implied counts per pixel per view at the highest tilt (e/px)", [fmt(views[c]["counts"][k60(views[c])], 0) for c in cols]))
    rows.append(("implied counts / entrance electrons at 0 deg (attenuation x DQE)",
                 [fmt(real["counts"][k0(real)] / (dose_per_view * 100), 2)] +
                 [fmt(views[c]["counts"][k0(views[c])] / sims[c].params["electrons_per_pixel_per_view"], 2) for c in cols[1:]]))
    rows.append(("plateau / (gain x mean), spread over views (min-max)",
                 [f"{views[c]['plateau_ratio'].min():.2f}-{views[c]['plateau_ratio'].max():.2f}" for c in cols]))
    rows.append(("noise power at Nyquist / at 0.2 cyc/px, highest tilt (1 = white)",
                 [fmt(views[c]["spectra"][k60(views[c])][-1] / np.interp(0.2, views[c]["freq"], views[c]["spectra"][k60(views[c])]), 2)
                  if c == "real" else fmt(views[c]["nps"][k60(views[c])][-1] / np.interp(0.2, views[c]["freq"], views[c]["nps"][k60(views[c])]), 2)
                  for c in cols]))
    for lo, hi, what in ((0.01, 0.05, "1/1000-1/200 A^-1"), (0.05, 0.25, "1/200-1/40 A^-1"), (0.25, 0.5, "1/40-1/20 A^-1")):
        rows.append((f"signal / noise power, 0 deg view, {what}", [fmt(band_ssnr(views[c], k0(views[c]), lo, hi), 2) for c in cols]))
    rows.append(("signal / noise power, highest-tilt view, 1/200-1/40 A^-1",
                 [fmt(band_ssnr(views[c], k60(views[c]), 0.05, 0.25), 2) for c in cols]))
    rows.append(("network input (bin 2, whole stack z-scored): share of variance from view-to-view mean change",
                 [fmt(views[c]["normalised"]["mean_change_share"], 2) for c in cols]))
    rows.append(("network input (bin 2, whole stack z-scored): noise std", [fmt(views[c]["normalised"]["noise_std_normalised"], 2) for c in cols]))
    rows.append(("attenuation t/lambda (fit with theta0)", [fmt(views[c]["attenuation"]["t_over_lambda"], 3) for c in cols]))
    rows.append(("  its theta0 (deg) / rms of ln I",
                 [f"{views[c]['attenuation']['theta0']:.1f} / {views[c]['attenuation']['rms_log']:.3f}" for c in cols]))
    rows.append(("attenuation t/lambda (theta0 = 0)", [fmt(views[c]["attenuation"]["t_over_lambda_theta0_0"], 3) for c in cols]))
    rows.append(("  thickness implied at lambda = 350 nm (nm); simulated truth",
                 [fmt(real["attenuation"]["t_over_lambda"] * 350, 0)] +
                 [f"{views[c]['attenuation']['t_over_lambda'] * 350:.0f}; {truth[c]['thickness_nm']:.0f}" for c in cols[1:]]))
    rows.append(("I(+60) / I(-60) (tilted specimen or drift)",
                 [fmt(views[c]["means"][np.argmax(views[c]['angles'])] / views[c]["means"][np.argmin(views[c]['angles'])], 2) for c in cols]))
    rows.append(("WBP bin 2: Z extent of the density (nm: outermost slices at half the structure profile)", [fmt(vols[c]["extent_nm"], 0) for c in cols]))
    rows.append(("WBP bin 2: structure / noise std inside the specimen", [fmt(vols[c]["structure_to_noise"], 2) for c in cols]))
    rows.append(("WBP bin 2: specimen voxel skewness / excess kurtosis",
                 [f"{vols[c]['skew']:.2f} / {vols[c]['kurtosis']:.2f}" for c in cols]))
    rows.append(("WBP bin 2: fraction of specimen voxels > 2 noise std darker than the slice median",
                 [fmt(vols[c]["dark_fraction"], 3) for c in cols]))
    rows.append(("particle volume fraction (truth; unmeasurable on the real cell)", ["n/a"] + [fmt(truth[c]["crowding"], 3) for c in cols[1:]]))
    rows.append(("gold beads found (> 10 robust sigma) / per um^2", [f"{vols[c]['n_beads']} / {vols[c]['beads_per_um2']:.1f}" for c in cols]))
    rows.append(("  beads in the field (truth)", ["n/a"] + [str(truth[c]["beads_in_fov"]) for c in cols[1:]]))
    rows.append(("  median bead peak (robust sigma of the volume)", [fmt(vols[c]["bead_peak_sigma"], 1) for c in cols]))
    rows.append(("  bead density the preset draws (mean count / padded area, per um^2); diameter (nm)",
                 ["n/a"] + [f"{truth[c]['bead_density']:.0f}; {truth[c]['bead_diameter_nm'][0]:g}-{truth[c]['bead_diameter_nm'][1]:g}"
                            for c in cols[1:]]))
    rows.append(("gold beads in the 0 deg view: count / depth (1 - I_centre / I_around) / half-depth radius (nm)",
                 [f"{dips[c]['n']} / {fmt(dips[c]['depth'])} / {fmt(dips[c]['half_radius_nm'], 1)}" for c in cols]))
    rows.append(("volume fraction left out of the texture statistics near gold", [fmt(vols[c]["gold_excluded"], 3) for c in cols]))
    if sub is not None:
        early = sub["dose"] <= 12
        # the sub-tilts are stored contrast-inverted (protein bright: the disk is brighter than
        # the ring, CNR < 0), the simulation in the raw contrast: compare magnitudes
        rows.append(("ribosome contrast-to-noise abs(ring - disk) / noise, first views (disk r 12 nm, ring 15-25 nm; sim: 4V5D, 0 deg)",
                     [f"{abs(sub['cnr'][early].mean()):.1f} (cryodrgn sub-tilts, sign {np.sign(sub['cnr'][early].mean()):+.0f}, {sub['dose_per_view']:g} e/A^2/view, "
                      f"{np.median(sub['defocus_um']):.1f} um)"] + [f"{fmt(cnr_sim[c][0], 1)} (n = {cnr_sim[c][1]})" for c in cols[1:]]))
    print()
    print("| statistic | " + " | ".join(head) + " |")
    print("|---|" + "---|" * len(cols))
    for name, vals in rows:
        print(f"| {name} | " + " | ".join(vals) + " |")
    if sub is not None:
        lo, hi = sub["dose"] <= 12, sub["dose"] >= 90
        print(f"\ncryodrgn sub-tilts: {sub['n']} images of 64^2 at {SUBTILT_PIXEL_A} A/px, mean {sub['mean'].mean():.2f} "
              f"(mean-subtracted: no counts), variance {sub['var'][lo].mean():.0f} (dose <= 12) vs {sub['var'][hi].mean():.0f} "
              f"(dose >= 90); plateau {sub['plateau'][lo].mean():.0f} vs {sub['plateau'][hi].mean():.0f}; "
              f"ribosome CNR {sub['cnr'][lo].mean():.1f} vs {sub['cnr'][hi].mean():.1f}")
    else:
        print("\ncryodrgn sub-tilts not found in the cache: skipped")
    figure(Path(args.figure), views, vols, sub, label)
    print(f"\nwrote {args.figure} ({Path(args.figure).stat().st_size / 1e3:.0f} kB) in {time.perf_counter() - t_start:.0f} s")


def figure(path: Path, views, vols, sub, label) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"real": "k", "matched": "tab:blue", "training": "tab:orange", "cell": "tab:green"}
    names = {"real": "real EMPIAR-10499", **label}
    fig = plt.figure(figsize=(15, 12.5))
    gs = fig.add_gridspec(3, 3, height_ratios=[1, 1, 0.9])
    # (a) mean against tilt, normalised to 0 deg, with the fits
    ax = fig.add_subplot(gs[0, 0])
    for key, v in views.items():
        a, m = v["angles"], v["means"]
        k0 = int(np.argmin(np.abs(a)))
        fit = v["attenuation"]
        ax.semilogy(a, m / m[k0], "o", ms=3, color=colours[key])
        th = np.linspace(a.min(), a.max(), 200)
        model = fit["I0"] * np.exp(-fit["t_over_lambda"] / np.cos(np.radians(th - fit["theta0"])))
        ax.semilogy(th, model / m[k0], "-", color=colours[key], lw=1,
                    label=f"{names[key].split(' (')[0]}: t/lambda {fit['t_over_lambda']:.2f}")
    ax.set_xlabel("tilt (deg)")
    ax.set_ylabel("mean intensity / mean at 0 deg")
    ax.set_title("(a) attenuation: I0 exp(-(t/lambda)/cos(theta - theta0))", fontsize=10)
    ax.legend(fontsize=7)
    # (b) implied counts per pixel per view
    ax = fig.add_subplot(gs[0, 1])
    for key, v in views.items():
        ax.plot(v["angles"], v["counts"], "o-", ms=3, lw=1, color=colours[key], label=names[key])
    ax.set_xlabel("tilt (deg)")
    ax.set_ylabel("counts per pixel per view (mean / gain)")
    ax.set_title("(b) implied counts per 10 A pixel", fontsize=10)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7)
    # (c) real: plateau against mean (Poisson-like: a line through the origin)
    ax = fig.add_subplot(gs[0, 2])
    real = views["real"]
    hi = np.abs(real["angles"]) >= GAIN_TILT
    ax.plot(real["means"][~hi], real["plateaus"][~hi], "o", ms=3, color="0.5", label="real, |tilt| < 45")
    ax.plot(real["means"][hi], real["plateaus"][hi], "o", ms=3, color="k", label="real, |tilt| >= 45 (fit)")
    mm = np.linspace(0, real["means"].max() * 1.05, 10)
    ax.plot(mm, real["gain"] * mm, "k-", lw=1, label=f"gain {real['gain']:.3f} DN/count")
    ax.set_xlabel("view mean (DN)")
    ax.set_ylabel(f"power at {PLATEAU[0]:.1f}-{PLATEAU[1]:.1f} cyc/px (DN^2)")
    ax.set_title("(c) real: noise plateau against mean", fontsize=10)
    ax.legend(fontsize=7)
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    # (d) power spectra / noise, 0 deg and highest tilt
    ax = fig.add_subplot(gs[1, 0])
    for key, v in views.items():
        for k, ls in ((int(np.argmin(np.abs(v["angles"]))), "-"), (int(np.argmax(np.abs(v["angles"]))), ":")):
            ax.semilogy(v["freq"] / 10.0, v["spectra"][k] / v["nps"][k], ls, color=colours[key], lw=1.2,
                        label=f"{names[key].split(' (')[0]}, {v['angles'][k]:.0f} deg")
    if sub is not None:
        lo = sub["dose"] <= 12
        ax.semilogy(sub["freq"] / SUBTILT_PIXEL_A, (sub["spectra"][lo] / sub["plateau"][lo, None]).mean(0), "--",
                    color="tab:green", lw=1.2, label="cryodrgn sub-tilts, first views (/ plateau)")
    ax.axhline(1.0, color="0.6", lw=0.8)
    ax.set_xlabel("spatial frequency (1/A)")
    ax.set_ylabel("power / noise power (1 + SSNR)")
    ax.set_title("(d) view power spectra over the noise", fontsize=10)
    ax.legend(fontsize=6)
    # (e) Z profiles
    ax = fig.add_subplot(gs[1, 1])
    for key, v in vols.items():
        ax.plot(v["z_nm"], v["profile"], color=colours[key], lw=1.2,
                label=f"{names[key].split(' (')[0]}: {v['extent_nm']:.0f} nm")
    ax.set_xlabel("z (nm, beam axis)")
    ax.set_ylabel("lateral std of the low-passed WBP / vacuum")
    ax.set_title("(e) WBP bin 2: density along Z", fontsize=10)
    ax.legend(fontsize=7)
    # (f) histograms
    ax = fig.add_subplot(gs[1, 2])
    for key, v in vols.items():
        h, e = v["hist"]
        ax.semilogy(0.5 * (e[1:] + e[:-1]), h / h.sum(), color=colours[key], lw=1.2,
                    label=f"{names[key].split(' (')[0]}: skew {v['skew']:.2f}, kurt {v['kurtosis']:.2f}")
    ax.set_xlabel("specimen voxel - slice median (noise std)")
    ax.set_ylabel("fraction of voxels")
    ax.set_title("(f) WBP bin 2: voxel histogram inside the specimen", fontsize=10)
    ax.legend(fontsize=7)
    ax.set_ylim(1e-6, 1)
    # (g-i) XZ slices at 20 A, same scale
    keys = [k for k in ("real", "matched", "training", "cell") if k in vols]
    bottom = gs[2, :].subgridspec(1, len(keys))
    for col, key in enumerate(keys):
        ax = fig.add_subplot(bottom[0, col])
        xz = vols[key]["xz"]
        lo_, hi_ = np.percentile(xz, [1, 99])
        ax.imshow(xz, cmap="gray", vmin=lo_, vmax=hi_, origin="lower", aspect="equal")
        ax.set_title(f"XZ slice, WBP bin 2: {names[key]}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.plot([3, 3 + 100 / 2.0], [3, 3], color="yellow", lw=3)
        ax.text(3, 6, "100 nm", color="yellow", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=70)
    plt.close(fig)


if __name__ == "__main__":
    main()
