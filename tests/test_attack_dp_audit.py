"""One-run DP audit: the site's DP-SGD proves no more than it claims, and broken DP-SGD is caught."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from flame_private.attacks.dp_audit import SIZES, _break, _inject_canaries
from flame_private.attacks.result import AttackResult, load_result
from flame_private.cli import app
from flame_private.privacy.dp import DPPlan


def test_canaries_join_the_per_sample_gradients_as_dirac_rows_on_their_own_coordinates():
    params = [torch.nn.Parameter(torch.zeros(2, 3)), torch.nn.Parameter(torch.zeros(4))]
    for p in params:
        p.grad_sample = torch.ones((2, *p.shape))  # two patients in the batch
    _inject_canaries(params, np.array([1, 7]), 5.0)  # coordinate 7 is the second tensor's index 1
    flat = torch.cat([p.grad_sample.reshape(4, -1) for p in params], dim=1)
    assert flat.shape == (4, 10)
    assert flat[:2].eq(1).all()  # the patients' rows are untouched
    assert flat[2].nonzero().flatten().tolist() == [1] and float(flat[2, 1]) == 5.0
    assert flat[3].nonzero().flatten().tolist() == [7] and float(flat[3, 7]) == 5.0


def test_an_empty_poisson_batch_still_carries_the_sampled_canaries():
    p = torch.nn.Parameter(torch.zeros(3))
    p.grad_sample = torch.zeros((0, 3))
    _inject_canaries([p], np.array([2]), 4.0)
    assert p.grad_sample.tolist() == [[0.0, 0.0, 4.0]]


def test_faults_change_the_running_mechanism_but_never_the_plan():
    plan = DPPlan(noise_multiplier=2.0, max_grad_norm=1.0, sample_rate=0.1, steps=10, delta=1e-5,
                  accountant="prv", grad_sample_mode="ew", expected_batch_size=4)
    settings = SIZES["ci"]

    def optimizer():
        return SimpleNamespace(noise_multiplier=plan.noise_multiplier, max_grad_norm=plan.max_grad_norm)

    correct = optimizer()
    _break(correct, plan, "none", settings)
    assert (correct.noise_multiplier, correct.max_grad_norm) == (2.0, 1.0)
    quiet = optimizer()
    _break(quiet, plan, "noise-scaled-down", settings)
    assert quiet.noise_multiplier == pytest.approx(0.2) and quiet.max_grad_norm == 1.0
    unclipped = optimizer()
    _break(unclipped, plan, "clipping-off", settings)
    assert unclipped.max_grad_norm >= 1e6  # no patient is ever clipped ...
    assert unclipped.noise_multiplier * unclipped.max_grad_norm == pytest.approx(2.0)  # ... same noise std
    assert plan.noise_multiplier == 2.0  # what the ledger would record


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> AttackResult:
    out = tmp_path_factory.mktemp("audit")
    run = CliRunner().invoke(app, ["attack", "dp-audit", "--out", str(out)], env={"COLUMNS": "200"})
    assert run.exit_code == 0, run.output
    return load_result(out / "dp-audit.json")


@pytest.mark.slow
def test_the_correct_mechanism_proves_less_than_the_accounted_epsilon(result):
    ok = next(a for a in result.arms if a.metrics["fault"] == "none")
    assert not ok.attack_succeeded
    assert 0.0 <= ok.metrics["epsilon_lower_bound"] < ok.metrics["claimed_epsilon"]
    assert result.accounted_epsilon == pytest.approx(ok.metrics["claimed_epsilon"])


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["noise-scaled-down", "clipping-off"])
def test_a_broken_mechanism_is_caught_because_its_bound_exceeds_its_claim(result, fault):
    broken = next(a for a in result.arms if a.metrics["fault"] == fault)
    assert broken.is_control and broken.attack_succeeded, broken.detail
    assert broken.metrics["epsilon_lower_bound"] > broken.metrics["claimed_epsilon"]


@pytest.mark.slow
def test_all_arms_ran_the_same_planned_mechanism(result):
    plans = {(a.metrics["noise_multiplier_claimed"], a.metrics["sample_rate"], a.metrics["steps"]) for a in result.arms}
    assert len(plans) == 1
    assert result.passed
