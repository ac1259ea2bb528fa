"""Gradient inversion: a plaintext update gives a patient's MRI away; DP-SGD and CKKS do not.

Runs ``flame attack gradient-inversion`` at the CI size (seeded) and reads its JSON
result, as a report would.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from flame_private.attacks.gradient_inversion import _best_plaintext_cosine
from flame_private.attacks.result import AttackResult, load_result
from flame_private.cli import app


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> tuple[AttackResult, Path]:
    out = tmp_path_factory.mktemp("inversion")
    run = CliRunner().invoke(app, ["attack", "gradient-inversion", "--out", str(out), "--seed", "0"],
                             env={"COLUMNS": "200"})
    assert run.exit_code == 0, run.output
    return load_result(out / "gradient-inversion.json"), out


def _arm(result: AttackResult, protection: str):
    return next(a for a in result[0].arms if a.protection == protection)


@pytest.mark.slow
def test_without_dp_the_reconstruction_clearly_beats_a_guess_from_other_patients(result):
    plain = _arm(result, "none")
    assert plain.is_control and plain.attack_succeeded, plain.detail
    assert plain.metrics["ssim"] >= plain.metrics["ssim_prior_only"] + 0.1
    assert plain.metrics["psnr_db"] >= plain.metrics["psnr_prior_only_db"] + 2.0


@pytest.mark.slow
def test_without_dp_the_label_and_the_clinical_condition_leak_exactly(result):
    plain = _arm(result, "none")
    assert plain.metrics["label_recovered"] is True
    assert plain.metrics["condition_max_abs_error"] < 1e-4


@pytest.mark.slow
def test_with_the_sites_dp_sgd_the_reconstruction_is_no_better_than_the_prior(result):
    dp = _arm(result, "dp")
    assert not dp.attack_succeeded, dp.detail
    assert dp.metrics["ssim"] < dp.metrics["ssim_prior_only"] + 0.1
    assert dp.metrics["condition_max_abs_error"] > 0.1


@pytest.mark.slow
def test_under_ckks_the_server_has_no_gradient_to_start_from(result):
    he = _arm(result, "he")
    assert not he.attack_succeeded
    assert he.metrics["cosine_plaintext_bytes_vs_update (control)"] > 0.999  # the reading finds a clear update
    assert he.metrics["cosine_payload_as_numbers_vs_update"] < 0.05
    assert abs(he.metrics["cosine_own_key_decryption_vs_update"]) < 0.05
    assert he.metrics["site_decryption_max_error"] < 1e-6  # the site itself decrypts it fine


@pytest.mark.slow
def test_the_panel_and_the_verdict_are_written(result):
    res, out = result
    assert res.passed and res.figures == ["gradient-inversion.png"]
    assert (out / "gradient-inversion.png").stat().st_size > 10_000


def test_reading_a_payload_as_numbers_finds_an_update_sent_in_the_clear_and_nothing_in_random_bytes():
    update = np.random.default_rng(0).normal(size=5000)
    assert _best_plaintext_cosine(update.tobytes(), update) > 0.999
    assert _best_plaintext_cosine(b"hdr" + update.astype(np.float32).tobytes(), update) > 0.999  # any alignment
    assert _best_plaintext_cosine(np.random.default_rng(1).bytes(80_000), update) < 0.1
