"""MR image synthesis from tissue and tumour compartments, and scanner effects.

Each voxel is a mixture of compartments (grey matter, white matter, CSF,
infiltrated/oedematous tissue, enhancing tumour, necrosis, resection cavity,
treatment-related enhancement); each sequence gives each compartment a relative
signal (typical 3 T contrasts: T1 WM > GM > CSF, T2 and FLAIR bright oedema,
FLAIR dark fluid, gadolinium brightening enhancing tumour on T1ce).  A site's
scanner then scales, bias-modulates, gamma-distorts, adds Rician noise,
resamples to its voxel size and stores in its own orientation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import nibabel as nib
import numpy as np
from nibabel import orientations as nio
from scipy import ndimage

from flame_private.config import ScannerProfile

COMPARTMENTS = ("wm", "gm", "csf", "oedema", "enhancing", "necrosis", "cavity")
SIGNAL: dict[str, dict[str, float]] = {
    #        wm    gm    csf   oedema enh   necr  cavity
    "t1":   dict(zip(COMPARTMENTS, (1.00, 0.72, 0.25, 0.60, 0.70, 0.35, 0.20), strict=True)),
    "t1ce": dict(zip(COMPARTMENTS, (1.00, 0.74, 0.25, 0.62, 1.45, 0.35, 0.20), strict=True)),
    "t2":   dict(zip(COMPARTMENTS, (0.55, 0.75, 1.40, 1.05, 0.85, 1.20, 1.40), strict=True)),
    "flair": dict(zip(COMPARTMENTS, (0.60, 0.78, 0.12, 1.30, 1.00, 0.55, 0.15), strict=True)),
}


@dataclass(frozen=True)
class Compartments:
    """Fractions (0-1) of each tumour compartment per voxel; healthy tissue fills the rest."""

    oedema: np.ndarray
    enhancing: np.ndarray
    necrosis: np.ndarray
    cavity: np.ndarray


def smoothstep(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    t = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return (t * t * (3 - 2 * t)).astype(np.float32)


AGGRESSION_SIGNAL: dict[str, float] = {"t1": -0.05, "t1ce": 0.20, "t2": -0.25, "flair": -0.15}
"""Relative change of viable-tumour signal per unit of the proliferation index (modelling choice).

Densely cellular, fast-proliferating tumour has lower T2/FLAIR signal (restricted
water, as on diffusion imaging) and stronger contrast uptake (angiogenesis);
this is the imaging handle on growth rate that radiomic models exploit.
"""


def proliferation_index(rho: float, rho_range: tuple[float, float]) -> float:
    """Where rho sits in its range on a log scale, in [-1, 1]."""
    lo, hi = np.log(rho_range[0]), np.log(rho_range[1])
    return float(np.clip(2.0 * (np.log(rho) - lo) / (hi - lo) - 1.0, -1.0, 1.0))


def synthesise(seq: str, gm: np.ndarray, wm: np.ndarray, csf: np.ndarray, brain: np.ndarray,
               t1_template: np.ndarray, comp: Compartments, aggression: float = 0.0) -> np.ndarray:
    """Noise-free signal of one sequence, in units of white-matter signal.

    ``aggression`` is the patient's proliferation index in [-1, 1].
    """
    s = dict(SIGNAL[seq])
    scale = 1.0 + AGGRESSION_SIGNAL[seq] * aggression
    s["enhancing"] *= scale
    s["oedema"] *= 1.0 + 0.5 * AGGRESSION_SIGNAL[seq] * aggression
    tumour = np.clip(comp.oedema + comp.enhancing + comp.necrosis + comp.cavity, 0.0, 1.0)
    healthy = 1.0 - tumour
    img = healthy * (wm * s["wm"] + gm * s["gm"] + csf * s["csf"])
    img += comp.oedema * s["oedema"] + comp.enhancing * s["enhancing"]
    img += comp.necrosis * s["necrosis"] + comp.cavity * s["cavity"]
    # Template texture (sulci, deep nuclei) that tissue fractions alone smooth away.
    texture = 0.85 + 0.3 * t1_template if seq in ("t1", "t1ce") else 1.15 - 0.3 * t1_template
    img = img * np.where(tumour > 0.5, 1.0, texture)
    return np.where(brain, img, 0.0).astype(np.float32)


def bias_field(shape: tuple[int, int, int], amplitude: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth multiplicative field exp(amplitude * low-order polynomial), mean ~1."""
    axes = [np.linspace(-1, 1, n, dtype=np.float32) for n in shape]
    x, y, z = np.meshgrid(*axes, indexing="ij")
    terms = [x, y, z, x * y, x * z, y * z, x * x, y * y, z * z]
    coef = rng.normal(0, 1, len(terms)).astype(np.float32)
    field = sum(c * t for c, t in zip(coef, terms, strict=True))
    field /= max(float(np.abs(field).max()), 1e-6)
    return np.exp(amplitude * field).astype(np.float32)


def apply_scanner(img: np.ndarray, brain: np.ndarray, scanner: ScannerProfile, bias: np.ndarray,
                  rng: np.random.Generator) -> np.ndarray:
    """Gamma contrast, bias field, Rician noise and intensity scale of one site's scanner."""
    x = np.power(np.clip(img, 0, None), scanner.contrast_gamma) * bias
    if scanner.noise_sd > 0:
        n1 = rng.normal(0, scanner.noise_sd, img.shape).astype(np.float32)
        n2 = rng.normal(0, scanner.noise_sd, img.shape).astype(np.float32)
        x = np.sqrt((x + n1) ** 2 + n2**2)
    x = np.where(brain, x, 0.0)  # skull-stripped, as distributed datasets are
    return (x * scanner.intensity_scale).astype(np.float32)


def to_scanner_space(vol: np.ndarray, affine: np.ndarray, scanner: ScannerProfile,
                     is_label: bool) -> tuple[np.ndarray, np.ndarray]:
    """Resample to the site's voxel size and reorient to its axis codes; returns data and affine."""
    factors = np.asarray(scanner.spacing_factor, dtype=np.float64)
    if np.allclose(factors, 1.0):
        out = vol
        new_affine = affine.copy()
    else:
        zoom = 1.0 / factors
        out = ndimage.zoom(vol, zoom, order=0 if is_label else 1, grid_mode=True, mode="nearest")
        scale = np.asarray(vol.shape) / np.asarray(out.shape)
        new_affine = affine.copy()
        new_affine[:3, :3] = affine[:3, :3] @ np.diag(scale)
        new_affine[:3, 3] = affine[:3, :3] @ (0.5 * scale - 0.5) + affine[:3, 3]
    start = nio.io_orientation(new_affine)
    target = nio.axcodes2ornt(tuple(scanner.orientation))
    transform = nio.ornt_transform(start, target)
    shape_before = out.shape
    out = nio.apply_orientation(out, transform)
    new_affine = new_affine @ nio.inv_ornt_aff(transform, shape_before)
    return np.ascontiguousarray(out), new_affine


def save_dose_nifti(path: str | os.PathLike[str], dose_gy: np.ndarray, affine: np.ndarray) -> None:
    """A dose map in Gy(RBE), stored as a planning system exports it: integers with a scale (NIfTI's
    ``scl_slope``, DICOM's DoseGridScaling): 30000 steps up to the maximum dose."""
    arr = np.clip(np.asarray(dose_gy, dtype=np.float64), 0.0, None)
    slope = max(float(arr.max()), 1e-6) / 30000.0
    _save(path, np.rint(arr / slope).astype(np.int16), affine, slope)


def save_nifti(path: str | os.PathLike[str], data: np.ndarray, affine: np.ndarray, is_label: bool) -> None:
    """Write as a scanner would: int16 images, uint8 labels, qform and sform set."""
    arr = data.astype(np.uint8) if is_label else np.clip(np.rint(data), 0, 32767).astype(np.int16)
    _save(path, arr, affine)


def _save(path: str | os.PathLike[str], arr: np.ndarray, affine: np.ndarray, slope: float | None = None) -> None:
    """ARR with qform and sform set, in mm; SLOPE scales the stored integers (``scl_slope``)."""
    img = nib.Nifti1Image(arr, affine)
    if slope is not None:
        img.header.set_slope_inter(slope, 0.0)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))
