"""Fisher-KPP growth (cohort/growth.py): no-flux boundaries, mass conservation, stability, logistic reaction."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from flame_private.cohort.growth import (
    diffuse,
    diffusivity_map,
    kpp_step,
    logistic,
    prepare_diffusion,
    seed_density,
    stable_steps,
)

SPACING = (2.0, 2.0, 3.0)


def _box_tissue(shape: tuple[int, int, int] = (14, 14, 12)) -> np.ndarray:
    """A tissue region with a concave boundary: a box with a notch cut out of one side."""
    tissue = np.zeros(shape, bool)
    tissue[2:-2, 2:-2, 2:-2] = True
    tissue[6:9, 2:7, 4:8] = False  # notch
    return tissue


def _uniform_diffusion(tissue: np.ndarray, d_white: float = 0.8, d_grey: float = 0.1):
    rng = np.random.default_rng(0)
    wm = rng.uniform(0.3, 1.0, tissue.shape).astype(np.float32)
    gm = (1.0 - wm).astype(np.float32)
    return prepare_diffusion(diffusivity_map(gm, wm, tissue, d_white, d_grey), SPACING)


def _analytic_logistic(c0: float, rho: float, t: float) -> float:
    return c0 * np.exp(rho * t) / (1.0 - c0 + c0 * np.exp(rho * t))


# --------------------------------------------------------------------------- no flux, mass


def test_diffusivity_is_zero_outside_tissue() -> None:
    tissue = _box_tissue()
    d = diffusivity_map(np.full(tissue.shape, 0.5, np.float32), np.full(tissue.shape, 0.5, np.float32),
                        tissue, 1.0, 0.2)
    assert np.all(d[~tissue] == 0)
    assert np.all(d[tissue] > 0)


def test_pure_diffusion_conserves_total_mass() -> None:
    tissue = _box_tissue()
    diff = _uniform_diffusion(tissue)
    c = seed_density(tissue.shape, np.array([7, 7, 6]), SPACING, 4.0, tissue)
    mass0 = float(c.sum(dtype=np.float64))
    n, dt = stable_steps(200.0, diff, 5.0)
    for _ in range(n):
        c = kpp_step(c, diff, 0.0, dt)
    assert n > 10
    assert float(c.sum(dtype=np.float64)) == pytest.approx(mass0, rel=1e-5)
    # and it did spread: the peak went down
    assert c.max() < 0.5


def test_seed_next_to_the_tissue_boundary_never_leaks_out_of_tissue() -> None:
    tissue = _box_tissue()
    diff = _uniform_diffusion(tissue, d_white=1.5)
    # voxel (6, 7, 5) is tissue with the notch at (6, 6, 5) next to it, and the outside 4 voxels away
    seed = np.array([6, 7, 5])
    assert tissue[tuple(seed)] and not tissue[6, 6, 5]
    c = seed_density(tissue.shape, seed, SPACING, 3.0, tissue)
    n, dt = stable_steps(400.0, diff, 3.0)
    for _ in range(n):
        c = kpp_step(c, diff, 0.05, dt)
        assert np.all(c[~tissue] == 0.0)
    assert c[tissue].min() > 0  # it filled the tissue, and still nothing outside


def test_seed_density_is_zero_outside_tissue(anatomy24) -> None:
    tissue = anatomy24.tissue
    # a seed on the tissue surface: tissue voxel with a non-tissue face neighbour
    edge = tissue & ~np.pad(tissue, 1)[2:, 1:-1, 1:-1]
    seed = np.argwhere(edge)[0]
    c = seed_density(anatomy24.shape, seed, anatomy24.spacing, 8.0, tissue)
    assert c[tuple(seed)] > 0
    assert np.all(c[~tissue] == 0.0)


def test_growth_on_the_brain_template_stays_in_tissue(anatomy24) -> None:
    a = anatomy24
    tissue = a.tissue
    edge = tissue & ~np.pad(tissue, 1)[1:-1, 1:-1, 2:]  # tissue voxels whose +z neighbour is not tissue
    seed = np.argwhere(edge)[len(np.argwhere(edge)) // 2]
    diff = prepare_diffusion(diffusivity_map(a.gm, a.wm, tissue, 1.5, 0.2), a.spacing)
    c = seed_density(a.shape, seed, a.spacing, 6.0, tissue)
    mass0 = float(c.sum(dtype=np.float64))
    n, dt = stable_steps(300.0, diff, 3.0)
    for _ in range(n):
        c = kpp_step(c, diff, 0.0, dt)
    assert np.all(c[~tissue] == 0.0)
    assert float(c.sum(dtype=np.float64)) == pytest.approx(mass0, rel=1e-5)


def test_diffusion_flux_form_conserves_mass_for_any_field() -> None:
    tissue = _box_tissue()
    diff = _uniform_diffusion(tissue)
    rng = np.random.default_rng(1)
    c = np.where(tissue, rng.uniform(0, 1, tissue.shape), 0).astype(np.float32)
    out = diffuse(c, diff, diff.dt_max)
    assert float(out.sum(dtype=np.float64)) == pytest.approx(float(c.sum(dtype=np.float64)), rel=1e-6)
    assert np.all(out[~tissue] == 0.0)


# --------------------------------------------------------------------------- stability


def test_explicit_step_refuses_dt_above_the_stability_bound() -> None:
    diff = _uniform_diffusion(_box_tissue())
    c = np.zeros(_box_tissue().shape, np.float32)
    with pytest.raises(ValueError, match="stability"):
        kpp_step(c, diff, 0.02, diff.dt_max * 1.01)
    kpp_step(c, diff, 0.02, diff.dt_max)  # at the bound: accepted


@pytest.mark.parametrize("spacing", [(2.0, 2.0, 2.0), SPACING])
def test_stability_bound_is_within_the_textbook_limit(spacing: tuple[float, float, float]) -> None:
    """dt <= 1 / (2 D_max sum 1/h_i^2): dx^2 / (2 ndim D_max) on an isotropic grid (docs/references.md 4)."""
    tissue = _box_tissue()
    d_white = 1.2
    d = diffusivity_map(np.zeros(tissue.shape, np.float32), np.ones(tissue.shape, np.float32), tissue, d_white, 0.1)
    diff = prepare_diffusion(d, spacing)
    assert 0 < diff.dt_max <= 1.0 / (2 * d_white * sum(1.0 / h**2 for h in spacing))


def test_step_at_the_bound_obeys_the_maximum_principle() -> None:
    """A checkerboard (the fastest-growing unstable mode) stays within its initial range at dt_max."""
    tissue = np.ones((10, 10, 10), bool)
    diff = prepare_diffusion(diffusivity_map(np.zeros(tissue.shape, np.float32), np.ones(tissue.shape, np.float32),
                                             tissue, 1.5, 0.1), (1.0, 1.0, 1.0))
    c = (np.indices(tissue.shape).sum(0) % 2).astype(np.float32)
    for _ in range(50):
        c = diffuse(c, diff, diff.dt_max)
        assert c.min() >= -1e-6 and c.max() <= 1 + 1e-6


def test_stable_steps_cover_the_interval_within_both_limits() -> None:
    diff = _uniform_diffusion(_box_tissue())
    n, dt = stable_steps(37.0, diff, 2.5)
    assert n * dt == pytest.approx(37.0)
    assert dt <= min(diff.dt_max, 2.5) + 1e-12
    assert stable_steps(0.0, diff, 2.5) == (0, 0.0)


# --------------------------------------------------------------------------- reaction


@pytest.mark.parametrize("c0", [1e-3, 0.1, 0.5, 0.9])
def test_logistic_step_matches_the_analytic_solution(c0: float) -> None:
    rho, t = 0.05, 60.0
    one_step = float(logistic(np.array([c0], np.float32), rho, t)[0])
    assert one_step == pytest.approx(_analytic_logistic(c0, rho, t), rel=1e-5)
    ode = solve_ivp(lambda _t, y: rho * y * (1 - y), (0, t), [c0], rtol=1e-10, atol=1e-12).y[0, -1]
    assert one_step == pytest.approx(ode, rel=1e-4)


def test_logistic_steps_compose_to_the_same_solution() -> None:
    c = np.array([0.02], np.float32)
    for _ in range(30):
        c = logistic(c, 0.04, 2.0)
    assert float(c[0]) == pytest.approx(_analytic_logistic(0.02, 0.04, 60.0), rel=1e-4)


def test_logistic_keeps_zero_and_carrying_capacity_fixed() -> None:
    out = logistic(np.array([0.0, 1.0], np.float32), 0.1, 100.0)
    assert out[0] == 0.0
    assert out[1] == pytest.approx(1.0, abs=1e-6)


def test_uniform_density_in_a_closed_domain_follows_the_logistic_curve() -> None:
    """No gradients and no flux: the full KPP step reduces to the analytic logistic growth."""
    tissue = np.zeros((10, 10, 10), bool)
    tissue[1:-1, 1:-1, 1:-1] = True
    diff = _uniform_diffusion(tissue)
    c = np.where(tissue, 0.05, 0.0).astype(np.float32)
    n, dt = stable_steps(90.0, diff, 3.0)
    for _ in range(n):
        c = kpp_step(c, diff, 0.03, dt)
    np.testing.assert_allclose(c[tissue], _analytic_logistic(0.05, 0.03, 90.0), rtol=1e-4)
    assert np.all(c[~tissue] == 0.0)


def test_growth_is_monotone_in_rho() -> None:
    tissue = _box_tissue()
    diff = _uniform_diffusion(tissue)
    c0 = seed_density(tissue.shape, np.array([7, 10, 6]), SPACING, 3.0, tissue, peak=0.5)
    n, dt = stable_steps(120.0, diff, 3.0)
    finals = []
    for rho in (0.0, 0.01, 0.03, 0.08):
        c = c0
        for _ in range(n):
            c = kpp_step(c, diff, rho, dt)
        finals.append(c)
    for lo, hi in zip(finals, finals[1:]):
        assert np.all(hi >= lo - 1e-7), "a faster-proliferating tumour must be denser everywhere"
        assert hi.sum() > lo.sum()
