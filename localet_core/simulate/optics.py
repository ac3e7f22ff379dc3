"""Image formation on 2D projection stacks: CTF, exposure (dose) filter, attenuation, counts.

Every function is pure torch and works on stacks ``P[k, j, i]`` = (view, row, column), shape
``(n_views, ny, nx)``, or on a single image ``(ny, nx)``. Units: pixel sizes in Angstrom (A),
defocus in micrometres (um, positive = underfocus), voltage in kV, spherical aberration in mm,
exposures in electrons per A^2 (e/A^2), spatial frequencies in 1/A, angles in degrees.

The usual image of a tilt series, given projections ``P`` (line integrals of the specimen
potential, in V*A: a projector's sum over voxels times the voxel size) is::

    phase  = interaction_constant(kV) * P                         # rad
    phase  = exposure_filter(phase, pixel, prior_dose, dose)      # radiation damage
    I      = 1 - 2 * apply_ctf(phase - mean(phase), ...)          # weak-phase image
    I      = attenuate(I, thickness, angles)                      # inelastic loss (zero-loss)
    counts = poisson_noise(I, dose * pixel**2, generator)         # e/pixel

:func:`image_intensity` does the first four steps.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch

__all__ = [
    "electron_wavelength",
    "interaction_constant",
    "ctf_2d",
    "apply_ctf",
    "critical_exposure",
    "exposure_filter",
    "dose_symmetric_order",
    "prior_dose",
    "attenuate",
    "poisson_noise",
    "image_intensity",
    "inelastic_path",
    "detector_rolloff",
    "OpticsProfile",
    "OPTICS",
]

Scalars = Union[float, Sequence[float], np.ndarray, torch.Tensor]

_M0C2_EV = 510998.95  # electron rest energy, eV


def electron_wavelength(voltage_kv: float = 300.0) -> float:
    """Relativistic electron wavelength (A) at ``voltage_kv`` (kV): 0.01969 A at 300 kV."""
    v = voltage_kv * 1e3
    return 12.264259 / math.sqrt(v * (1.0 + v / (2.0 * _M0C2_EV)))


def interaction_constant(voltage_kv: float = 300.0) -> float:
    """Sigma (rad per V*A): phase shift per unit projected potential (6.53e-4 at 300 kV)."""
    v = voltage_kv * 1e3
    lam = electron_wavelength(voltage_kv)
    return 2.0 * math.pi / (lam * v) * (_M0C2_EV + v) / (2.0 * _M0C2_EV + v)


def _as_views(x: Scalars, n: Optional[int], dtype=torch.float32) -> torch.Tensor:
    """Per-view values as a (n_views, 1, 1) tensor (a scalar is broadcast)."""
    t = torch.as_tensor(np.asarray(x, dtype=np.float64) if not isinstance(x, torch.Tensor) else x,
                        dtype=torch.float64).reshape(-1)
    if n is not None and t.numel() == 1:
        t = t.expand(n)
    return t.to(dtype).reshape(-1, 1, 1)


def _freq2(shape: Tuple[int, int], pixel_size: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Frequencies (1/A) ky (ny, 1) and kx (1, nx//2+1) of the rfft2 grid."""
    ny, nx = shape
    ky = torch.fft.fftfreq(ny, d=pixel_size, dtype=torch.float64).reshape(-1, 1)
    kx = torch.fft.rfftfreq(nx, d=pixel_size, dtype=torch.float64).reshape(1, -1)
    return ky, kx


def ctf_2d(shape: Tuple[int, int], pixel_size: float, defocus_um: Scalars,
           voltage_kv: float = 300.0, cs_mm: float = 2.7, amplitude_contrast: float = 0.07,
           phase_shift: float = 0.0, astigmatism_um: float = 0.0,
           astigmatism_angle_deg: float = 0.0) -> torch.Tensor:
    """Contrast transfer function on the rfft2 grid of an image of ``shape = (ny, nx)``.

    ``CTF(k) = sin(chi(k) + arcsin(A) + phase_shift)`` with
    ``chi(k) = pi lambda dz k^2 - pi/2 Cs lambda^3 k^4`` (dz > 0 underfocus), so that the weak
    phase image is ``1 - 2 * (CTF applied to the phase)`` and an underfocused protein is dark.

    Args:
        shape: (ny, nx) of the real-space image.
        pixel_size: A.
        defocus_um: um, a scalar or one value per view (n_views,).
        voltage_kv: kV. cs_mm: mm. amplitude_contrast: fraction A (0..1).
        phase_shift: extra phase (rad), e.g. pi/2 for an ideal phase plate.
        astigmatism_um: defocus difference (um): dz(phi) = dz + (astig/2) cos(2 (phi - angle)).
        astigmatism_angle_deg: the major axis angle, from the x (column) axis.

    Returns:
        (n_views, ny, nx//2+1) float32 (n_views = 1 for a scalar defocus).
    """
    lam = electron_wavelength(voltage_kv)
    ky, kx = _freq2(shape, pixel_size)
    k2 = ky ** 2 + kx ** 2
    dz = _as_views(defocus_um, None, torch.float64) * 1e4  # A
    if astigmatism_um:
        phi = torch.atan2(ky, kx) - math.radians(astigmatism_angle_deg)
        dz = dz + 0.5 * astigmatism_um * 1e4 * torch.cos(2.0 * phi)
    cs = cs_mm * 1e7  # A
    chi = math.pi * lam * dz * k2 - 0.5 * math.pi * cs * lam ** 3 * k2 ** 2
    w = math.asin(min(max(amplitude_contrast, 0.0), 1.0))
    return torch.sin(chi + w + phase_shift).float()


def apply_ctf(projections: torch.Tensor, pixel_size: float, defocus_um: Scalars,
              voltage_kv: float = 300.0, cs_mm: float = 2.7, amplitude_contrast: float = 0.07,
              phase_shift: float = 0.0, **astigmatism) -> torch.Tensor:
    """Filter each view with its CTF (see :func:`ctf_2d`); same shape and dtype as the input.

    ``projections``: (n_views, ny, nx) or (ny, nx); ``defocus_um`` scalar or (n_views,).
    """
    single = projections.dim() == 2
    p = projections[None] if single else projections
    ctf = ctf_2d(tuple(p.shape[-2:]), pixel_size, defocus_um, voltage_kv, cs_mm,
                 amplitude_contrast, phase_shift, **astigmatism).to(p.device)
    out = torch.fft.irfft2(torch.fft.rfft2(p.float()) * ctf, s=p.shape[-2:])
    out = out.to(projections.dtype)
    return out[0] if single else out


def critical_exposure(k: torch.Tensor, voltage_kv: float = 300.0) -> torch.Tensor:
    """Grant & Grigorieff (2015) critical exposure (e/A^2) at spatial frequency ``k`` (1/A):
    ``Ne = 0.245 k^-1.665 + 2.81`` at 300 kV, times 0.8 below 250 kV (their 200 kV scaling).
    Infinite at k = 0."""
    scale = 1.0 if voltage_kv >= 250.0 else 0.8
    kk = k.clamp_min(1e-12)
    ne = 0.245 * kk ** -1.665 + 2.81
    return torch.where(k > 0, ne * scale, torch.full_like(ne, float("inf")))


def exposure_filter(projections: torch.Tensor, pixel_size: float, prior_dose: Scalars,
                    dose: Scalars, voltage_kv: float = 300.0) -> torch.Tensor:
    """Radiation damage: attenuate each view's amplitudes by its exposure history.

    The amplitude of a frame after cumulative exposure N is ``exp(-N / (2 Ne(k)))``; a view
    recorded from ``prior_dose`` to ``prior_dose + dose`` gets the average over that interval,
    ``(2 Ne / dose) * (exp(-N0 / 2Ne) - exp(-(N0 + dose) / 2Ne))``.

    Args:
        projections: (n_views, ny, nx) or (ny, nx).
        pixel_size: A.
        prior_dose: e/A^2 received before each view, in acquisition order (see
            :func:`prior_dose`), scalar or (n_views,), in the order of the stack.
        dose: e/A^2 of each view, scalar or (n_views,).
        voltage_kv: kV (scales the critical exposure).
    """
    single = projections.dim() == 2
    p = projections[None] if single else projections
    n = p.shape[0]
    ky, kx = _freq2(tuple(p.shape[-2:]), pixel_size)
    ne = critical_exposure(torch.sqrt(ky ** 2 + kx ** 2), voltage_kv)[None]  # (1, ny, nxr)
    n0 = _as_views(prior_dose, n, torch.float64)
    dn = _as_views(dose, n, torch.float64)
    a0 = torch.exp(-n0 / (2.0 * ne))
    a1 = torch.exp(-(n0 + dn) / (2.0 * ne))
    filt = torch.where(dn > 0, 2.0 * ne / dn.clamp_min(1e-12) * (a0 - a1), a0)
    filt = torch.where(torch.isinf(ne), torch.ones_like(filt), filt).float().to(p.device)
    out = torch.fft.irfft2(torch.fft.rfft2(p.float()) * filt, s=p.shape[-2:]).to(p.dtype)
    return out[0] if single else out


def dose_symmetric_order(angles: Scalars, group: int = 2, positive_first: bool = True
                         ) -> np.ndarray:
    """Acquisition order of a Hagen dose-symmetric scheme (Hagen et al. 2017).

    Starts at the angle closest to 0, then alternates groups of ``group`` views on either side,
    moving outwards: with group 2 and angles -6..6 step 2 the order is 0, 2, 4, -2, -4, 6, -6.
    When one side runs out, the other goes on.

    Args:
        angles: tilt angles (deg) in stack order.
        group: views per side before switching.
        positive_first: take the positive side first.

    Returns:
        int64 array of indices into ``angles``, in acquisition order.
    """
    a = np.asarray(angles, dtype=np.float64).reshape(-1)
    start = int(np.argmin(np.abs(a)))
    pos = sorted((i for i in range(a.size) if i != start and a[i] >= a[start]),
                 key=lambda i: a[i])
    neg = sorted((i for i in range(a.size) if i != start and a[i] < a[start]),
                 key=lambda i: -a[i])
    sides = [pos, neg] if positive_first else [neg, pos]
    order = [start]
    turn = 0
    while sides[0] or sides[1]:
        side = sides[turn] if sides[turn] else sides[1 - turn]
        take, side[:] = side[:group], side[group:]
        order.extend(take)
        turn = 1 - turn
    return np.asarray(order, dtype=np.int64)


def prior_dose(order: Sequence[int], dose_per_view: Scalars) -> np.ndarray:
    """Cumulative exposure (e/A^2) received before each view, in *stack* order.

    Args:
        order: acquisition order (indices into the stack), e.g. from
            :func:`dose_symmetric_order`.
        dose_per_view: e/A^2 per view, scalar or (n_views,) in stack order.
    """
    order = np.asarray(order, dtype=np.int64)
    n = order.size
    d = np.broadcast_to(np.asarray(dose_per_view, dtype=np.float64), (n,))
    out = np.zeros(n)
    acc = 0.0
    for i in order:
        out[i] = acc
        acc += d[i]
    return out


def attenuate(intensity: torch.Tensor, thickness: float, angles_deg: Scalars,
              mean_free_path: float = 3500.0) -> torch.Tensor:
    """Inelastic loss removed by the energy filter: ``I * exp(-t / (lambda cos theta))``.

    Args:
        intensity: (n_views, ny, nx) or (ny, nx).
        thickness: ice thickness t, A (along the slab normal).
        angles_deg: tilt angle of each view (deg), scalar or (n_views,).
        mean_free_path: lambda, A (about 3000-4000 A for ice at 300 kV with a zero-loss filter).
    """
    single = intensity.dim() == 2
    i = intensity[None] if single else intensity
    cos = torch.cos(torch.deg2rad(_as_views(angles_deg, i.shape[0], torch.float64)))
    factor = torch.exp(-thickness / (mean_free_path * cos)).to(i.dtype).to(i.device)
    out = i * factor
    return out[0] if single else out


def poisson_noise(intensity: torch.Tensor, dose_per_pixel: Scalars,
                  generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Electron counts: Poisson with mean ``intensity * dose_per_pixel`` (float32 counts).

    Args:
        intensity: (n_views, ny, nx) or (ny, nx), relative intensity (1 = unscattered beam),
            must be >= 0 (negative values are clamped).
        dose_per_pixel: electrons per pixel per view = dose (e/A^2) * pixel_size^2 (A^2); scalar
            or (n_views,).
        generator: torch.Generator for reproducible noise.
    """
    single = intensity.dim() == 2
    i = intensity[None] if single else intensity
    lam = i.float().clamp_min(0.0) * _as_views(dose_per_pixel, i.shape[0]).to(i.device)
    out = torch.poisson(lam, generator=generator)
    return out[0] if single else out


def image_intensity(projections: torch.Tensor, pixel_size: float, angles_deg: Scalars,
                    defocus_um: Scalars, thickness: float, prior_dose_e: Scalars = 0.0,
                    dose_e: Scalars = 0.0, voltage_kv: float = 300.0, cs_mm: float = 2.7,
                    amplitude_contrast: float = 0.07, phase_shift: float = 0.0,
                    mean_free_path: float = 3500.0,
                    path: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Noise-free relative intensity of a tilt series from projected potential.

    Args:
        projections: (n_views, ny, nx) line integrals of the potential, V*A.
        pixel_size: A. angles_deg: (n_views,) deg. defocus_um: scalar or (n_views,) um.
        thickness: ice thickness (A) for the attenuation.
        prior_dose_e, dose_e: e/A^2 before and during each view (exposure filter; 0 = none).
        path: (n_views, ny, nx) inelastic path per pixel, A (:func:`inelastic_path`); when
            given it replaces ``thickness / cos(theta)`` in the attenuation, pixel by pixel.

    Returns:
        (n_views, ny, nx) float32: ``(1 - 2 CTF*(phase - mean)) * exp(-t / (lambda cos))``.
        Each view's mean phase is removed before the CTF: a constant phase does not change the
        image, and through the amplitude-contrast term it would darken thick views a second time
        on top of the attenuation.
    """
    phase = interaction_constant(voltage_kv) * projections.float()
    if np.any(np.asarray(dose_e) > 0) or np.any(np.asarray(prior_dose_e) > 0):
        phase = exposure_filter(phase, pixel_size, prior_dose_e, dose_e, voltage_kv)
    phase = phase - phase.mean(dim=(-2, -1), keepdim=True)
    img = 1.0 - 2.0 * apply_ctf(phase, pixel_size, defocus_um, voltage_kv, cs_mm,
                                amplitude_contrast, phase_shift)
    if path is not None:
        return img * torch.exp(-path.to(img.dtype) / mean_free_path)
    return attenuate(img, thickness, angles_deg, mean_free_path)


def inelastic_path(ice_projection: torch.Tensor, excess_projection: torch.Tensor,
                   ice_potential_v: float, mass_factor: float) -> torch.Tensor:
    """Inelastic path length per pixel (A) through a specimen of ice and denser matter.

    ``(P_ice + mass_factor * P_excess) / V_ice``: the ice's projected potential over its own
    potential is the length of ice a ray crosses (so the slab's tilt and shape are in it), and
    matter with an excess potential scatters inelastically in proportion to its extra mass:
    protein (about 1 V over ice's 4.6 V) is about 1.45 times as dense as ice, hence
    ``mass_factor`` about 2 (0.22 x 2 = 0.45 extra path per A of protein). Dense columns
    (membrane stacks, crowded cytoplasm, gold) are then darker at all frequencies, the amplitude
    contrast of real images that the weak-phase CTF alone leaves out.

    Args:
        ice_projection, excess_projection: (n_views, ny, nx) line integrals, V*A.
        ice_potential_v: vitreous ice's mean inner potential, V.
        mass_factor: extra inelastic path per A of excess path, relative to ice.
    """
    return (ice_projection + mass_factor * excess_projection.clamp_min(0.0)) / ice_potential_v


def detector_rolloff(images: torch.Tensor, loss_at_nyquist: float) -> torch.Tensor:
    """A detector's noise roll-off: the power spectrum times ``1 - loss * (k / k_Nyquist)^2``.

    Real views (motion-corrected, Fourier-cropped frames) carry about 11 % less noise power at
    Nyquist than at mid frequencies (docs/simulation.md); 0 leaves the images as they are.

    Args:
        images: (n_views, ny, nx) or (ny, nx), counts.
        loss_at_nyquist: the fraction of power lost at the Nyquist frequency, in [0, 1).
    """
    if loss_at_nyquist <= 0:
        return images
    ny, nx = images.shape[-2:]
    ky = torch.fft.fftfreq(ny, dtype=torch.float64).view(-1, 1)
    kx = torch.fft.rfftfreq(nx, dtype=torch.float64).view(1, -1)
    k2 = ((ky ** 2 + kx ** 2) / 0.25).clamp(max=1.0)
    gain = torch.sqrt(1.0 - loss_at_nyquist * k2).to(torch.float32)
    out = torch.fft.irfft2(torch.fft.rfft2(images.float()) * gain, s=(ny, nx))
    return out.to(images.dtype)


@dataclass(frozen=True)
class OpticsProfile:
    """How the microscope and detector are modelled; values or ``(lo, hi)`` ranges drawn per
    series.

    Attributes:
        dqe: detected fraction of the electrons at low frequency (1: every electron counted).
        amplitude_contrast: the CTF's amplitude-contrast fraction.
        mass_factor: extra inelastic path per A of excess potential path, relative to ice
            (:func:`inelastic_path`); 0: attenuation by the ice thickness alone,
            ``exp(-t / (lambda cos theta))``.
        noise_rolloff: power lost at Nyquist by the detector (:func:`detector_rolloff`).
    """

    dqe: Union[float, Tuple[float, float]] = 1.0
    amplitude_contrast: Union[float, Tuple[float, float]] = 0.07
    mass_factor: float = 0.0
    noise_rolloff: float = 0.0


#: The optics presets by name. "ideal" is the simulator before its calibration (every training
#: set and test set of the first models); "calibrated" follows the real EMPIAR-10499 series
#: (docs/simulation.md, "Calibration against real images": DQE 0.7-0.85 from its counts,
#: amplitude contrast 0.07-0.1 as Warp fitted it, mass-dependent attenuation, the noise roll-off).
OPTICS: Dict[str, OpticsProfile] = {
    "ideal": OpticsProfile(),
    "calibrated": OpticsProfile(dqe=(0.7, 0.85), amplitude_contrast=(0.07, 0.1), mass_factor=2.0,
                                noise_rolloff=0.11),
}
