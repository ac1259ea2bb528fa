"""The curious-server attack: a real federation, a server recording everything, four checks with controls.

Each check must succeed where the protection is off (or the check proves
nothing) and fail against CKKS as deployed.  The attack's own detectors are
also tested on bytes where the answer is known.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flame_private.attacks.curious_server import run_curious_server
from flame_private.attacks.curious_server.distinguisher import cross_validated_accuracy
from flame_private.attacks.curious_server.plaintext_scan import PlaintextScanner, Target
from flame_private.attacks.result import AttackArm, AttackResult, load_result
from flame_private.attacks.stats import clopper_pearson


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> AttackResult:
    return run_curious_server(tmp_path_factory.mktemp("curious"), size="ci", seed=0)


def _arm(result: AttackResult, name: str) -> AttackArm:
    return next(a for a in result.arms if a.name == name)


@pytest.mark.slow
def test_every_positive_control_succeeds(result: AttackResult) -> None:
    failed = [f"{a.name}: {a.detail} {a.metrics}" for a in result.arms if a.is_control and not a.attack_succeeded]
    assert not failed, "a check failed where the protection is off, so it proves nothing:\n" + "\n".join(failed)
    assert result.positive_control_ok


@pytest.mark.slow
def test_the_plaintext_scan_finds_every_secret_in_plaintext_fedavg(result: AttackResult) -> None:
    m = _arm(result, "plaintext FedAvg: payload scan").metrics
    assert m["secrets_found"] == m["secrets"] > 0, "the scan misses weights or metric sums sent in the clear"
    assert m["max_correlation"] > 0.999 and m["max_exact_fraction"] == 1.0
    assert m["min_exact_chance_p"] < 1e-12, "every value found bit for bit cannot be chance"


@pytest.mark.slow
def test_nothing_the_server_holds_reveals_weights_metrics_or_the_key(result: AttackResult) -> None:
    arm = _arm(result, "CKKS as deployed")
    m = arm.metrics
    findings = result.settings["findings_as_deployed"]
    assert not any(findings.values()), f"the curious server learned something: {arm.detail}"
    assert m["secrets_found"] == 0, "plaintext weights or metric sums found in what the server received or kept"
    assert m["max_correlation"] < 0.5, "some bytes the server holds correlate with a site's weights"
    # A 4-byte pattern turns up by coincidence in the server's random-looking bytes a few percent of the time:
    # one hit among a metric vector's 11 values is chance; more hits than chance would give are a leak.
    assert m["max_exact_fraction"] < 0.05 or m["min_exact_chance_p"] > 1e-3, (
        "values of a site's update appear bit for bit in the server's bytes, more often than by chance")
    assert m["ciphertexts_valid"] == m["ciphertexts"] > 0, "a payload is not a valid ciphertext for the parameters"
    assert m["params_only_decryption_refused"] is True, "the params-only context could be used to decrypt"
    assert m["server_files_loading_as_key"] == 0, "a file on the server loads as a SEAL secret key"
    assert abs(m["fresh_key_correlation"]) < 0.1, "a key the server generates itself decrypts something related"
    assert m["memory_key_hits"] == 0, "the secret key is in the server process's memory"
    assert m["disk_key_hits"] == 0, "the secret key is in the server's files"
    assert m["key_modules_imported"] == "none", "the server side imports key-handling modules"
    assert result.protection_held and result.passed


@pytest.mark.slow
def test_the_key_holder_decrypts_and_the_memory_scan_finds_a_loaded_key(result: AttackResult) -> None:
    dec = _arm(result, "site's secret key: decryption").metrics
    # Packed values are at most 1; CKKS at scale 2^30 decrypts each to ~1e-7-1e-6 (its largest over ~1e5 values
    # reaches 1e-6), while a key that is not the site's gives noise of the values' own size.
    assert dec["max_abs_error"] < 1e-5, "the site's own key does not recover the true update"
    mem = _arm(result, "secret context loaded in the server process").metrics
    assert mem["memory_key_hits"] >= 1, "the memory scan cannot see a secret key even when one is loaded"
    assert mem["disk_key_hits"] >= 1, "the file scan cannot see the secret context in a site's folder"
    assert "flame_private.secure.site.keys" in str(mem["key_modules_imported"]), \
        "the import check cannot see key loading"
    assert _arm(result, "CKKS as deployed").metrics["memory_bytes_scanned"] > 50 * 2**20


@pytest.mark.slow
def test_the_distinguisher_is_at_chance_on_ciphertexts_and_not_on_plaintexts(result: AttackResult) -> None:
    plain = _arm(result, "plaintext FedAvg: site distinguisher").metrics
    assert plain["ci_low"] > 0.7, f"the distinguisher cannot even tell plaintext updates apart: {plain}"
    he = _arm(result, "CKKS as deployed").metrics
    assert he["distinguisher_ci_low"] <= 0.5 <= he["distinguisher_ci_high"], (
        f"two sites' ciphertexts are told apart better than chance: accuracy {he['distinguisher_accuracy']}")
    assert he["distinguisher_samples"] >= 1000
    # Only zstd's packing of random residues moves sizes within a step (0.1-0.3 %; docs/privacy-evidence.md).
    assert he["payload_size_spread_per_step"] < 0.01, "payload sizes differ between sites in the same step"


@pytest.mark.slow
def test_the_result_round_trips_as_evidence(result: AttackResult, tmp_path: Path) -> None:
    loaded = load_result(result.write(tmp_path / "curious-server.json"))
    assert loaded.passed and loaded.attack == "curious-server" and loaded.size == "ci"
    assert "hospitals" in loaded.summary and len(loaded.arms) == 5


# ------------------------------------------------------------------ the detectors on known answers


def test_the_scanner_finds_float_weights_at_any_alignment_and_not_in_random_bytes() -> None:
    rng = np.random.default_rng(1)
    w = rng.normal(0, 0.1, 3000).astype(np.float32)
    target = Target("site", "weights", w.astype(np.float64), [w[:1000].astype(np.float64)])
    noise = rng.integers(0, 256, 50_000, dtype=np.uint8).tobytes()
    for embedded in (w.tobytes(), (w * 3).astype(np.float64).tobytes()):
        scanner = PlaintextScanner([target])
        scanner.scan(noise[:12_345] + embedded + noise[12_345:])
        row = scanner.report()[0]
        assert row["found"] and row["correlation"] > 0.999
    scanner = PlaintextScanner([target])
    scanner.scan(noise)
    row = scanner.report()[0]
    assert not row["found"] and row["correlation"] < 0.5 and row["exact_fraction"] < 0.01


def test_the_distinguisher_separates_what_differs_and_not_what_does_not() -> None:
    rng = np.random.default_rng(2)
    same = rng.normal(size=(400, 5))
    labels = np.repeat([0, 1], 200)
    k, n = cross_validated_accuracy(same, labels, 5, 0)
    low, high = clopper_pearson(k, n, 0.999)
    assert low <= 0.5 <= high
    shifted = same + labels[:, None] * 1.5
    k, n = cross_validated_accuracy(shifted, labels, 5, 0)
    assert clopper_pearson(k, n, 0.999)[0] > 0.8
