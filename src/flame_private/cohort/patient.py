"""One patient's draws: covariates, hidden tumour biology, and the treatment decision.

Everything random about a patient is drawn here, from a generator seeded by
(cohort seed, site, patient), in a fixed order: the same seed gives the same
patient whatever the number of worker processes.  The hidden parts (alpha,
post-treatment proliferation, pseudoprogression draw) are never written to the
site's manifest; they are what no image can show, and they cap how well any
model can do.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from flame_private.cohort.anatomy import Anatomy
from flame_private.config import MODALITIES, CohortConfig, SiteCohortConfig

RESECTIONS = ("gross_total", "subtotal", "biopsy")


@dataclass(frozen=True)
class Patient:
    """Observable covariates and hidden biology of one simulated patient."""

    patient_id: str
    age: float
    sex: str
    mgmt_methylated: bool
    seed_voxel: tuple[int, int, int]
    depth_mm: float
    d_white: float
    d_grey: float
    rho: float
    detection_flair_ml: float
    alpha: float
    """Hidden: intrinsic radiosensitivity (1/Gy)."""
    rho_post_factor: float
    """Hidden: change in proliferation of the cells that survive treatment."""
    resection_u: float
    subtotal_fraction: float
    beam_angle: float
    pseudo_u: float
    necrosis_u: float
    followup_gaps: tuple[int, int, int]
    """Days: last fraction -> reference scan -> first evaluation -> confirmation."""
    rt_delay_days: int
    treatment_u: float
    oedema_extent_mm: float
    """Reach of vasogenic oedema around the enhancing tumour."""
    hypoxia_shift: float = 0.0
    """Hidden: shift of the density at which the tumour runs out of oxygen (perfusion; negative = hypoxic)."""
    lymphopenia_u: float = 1.0
    """Hidden: the patient's draw against the probability of radiation-induced lymphopenia."""


def _gap(rng: np.random.Generator, days: tuple[int, int]) -> int:
    lo, hi = days
    return int(rng.integers(lo, hi + 1))


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def depth_map(anatomy: Anatomy) -> np.ndarray:
    """Distance (mm) from each voxel to the brain surface."""
    return ndimage.distance_transform_edt(anatomy.brain, sampling=anatomy.spacing).astype(np.float32)


def draw_patient(rng: np.random.Generator, patient_id: str, anatomy: Anatomy, depth: np.ndarray,
                 site: SiteCohortConfig, cfg: CohortConfig) -> Patient:
    """Draw a patient; the order of draws is part of the format (same seed, same bytes)."""
    mix, tum, diff = site.patients, cfg.tumour, cfg.difficulty
    age = float(np.clip(rng.normal(mix.age_mean, mix.age_sd), 20.0, 90.0))
    sex = "F" if rng.uniform() < mix.female_fraction else "M"
    mgmt = bool(rng.uniform() < mix.mgmt_methylated_fraction)

    # Glioblastoma arises mostly in hemispheric white matter, away from the cortex surface.
    candidates = np.argwhere((anatomy.wm > 0.5) & (depth >= 12.0) & anatomy.tissue)
    seed = candidates[rng.integers(len(candidates))]
    # Swanson's parametrisation: front speed v = 2 sqrt(D rho) and invasiveness D / rho.
    # Older patients' tumours grow faster (age is the strongest prognostic factor): modelling choice.
    v = _log_uniform(rng, *tum.velocity_range) * float(np.exp(0.015 * (age - 60.0)))
    invasiveness = _log_uniform(rng, *tum.invasiveness_range)
    d_white = float(np.clip(0.5 * v * np.sqrt(invasiveness), *tum.d_white_range))
    rho = float(np.clip(0.5 * v / np.sqrt(invasiveness), *tum.rho_range))
    ratio = float(rng.uniform(*tum.white_grey_ratio_range))
    detection = _log_uniform(rng, *tum.detection_flair_ml_range)
    alpha = cfg.therapy.alpha_mean * float(rng.lognormal(0.0, diff.radiosensitivity_cv))
    alpha *= (1.05 if sex == "F" else 1.0) * float(np.exp(-0.005 * (age - 60.0)))
    rho_post = float(rng.lognormal(0.0, diff.proliferation_jitter))
    fu = cfg.followup
    return Patient(
        patient_id=patient_id,
        age=round(age, 1),
        sex=sex,
        mgmt_methylated=mgmt,
        seed_voxel=(int(seed[0]), int(seed[1]), int(seed[2])),
        depth_mm=float(depth[tuple(seed)]),
        d_white=d_white,
        d_grey=d_white / ratio,
        rho=rho,
        detection_flair_ml=detection,
        alpha=alpha,
        rho_post_factor=rho_post,
        resection_u=float(rng.uniform()),
        subtotal_fraction=float(rng.uniform(0.5, 0.9)),
        beam_angle=float(rng.uniform(0, 2 * np.pi)),
        pseudo_u=float(rng.uniform()),
        necrosis_u=float(rng.uniform()),
        followup_gaps=(_gap(rng, fu.reference_days), _gap(rng, fu.evaluation_days), _gap(rng, fu.confirmation_days)),
        rt_delay_days=int(rng.integers(5, 15)),
        treatment_u=float(rng.uniform()),
        oedema_extent_mm=float(rng.uniform(10.0, 30.0)),
        # Drawn last: the draws before it are those of cohorts synthesised before it existed.
        hypoxia_shift=float(rng.uniform(*tum.hypoxia_shift_range)),
        lymphopenia_u=float(rng.uniform()),
    )


def choose_resection(patient: Patient, site: SiteCohortConfig) -> str:
    """Extent of resection: deep tumours (thalamus, corpus callosum) are more often only biopsied."""
    p = np.asarray(site.patients.resection_probs, dtype=np.float64)
    deep = np.clip((patient.depth_mm - 20.0) / 20.0, 0.0, 1.0)
    p = p * np.array([1.0 - 0.6 * deep, 1.0, 1.0 + 3.0 * deep])
    p /= p.sum()
    return RESECTIONS[int(np.searchsorted(np.cumsum(p), patient.resection_u, side="right").clip(0, 2))]


def choose_treatment(patient: Patient, site: SiteCohortConfig, necrotic_ml: float, enhancing_ml: float) -> str:
    """Confounded assignment, as in observational data (modelling choice).

    Younger patients are sent to particle therapy to spare brain; large necrotic
    (presumed hypoxic, radioresistant) tumours to carbon where it is offered;
    older patients stay on photons.
    """
    offered = [m for m in MODALITIES if site.treatment_mix.get(m, 0.0) > 0]
    logits = []
    for m in offered:
        z = np.log(site.treatment_mix[m])
        if m == "proton":
            z += 0.06 * (60.0 - patient.age)
        elif m == "carbon":
            z += 0.04 * (60.0 - patient.age) + 0.15 * (necrotic_ml - 5.0) + 0.02 * (enhancing_ml - 10.0)
        logits.append(z)
    w = np.exp(np.asarray(logits) - max(logits))
    w /= w.sum()
    return offered[int(np.searchsorted(np.cumsum(w), patient.treatment_u, side="right").clip(0, len(offered) - 1))]


def redraw_hidden(patient: Patient, rng: np.random.Generator, cfg: CohortConfig) -> Patient:
    """The same observable patient with fresh hidden biology.

    Used to measure the ceiling of any predictor: the spread of outcomes over the
    hidden draws is what no image or covariate can explain.
    """
    from dataclasses import replace

    alpha = cfg.therapy.alpha_mean * float(rng.lognormal(0.0, cfg.difficulty.radiosensitivity_cv))
    alpha *= (1.05 if patient.sex == "F" else 1.0) * float(np.exp(-0.005 * (patient.age - 60.0)))
    return replace(patient, alpha=alpha,
                   rho_post_factor=float(rng.lognormal(0.0, cfg.difficulty.proliferation_jitter)),
                   pseudo_u=float(rng.uniform()), necrosis_u=float(rng.uniform()))
