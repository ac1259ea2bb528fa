"""One-run DP audit: the site's DP-SGD proves no more than it claims, and broken DP-SGD is caught."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from flame_private.attacks.result import AttackResult, load_result
from flame_private.cli import app

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> AttackResult:
    out = tmp_path_factory.mktemp("audit")
    run = CliRunner().invoke(app, ["attack", "dp-audit", "--out", str(out)], env={"COLUMNS": "200"})
    assert run.exit_code == 0, run.output
    return load_result(out / "dp-audit.json")


def test_the_correct_mechanism_proves_less_than_the_accounted_epsilon(result):
    ok = next(a for a in result.arms if a.metrics["fault"] == "none")
    assert not ok.attack_succeeded
    assert 0.0 <= ok.metrics["epsilon_lower_bound"] < ok.metrics["claimed_epsilon"]
    assert result.accounted_epsilon == pytest.approx(ok.metrics["claimed_epsilon"])


@pytest.mark.parametrize("fault", ["noise-scaled-down", "clipping-off"])
def test_a_broken_mechanism_is_caught_because_its_bound_exceeds_its_claim(result, fault):
    broken = next(a for a in result.arms if a.metrics["fault"] == fault)
    assert broken.is_control and broken.attack_succeeded, broken.detail
    assert broken.metrics["epsilon_lower_bound"] > broken.metrics["claimed_epsilon"]


def test_all_arms_ran_the_same_planned_mechanism(result):
    plans = {(a.metrics["noise_multiplier_claimed"], a.metrics["sample_rate"], a.metrics["steps"]) for a in result.arms}
    assert len(plans) == 1
    assert result.passed
