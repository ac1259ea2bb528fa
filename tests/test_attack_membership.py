"""Membership inference: an over-fitted model gives its patients away; DP-SGD at the demo's epsilon does not."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from flame_private.attacks.membership import balanced_membership, lira_scores
from flame_private.attacks.result import AttackResult, load_result
from flame_private.attacks.stats import roc_auc
from flame_private.cli import app


def test_every_patient_is_in_exactly_half_of_the_models():
    table = balanced_membership(30, 8, seed=3)
    assert (table.sum(axis=0) == 4).all()
    with pytest.raises(ValueError, match="even"):
        balanced_membership(30, 7, seed=3)


def test_lira_separates_members_whose_confidence_is_shifted():
    """Per-patient calibration: members sit a little above their own out-distribution, whatever its level."""
    rng = np.random.default_rng(0)
    membership = balanced_membership(200, 16, seed=0)
    difficulty = rng.normal(0, 5, size=200)  # patients differ far more than membership shifts them
    phi = difficulty + 1.0 * membership + rng.normal(0, 0.5, size=membership.shape)
    assert roc_auc(lira_scores(phi, membership).ravel(), membership.ravel()) > 0.8
    assert roc_auc(phi.ravel(), membership.ravel()) < 0.6  # the uncalibrated score is swamped by difficulty


def test_lira_is_at_chance_when_the_outputs_carry_no_membership_signal():
    """The balanced design (each patient in half the models) must not leak membership by itself."""
    aucs = []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        membership = balanced_membership(60, 8, seed=seed)
        phi = rng.normal(0, 1, size=60)[None, :] + rng.normal(0, 1, size=membership.shape)
        aucs.append(roc_auc(lira_scores(phi, membership).ravel(), membership.ravel()))
    assert abs(np.mean(aucs) - 0.5) < 0.015


def test_lira_refuses_too_few_models():
    with pytest.raises(ValueError, match="at least 4"):
        lira_scores(np.zeros((2, 5)), balanced_membership(5, 2, seed=0))


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> AttackResult:
    out = tmp_path_factory.mktemp("membership")
    run = CliRunner().invoke(app, ["attack", "membership-inference", "--out", str(out)], env={"COLUMNS": "200"})
    assert run.exit_code == 0, run.output
    return load_result(out / "membership-inference.json")


# The fixture trains 16 models on one core (one pytest-xdist worker): minutes, more on a machine shared with
# other jobs, where the default 900 s limit was reached.
@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_without_dp_the_overfitted_model_gives_members_away(result):
    ctrl = next(a for a in result.arms if a.is_control)
    assert ctrl.attack_succeeded, ctrl.detail
    assert max(ctrl.metrics["loss_auc"], ctrl.metrics["lira_auc"]) >= 0.7
    assert ctrl.metrics["lira_tpr_at_1pct_fpr"] > 0.03  # several times the 1 % a blind guess gets
    assert ctrl.metrics["lira_epsilon_lower_bound"] > 0 or ctrl.metrics["loss_epsilon_lower_bound"] > 0
    assert ctrl.metrics["train_accuracy"] > ctrl.metrics["heldout_accuracy"] + 0.2


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_with_dp_sgd_the_attacks_are_near_chance_and_prove_less_than_the_accountant_claims(result):
    dp = next(a for a in result.arms if not a.is_control)
    assert not dp.attack_succeeded, dp.detail
    assert max(dp.metrics["loss_auc"], dp.metrics["lira_auc"]) < 0.65
    for attack in ("loss", "lira"):
        assert dp.metrics[f"{attack}_epsilon_lower_bound"] <= dp.metrics["accounted_epsilon"]
        # What the bound could reach with this many decisions is reported, so a reader can judge the check.
        assert 0 < dp.metrics[f"{attack}_epsilon_bound_ceiling"] < 10
    assert result.accounted_epsilon == pytest.approx(5.0, abs=0.1)
