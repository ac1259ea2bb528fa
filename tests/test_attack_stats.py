"""The statistics behind the attack figures: exact intervals and bounds that never overstate a leak."""

from __future__ import annotations

import math

import numpy as np
import pytest

from flame_private.attacks.stats import (
    clopper_pearson,
    empirical_epsilon,
    one_run_epsilon,
    one_run_guesses,
    one_run_p_value,
    tpr_at_fpr,
)


def test_clopper_pearson_matches_the_textbook_values():
    assert clopper_pearson(0, 10) == (0.0, pytest.approx(0.3084971, abs=1e-6))
    assert clopper_pearson(10, 10) == (pytest.approx(0.6915029, abs=1e-6), 1.0)
    lo, hi = clopper_pearson(5, 10)
    assert lo == pytest.approx(0.1870860, abs=1e-6) and hi == pytest.approx(0.8129140, abs=1e-6)


def test_tpr_at_fpr_counts_only_thresholds_within_the_false_positive_budget():
    members = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], bool)
    scores = np.array([9, 8, 2, 1, 7, 6, 5, 4, 3, 0, -1, -2, -3, -4], float)
    assert tpr_at_fpr(scores, members, 0.0) == 0.5          # above every non-member: 9 and 8
    assert tpr_at_fpr(scores, members, 0.1) == 0.5          # one false positive allowed (7): still 9, 8
    assert tpr_at_fpr(scores, members, 0.45) == 0.5         # four allowed (7, 6, 5, 4): members above 3
    assert tpr_at_fpr(scores, members, 0.5) == 1.0          # five allowed (down to 3): every member above 0


def test_empirical_epsilon_is_zero_for_a_blind_attack_and_positive_for_a_perfect_one():
    rng = np.random.default_rng(0)
    members = rng.random(2000) < 0.5
    select = rng.random(2000) < 0.5
    blind = empirical_epsilon(rng.normal(size=2000), members, 1e-5, select=select)
    assert blind["epsilon_lower_bound"] < 0.3
    perfect = empirical_epsilon(members.astype(float), members, 1e-5, select=select)
    assert perfect["epsilon_lower_bound"] > 4.0  # ln(TPR_lo / FPR_hi) with ~500 non-members judged


def test_empirical_epsilon_never_exceeds_the_true_epsilon_of_randomised_response():
    """A test against eps-DP randomised response must not prove more than eps (at 95 %, over seeds)."""
    eps_true = 1.0
    p_keep = math.exp(eps_true) / (1 + math.exp(eps_true))
    for seed in range(10):
        rng = np.random.default_rng(seed)
        members = rng.random(4000) < 0.5
        answer = np.where(rng.random(4000) < p_keep, members, ~members).astype(float)
        got = empirical_epsilon(answer, members, 0.0, select=rng.random(4000) < 0.5)["epsilon_lower_bound"]
        assert 0.5 < got <= eps_true, seed


def test_one_run_bound_is_zero_at_chance_and_grows_with_correct_guesses():
    assert one_run_epsilon(1000, 100, 50, 1e-5) == 0.0
    bounds = [one_run_epsilon(1000, 100, v, 1e-5) for v in (70, 80, 90, 100)]
    assert bounds == sorted(bounds) and bounds[0] > 0
    assert bounds[-1] == pytest.approx(3.465, abs=0.01)  # 100 of 100 right: q^100 = 0.05


def test_one_run_p_value_of_the_true_epsilon_is_not_small_for_randomised_response():
    eps_true = 2.0
    p_keep = math.exp(eps_true) / (1 + math.exp(eps_true))
    rng = np.random.default_rng(1)
    rejected = 0
    for _ in range(200):
        v = int((rng.random(100) < p_keep).sum())
        rejected += one_run_p_value(1000, 100, v, eps_true, 0.0) < 0.05
    assert rejected <= 20  # at most ~5 % false alarms (+ slack for 200 trials)


def test_one_run_guesses_score_in_for_top_and_out_for_bottom():
    scores = np.array([5.0, 4.0, 3.0, 2.0, 1.0])
    included = np.array([True, False, True, False, False])
    assert one_run_guesses(scores, included, 2, 2) == (4, 3)  # top two: 1 right; bottom two: both right
    assert one_run_guesses(scores, included, 1, 0) == (1, 1)
