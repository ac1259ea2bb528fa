"""The encrypted federation: the server adds ciphertexts it cannot read; faults do not break a round.

The server, strategy, ClientApp and site code run unchanged; an in-process Grid
(tests/federation_harness.py) delivers messages so a test can kill a site or
tamper with a reply in flight.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from federation_harness import LocalGrid, make_federation, run
from flwr.app import Message

from flame_private.federation.protocol import UPDATE, ct_record, read_ct_record
from flame_private.privacy import Ledger
from flame_private.records.egress import EgressLog
from flame_private.secure.public.packing import ParamLayout
from flame_private.secure.site.ceremony import key_ceremony
from flame_private.secure.site.keys import load_secret_context

pytestmark = pytest.mark.slow  # whole in-process federations: about 35 s together; `make test` runs them


@pytest.fixture(scope="module")
def ceremony(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("keys")
    key_ceremony(__import__("flame_private.config", fromlist=["HEConfig"]).HEConfig(), out)
    return out


def _drop(*sites: str, step: str = "train"):
    """Replies of these sites to ``step`` messages never arrive (killed mid-round, after training)."""
    def tamper(site_id: str, reply: Message) -> Message | None:
        return None if site_id in sites and reply.metadata.message_type == step else reply
    return tamper


def _round(summary: dict, task: str, round_: int) -> dict:
    return next(r for r in summary["rounds"] if r["task"] == task and r["round"] == round_)


def _ledger(sites: dict[str, Path], sid: str) -> Ledger:
    return Ledger.open(sites[sid].parent / "state", sid)


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory: pytest.TempPathFactory, cohort_dir: Path, ceremony: Path):
    root = tmp_path_factory.mktemp("fed")
    sites, fed = make_federation(root, cohort_dir, ceremony, n_sites=4, rounds=2)
    summary = run(LocalGrid(sites, fed), fed, ceremony, root / "run")
    return root, sites, fed, summary


def test_both_models_are_trained_by_all_sites_for_every_round(clean_run) -> None:
    _, sites, _, summary = clean_run
    for task in ("response", "evolution"):
        for r in (1, 2):
            assert sorted(_round(summary, task, r)["contributors"]) == sorted(sites)


def test_every_site_records_each_release_once_before_sending(clean_run) -> None:
    _, sites, _, _ = clean_run
    for sid in sites:
        entries = _ledger(sites, sid).entries
        training = [(e.task, e.round) for e in entries if e.sample_rate < 1.0]
        assert sorted(training) == sorted((t, r) for t in ("response", "evolution") for r in (1, 2))


def test_validation_metrics_leave_a_site_only_as_a_recorded_dp_release(clean_run) -> None:
    """Metric sums are about validation patients: Gaussian mechanism, in the ledger, before sending."""
    from flame_private.metrics import PATIENT_SENSITIVITY
    from flame_private.records.egress import EgressLog

    _, sites, _, _ = clean_run
    for sid in sites:
        ledger = _ledger(sites, sid)
        evaluations = [e for e in ledger.entries if e.sample_rate == 1.0]
        assert sorted((e.task, e.round, e.steps) for e in evaluations) == [("evolution", 2, 1), ("response", 2, 1)]
        assert {e.max_grad_norm for e in evaluations} == {PATIENT_SENSITIVITY["response"],
                                                         PATIENT_SENSITIVITY["evolution"]}
        metrics = [e for e in EgressLog.open(sites[sid].parent / "state", sid, readonly=True).entries
                   if e.kind == "metrics"]
        assert sorted(m.ledger_seq for m in metrics) == sorted(e.seq for e in evaluations)


def test_each_site_exports_the_decrypted_models_with_a_model_card(clean_run) -> None:
    _, sites, _, _ = clean_run
    for sid, yaml in sites.items():
        export = yaml.parent / "state" / "exports" / "run-1"
        for task in ("response", "evolution"):
            card = json.loads((export / f"{task}.json").read_text())
            assert card["rounds"] == 2 and card["site_id"] == sid
            assert card["privacy"]["site_epsilon_spent"] == pytest.approx(_ledger(sites, sid).epsilon())
            metrics = json.loads((export / f"{task}-metrics.json").read_text())
            released = metrics["federated_dp"]
            assert released["sites"] == 4.0 and released["dp_noise_std_per_sum"] > 0
            # a handful of validation patients under DP noise: said plainly, not shown as a number
            for key in ("n", "auc" if task == "response" else "dice_whole_tumour"):
                # "undefined": the noisy sums leave the metric without a value (e.g. no positive left for an AUC)
                assert (released[key] is None and released[f"{key}_status"] in ("too noisy to report", "undefined")
                        or 0.0 <= released[key] and released[f"{key}_dp_sd"] is not None)
            local = metrics["local_not_released"]  # small sites may have no val patients
            assert set(local) <= {"val", "test", "val_baselines", "test_baselines"}
            want = {"response": {"prevalence", "logistic_observables", "logistic_first_order"},
                    "evolution": {"no_change"}}[task]
            for split in ("val", "test"):
                if split in local:  # the baselines are scored on the same patients, with the same keys
                    assert set(local[f"{split}_baselines"]) == want
                    assert all(set(b) == set(local[split]) for b in local[f"{split}_baselines"].values())
            assert "baselines" in card and "test" in card


def test_all_sites_decrypt_the_same_global_model(clean_run) -> None:
    _, sites, _, _ = clean_run
    states = [torch.load(y.parent / "state" / "exports" / "run-1" / "response.pt", weights_only=True)["state_dict"]
              for y in sites.values()]
    for other in states[1:]:
        for k in states[0]:
            torch.testing.assert_close(states[0][k], other[k])


def test_the_server_checkpoint_holds_only_ciphertexts(clean_run, ceremony: Path) -> None:
    root, _, _, _ = clean_run
    server = root / "run" / "server"
    from flame_private.federation.server.checkpoint import read_checkpoint_file
    from flame_private.secure.public.context_file import load_params_context
    from flame_private.secure.public.envelope import load_ciphertexts, parse_envelope

    ctx = load_params_context(ceremony / "server-params.ctx")
    files = sorted(server.glob("*.ckpt"))
    assert [f.name for f in files] == ["evolution-metrics.r00002.ckpt", "evolution-model.r00002.ckpt",
                                       "response-metrics.r00002.ckpt", "response-model.r00002.ckpt"]
    for f in files:
        header, payload = read_checkpoint_file(f)
        env = parse_envelope(header)
        assert env.kind == "aggregate" and env.round == 2 and env.contributor_ids == sorted(env.contributor_ids)
        assert len(load_ciphertexts(payload, ctx, env.n_chunks, max_bytes=2**31 - 1, source="test")) == env.n_chunks
    assert set(server.iterdir()) == {*files, server / "state.json", server / "summary.json"}


def test_aggregate_equals_the_plaintext_weighted_fedavg(clean_run, ceremony: Path) -> None:
    """Decrypt each site's sent update (the test holds the key), average in plaintext, compare."""
    from flame_private.secure.site.codec import decrypt_packed

    root, sites, fed, _ = clean_run
    secret = load_secret_context(ceremony / "site-secret.ctx")
    from flame_private.federation.site.site import Site

    site_layout = Site.load(next(iter(sites.values())), fed).layout("response")  # the public bounds of the packing
    updates = []
    for yaml in sites.values():
        state = yaml.parent / "state"
        lines = [json.loads(line) for line in (state / "egress_log.jsonl").read_text().splitlines()]
        entry = next(e for e in lines if e["kind"] == "update" and e["task"] == "response" and e["round"] == 2)
        payload = next((state / "outbox").glob(f"{entry['seq']:06d}-*")).read_bytes()
        updates.append(decrypt_packed(secret, payload, entry["envelope"]["n_params"]))
    total = np.sum(updates, axis=0)
    from flame_private.secure.public.packing import weighted_mean

    plaintext_mean = np.concatenate([t.double().numpy().ravel() for t in weighted_mean(total, site_layout)[0].values()])
    export = next(iter(sites.values())).parent / "state" / "exports" / "run-1" / "response.pt"
    state_dict = torch.load(export, weights_only=True)["state_dict"]
    layout = ParamLayout.from_state_dict(state_dict)
    from flame_private.secure.public.packing import flatten

    # Within the stated error of the packing: 1e-5 of the largest weight (docs/encryption.md).
    assert np.max(np.abs(flatten(state_dict, layout) - plaintext_mean)) < 1e-5 * np.abs(plaintext_mean).max()


def test_round_completes_with_three_when_one_of_four_sites_is_killed(tmp_path: Path, cohort_dir: Path,
                                                                      ceremony: Path) -> None:
    sites, fed = make_federation(tmp_path, cohort_dir, ceremony, n_sites=4, rounds=1, tasks="[response]")
    summary = run(LocalGrid(sites, fed, tamper=_drop("site-d")), fed, ceremony, tmp_path / "run")
    r = _round(summary, "response", 1)
    assert sorted(r["contributors"]) == ["site-a", "site-b", "site-c"] and "refused" not in r
    assert (tmp_path / "run" / "server" / "response-model.r00001.ckpt").is_file()
    # site-d trained and recorded its spend before it died: counted, never under-counted.
    assert [e.round for e in _ledger(sites, "site-d").entries if e.sample_rate < 1.0] == [1]


def test_round_with_only_two_sites_left_is_refused_not_aggregated(tmp_path: Path, cohort_dir: Path,
                                                                   ceremony: Path) -> None:
    sites, fed = make_federation(tmp_path, cohort_dir, ceremony, n_sites=4, rounds=1, tasks="[response]")
    summary = run(LocalGrid(sites, fed, tamper=_drop("site-c", "site-d")), fed, ceremony, tmp_path / "run")
    r = _round(summary, "response", 1)
    assert "2 valid contribution(s), between 3 and 16 (max_sites) required" in r["refused"]
    assert not list((tmp_path / "run" / "server").glob("response-model*"))
    assert summary["exports"]["response"] == "no global model (every round refused)"


def test_restarted_server_resumes_after_its_last_checkpoint_without_double_spend(tmp_path: Path, cohort_dir: Path,
                                                                                ceremony: Path) -> None:
    sites, fed = make_federation(tmp_path, cohort_dir, ceremony, n_sites=3, rounds=1, tasks="[response]")
    run(LocalGrid(sites, fed), fed, ceremony, tmp_path / "run")
    # The server dies after round 1; it is restarted with the run extended to 3 rounds.
    fed.write_text(fed.read_text().replace("rounds: 1", "rounds: 3"))
    grid = LocalGrid(sites, fed)
    summary = run(grid, fed, ceremony, tmp_path / "run")
    assert [r["round"] for r in summary["rounds"]] == [1, 2, 3]
    assert sum(1 for _, kind in grid.delivered if kind == "train") == 2 * 3  # rounds 2 and 3 only
    for sid in sites:
        assert [e.round for e in _ledger(sites, sid).entries if e.sample_rate < 1.0] == [1, 2, 3]


def _corrupt(kind: str):
    def tamper(site_id: str, reply: Message) -> Message | None:
        if site_id != "site-b" or reply.metadata.message_type != "train" or UPDATE not in reply.content:
            return reply
        header, payload = read_ct_record(reply.content[UPDATE])
        env = json.loads(header)
        if kind == "truncated":
            payload = payload[: len(payload) // 2]
        elif kind == "garbage":
            payload = bytes(np.random.default_rng(0).integers(0, 256, len(payload), dtype=np.uint8))
        elif kind == "oversized":
            payload = payload + payload
        elif kind == "wrong-fingerprint":
            env["he_fingerprint"] = "0" * 64
        elif kind == "wrong-round":
            env["round"] = 7
        elif kind == "plaintext":
            payload = np.zeros(env["n_params"], np.float32).tobytes()
        reply.content[UPDATE] = ct_record(json.dumps(env), payload)
        return reply
    return tamper


@pytest.mark.parametrize("kind", ["truncated", "garbage", "oversized", "wrong-fingerprint", "wrong-round",
                                  "plaintext"])
def test_a_bad_ciphertext_is_rejected_and_the_others_round_completes(kind: str, tmp_path: Path, cohort_dir: Path,
                                                                      ceremony: Path) -> None:
    sites, fed = make_federation(tmp_path, cohort_dir, ceremony, n_sites=4, rounds=1, tasks="[response]")
    summary = run(LocalGrid(sites, fed, tamper=_corrupt(kind)), fed, ceremony, tmp_path / "run")
    r = _round(summary, "response", 1)
    assert sorted(r["contributors"]) == ["site-a", "site-c", "site-d"]
    assert any(k.startswith("site-b") for k in r["rejected"])


def test_a_site_over_its_budget_declines_and_the_federation_goes_on(tmp_path: Path, cohort_dir: Path,
                                                                     ceremony: Path) -> None:
    sites, fed = make_federation(tmp_path, cohort_dir, ceremony, n_sites=4, rounds=1, tasks="[response]",
                                 caps={"site-d": 0.01})
    summary = run(LocalGrid(sites, fed), fed, ceremony, tmp_path / "run")
    r = _round(summary, "response", 1)
    assert r["declined"] == ["site-d"]  # who, never why: the server learns nothing of site-d's budget
    assert sorted(r["contributors"]) == ["site-a", "site-b", "site-c"]
    assert "cap" not in (tmp_path / "run" / "server" / "summary.json").read_text()
    assert len(_ledger(sites, "site-d").entries) == 0
    egress = EgressLog.open(sites["site-d"].parent / "state", "site-d", readonly=True)
    declined = [e for e in egress.entries if e.kind == "declined"]
    assert [e.round for e in declined] == [1, 1]  # training, then evaluation of the final model
    for e in declined:
        assert "cap" in e.reason  # the reason stays at the site ...
        sent = json.loads(egress.payload_path(e).read_bytes())
        assert sent == {"site_id": "site-d", "status": "declined"}  # ... and the logged bytes are what left


def test_with_run_epsilon_each_site_spends_at_most_that_over_the_whole_run(tmp_path: Path, cohort_dir: Path,
                                                                          ceremony: Path) -> None:
    """``dp.run_epsilon``: each site solves its own noise for every round of every task and the final evaluations;
    its ledger then shows the run's total at most that epsilon, and not far below it (no budget wasted)."""
    sites, fed = make_federation(tmp_path, cohort_dir, ceremony, n_sites=3, rounds=2)
    fed.write_text(fed.read_text() + "dp: {run_epsilon: 6.0}\n")
    summary = run(LocalGrid(sites, fed), fed, ceremony, tmp_path / "run")
    assert sorted(_round(summary, "evolution", 2)["contributors"]) == ["site-a", "site-b", "site-c"]
    for sid in sites:
        ledger = _ledger(sites, sid)
        assert len(ledger.entries) == 6  # 2 rounds x 2 tasks trained, the 2 final models evaluated
        assert 0.95 * 6.0 <= ledger.epsilon() <= 6.0, sid
        sigmas = {e.noise_multiplier for e in ledger.entries if e.sample_rate < 1.0}
        assert len(sigmas) == 1 and sigmas.pop() > 1.0  # one noise for the run's trainings, solved at the site


def test_a_run_epsilon_the_evaluations_alone_exceed_makes_every_site_decline_before_spending(
        tmp_path: Path, cohort_dir: Path, ceremony: Path) -> None:
    """No noise can keep such a run within its epsilon: each site says so in its egress log and spends nothing."""
    sites, fed = make_federation(tmp_path, cohort_dir, ceremony, n_sites=3, rounds=1, tasks="[response]")
    fed.write_text(fed.read_text() + "dp: {run_epsilon: 0.01}\n")
    summary = run(LocalGrid(sites, fed), fed, ceremony, tmp_path / "run")
    assert sorted(_round(summary, "response", 1)["declined"]) == ["site-a", "site-b", "site-c"]
    assert summary["exports"]["response"] == "no global model (every round refused)"
    for sid in sites:
        assert len(_ledger(sites, sid).entries) == 0
        egress = EgressLog.open(sites[sid].parent / "state", sid, readonly=True)
        reasons = [e.reason for e in egress.entries if e.kind == "declined"]
        assert reasons and "run_epsilon" in reasons[0] and "evaluation" in reasons[0], sid


BROKEN_POLICIES = {
    "unfilled-template": None,  # what `flame site init` writes
    "misspelt-key": "epsilon_capp: 8.0",
    "negative-cap": "epsilon_cap: -1.0",
    "expired": "epsilon_cap: 8.0\nexpires_on: 2025-06-01",
}


def _break_policy(site_yaml: Path, kind: str) -> None:
    """Replace the site's policy with a broken one, and point its data at an empty folder (reading it would fail)."""
    from flame_private.site_init import POLICY_TEMPLATE, TEMPLATE_MARKER

    folder = site_yaml.parent
    good = (folder / "policy.yaml").read_text()
    if kind == "unfilled-template":
        text = POLICY_TEMPLATE.format(site_id=folder.name, site_yaml=site_yaml, marker=TEMPLATE_MARKER)
    else:
        kept = [ln for ln in good.splitlines() if ln.split(":")[0] not in ("epsilon_cap", "expires_on", "approved_on")]
        text = "\n".join([*kept, "approved_on: 2025-01-01", BROKEN_POLICIES[kind]]) + "\n"
        if kind != "expired":
            text += "expires_on: 2099-01-01\n"
    (folder / "policy.yaml").write_text(text)
    (folder / "no-scans").mkdir()
    site_yaml.write_text("\n".join(f"data_dir: {folder / 'no-scans'}" if ln.startswith("data_dir:") else ln
                                   for ln in site_yaml.read_text().splitlines()) + "\n")


@pytest.mark.parametrize("kind", list(BROKEN_POLICIES))
def test_a_site_without_a_valid_policy_declines_every_step_and_records_why_without_reading_its_scans(
        kind: str, tmp_path: Path, cohort_dir: Path, ceremony: Path, caplog: pytest.LogCaptureFixture) -> None:
    from flame_private.federation.site.site import Site
    from flame_private.privacy.policy import TEMPLATE_ACTION

    sites, fed = make_federation(tmp_path, cohort_dir, ceremony, n_sites=3, rounds=1, tasks="[response]")
    _break_policy(sites["site-a"], kind)
    site = Site.load(sites["site-a"], fed)  # no PolicyError, and no DataError: the scans are not read
    with caplog.at_level("WARNING"):
        replies = [site.train_round("r", "response", 1, None, None),
                   site.evaluate_round("r", "response", 1, "{}", b""),
                   site.finish("r", "response", 1, ("{}", b""), None)]
    assert [r.status for r in replies] == ["declined"] * 3
    assert site._splits is None, "the scans must not be read while the policy refuses every step"
    egress = EgressLog.open(sites["site-a"].parent / "state", "site-a", readonly=True)
    assert [e.kind for e in egress.entries] == ["declined"] * 3
    reason = egress.entries[0].reason or ""
    assert reason.startswith("site-a: privacy policy" if kind == "expired" else "no valid privacy policy: ")
    expected = {"unfilled-template": TEMPLATE_ACTION, "misspelt-key": "epsilon_capp: unknown key",
                "negative-cap": "epsilon_cap: Input should be greater than 0", "expired": "expired on 2025-06-01"}
    assert expected[kind] in reason
    for e in egress.entries:  # the reason stays at the site; the server got the generic status
        assert json.loads(egress.payload_path(e).read_bytes()) == {"site_id": "site-a", "status": "declined"}
    # The explanation is logged once, however many steps are declined for it.
    assert caplog.text.count(reason.splitlines()[0]) == 1
    if kind == "unfilled-template":
        assert reason.count(TEMPLATE_ACTION) == 1 and "unknown key" not in reason


def test_a_site_whose_policy_is_the_unfilled_template_declines_and_the_federation_goes_on(
        tmp_path: Path, cohort_dir: Path, ceremony: Path) -> None:
    sites, fed = make_federation(tmp_path, cohort_dir, ceremony, n_sites=4, rounds=1, tasks="[response]")
    _break_policy(sites["site-d"], "unfilled-template")
    summary = run(LocalGrid(sites, fed), fed, ceremony, tmp_path / "run")
    r = _round(summary, "response", 1)
    assert r["declined"] == ["site-d"] and sorted(r["contributors"]) == ["site-a", "site-b", "site-c"]
    assert summary["exports"]["response"]["site-d"] == "declined"
    assert "UNFILLED" not in (tmp_path / "run" / "server" / "summary.json").read_text()
    egress = EgressLog.open(sites["site-d"].parent / "state", "site-d", readonly=True)
    assert {e.kind for e in egress.entries} == {"declined"} and len(egress.entries) == 3


def test_a_site_refuses_a_secret_context_readable_by_others(tmp_path: Path, cohort_dir: Path, ceremony: Path) -> None:
    import os

    from flame_private.federation.site.site import Site
    from flame_private.secure.public.errors import HEError

    sites, fed = make_federation(tmp_path, cohort_dir, ceremony, n_sites=3, rounds=1)
    os.chmod(sites["site-a"].parent / "secret.ctx", 0o644)
    with pytest.raises(HEError, match="secret.ctx"):
        Site.load(sites["site-a"], fed)


def test_a_weight_beyond_the_public_bound_makes_the_site_decline_after_recording_its_spend(
        tmp_path: Path, cohort_dir: Path, ceremony: Path) -> None:
    """Refused, never clipped nor wrapped: the site says which tensor, and the spend stays counted."""
    from flame_private.federation.site.site import Site

    sites, fed = make_federation(tmp_path, cohort_dir, ceremony, n_sites=3, rounds=1, tasks="[response]")
    fed.write_text(fed.read_text().replace("he: {max_patients: 16}", "he: {max_patients: 16, weight_bound: 0.5}"))
    site = Site.load(sites["site-a"], fed)
    reply = site.train_round("run-1", "response", 1, None, None)
    assert reply.status == "declined" and reply.payload is None
    assert "exceeds the public bound 0.5" in reply.reason and "weight" in reply.reason
    assert [e.round for e in _ledger(sites, "site-a").entries] == [1]  # trained: counted, never under-counted


def test_a_site_whose_config_starts_the_model_elsewhere_declines_to_train_before_spending(
        tmp_path: Path, cohort_dir: Path, ceremony: Path) -> None:
    """The instruction says where the server's run starts the task (``FederationConfig.model_start``); a site with
    another seed or another pinned checkpoint in its copy of the federation YAML would add its update to a model
    nobody else has."""
    from flame_private.config import FederationConfig, load_config
    from flame_private.federation.site.site import Site

    sites, fed = make_federation(tmp_path, cohort_dir, ceremony, n_sites=3, rounds=1, tasks="[response]")
    own = load_config(fed, FederationConfig).model_start("response")
    assert own.startswith("seed:")
    site = Site.load(sites["site-a"], fed)
    reply = site.train_round("run-1", "response", 1, None, None, start="sha256:" + "ab" * 32)
    assert reply.status == "declined" and reply.payload is None
    assert own in reply.reason and "not the same run" in reply.reason
    assert not _ledger(sites, "site-a").entries  # nothing trained, nothing spent
    assert site.train_round("run-1", "response", 1, None, None, start=own).status == "ok"  # control


def test_a_site_refuses_to_load_a_pinned_checkpoint_other_than_the_agreed_one(
        tmp_path: Path, cohort_dir: Path, ceremony: Path) -> None:
    """At start-up, not at the first round: the site takes no part and its log names the file and the field."""
    from flame_private.config import ConfigError
    from flame_private.federation.site.site import Site

    sites, fed = make_federation(tmp_path, cohort_dir, ceremony, n_sites=3, rounds=1, tasks="[response]")
    (fed.parent / "public.pt").write_bytes(b"not the agreed weights")
    fed.write_text(fed.read_text() + f"initial_weights: {{response: {{path: public.pt, sha256: {'f' * 64}}}}}\n")
    with pytest.raises(ConfigError, match=r"public\.pt.*initial_weights\.response\.sha256"):
        Site.load(sites["site-a"], fed)


def test_the_strategy_refuses_fewer_than_three_sites_by_construction(ceremony: Path) -> None:
    from flame_private.federation.server.strategy import EncryptedFedAvg
    from flame_private.secure.public.context_file import load_params_context

    with pytest.raises(ValueError, match="at least 3"):
        EncryptedFedAvg(load_params_context(ceremony / "server-params.ctx"), "r", min_sites=2)


@pytest.mark.slow
def test_the_same_apps_run_in_flowers_simulation_engine(tmp_path: Path, cohort_dir: Path, ceremony: Path) -> None:
    """End to end through Ray-backed virtual SuperNodes, as `flame demo` runs it."""
    from flame_private.federation.simulation import simulate_federation

    sites, fed = make_federation(tmp_path, cohort_dir, ceremony, n_sites=3, rounds=1, tasks="[response]")
    summary = simulate_federation(fed, list(sites.values()), ceremony / "server-params.ctx", tmp_path / "run",
                                  "sim-1", cpus=2)
    r = _round(summary, "response", 1)
    assert sorted(r["contributors"]) == ["site-a", "site-b", "site-c"]
    assert summary["exports"]["response"] == {"site-a": "ok", "site-b": "ok", "site-c": "ok"}
    for sid in sites:
        assert (sites[sid].parent / "state" / "exports" / "sim-1" / "response.pt").is_file()
        # Each message records that it travelled inside the simulation (no network), as the reports then say.
        log = EgressLog.open(sites[sid].parent / "state", sid, readonly=True)
        assert {e.transport for e in log.entries} == {"simulation"}


@pytest.mark.parametrize("server_optimizer", ["fedavg", "fedadam"])
def test_a_federation_can_train_only_the_response_networks_linear_part(tmp_path: Path, cohort_dir: Path,
                                                                       ceremony: Path, server_optimizer: str) -> None:
    """``model.response_trainable: wide`` through the real apps, from pinned public weights (``initial_weights``):
    DP, CKKS sum, decryption; the global model moves in its 27 linear weights only, at every site alike, and
    everything else stays at the pinned checkpoint's values, not the seed's.  The sites' server optimiser steps
    the weights that travel."""
    from flame_private.config import ConfigError, FederationConfig, load_config
    from flame_private.experiments import initial_model
    from flame_private.models.io import file_sha256, save_model

    sites, fed = make_federation(tmp_path, cohort_dir, ceremony, n_sites=3, rounds=1, tasks="[response]")
    text = fed.read_text().replace("norm_groups: 2}", "norm_groups: 2, response_trainable: wide}")
    fed.write_text(text)
    with pytest.raises(ConfigError, match="weight_bound"):
        load_config(fed, FederationConfig)
    text = text.replace("he: {max_patients: 16}", "he: {max_patients: 16, weight_bound: 16}") + "learning_rate: 0.05\n"
    text += f"server_optimizer: {{name: {server_optimizer}}}\n"
    fed.write_text(text)
    seeded = initial_model("response", load_config(fed, FederationConfig))
    public = initial_model("response", load_config(fed, FederationConfig))
    with torch.no_grad():
        for p in public.parameters():
            p.mul_(0.5)  # stands in for weights learnt on public data: not what the seed gives
    cfg = load_config(fed, FederationConfig)
    ckpt = save_model(fed.parent / "public-response.pt", "response", public, cfg.model, cfg.data, card={})
    fed.write_text(text + f"initial_weights: {{response: {{path: {ckpt.name}, sha256: {file_sha256(ckpt)}}}}}\n")
    summary = run(LocalGrid(sites, fed), fed, ceremony, tmp_path / "run")
    assert sorted(_round(summary, "response", 1)["contributors"]) == ["site-a", "site-b", "site-c"]
    start = initial_model("response", load_config(fed, FederationConfig)).state_dict()
    assert not torch.equal(start["stages.0.conv1.conv.weight"], seeded.state_dict()["stages.0.conv1.conv.weight"])
    for sid in sites:
        state = torch.load(sites[sid].parent / "state" / "exports" / "run-1" / "response.pt",
                           weights_only=True)["state_dict"]
        moved = {k for k in start if not torch.allclose(start[k], state[k], atol=1e-4)}
        assert moved == {"clinical.weight", "clinical.bias"}, sid
        # Only what trains leaves the site: the frozen entries are public and stay (one chunk, not ~80 k values).
        log = EgressLog.open(sites[sid].parent / "state", sid, readonly=True)
        updates = [e.envelope for e in log.entries if e.kind == "update" and e.envelope is not None]
        assert updates and {u["n_params"] for u in updates} == {start["clinical.weight"].numel() + 1}, sid
        card = json.loads((sites[sid].parent / "state" / "exports" / "run-1" / "response.json").read_text())
        assert card["training"]["initial_weights"]["sha256"] == file_sha256(ckpt)  # the DPO sees the start



def test_the_baseline_segmentation_model_trains_federated_with_dp_and_ckks_like_the_others(
        tmp_path: Path, cohort_dir: Path, ceremony: Path) -> None:
    sites, fed = make_federation(tmp_path, cohort_dir, ceremony, n_sites=3, rounds=1, tasks="[segmentation]")
    summary = run(LocalGrid(sites, fed), fed, ceremony, tmp_path / "run")
    r = _round(summary, "segmentation", 1)
    assert sorted(r["contributors"]) == ["site-a", "site-b", "site-c"] and "refused" not in r
    assert [f.name for f in sorted((tmp_path / "run" / "server").glob("*.ckpt"))] == [
        "segmentation-metrics.r00001.ckpt", "segmentation-model.r00001.ckpt"]  # ciphertexts only
    for sid in sites:  # every site spent on it before sending: one training, one evaluation release
        entries = _ledger(sites, sid).entries
        assert [e.task for e in entries] == ["segmentation", "segmentation"]
        assert entries[0].sample_rate < 1.0 and entries[1].sample_rate == 1.0
    from flame_private.models.io import load_model

    export = next(iter(sites.values())).parent / "state" / "exports" / "run-1" / "segmentation.pt"
    task, model, _, _ = load_model(export)
    assert task == "segmentation" and type(model).__name__ == "SegmentationNet"


def test_a_site_with_no_patient_for_a_task_or_a_round_past_the_run_declines_that_step_alone(
        tmp_path: Path, cohort_dir: Path, ceremony: Path) -> None:
    """A site whose baseline segmentations were all drawn by the model has no segmentation target: it declines
    that task with the reason, spends nothing on it, and trains the others; a round the run does not have is
    declined too where a cosine schedule gives it no learning rate."""
    from flame_private.data.datasets import SegmentationDataset
    from flame_private.federation.site.site import Site

    sites, fed = make_federation(tmp_path, cohort_dir, ceremony, n_sites=3, rounds=1, tasks="[response]")
    site = Site.load(sites["site-a"], fed)
    site.fed = site.fed.model_copy(update={"tasks": ["response", "segmentation"], "lr_schedule": "cosine"})
    site._datasets[("segmentation", "train")] = SegmentationDataset([], site.fed.data)
    reply = site.train_round("run-1", "segmentation", 1, None, None)
    assert reply.status == "declined" and reply.payload is None
    assert reply.reason == "no patient to train the segmentation model on at this site"
    late = site.train_round("run-1", "response", 2, None, None)  # a constant rate has a round 2 (a run extended)
    assert late.status == "declined" and "round 2 is outside this site's run of 1 rounds" in late.reason
    assert not _ledger(sites, "site-a").entries
    assert site.train_round("run-1", "response", 1, None, None).status == "ok"  # control: the task it can train
    assert [(e.task, e.round) for e in _ledger(sites, "site-a").entries] == [("response", 1)]
