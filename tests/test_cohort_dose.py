"""Dose maps (cohort/dose.py) and radiobiology (cohort/radiobiology.py): docs/references.md 5."""

from __future__ import annotations

import numpy as np
import pytest

from flame_private.cohort import dose as dosimetry
from flame_private.cohort import radiobiology as rb
from flame_private.config import MODALITIES

PARTICLES = ("proton", "carbon")


@pytest.fixture(scope="module")
def target(anatomy24):
    """A 10 mm-radius gross tumour near the centre of the brain, its PTV (15 mm CTV margin) and distance map."""
    a = anatomy24
    centre = np.argwhere(a.tissue).mean(0).round()
    rel_mm = (np.indices(a.shape).transpose(1, 2, 3, 0) - centre) * np.asarray(a.spacing)
    gross = (np.linalg.norm(rel_mm, axis=-1) <= 10.0) & a.brain
    ptv, sdist = dosimetry.target_volume(gross, a.brain, a.spacing, margin_mm=15.0)
    return gross, ptv, sdist


@pytest.fixture(scope="module")
def dose_maps(anatomy24, target):
    _, ptv, sdist = target
    return {m: dosimetry.dose_fraction_map(m, ptv, sdist, anatomy24.spacing, patient_angle=0.0) for m in MODALITIES}


# --------------------------------------------------------------------------- target volume


def test_ptv_contains_the_gross_tumour_plus_margin(anatomy24, target) -> None:
    gross, ptv, sdist = target
    assert np.all(ptv[gross])
    assert ptv.sum() > gross.sum()
    assert np.all(sdist[ptv] < 0) and np.all(sdist[~ptv] > 0)


# --------------------------------------------------------------------------- dose maps


@pytest.mark.parametrize("angle", [0.0, 1.3, 4.0])
@pytest.mark.parametrize("modality", MODALITIES)
def test_every_modality_covers_the_ptv_at_95_percent_of_prescription(anatomy24, target, modality: str,
                                                                      angle: float) -> None:
    _, ptv, sdist = target
    frac = dosimetry.dose_fraction_map(modality, ptv, sdist, anatomy24.spacing, patient_angle=angle)
    assert frac.shape == ptv.shape and np.isfinite(frac).all()
    assert frac[ptv].min() >= 0.95


def test_dose_falls_off_away_from_the_target(anatomy24, target, dose_maps) -> None:
    _, ptv, sdist = target
    far = (sdist > 40.0) & anatomy24.brain
    assert far.any()
    for m, frac in dose_maps.items():
        assert frac[far].mean() < 0.5 * frac[ptv].mean(), m


@pytest.mark.parametrize("particle", PARTICLES)
def test_photons_give_more_mean_dose_to_brain_outside_the_ptv(anatomy24, target, dose_maps, particle: str) -> None:
    """Photons' low-dose bath: mean dose to uninvolved brain is higher than for protons or carbon ions."""
    _, ptv, _ = target
    photon = dosimetry.mean_brain_dose(dose_maps["photon"], anatomy24.brain, ptv, 60.0)
    other = dosimetry.mean_brain_dose(dose_maps[particle], anatomy24.brain, ptv, 60.0)
    assert photon > other > 0


@pytest.mark.parametrize("angle", [0.0, 1.3, 4.0])
def test_photons_bathe_more_brain_in_low_dose(anatomy24, target, angle: float) -> None:
    """Volume of brain outside the PTV at >= 10 % of prescription: photons at least twice the particles'."""
    _, ptv, sdist = target
    outside = anatomy24.brain & ~ptv
    v10 = {m: float((dosimetry.dose_fraction_map(m, ptv, sdist, anatomy24.spacing, angle)[outside] >= 0.1).mean())
           for m in MODALITIES}
    assert v10["photon"] >= 2 * v10["proton"] and v10["photon"] >= 2 * v10["carbon"], v10


def test_carbon_has_the_sharpest_penumbra_then_protons(anatomy24, target, dose_maps) -> None:
    """Mean dose in the first 10 mm of brain outside the PTV: carbon < proton < photon."""
    _, ptv, sdist = target
    shell = (sdist > 0) & (sdist <= 10.0) & anatomy24.brain
    assert shell.any()
    near = {m: float(f[shell].mean()) for m, f in dose_maps.items()}
    assert near["carbon"] < near["proton"] < near["photon"], near


def test_mean_brain_dose_scales_with_prescription(anatomy24, target, dose_maps) -> None:
    _, ptv, _ = target
    d60 = dosimetry.mean_brain_dose(dose_maps["photon"], anatomy24.brain, ptv, 60.0)
    d30 = dosimetry.mean_brain_dose(dose_maps["photon"], anatomy24.brain, ptv, 30.0)
    assert d60 == pytest.approx(2 * d30)


@pytest.mark.parametrize("particle", PARTICLES)
def test_particles_have_no_exit_dose_downstream_of_the_target(anatomy24, target, dose_maps, particle: str) -> None:
    """Along the first beam (angle 0: enters from +x, travels to -x), far behind the target."""
    a = anatomy24
    _, ptv, _ = target
    coords = np.indices(a.shape).transpose(1, 2, 3, 0) * np.asarray(a.spacing)
    rel = coords - coords[ptv].mean(0)
    back = rel[ptv][:, 0].min()
    on_axis = np.linalg.norm(rel[..., 1:], axis=-1) < 6.0
    downstream = (rel[..., 0] < back - 15.0) & on_axis & a.brain
    upstream = (rel[..., 0] > rel[ptv][:, 0].max() + 15.0) & on_axis & a.brain
    assert downstream.any() and upstream.any()
    photon, other = dose_maps["photon"], dose_maps[particle]
    assert other[downstream].max() < photon[downstream].min()
    assert other[downstream].mean() < 0.1  # at most a fragmentation tail
    assert other[upstream].mean() > other[downstream].mean()  # the entrance channel is there


def test_unknown_modality_is_refused(anatomy24, target) -> None:
    _, ptv, sdist = target
    with pytest.raises(ValueError, match="unknown modality"):
        dosimetry.dose_fraction_map("neutron", ptv, sdist, anatomy24.spacing)


# --------------------------------------------------------------------------- LQ, OER


def test_lq_survival_is_the_linear_quadratic_formula() -> None:
    d = np.array([0.0, 1.0, 2.0, 5.0], np.float32)
    np.testing.assert_allclose(rb.lq_survival(d, 0.1, 0.01), np.exp(-(0.1 * d + 0.01 * d * d)), rtol=1e-6)


def test_lq_survival_decreases_with_dose() -> None:
    d = np.linspace(0.0, 10.0, 41, dtype=np.float32)
    s = rb.lq_survival(d, 0.05, 0.005)
    assert s[0] == pytest.approx(1.0)
    assert np.all(np.diff(s) < 0)


def test_hypoxia_protects_cells_by_the_oxygen_enhancement_ratio() -> None:
    d = np.float32(2.0)
    oxic = rb.lq_survival(d, 0.1, 0.01, rb.oer(np.float32(0.0), 2.8))
    hypoxic = rb.lq_survival(d, 0.1, 0.01, rb.oer(np.float32(1.0), 2.8))
    assert hypoxic > oxic
    assert hypoxic == pytest.approx(rb.lq_survival(d / 2.8, 0.1, 0.01), rel=1e-6)


@pytest.mark.parametrize("dose_gy", [1.0, 2.0, 4.0])
def test_carbon_kills_more_hypoxic_cells_than_photons_for_the_same_dose(dose_gy: float) -> None:
    from flame_private.config import TherapyParams

    th = TherapyParams()
    assert th.oer_carbon < th.oer_low_let
    h = np.array([0.0, 0.5, 1.0], np.float32)
    photon = rb.lq_survival(np.float32(dose_gy), 0.1, 0.01, rb.oer(h, th.oer_low_let))
    carbon = rb.lq_survival(np.float32(dose_gy), 0.1, 0.01, rb.oer(h, th.oer_carbon))
    assert carbon[0] == pytest.approx(photon[0])  # well oxygenated: same Gy(RBE), same kill
    assert np.all(carbon[1:] < photon[1:])


def test_oer_is_one_in_oxic_tissue_and_oer_max_at_full_hypoxia() -> None:
    np.testing.assert_allclose(rb.oer(np.array([0.0, 1.0], np.float32), 2.5), [1.0, 2.5])


def test_hypoxia_is_a_fraction_and_absent_without_tumour() -> None:
    c = np.zeros((16, 16, 16), np.float32)
    c[4:12, 4:12, 4:12] = 0.95
    h = rb.hypoxia(c, None, (2.0, 2.0, 2.0))
    assert h.min() >= 0 and h.max() <= 1
    assert h[8, 8, 8] > 0.5  # deep in dense tumour
    assert np.all(h[c <= 0.05] == 0)


# --------------------------------------------------------------------------- schedule, EQD2, necrosis


def test_fractions_are_given_five_days_a_week() -> None:
    days = rb.fraction_days(30)
    assert len(days) == 30 and days[-1] == 39
    assert all(d % 7 < 5 for d in days)


def test_eqd2_of_two_gy_fractions_is_the_physical_dose() -> None:
    assert float(rb.eqd2(np.float64(60.0), np.float64(2.0), 2.0)) == pytest.approx(60.0)
    assert float(rb.eqd2(np.float64(60.0), np.float64(3.0), 2.0)) > 60.0


@pytest.mark.parametrize(("eqd2_gy", "p"), [(72.0, 0.05), (90.0, 0.10)])
def test_radionecrosis_probability_passes_through_the_quantec_points(eqd2_gy: float, p: float) -> None:
    assert rb.radionecrosis_probability(eqd2_gy) == pytest.approx(p, rel=1e-9)


def test_radionecrosis_probability_rises_with_dose() -> None:
    ps = [rb.radionecrosis_probability(d) for d in (20.0, 50.0, 60.0, 72.0, 90.0, 120.0)]
    assert all(0 < p < 1 for p in ps)
    assert ps == sorted(ps) and len(set(ps)) == len(ps)
