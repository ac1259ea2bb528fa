"""Linear-quadratic cell kill with RBE and oxygen effect, temozolomide, repopulation.

Pure functions (docs/references.md 5).  Dose maps are already RBE-weighted (Gy(RBE)),
so in well-oxygenated tissue every modality kills the same; what differs is the
oxygen enhancement ratio in hypoxic tumour (carbon ions at high LET barely
care about oxygen) and the dose outside the target.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

HYPOXIA_THRESHOLD = 0.35
"""Smoothed tumour density above which oxygen runs short, for a tumour of average perfusion."""


def support_box(mask: np.ndarray, pad: tuple[int, ...]) -> tuple[slice, ...] | None:
    """Bounding box of ``mask`` grown by ``pad`` voxels per axis (None if empty)."""
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        idx = np.flatnonzero(mask.any(axis=other))
        if idx.size == 0:
            return None
        box.append(slice(max(int(idx[0]) - pad[axis], 0), min(int(idx[-1]) + 1 + pad[axis], mask.shape[axis])))
    return tuple(box)


def hypoxia(cellularity: np.ndarray, necrosis: np.ndarray | None, spacing: tuple[float, float, float],
            sigma_mm: float = 4.0, threshold: float = HYPOXIA_THRESHOLD) -> np.ndarray:
    """Hypoxic fraction in [0, 1]: deep in dense tumour and around necrosis, oxygen cannot reach.

    Smoothed cellularity stands in for the distance to functioning vessels;
    the perinecrotic rim (pseudopalisades) is hypoxic by definition.  Pass
    ``necrosis=None`` for the density term alone (what drives new necrosis).
    Computed on the tumour's bounding box only: the filter is the simulator's
    most expensive step, and the result is zero elsewhere.
    """
    out = np.zeros(cellularity.shape, dtype=np.float32)
    sigma = [sigma_mm / s for s in spacing]
    box = support_box(cellularity > 0.05, tuple(int(np.ceil(4 * s)) for s in sigma))
    if box is None:
        return out
    cell = cellularity[box]
    dense = ndimage.gaussian_filter(cell, sigma=sigma, mode="constant")
    h = (dense - threshold) / 0.35
    if necrosis is not None:
        rim = ndimage.gaussian_filter((necrosis[box] >= 0.5).astype(np.float32), sigma=sigma, mode="constant")
        h = np.maximum(h, 2.0 * rim)
    out[box] = np.clip(h * (cell > 0.05), 0.0, 1.0)
    return out


def oer(h: np.ndarray, oer_max: float) -> np.ndarray:
    """Dose-modifying factor: 1 in oxic tissue, ``oer_max`` at full hypoxia."""
    return (1.0 + (oer_max - 1.0) * h).astype(np.float32)


def lq_survival(dose_gy: np.ndarray, alpha: float, beta: float, oer_factor: np.ndarray | float = 1.0) -> np.ndarray:
    """Surviving fraction after one fraction: exp(-alpha d - beta d^2), dose divided by the OER."""
    d = dose_gy / oer_factor
    return np.exp(-(alpha * d + beta * d * d)).astype(np.float32)


def eqd2(total_gy: np.ndarray, dose_per_fraction: np.ndarray, alpha_beta: float) -> np.ndarray:
    """Equivalent dose in 2-Gy fractions: D (d + a/b) / (2 + a/b)."""
    return total_gy * (dose_per_fraction + alpha_beta) / (2.0 + alpha_beta)


def fraction_days(n_fractions: int) -> list[int]:
    """Treatment days counted from the first fraction: five a week, weekends off."""
    days: list[int] = []
    d = 0
    while len(days) < n_fractions:
        if d % 7 < 5:
            days.append(d)
        d += 1
    return days


def adjuvant_tmz_days(rt_end_day: int, cycles: int = 6) -> list[int]:
    """Stupp adjuvant temozolomide: days 1-5 of 28-day cycles starting 4 weeks after RT."""
    start = rt_end_day + 28
    return [start + 28 * k + i for k in range(cycles) for i in range(5)]


def radionecrosis_probability(max_eqd2_brain_gy: float) -> float:
    """Logistic fit through the QUANTEC points (~5 % at 72 Gy, 10 % at 90 Gy, EQD2 a/b = 2)."""
    # logit(p) = a + b * D through (72, 0.05) and (90, 0.10).
    l1, l2 = np.log(0.05 / 0.95), np.log(0.10 / 0.90)
    b = (l2 - l1) / 18.0
    a = l1 - b * 72.0
    return float(1.0 / (1.0 + np.exp(-(a + b * max_eqd2_brain_gy))))


LYMPHOPENIA_LOGIT = (-3.75, 0.105, 1.82)
"""Intercept, per Gy of mean dose to brain outside the target, and for women (log of the odds ratio 6.2)."""


def lymphopenia_probability(mean_brain_dose_gy: float, female: bool) -> float:
    """Grade 3+ radiation-induced lymphopenia during chemoradiation (lymphocyte nadir < 500 /uL).

    The randomised proton-versus-photon glioblastoma trial (Mohan et al., Neuro-Oncology 2021)
    found 39 % with photons, 14 % with protons, more in women (odds ratio 6.2) and a rise
    with the brain volume receiving low and intermediate doses.  The logistic is fitted
    through those two rates at this simulator's mean brain doses (~23 and ~8 Gy(RBE)) for
    a cohort with 44 % women, as in the trial.
    """
    a, b, c = LYMPHOPENIA_LOGIT
    return float(1.0 / (1.0 + np.exp(-(a + b * mean_brain_dose_gy + c * float(female)))))
