"""Modality-specific radiotherapy dose maps, in Gy(RBE), on the simulation grid.

A geometric model, not a treatment-planning system: it reproduces the features
that make the three modalities differ for the same target (docs/references.md 5):

* photons: several coplanar beams with entrance *and* exit dose, a broad
  low-dose bath and a wide penumbra;
* protons: two beams with an entrance plateau, no exit dose, a narrower
  penumbra and a raised RBE at the distal edge;
* carbon ions: two beams, the sharpest penumbra, a lower-RBE entrance channel
  and a small fragmentation tail beyond the target.

Every map is the fraction of the prescription at each voxel; multiplying by the
prescription gives Gy(RBE).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage, special

from flame_private.config import MODALITIES


@dataclass(frozen=True)
class BeamModel:
    n_beams: int
    penumbra_sigma_mm: float
    bath_fraction: float
    """Low-dose bath at the target edge, decaying with ``bath_length_mm``."""
    bath_length_mm: float
    entrance_fraction: float
    """Dose in each beam's entrance channel, as a fraction of the prescription."""
    exit_fraction: float
    """Dose beyond the target along the beam (photons only; fragmentation for carbon)."""
    distal_rbe_boost: float
    """Extra relative biological effect in the 5 mm behind the target along each beam."""


BEAMS: dict[str, BeamModel] = {
    "photon": BeamModel(5, 5.0, 0.45, 45.0, 0.22, 0.16, 0.0),
    "proton": BeamModel(2, 3.5, 0.20, 15.0, 0.45, 0.0, 0.12),
    "carbon": BeamModel(2, 2.0, 0.12, 10.0, 0.20, 0.05, 0.0),
}
"""Calibrated so that, for a typical glioblastoma PTV (~180 mL), the mean dose to
brain outside the PTV is ~22 Gy for photons and ~10 Gy(RBE) for protons at 60 Gy,
the ratio of the published photon/proton comparison (docs/references.md 5)."""


def target_volume(gross: np.ndarray, brain: np.ndarray, spacing: tuple[float, float, float],
                  margin_mm: float, ptv_mm: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """CTV = gross disease + margin inside the brain; PTV = CTV + set-up margin.

    Returns the PTV mask and the signed distance (mm) to its surface (negative inside).
    """
    outside = ndimage.distance_transform_edt(~gross, sampling=spacing)
    ctv = (outside <= margin_mm) & brain
    ptv_out = ndimage.distance_transform_edt(~ctv, sampling=spacing)
    ptv = ptv_out <= ptv_mm
    d_out = ndimage.distance_transform_edt(~ptv, sampling=spacing)
    d_in = ndimage.distance_transform_edt(ptv, sampling=spacing)
    return ptv, np.where(ptv, -d_in, d_out).astype(np.float32)


def beam_angles(modality: str, n_beams: int, patient_angle: float) -> np.ndarray:
    """Axial beam directions: photons spread evenly, particles from two lateral-oblique ports."""
    if modality == "photon":
        return patient_angle + np.arange(n_beams) * (2 * np.pi / n_beams)
    return patient_angle + np.array([0.0, np.deg2rad(70.0)])[:n_beams]


def dose_fraction_map(modality: str, ptv: np.ndarray, signed_dist: np.ndarray,
                      spacing: tuple[float, float, float], patient_angle: float = 0.0) -> np.ndarray:
    """Fraction of the prescription per voxel (RBE-weighted) for one modality."""
    if modality not in BEAMS:
        raise ValueError(f"unknown modality {modality!r}; expected one of {MODALITIES}")
    bm = BEAMS[modality]
    coords = np.stack(np.meshgrid(*[np.arange(n) * s for n, s in zip(ptv.shape, spacing, strict=True)],
                                  indexing="ij"), axis=-1).astype(np.float32)
    centre = coords[ptv].mean(axis=0)
    rel = coords - centre
    pts = rel[ptv]
    d_out = np.maximum(signed_dist, 0.0)

    # Conformal core with an error-function penumbra: ~95 % of prescription on the PTV surface.
    edge = 0.5 * special.erfc((signed_dist - 1.645 * bm.penumbra_sigma_mm) / (bm.penumbra_sigma_mm * np.sqrt(2)))
    bath = bm.bath_fraction * np.exp(-d_out / bm.bath_length_mm)

    beams = np.zeros(ptv.shape, dtype=np.float32)
    boost = np.zeros(ptv.shape, dtype=np.float32)
    for ang in beam_angles(modality, bm.n_beams, patient_angle):
        u = np.array([np.cos(ang), np.sin(ang), 0.0], dtype=np.float32)  # beam travels along -u (from +u side)
        along = rel @ u
        perp = np.linalg.norm(rel - along[..., None] * u, axis=-1)
        proj = pts @ u
        radius = float(np.percentile(np.linalg.norm(pts - proj[:, None] * u, axis=-1), 95)) + bm.penumbra_sigma_mm
        in_band = 0.5 * special.erfc((perp - radius) / (bm.penumbra_sigma_mm * np.sqrt(2)))
        front, back = float(proj.max()), float(proj.min())
        upstream = along > front
        downstream = along < back
        beams += np.where(upstream, bm.entrance_fraction, 0.0) * in_band
        beams += np.where(downstream, bm.exit_fraction * np.exp(-(back - along) / 80.0), 0.0) * in_band
        if bm.distal_rbe_boost:
            distal = downstream & (along > back - 5.0)
            boost += np.where(distal, bm.distal_rbe_boost, 0.0) * in_band
    low = np.clip(bath + beams, 0.0, 1.0)
    frac = edge + (1.0 - edge) * low
    frac = frac * (1.0 + boost)
    return frac.astype(np.float32)


def mean_brain_dose(frac: np.ndarray, brain: np.ndarray, ptv: np.ndarray, prescription_gy: float) -> float:
    """Mean Gy(RBE) to brain outside the PTV (the figure plans are compared on)."""
    region = brain & ~ptv
    return float(frac[region].mean() * prescription_gy) if region.any() else 0.0
