"""One patient's course: growth to diagnosis, surgery, chemoradiation, follow-up.

Orchestrates the pure physics in ``growth``, ``dose`` and ``radiobiology``.
The course is simulated once up to the post-operative baseline scan, then
branched once per modality from the same state and the same hidden draws, so
the counterfactual outcomes differ only by the treatment.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from flame_private.cohort import dose as dosimetry
from flame_private.cohort import radiobiology as rb
from flame_private.cohort.anatomy import Anatomy
from flame_private.cohort.growth import (
    Diffusion,
    diffusivity_map,
    kpp_step,
    prepare_diffusion,
    seed_density,
    stable_steps,
)
from flame_private.cohort.imaging import Compartments, smoothstep
from flame_private.cohort.patient import Patient
from flame_private.config import MODALITIES, CohortConfig
from flame_private.rano import RanoClass, confirmed_response, is_responder

MAX_PREOP_DAYS = 4000
MAX_STEP_DAYS = 3.0
NECROSIS_RATE = 0.03
"""Per day, at full hypoxia: how fast starved tumour dies into necrosis (modelling choice)."""
NECROSIS_HYPOXIA = 0.55
"""Smoothed density above which starved tumour dies: stricter than radiobiological hypoxia."""
HYPOXIA_REFRESH_DAYS = 6.0
FOLLOWUP_NAMES = ("reference", "evaluation", "confirmation")
"""Post-radiotherapy reference scan, first evaluation (response label), confirmation scan."""


@dataclass
class TumourState:
    """Everything that evolves: viable cells, dying cells, necrosis, resection cavity."""

    c: np.ndarray
    necrosis: np.ndarray
    cavity: np.ndarray
    dead: np.ndarray
    """Cells killed by treatment, still occupying space until cleared (imaging lags cell kill)."""

    def copy(self) -> TumourState:
        return TumourState(self.c.copy(), self.necrosis.copy(), self.cavity.copy(), self.dead.copy())

    @property
    def cellularity(self) -> np.ndarray:
        """What imaging sees: viable and not-yet-cleared dying cells."""
        return self.c + self.dead


@dataclass
class Scan:
    """Label map and compartments at one timepoint, on the simulation grid."""

    name: str
    day: int
    seg: np.ndarray
    compartments: Compartments
    enhancing_ml: float
    tumour_enhancing_ml: float
    """Enhancing volume from viable tumour alone (without treatment effects)."""


@dataclass
class Outcome:
    """The patient's course under one modality."""

    modality: str
    scans: list[Scan]
    rano: RanoClass
    responder: bool
    pseudoprogression: bool
    radionecrosis: bool
    mean_brain_dose_gy: float
    lymphopenia: bool
    """Grade 3+ radiation-induced lymphopenia: the residual tumour regrows faster after treatment."""
    viable_burden_ml: float
    """Viable tumour burden (density x mL) at the first evaluation: the physical outcome."""


@dataclass
class PatientCourse:
    patient: Patient
    resection: str
    baseline: Scan
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    preop_days: int = 0
    dose_fraction: dict[str, np.ndarray] = field(default_factory=dict)
    """Each modality's planned dose as a fraction of the prescription, on the simulation grid (the RT dose a
    site holds for the modality given)."""


def vasogenic_oedema(enhancing: np.ndarray, anatomy: Anatomy, extent_mm: float) -> np.ndarray:
    """Fluid leaking from the enhancing tumour's broken blood-brain barrier, in [0, 1].

    It decays with distance from the enhancing tumour and spreads in white
    matter, not grey matter or CSF; its reach grows with the enhancing volume
    (cube root) and vanishes with it, as after a response (modelling choice).
    """
    volume_ml = float(enhancing.sum() * anatomy.voxel_ml)
    if volume_ml <= 0:
        return np.zeros(enhancing.shape, dtype=np.float32)
    reach = max(extent_mm * min(1.0, (volume_ml / 20.0) ** (1.0 / 3.0)), 1e-3)
    out = np.zeros(enhancing.shape, dtype=np.float32)
    # exp(-d / reach) < 1e-3 beyond 7 reaches: compute the distance on that box only.
    box = rb.support_box(enhancing, tuple(int(np.ceil(7 * reach / s)) for s in anatomy.spacing))
    assert box is not None
    dist = ndimage.distance_transform_edt(~enhancing[box], sampling=anatomy.spacing)
    field = np.exp(-dist / reach) * smoothstep(anatomy.wm[box], 0.2, 0.6)
    out[box] = np.where(anatomy.tissue[box], field, 0.0)
    return out


def labels_from(state: TumourState, cfg: CohortConfig, anatomy: Anatomy, oedema_mm: float,
                effect: np.ndarray | None = None,
                rn_core: np.ndarray | None = None) -> tuple[np.ndarray, Compartments]:
    """Canonical labels and image compartments from density thresholds (docs/references.md 4)."""
    tum = cfg.tumour
    c, n = state.cellularity, state.necrosis
    necrotic = n >= tum.necrosis_threshold
    enhancing = (c >= tum.enhancing_threshold) & ~necrotic
    fluid = vasogenic_oedema(enhancing, anatomy, oedema_mm)
    oedema = ((c >= tum.flair_threshold) | (fluid >= 0.4)) & ~enhancing & ~necrotic
    enh_frac = smoothstep(c, tum.enhancing_threshold - 0.08, tum.enhancing_threshold + 0.04)
    infiltrated = np.maximum(smoothstep(c, tum.flair_threshold * 0.5, tum.flair_threshold * 1.6),
                             smoothstep(fluid, 0.25, 0.55))
    oed_frac = infiltrated * (1 - enh_frac)
    nec_frac = smoothstep(n, tum.necrosis_threshold - 0.15, tum.necrosis_threshold + 0.1)
    if effect is not None:
        # Treatment-related enhancement (pseudoprogression, radionecrosis rim) with surrounding oedema.
        eff_enh = effect >= 0.5
        enhancing |= eff_enh & ~necrotic & ~state.cavity
        halo = (ndimage.gaussian_filter(effect, 1.0) >= 0.15) & ~enhancing & ~necrotic & ~state.cavity
        halo &= anatomy.tissue
        oedema |= halo
        enh_frac = np.maximum(enh_frac, smoothstep(effect, 0.4, 0.6))
        oed_frac = np.maximum(oed_frac, halo * 0.8)
    if rn_core is not None:
        necrotic |= rn_core
        enhancing &= ~rn_core
        oedema &= ~rn_core
        nec_frac = np.maximum(nec_frac, rn_core.astype(np.float32))
    seg = np.zeros(c.shape, dtype=np.uint8)
    seg[oedema] = 2
    seg[enhancing] = 3
    seg[necrotic] = 1
    seg[state.cavity] = 0
    cav = state.cavity.astype(np.float32)
    keep = 1.0 - cav
    nec_frac = nec_frac * keep
    enh_frac = np.minimum(enh_frac, 1 - nec_frac) * keep
    oed_frac = np.minimum(oed_frac, 1 - nec_frac - enh_frac) * keep
    return seg, Compartments(oedema=oed_frac, enhancing=enh_frac, necrosis=nec_frac, cavity=cav)


def _scan(name: str, day: int, state: TumourState, anatomy: Anatomy, cfg: CohortConfig, oedema_mm: float,
          effect: np.ndarray | None = None, rn_core: np.ndarray | None = None) -> Scan:
    seg, comp = labels_from(state, cfg, anatomy, oedema_mm, effect, rn_core)
    tumour_only = seg if effect is None and rn_core is None else labels_from(state, cfg, anatomy, oedema_mm)[0]
    return Scan(name=name, day=day, seg=seg, compartments=comp,
                enhancing_ml=float((seg == 3).sum() * anatomy.voxel_ml),
                tumour_enhancing_ml=float((tumour_only == 3).sum() * anatomy.voxel_ml))


def _advance(state: TumourState, diff: Diffusion, rho: float, days: float, hyp: np.ndarray | None,
             clearance_days: float) -> None:
    """Grow for ``days``: necrosis forms where the tumour is hypoxic, dying cells are cleared."""
    n, dt = stable_steps(days, diff, MAX_STEP_DAYS)
    clear = np.float32(np.exp(-np.log(2.0) * dt / clearance_days))
    for _ in range(n):
        state.c = kpp_step(state.c, diff, rho, dt)
        if hyp is not None:
            dn = NECROSIS_RATE * dt * hyp * state.c
            state.necrosis = np.minimum(state.necrosis + dn, 1.0)
        if state.dead.any():
            state.dead = state.dead * clear
        state.c = np.clip(np.minimum(state.c, 1.0 - state.necrosis - state.dead), 0.0, 1.0)


def grow_to_diagnosis(patient: Patient, anatomy: Anatomy, cfg: CohortConfig) -> tuple[TumourState, int]:
    """Grow from a small seed until the FLAIR abnormality reaches the detection volume."""
    tissue = anatomy.tissue
    dmap = diffusivity_map(anatomy.gm, anatomy.wm, tissue, patient.d_white, patient.d_grey)
    diff = prepare_diffusion(dmap, anatomy.spacing)
    c = seed_density(anatomy.shape, np.asarray(patient.seed_voxel), anatomy.spacing, 3.0, tissue, peak=0.5)
    state = TumourState(c=c, necrosis=np.zeros_like(c), cavity=np.zeros(c.shape, dtype=bool), dead=np.zeros_like(c))
    thr = cfg.tumour.flair_threshold
    necrosis_threshold = NECROSIS_HYPOXIA + patient.hypoxia_shift
    day, hyp, last_h = 0.0, None, -1e9
    chunk = max(1.0, min(10.0, 2.0 / patient.rho))
    while day < MAX_PREOP_DAYS:
        if day - last_h >= HYPOXIA_REFRESH_DAYS:
            hyp, last_h = rb.hypoxia(state.c, None, anatomy.spacing, threshold=necrosis_threshold), day
        _advance(state, diff, patient.rho, chunk, hyp, cfg.therapy.dead_cell_clearance_days)
        day += chunk
        abnormal = (state.c >= thr) | (state.necrosis >= cfg.tumour.necrosis_threshold)
        if abnormal.sum() * anatomy.voxel_ml >= patient.detection_flair_ml:
            break
    return state, int(round(day))


def resect(state: TumourState, resection: str, patient: Patient, anatomy: Anatomy, cfg: CohortConfig) -> TumourState:
    """Surgery: remove enhancing tumour and necrosis (all, a fraction nearest the approach, or none)."""
    out = state.copy()
    if resection == "biopsy":
        return out
    bulk = (out.c >= cfg.tumour.enhancing_threshold) | (out.necrosis >= cfg.tumour.necrosis_threshold)
    if resection == "subtotal":
        idx = np.argwhere(bulk)
        if len(idx):
            # The surgeon approaches from the nearest cortex; the deep part next to eloquent structures stays.
            depth = ndimage.distance_transform_edt(anatomy.brain, sampling=anatomy.spacing)[bulk]
            order = np.argsort(depth, kind="stable")
            keep_n = int(round(len(idx) * (1.0 - patient.subtotal_fraction)))
            removed = np.zeros_like(bulk)
            sel = idx[order[: len(idx) - keep_n]]
            removed[tuple(sel.T)] = True
            bulk = removed
    else:
        # Gross-total: the enhancing rim plus the dense tissue touching it.
        rim = ndimage.binary_dilation(bulk, iterations=1) & (out.c >= cfg.tumour.enhancing_threshold * 0.5)
        bulk = bulk | rim
    out.cavity = out.cavity | bulk
    out.c = np.where(bulk, 0.0, out.c).astype(np.float32)
    out.necrosis = np.where(bulk, 0.0, out.necrosis).astype(np.float32)
    out.dead = np.where(bulk, 0.0, out.dead).astype(np.float32)
    return out


def _pseudoprogression_effect(dose_frac: np.ndarray, baseline: TumourState, anatomy: Anatomy,
                              cfg: CohortConfig, strength: float) -> np.ndarray:
    """Transient enhancement of the irradiated tumour bed (blood-brain-barrier injury)."""
    bed = baseline.cavity | (baseline.c >= cfg.tumour.enhancing_threshold) | (baseline.necrosis >= 0.5)
    if not bed.any():
        bed = baseline.c >= baseline.c.max() * 0.9
    dist = ndimage.distance_transform_edt(~bed, sampling=anatomy.spacing)
    reach = max(anatomy.spacing) * (1.0 + strength)
    ring = (dist > 0) & (dist <= reach) & (dose_frac >= 0.95) & anatomy.tissue
    return ring.astype(np.float32)


def _radionecrosis(dose_frac: np.ndarray, baseline: TumourState, anatomy: Anatomy,
                   cfg: CohortConfig) -> tuple[np.ndarray, np.ndarray]:
    """A necrotic focus in the most-irradiated normal brain, with an enhancing rim."""
    normal = anatomy.tissue & ~baseline.cavity & (baseline.c < cfg.tumour.flair_threshold)
    hot = np.where(normal, dose_frac, 0.0)
    centre = np.unravel_index(int(np.argmax(hot)), hot.shape)
    grids = np.meshgrid(*[(np.arange(n) - centre[i]) * anatomy.spacing[i] for i, n in enumerate(hot.shape)],
                        indexing="ij")
    r = np.sqrt(sum(g * g for g in grids))
    core = (r <= 5.0) & anatomy.tissue
    rim = (r > 5.0) & (r <= 8.0) & anatomy.tissue
    return rim.astype(np.float32), core


def _kill(state: TumourState, fraction: np.ndarray | np.float32) -> None:
    """Move a fraction of viable cells into the dying compartment."""
    killed = state.c * fraction
    state.c = (state.c - killed).astype(np.float32)
    state.dead = (state.dead + killed).astype(np.float32)


def treat_and_follow(patient: Patient, baseline_state: TumourState, anatomy: Anatomy, cfg: CohortConfig,
                     modality: str, dose_frac: np.ndarray, ptv: np.ndarray, baseline: Scan) -> Outcome:
    """Chemoradiation with one modality, then follow-up scans; returns the course."""
    th, diff_cfg = cfg.therapy, cfg.difficulty
    state = baseline_state.copy()
    tissue = anatomy.tissue & ~state.cavity
    dmap = diffusivity_map(anatomy.gm, anatomy.wm, tissue, patient.d_white, patient.d_grey)
    diff = prepare_diffusion(dmap, anatomy.spacing)
    d_fx = dose_frac * (th.prescription_gy / th.fractions)
    beta = patient.alpha / th.alpha_beta_tumour
    oer_max = th.oer_carbon if modality == "carbon" else th.oer_low_let

    rt_start = patient.rt_delay_days
    fx_days = [rt_start + d for d in rb.fraction_days(th.fractions)]
    rt_end = fx_days[-1]
    scan_days = list(np.cumsum([rt_end, *patient.followup_gaps])[1:].astype(int))
    scan_names = list(FOLLOWUP_NAMES)
    tmz_kill = th.tmz_daily_kill_methylated if patient.mgmt_methylated else th.tmz_daily_kill_unmethylated
    tmz_days = set(range(rt_start, rt_end + 1)) | set(rb.adjuvant_tmz_days(rt_end))
    fx_set = set(fx_days)
    repop_rho = max(patient.rho, math.log(2) / th.repopulation_doubling_days)

    pseudo_p = diff_cfg.pseudoprogression_methylated if patient.mgmt_methylated else diff_cfg.pseudoprogression_base
    pseudo = patient.pseudo_u < pseudo_p
    normal_brain = anatomy.brain & ~ptv
    brain_rbe = th.carbon_brain_rbe_factor if modality == "carbon" else 1.0
    max_eqd2 = float(rb.eqd2(dose_frac * th.prescription_gy * brain_rbe, d_fx * brain_rbe,
                             th.alpha_beta_brain)[anatomy.tissue].max())
    rn_p = rb.radionecrosis_probability(max_eqd2)
    radionecrosis = patient.necrosis_u < rn_p
    brain_dose = dosimetry.mean_brain_dose(dose_frac, normal_brain, ptv, th.prescription_gy)
    lymphopenia = patient.lymphopenia_u < rb.lymphopenia_probability(brain_dose, patient.sex == "F")
    rho_after = patient.rho * patient.rho_post_factor * (1.0 + th.lymphopenia_proliferation_gain * lymphopenia)
    effect = None
    if pseudo:
        strength = patient.pseudo_u / max(pseudo_p, 1e-9)
        effect = _pseudoprogression_effect(dose_frac, baseline_state, anatomy, cfg, strength=strength)
    rn_rim, rn_core = _radionecrosis(dose_frac, baseline_state, anatomy, cfg) if radionecrosis else (None, None)

    scans: list[Scan] = []
    oxygen_threshold = rb.HYPOXIA_THRESHOLD + patient.hypoxia_shift
    necrosis_threshold = NECROSIS_HYPOXIA + patient.hypoxia_shift
    hyp = rb.hypoxia(state.cellularity, state.necrosis, anatomy.spacing, threshold=oxygen_threshold)
    hyp_dense = rb.hypoxia(state.c, None, anatomy.spacing, threshold=necrosis_threshold)
    last_h = 0
    day = 0
    burden = 0.0
    for target_day, name in zip(scan_days, scan_names, strict=True):
        while day < target_day:
            if day - last_h >= HYPOXIA_REFRESH_DAYS:
                # Dying cells still compress vessels: reoxygenation follows their clearance.
                hyp, last_h = rb.hypoxia(state.cellularity, state.necrosis, anatomy.spacing,
                                         threshold=oxygen_threshold), day
                hyp_dense = rb.hypoxia(state.c, None, anatomy.spacing, threshold=necrosis_threshold)
            if day in fx_set:
                _kill(state, 1.0 - rb.lq_survival(d_fx, patient.alpha, beta, rb.oer(hyp, oer_max)))
            if day in tmz_days:
                # Adjuvant doses (150-200 mg/m2) are ~2.5x the daily concomitant dose (75 mg/m2).
                _kill(state, np.float32(tmz_kill * (2.5 if day > rt_end else 1.0)))
            if day < rt_start:
                rho = patient.rho
            elif day <= rt_end:
                rho = repop_rho if day - rt_start >= th.repopulation_kickoff_day else patient.rho
            else:
                rho = rho_after
            # Step to the next event (fraction, chemo day, or scan) at most.
            nxt = target_day
            for d in (fx_days, sorted(tmz_days)):
                later = [x for x in d if x > day]
                if later:
                    nxt = min(nxt, later[0])
            step = max(1, nxt - day)
            _advance(state, diff, rho, float(step), hyp_dense, th.dead_cell_clearance_days)
            day += step
        eff = None
        core = None
        if effect is not None and name == "evaluation":
            eff = effect
        if rn_rim is not None and target_day - rt_end >= 90:
            eff = rn_rim if eff is None else np.maximum(eff, rn_rim)
            core = rn_core
        scans.append(_scan(name, target_day, state, anatomy, cfg, patient.oedema_extent_mm, eff, core))
        if name == "evaluation":
            burden = float(state.c.sum() * anatomy.voxel_ml)

    ref, evaluation, confirm = (s.enhancing_ml for s in scans)
    rano, unconfirmed = confirmed_response(ref, evaluation, confirm)
    return Outcome(
        modality=modality,
        scans=scans,
        rano=rano,
        responder=is_responder(rano),
        pseudoprogression=bool(pseudo and unconfirmed),
        radionecrosis=radionecrosis,
        mean_brain_dose_gy=brain_dose,
        lymphopenia=lymphopenia,
        viable_burden_ml=burden,
    )


def simulate_course(patient: Patient, resection: str, anatomy: Anatomy, cfg: CohortConfig,
                    modalities: tuple[str, ...] = MODALITIES) -> PatientCourse:
    """Growth, surgery and every requested modality's course for one patient."""
    preop, preop_days = grow_to_diagnosis(patient, anatomy, cfg)
    post = resect(preop, resection, patient, anatomy, cfg)
    baseline = _scan("baseline", 0, post, anatomy, cfg, patient.oedema_extent_mm)
    course = PatientCourse(patient=patient, resection=resection, baseline=baseline, preop_days=preop_days)
    gross = (baseline.seg > 0) | post.cavity
    ptv, sdist = dosimetry.target_volume(gross, anatomy.brain, anatomy.spacing, cfg.therapy.ctv_margin_mm)
    for m in modalities:
        frac = dosimetry.dose_fraction_map(m, ptv, sdist, anatomy.spacing, patient.beam_angle)
        course.dose_fraction[m] = frac.astype(np.float32)
        course.outcomes[m] = treat_and_follow(patient, post, anatomy, cfg, m, frac, ptv, baseline)
    return course
