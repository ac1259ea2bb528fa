"""Noise regeneration: with the noise seeded from the config anyone holding it recovers a site's clean update;
with secret randomness the same attacker gets nothing."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from flame_private.attacks.noise_replay import SUCCESS_COSINE
from flame_private.attacks.result import AttackResult, load_result
from flame_private.cli import app

pytestmark = pytest.mark.slow  # the attack runs once for the module: about 10 s


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> AttackResult:
    out = tmp_path_factory.mktemp("replay")
    run = CliRunner().invoke(app, ["attack", "noise-replay", "--out", str(out)], env={"COLUMNS": "200"})
    assert run.exit_code == 0, run.output
    return load_result(out / "noise-replay.json")


def test_noise_seeded_from_the_config_gives_the_attacker_the_clean_update(result) -> None:
    control = next(a for a in result.arms if a.is_control)
    assert control.attack_succeeded
    assert control.metrics["cosine_estimate_vs_clean"] > 0.999
    assert control.metrics["relative_error"] < 1e-3
    # the released update alone is dominated by noise: the attack, not the data, does the work
    assert abs(control.metrics["cosine_released_vs_clean"]) < 0.3


def test_secret_randomness_leaves_the_attacker_with_noise(result) -> None:
    protected = next(a for a in result.arms if not a.is_control)
    assert not protected.attack_succeeded
    assert abs(protected.metrics["cosine_estimate_vs_clean"]) < min(0.2, SUCCESS_COSINE)
    assert protected.metrics["relative_error"] > 10
    assert result.passed and result.accounted_epsilon is not None
