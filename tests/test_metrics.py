"""Metrics from sums: the same numbers locally and after encrypted aggregation."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, brier_score_loss, roc_auc_score

from flame_private.metrics import (
    EvolutionSums,
    ResponseSums,
    auc_from_histograms,
    roc_auc,
    treatment_comparison,
)


def test_exact_auc_matches_scikit_learn_with_ties() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.random(200) + 0.3 * y, 1)
    assert roc_auc(s, y) == pytest.approx(roc_auc_score(y, s))


def test_auc_is_nan_with_one_class() -> None:
    assert np.isnan(roc_auc(np.array([0.1, 0.2]), np.array([1, 1])))


def test_histogram_auc_is_within_one_bin_of_the_exact_auc() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 500).astype(bool)
    p = np.clip(rng.normal(0.5 + 0.15 * y, 0.2), 0, 1)
    sums = ResponseSums()
    sums.add(p, y)
    from flame_private.metrics import N_BINS

    assert sums.metrics()["auc"] == pytest.approx(roc_auc_score(y, p), abs=1.0 / N_BINS)


@pytest.mark.parametrize("centre, spread", [(0.5, 0.2), (0.75, 0.004)])
def test_histogram_auc_differs_from_the_exact_one_by_at_most_half_the_pairs_that_share_a_bin(centre, spread):
    """The documented bound, for spread-out scores and for scores crowded into a couple of bins."""
    from flame_private.metrics import N_BINS

    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 400).astype(bool)
    p = np.clip(rng.normal(centre + spread * y, spread), 0, 1)
    sums = ResponseSums()
    sums.add(p, y)
    bins = np.clip((p * N_BINS).astype(int), 0, N_BINS - 1)
    shared = np.mean(bins[y][:, None] == bins[~y][None, :])
    error = abs(sums.metrics()["auc"] - roc_auc_score(y, p))
    assert error <= 0.5 * shared + 1e-12
    if spread < 0.01:
        assert error > 0.01  # scores crowded into a couple of bins: the histogram AUC is not the exact one


@pytest.mark.parametrize("n", [131, 600])
@pytest.mark.parametrize("scores", ["logit sd 0.3", "logit sd 1.2", "0.60-0.87"])
def test_histogram_auc_is_within_one_hundredth_of_the_exact_auc_for_the_scores_models_give(n, scores):
    """Response models' probabilities: crowded (a logit spread of 0.3, or everyone scored 0.60-0.87) or spread out.

    Not for a handful of patients: with 12 responders and 5 non-responders one pair weighs 1/60 of the AUC,
    and a single pair sharing a bin moves it by 0.008."""
    rng = np.random.default_rng(n)
    for _ in range(20):
        y = rng.random(n) < 0.65
        if scores == "0.60-0.87":
            p = rng.uniform(0.60, 0.82, n) + 0.05 * y
        else:
            spread = float(scores.split()[-1])
            p = 1.0 / (1.0 + np.exp(-rng.normal(0.6 + 0.9 * spread * y, spread)))
        if y.all() or not y.any():
            continue
        sums = ResponseSums()
        sums.add(p, y)
        assert sums.metrics()["auc"] == pytest.approx(roc_auc(p, y), abs=0.01)


def test_consistent_histogram_leaves_exact_counts_alone_and_removes_negative_mass() -> None:
    from flame_private.metrics import consistent_histogram

    exact = np.array([0.0, 3.0, 0.0, 0.0, 5.0, 1.0])
    assert consistent_histogram(exact) == pytest.approx(exact)
    noisy = np.array([-2.0, 4.0, -1.5, 0.5, 5.0, -0.5])
    fixed = consistent_histogram(noisy)
    assert (fixed >= -1e-12).all()
    assert fixed.sum() == pytest.approx(np.maximum.accumulate(np.cumsum(noisy))[-1] - 0.0, abs=1.0)


def test_noisy_release_auc_is_unbiased_where_clipping_each_bin_pulls_it_towards_one_half() -> None:
    """Constrained inference on the cumulative counts, against the naive per-bin clip (the positive control)."""
    from flame_private.metrics import PATIENT_SENSITIVITY

    rng = np.random.default_rng(11)
    sd = 1.0 * PATIENT_SENSITIVITY["response"]
    consistent, clipped = [], []
    for _ in range(60):
        y = rng.random(600) < 0.65
        p = 1.0 / (1.0 + np.exp(-rng.normal(0.6 + 1.1 * y, 1.2)))
        exact = roc_auc(p, y)
        sums = ResponseSums()
        sums.add(p, y)
        noisy = sums.vector() + rng.normal(0.0, sd, sums.vector().size)
        consistent.append(ResponseSums.from_vector(noisy).metrics()["auc"] - exact)
        naive = ResponseSums.from_vector(noisy)
        clipped.append(auc_from_histograms(np.clip(naive.pos_hist, 0, None), np.clip(naive.neg_hist, 0, None)) - exact)
    assert abs(np.mean(consistent)) < 0.015
    assert np.mean(clipped) < -0.02  # the naive estimator's bias, which the consistent one removes


def test_response_metrics_match_scikit_learn() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 300)
    p = rng.random(300)
    sums = ResponseSums()
    sums.add(p, y)
    m = sums.metrics()
    assert m["brier"] == pytest.approx(brier_score_loss(y, p))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, p >= 0.5))
    assert m["n"] == 300


def test_summing_site_vectors_equals_pooling_the_patients() -> None:
    """What the encrypted aggregation relies on: metrics of the sum = metrics of the pooled data."""
    rng = np.random.default_rng(3)
    sites = [(rng.random(40), rng.integers(0, 2, 40)) for _ in range(3)]
    total = sum(ResponseSums.from_vector(_one(p, y).vector()).vector() for p, y in sites)
    pooled = _one(np.concatenate([p for p, _ in sites]), np.concatenate([y for _, y in sites]))
    assert ResponseSums.from_vector(total).metrics() == pytest.approx(pooled.metrics())


def _one(p: np.ndarray, y: np.ndarray) -> ResponseSums:
    s = ResponseSums()
    s.add(p, y)
    return s


def test_histogram_auc_of_separated_classes_is_one() -> None:
    pos, neg = np.zeros(10), np.zeros(10)
    pos[8], neg[2] = 5, 5
    assert auc_from_histograms(pos, neg) == 1.0


def test_dice_per_label_and_whole_tumour() -> None:
    target = np.zeros((1, 4, 4, 4), np.uint8)
    target[0, :2] = 2
    target[0, 0, 0] = 3
    pred = target.copy()
    pred[0, 1] = 0  # miss half the oedema
    sums = EvolutionSums()
    sums.add(pred, target, np.zeros_like(target), voxel_ml=1.0)
    m = sums.metrics()
    assert m["dice_enhancing"] == 1.0
    oedema_t, oedema_p = (target == 2).sum(), (pred == 2).sum()
    assert m["dice_oedema"] == pytest.approx(2 * oedema_p / (oedema_t + oedema_p))
    assert m["dice_whole_tumour"] == pytest.approx(2 * (pred > 0).sum() / ((pred > 0).sum() + (target > 0).sum()))
    assert np.isnan(m["dice_necrotic_core"])  # absent in both: undefined, not perfect


def test_each_patient_counts_once_whatever_its_number_of_follow_ups() -> None:
    perfect = np.full((4, 4, 4), 2, np.uint8)
    wrong = np.zeros((4, 4, 4), np.uint8)
    sums = EvolutionSums()
    sums.add_patient([(perfect, perfect, perfect)] * 3, 1.0)  # three perfect follow-ups
    sums.add_patient([(wrong, perfect, perfect)], 1.0)  # one failed follow-up
    assert sums.n == 2
    assert sums.metrics()["dice_oedema"] == pytest.approx(0.5)


def test_enhancing_volume_error_and_rano_agreement() -> None:
    base = np.zeros((1, 10, 10, 10), np.uint8)
    base[0, :2, :5] = 3  # 100 voxels enhancing = 100 mL at 1 mL voxels
    truth = base.copy()
    truth[0, 2:4, :5] = 3  # doubles: progression
    pred = base.copy()  # predicts no change: stable disease
    sums = EvolutionSums()
    sums.add(pred, truth, base, voxel_ml=1.0)
    m = sums.metrics()
    assert m["enhancing_volume_error_ml"] == pytest.approx(50.0)  # 100 mL, clipped at 50 mL
    assert m["rano_class_agreement"] == 0.0


def test_one_patient_moves_the_metric_vectors_by_at_most_the_stated_sensitivity() -> None:
    from flame_private.metrics import PATIENT_SENSITIVITY

    rng = np.random.default_rng(7)
    one = ResponseSums()
    one.add(np.array([0.7]), np.array([1]))
    assert np.linalg.norm(one.vector()) <= PATIENT_SENSITIVITY["response"] + 1e-12
    evo = EvolutionSums()
    evo.add_patient([(rng.integers(0, 4, (5, 5, 5)), rng.integers(0, 4, (5, 5, 5)), rng.integers(0, 4, (5, 5, 5)))
                     for _ in range(3)], 1.0)
    assert np.linalg.norm(evo.vector()) <= PATIENT_SENSITIVITY["evolution"] + 1e-12


@pytest.mark.slow  # about 8 s: many draws, to test the noise's scale
def test_dp_release_clips_each_patient_and_adds_calibrated_noise() -> None:
    from flame_private.metrics import dp_release

    big = [np.full(4, 10.0)] * 1000
    released = [dp_release(big, 4, 1.0, 2.0) for _ in range(2000)]
    mean = np.mean(released, axis=0)
    assert mean == pytest.approx(np.full(4, 1000 * 0.5), abs=0.5)  # each clipped to norm 1: 0.5 per entry
    assert np.std(np.array(released)[:, 0]) == pytest.approx(2.0, rel=0.15)


def test_evolution_sums_round_trip_through_a_vector() -> None:
    rng = np.random.default_rng(4)
    sums = EvolutionSums()
    sums.add(rng.integers(0, 4, (2, 6, 6, 6)), rng.integers(0, 4, (2, 6, 6, 6)), rng.integers(0, 4, (2, 6, 6, 6)), 0.1)
    assert EvolutionSums.from_vector(sums.vector()).metrics() == pytest.approx(sums.metrics(), nan_ok=True)


def test_treatment_comparison_scores_the_predicted_best_against_truth() -> None:
    truth = {
        "p1": {"photon": {"responder": False, "viable_burden_ml": 9.0},
               "proton": {"responder": False, "viable_burden_ml": 8.0},
               "carbon": {"responder": True, "viable_burden_ml": 3.0}},
        "p2": {"photon": {"responder": True, "viable_burden_ml": 1.0},
               "proton": {"responder": True, "viable_burden_ml": 2.0},
               "carbon": {"responder": True, "viable_burden_ml": 1.5}},
    }
    predicted = {"p1": {"photon": 0.2, "proton": 0.3, "carbon": 0.8},   # right
                 "p2": {"photon": 0.5, "proton": 0.9, "carbon": 0.4}}   # wrong: proton
    m = treatment_comparison(predicted, truth)
    assert m["best_modality_accuracy"] == 0.5
    assert m["regret_viable_burden_ml"] == pytest.approx(0.5)
    assert m["lost_response_rate"] == 0.0


def test_released_metrics_are_clamped_and_carry_the_spread_of_their_noise() -> None:
    from flame_private.metrics import released_metrics

    rng = np.random.default_rng(5)
    exact = ResponseSums()
    exact.add(rng.random(2000), rng.random(2000) < 0.6)
    quiet = released_metrics(ResponseSums, exact.vector(), noise_sd=0.01)
    assert quiet["auc"] == pytest.approx(exact.metrics()["auc"], abs=1e-3)
    assert 0 < quiet["auc_dp_sd"] < 0.01 and "auc_status" not in quiet
    skewed = exact.vector().copy()
    skewed[-1] = -50.0  # noise pushed the Brier sum below zero
    assert released_metrics(ResponseSums, skewed, noise_sd=0.01)["brier"] == 0.0


def test_a_metric_the_noise_dominates_is_not_reported() -> None:
    from flame_private.metrics import TOO_NOISY, released_metrics

    small = ResponseSums()
    small.add(np.array([0.9, 0.8, 0.3, 0.7]), np.array([1, 1, 0, 0]))  # four validation patients
    loud = released_metrics(ResponseSums, small.vector() + np.random.default_rng(0).normal(0, 9, small.vector().size),
                             noise_sd=9.0)
    assert loud["auc"] is None and loud["auc_status"] == TOO_NOISY
    assert loud["n"] is None and loud["n_status"] == TOO_NOISY
