"""One patient's course (cohort/simulate.py, cohort/patient.py): invariants of growth, surgery and treatment."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pytest

from flame_private.cohort import dose as dosimetry
from flame_private.cohort import radiobiology as rb
from flame_private.cohort import simulate as sim
from flame_private.cohort.imaging import Compartments
from flame_private.cohort.patient import Patient, choose_resection, choose_treatment, depth_map, draw_patient
from flame_private.config import MODALITIES, CohortConfig

SITE_A_PATIENTS = range(4)


@pytest.fixture(scope="module")
def depth(anatomy24) -> np.ndarray:
    return depth_map(anatomy24)


@pytest.fixture(scope="module")
def draw(anatomy24, depth, cohort_cfg) -> Callable[..., tuple[Patient, str]]:
    """The patient of the test cohort at (site, index), drawn as the writer draws it, and its resection."""

    def _draw(patient_index: int, cfg: CohortConfig = cohort_cfg, site_index: int = 0) -> tuple[Patient, str]:
        site = cfg.sites[site_index]
        rng = np.random.default_rng([cfg.seed, site_index, patient_index])
        patient = draw_patient(rng, f"{site.site_id}-{patient_index:03d}", anatomy24, depth, site, cfg)
        return patient, choose_resection(patient, site)

    return _draw


@pytest.fixture(scope="module")
def preop(anatomy24, draw, cohort_cfg) -> dict[int, tuple[Patient, sim.TumourState]]:
    """Site-a patients grown to diagnosis (surgery is chosen by each test)."""
    out = {}
    for i in SITE_A_PATIENTS:
        patient, _ = draw(i)
        out[i] = (patient, sim.grow_to_diagnosis(patient, anatomy24, cohort_cfg)[0])
    return out


@pytest.fixture(scope="module")
def hypoxic(anatomy24, preop) -> tuple[Patient, sim.TumourState]:
    """The site-a patient with the most hypoxic tumour at diagnosis (left intact: biopsy only)."""
    def hypoxic_voxels(item: tuple[Patient, sim.TumourState]) -> int:
        state = item[1]
        return int((rb.hypoxia(state.cellularity, state.necrosis, anatomy24.spacing) > 0.5).sum())

    best = max(preop.values(), key=hypoxic_voxels)
    assert hypoxic_voxels(best) > 0, "no test-cohort tumour is hypoxic at diagnosis"
    return best


@pytest.fixture(scope="module")
def resected(anatomy24, preop, cohort_cfg) -> tuple[Patient, sim.TumourState]:
    """Site-a patient 0 after a gross-total resection."""
    patient, state = preop[0]
    post = sim.resect(state, "gross_total", patient, anatomy24, cohort_cfg)
    assert post.cavity.any()
    return patient, post


def _plan(patient: Patient, resection: str, post: sim.TumourState, anatomy, cfg: CohortConfig, modality: str):
    """Baseline scan, PTV and dose map, as simulate_course makes them."""
    baseline = sim.simulate_course(patient, resection, anatomy, cfg, modalities=()).baseline
    gross = (baseline.seg > 0) | post.cavity
    ptv, sdist = dosimetry.target_volume(gross, anatomy.brain, anatomy.spacing, cfg.therapy.ctv_margin_mm)
    frac = dosimetry.dose_fraction_map(modality, ptv, sdist, anatomy.spacing, patient.beam_angle)
    return baseline, ptv, frac


@pytest.fixture
def label_states(monkeypatch: pytest.MonkeyPatch) -> list[tuple[sim.TumourState, np.ndarray]]:
    """Record the tumour state and label map behind every label map the simulator draws."""
    seen: list[tuple[sim.TumourState, np.ndarray]] = []
    real = sim.labels_from

    def spy(state, *args, **kwargs):
        seg, comp = real(state, *args, **kwargs)
        seen.append((state.copy(), seg))
        return seg, comp

    monkeypatch.setattr(sim, "labels_from", spy)
    return seen


# --------------------------------------------------------------------------- patients


def test_patient_draws_depend_only_on_the_seed(anatomy24, depth, cohort_cfg) -> None:
    site = cohort_cfg.sites[0]
    a = draw_patient(np.random.default_rng([7, 0, 1]), "p", anatomy24, depth, site, cohort_cfg)
    b = draw_patient(np.random.default_rng([7, 0, 1]), "p", anatomy24, depth, site, cohort_cfg)
    c = draw_patient(np.random.default_rng([8, 0, 1]), "p", anatomy24, depth, site, cohort_cfg)
    assert a == b
    assert a != c


def test_tumours_are_seeded_in_white_matter_tissue(anatomy24, draw) -> None:
    for i in range(4):
        patient, _ = draw(i)
        assert anatomy24.tissue[patient.seed_voxel] and anatomy24.wm[patient.seed_voxel] > 0.5


@pytest.mark.parametrize("site_index", [0, 1, 2])
def test_treatment_is_one_the_site_offers(anatomy24, draw, cohort_cfg, site_index: int) -> None:
    site = cohort_cfg.sites[site_index]
    offered = {m for m, share in site.treatment_mix.items() if share > 0}
    for i in range(4):
        patient, _ = draw(i, site_index=site_index)
        for necrotic_ml in (0.0, 30.0):
            assert choose_treatment(patient, site, necrotic_ml, 20.0) in offered


# --------------------------------------------------------------------------- growth and surgery


def test_tumour_is_only_in_brain_tissue_at_diagnosis(anatomy24, preop, cohort_cfg) -> None:
    tissue = anatomy24.tissue
    for patient, state in preop.values():
        assert state.c.max() > cohort_cfg.tumour.enhancing_threshold
        assert np.all(state.c[~tissue] == 0.0)
        assert np.all(state.necrosis[~tissue] == 0.0)
        assert np.all((state.c >= 0) & (state.c + state.necrosis <= 1 + 1e-6))


def test_diagnosis_happens_at_the_detection_volume(anatomy24, preop, cohort_cfg) -> None:
    thr = cohort_cfg.tumour
    for patient, state in preop.values():
        abnormal = (state.c >= thr.flair_threshold) | (state.necrosis >= thr.necrosis_threshold)
        assert abnormal.sum() * anatomy24.voxel_ml >= patient.detection_flair_ml


@pytest.mark.parametrize("resection", ["gross_total", "subtotal"])
def test_surgery_leaves_the_cavity_empty_of_tumour_cells(anatomy24, preop, cohort_cfg, resection: str) -> None:
    for patient, state in preop.values():
        post = sim.resect(state, resection, patient, anatomy24, cohort_cfg)
        assert post.cavity.any()
        assert np.all(post.c[post.cavity] == 0.0)
        assert np.all(post.necrosis[post.cavity] == 0.0)
        assert np.all(post.dead[post.cavity] == 0.0)
        assert np.all(post.c[~anatomy24.tissue] == 0.0)
        # surgery removes tumour and never adds any
        assert np.all(post.c <= state.c)
        assert post.c.sum() < state.c.sum()


def test_gross_total_resection_removes_more_than_subtotal(anatomy24, preop, cohort_cfg) -> None:
    for patient, state in preop.values():
        gtr = sim.resect(state, "gross_total", patient, anatomy24, cohort_cfg)
        stl = sim.resect(state, "subtotal", patient, anatomy24, cohort_cfg)
        assert gtr.cavity.sum() > stl.cavity.sum()
        assert gtr.c.sum() < stl.c.sum()


def test_biopsy_leaves_the_tumour_in_place(anatomy24, preop, cohort_cfg) -> None:
    patient, state = preop[0]
    post = sim.resect(state, "biopsy", patient, anatomy24, cohort_cfg)
    assert not post.cavity.any()
    np.testing.assert_array_equal(post.c, state.c)


def test_surgery_does_not_modify_the_preoperative_state(anatomy24, preop, cohort_cfg) -> None:
    patient, state = preop[0]
    before = state.copy()
    sim.resect(state, "gross_total", patient, anatomy24, cohort_cfg)
    np.testing.assert_array_equal(state.c, before.c)
    assert not state.cavity.any()


# --------------------------------------------------------------------------- treatment


@pytest.mark.parametrize("modality", MODALITIES)
def test_tumour_stays_in_tissue_and_out_of_the_cavity_through_treatment(
    anatomy24, resected, cohort_cfg, label_states, modality: str
) -> None:
    patient, post = resected
    baseline, ptv, frac = _plan(patient, "gross_total", post, anatomy24, cohort_cfg, modality)
    label_states.clear()
    sim.treat_and_follow(patient, post, anatomy24, cohort_cfg, modality, frac, ptv, baseline)
    assert len(label_states) >= len(sim.FOLLOWUP_NAMES)
    for s, seg in label_states:
        assert np.all(s.c[~anatomy24.tissue] == 0.0)
        assert np.all(s.dead[~anatomy24.tissue] == 0.0)
        assert np.all(s.c[post.cavity] == 0.0)
        assert np.all(s.necrosis[post.cavity] == 0.0)
        np.testing.assert_array_equal(s.cavity, post.cavity)
        assert np.all(seg[post.cavity] == 0)


def test_cavity_voxels_are_background_even_with_treatment_effects(anatomy24, resected, cohort_cfg) -> None:
    patient, post = resected
    # force the hidden draws: pseudoprogression and radionecrosis both happen
    forced = dataclasses.replace(patient, pseudo_u=0.01, necrosis_u=0.0)
    baseline, ptv, frac = _plan(forced, "gross_total", post, anatomy24, cohort_cfg, "photon")
    assert np.all(baseline.seg[post.cavity] == 0)
    outcome = sim.treat_and_follow(forced, post, anatomy24, cohort_cfg, "photon", frac, ptv, baseline)
    assert outcome.radionecrosis
    for scan in outcome.scans:
        assert np.all(scan.seg[post.cavity] == 0), scan.name
        assert np.all(scan.compartments.enhancing[post.cavity] == 0), scan.name
        assert np.all(scan.compartments.cavity[post.cavity] == 1), scan.name


def _ball(anatomy, radius_mm: float) -> np.ndarray:
    """A ball of tissue around the centre of the brain's tissue."""
    centre = np.argwhere(anatomy.tissue).mean(0).round()
    rel = (np.indices(anatomy.shape).transpose(1, 2, 3, 0) - centre) * np.asarray(anatomy.spacing)
    return (np.linalg.norm(rel, axis=-1) <= radius_mm) & anatomy.tissue


def test_labels_from_keeps_the_cavity_background_whatever_the_effects(anatomy24, cohort_cfg) -> None:
    tissue = anatomy24.tissue
    cavity = _ball(anatomy24, 12.0)
    assert cavity.any()
    c = np.where(tissue & ~cavity, 0.9, 0.0).astype(np.float32)
    necrosis = np.where(_ball(anatomy24, 25.0) & ~cavity, 0.8, 0.0).astype(np.float32)
    state = sim.TumourState(c=c, necrosis=necrosis, cavity=cavity, dead=np.zeros_like(c))
    seg, comp = sim.labels_from(state, cohort_cfg, anatomy24, 10.0,
                                effect=tissue.astype(np.float32), rn_core=tissue.copy())
    assert set(np.unique(seg)) <= {0, 1, 2, 3}
    assert np.all(seg[cavity] == 0)
    assert isinstance(comp, Compartments)
    for part in (comp.oedema, comp.enhancing, comp.necrosis):
        assert np.all(part[cavity] == 0)
    total = comp.oedema + comp.enhancing + comp.necrosis + comp.cavity
    assert total.max() <= 1 + 1e-6


def test_label_thresholds_order_necrosis_over_enhancing_over_oedema(anatomy24, cohort_cfg) -> None:
    t = cohort_cfg.tumour
    ball = _ball(anatomy24, 30.0)
    idx = np.argwhere(ball)
    voxels = [tuple(idx[0]), tuple(idx[len(idx) // 2]), tuple(idx[-1])]  # far apart within the ball
    c = np.zeros(anatomy24.shape, np.float32)
    necrosis = np.zeros_like(c)
    c[voxels[0]] = t.flair_threshold
    c[voxels[1]] = t.enhancing_threshold
    c[voxels[2]] = 0.95
    necrosis[voxels[2]] = t.necrosis_threshold
    state = sim.TumourState(c=c, necrosis=necrosis, cavity=np.zeros(c.shape, bool), dead=np.zeros_like(c))
    seg, _ = sim.labels_from(state, cohort_cfg, anatomy24, 1e-3)
    assert [int(seg[v]) for v in voxels] == [2, 3, 1]
    assert (seg > 0).sum() == 3


def test_higher_prescription_leaves_fewer_viable_cells(anatomy24, draw, make_cohort_cfg) -> None:
    """Cell kill alone: lymphopenia, which rises with the brain dose and speeds regrowth, is switched off."""
    for index in SITE_A_PATIENTS:
        burdens = []
        for gy in (40.0, 60.0, 80.0):
            cfg = make_cohort_cfg(therapy={"prescription_gy": gy, "lymphopenia_proliferation_gain": 0.0})
            patient, resection = draw(index, cfg)
            course = sim.simulate_course(patient, resection, anatomy24, cfg, modalities=("photon",))
            burdens.append(course.outcomes["photon"].viable_burden_ml)
        assert burdens[0] > burdens[1] > burdens[2] > 0, (index, burdens)


def test_without_radiotherapy_dose_the_tumour_keeps_more_cells(anatomy24, hypoxic, cohort_cfg) -> None:
    """Sanity of the dose lever: a zero dose map leaves more viable tumour than the plan."""
    patient, state = hypoxic
    baseline, ptv, frac = _plan(patient, "biopsy", state, anatomy24, cohort_cfg, "photon")
    treated = sim.treat_and_follow(patient, state, anatomy24, cohort_cfg, "photon", frac, ptv, baseline)
    sham = sim.treat_and_follow(patient, state, anatomy24, cohort_cfg, "photon", np.zeros_like(frac), ptv,
                                baseline)
    assert sham.viable_burden_ml > treated.viable_burden_ml


def test_carbon_kills_more_hypoxic_tumour_than_photons_for_the_same_dose_map(anatomy24, hypoxic,
                                                                            cohort_cfg) -> None:
    """Same Gy(RBE) everywhere, so only the OER differs: the hypoxic tumour responds better to carbon."""
    patient, state = hypoxic
    baseline, ptv, frac = _plan(patient, "biopsy", state, anatomy24, cohort_cfg, "photon")
    burden = {m: sim.treat_and_follow(patient, state, anatomy24, cohort_cfg, m, frac, ptv,
                                      baseline).viable_burden_ml for m in ("photon", "carbon")}
    assert burden["carbon"] < burden["photon"]


def test_lymphopenia_follows_the_brain_dose_and_the_randomised_trial() -> None:
    """Rates of the proton/photon trial at this simulator's mean brain doses, for 44 % women."""
    def cohort_rate(dose: float) -> float:
        return 0.56 * rb.lymphopenia_probability(dose, False) + 0.44 * rb.lymphopenia_probability(dose, True)

    assert cohort_rate(23.0) == pytest.approx(0.39, abs=0.01)
    assert cohort_rate(8.0) == pytest.approx(0.14, abs=0.01)
    assert rb.lymphopenia_probability(3.0, False) < rb.lymphopenia_probability(8.0, False) < \
        rb.lymphopenia_probability(23.0, False) < rb.lymphopenia_probability(23.0, True)


def test_a_lymphopenic_patient_regrows_faster_after_treatment(anatomy24, hypoxic, cohort_cfg) -> None:
    patient, state = hypoxic
    baseline, ptv, frac = _plan(patient, "biopsy", state, anatomy24, cohort_cfg, "photon")
    burden = {}
    for u in (0.0, 1.0):  # u below every probability: lymphopenic; 1: never
        p = dataclasses.replace(patient, lymphopenia_u=u)
        o = sim.treat_and_follow(p, state, anatomy24, cohort_cfg, "photon", frac, ptv, baseline)
        assert o.lymphopenia == (u == 0.0)
        burden[u] = o.viable_burden_ml
    assert burden[0.0] > burden[1.0]


def test_a_poorly_perfused_tumour_is_more_hypoxic_and_gains_more_from_carbon(anatomy24, hypoxic,
                                                                             cohort_cfg) -> None:
    """The same tumour and dose map; only the perfusion differs: carbon's edge grows with hypoxia."""
    patient, state = hypoxic
    baseline, ptv, frac = _plan(patient, "biopsy", state, anatomy24, cohort_cfg, "photon")
    lo, hi = cohort_cfg.tumour.hypoxia_shift_range
    shares, gain = {}, {}
    for shift in (lo, hi):
        p = dataclasses.replace(patient, hypoxia_shift=shift, lymphopenia_u=1.0)
        h = rb.hypoxia(state.cellularity, state.necrosis, anatomy24.spacing,
                       threshold=rb.HYPOXIA_THRESHOLD + shift)
        shares[shift] = float((h * state.c).sum() / state.c.sum())
        burden = {m: sim.treat_and_follow(p, state, anatomy24, cohort_cfg, m, frac, ptv, baseline).viable_burden_ml
                  for m in ("photon", "carbon")}
        gain[shift] = burden["photon"] / burden["carbon"]
    assert shares[lo] > shares[hi]
    assert gain[lo] > gain[hi] > 1.0


def test_counterfactual_courses_share_the_baseline_and_the_schedule(anatomy24, hypoxic, cohort_cfg) -> None:
    patient, _ = hypoxic
    course = sim.simulate_course(patient, "biopsy", anatomy24, cohort_cfg)
    assert set(course.outcomes) == set(MODALITIES)
    days = {m: [s.day for s in o.scans] for m, o in course.outcomes.items()}
    assert len({tuple(d) for d in days.values()}) == 1
    assert [s.name for s in course.outcomes["photon"].scans] == list(sim.FOLLOWUP_NAMES)
    d = days["photon"]
    assert 0 < d[0] < d[1] < d[2]
    for o in course.outcomes.values():
        assert o.responder == (o.rano != "PD")
        assert not o.pseudoprogression or o.rano == "SD"
        assert o.mean_brain_dose_gy > 0
    doses = {m: o.mean_brain_dose_gy for m, o in course.outcomes.items()}
    assert doses["photon"] > doses["proton"] and doses["photon"] > doses["carbon"]


def test_a_course_is_a_pure_function_of_the_patient(anatomy24, draw, cohort_cfg) -> None:
    patient, resection = draw(0)
    a = sim.simulate_course(patient, resection, anatomy24, cohort_cfg, modalities=("proton",))
    b = sim.simulate_course(patient, resection, anatomy24, cohort_cfg, modalities=("proton",))
    for sa, sb in zip(a.outcomes["proton"].scans, b.outcomes["proton"].scans, strict=True):
        np.testing.assert_array_equal(sa.seg, sb.seg)
    assert a.outcomes["proton"].viable_burden_ml == b.outcomes["proton"].viable_burden_ml


def test_treatment_effect_labels_stay_inside_the_brain(anatomy24, draw, make_cohort_cfg) -> None:
    cfg = make_cohort_cfg(difficulty={"pseudoprogression_base": 1.0, "pseudoprogression_methylated": 1.0})
    outside = {}
    for index in SITE_A_PATIENTS:
        patient, _ = draw(index, cfg)
        course = sim.simulate_course(patient, "gross_total", anatomy24, cfg, modalities=("photon",))
        for scan in [course.baseline, *course.outcomes["photon"].scans]:
            n = int(((scan.seg > 0) & ~anatomy24.brain).sum())
            if n:
                outside[f"patient {index} {scan.name}"] = n
    assert not outside, f"labelled voxels outside the brain: {outside}"
