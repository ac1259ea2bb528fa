"""The site audit: a DPO can verify everything that left the site, without its key.

Each test builds a small real site: a key ceremony, a privacy ledger written by
the budget guard, CKKS-encrypted updates of a tiny torch model and encrypted
metric sums, all logged in the egress log; then damages or forges one thing and
checks that ``audit_site`` (and ``flame audit``) names it.

Specification (records/audit.py, docs/dpo-guide.md):

* a clean site passes; warnings (spend recorded but never released) do not fail it;
* a changed byte of an egress entry, of its head, or of a kept payload fails it;
* a payload that is not the ciphertext its envelope describes under the agreed
  parameters fails it: plaintext weights, raw JSON metrics, other parameters;
* the agreed parameters are an input (``--he-params`` or the site's ``he_params``),
  never the site's own files: without them the HE-parameters check fails, and the
  site's secret context must have the agreed parameters;
* every update must name its own ledger entry, agreeing on run, round, task,
  DP settings and epsilon;
* the audit changes nothing on disk and never imports the key-handling modules.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import pytest
import torch
import typer
import yaml
from typer.testing import CliRunner

from flame_private.config import HEConfig, SiteConfig
from flame_private.privacy.budget import BudgetGuard, open_site_budget
from flame_private.privacy.ledger import LedgerEntry, PlannedSpend
from flame_private.records.audit import AuditReport, audit_site
from flame_private.records.audit_cli import audit
from flame_private.records.code_identity import app_identity
from flame_private.records.egress import EgressLog
from flame_private.secure.public.envelope import make_envelope
from flame_private.secure.public.packing import ParamLayout
from flame_private.secure.site.ceremony import key_ceremony
from flame_private.secure.site.codec import encrypt_packed, encrypt_update
from flame_private.secure.site.keys import SecretContext, load_secret_context
from flame_private.site_state import init_state

SITE = "site-a"
RUN = "run-1"
TODAY = date(2026, 1, 15)
OTHER_HE = HEConfig(poly_modulus_degree=4096, coeff_mod_bit_sizes=[50], scale_bits=30)


def tiny_model(task: str, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    out = 2 if task == "response" else 3
    net = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.ReLU(), torch.nn.Linear(4, out))
    return net.state_dict()


@dataclass
class Site:
    """One site's config, budget, egress log and key: the federation's site-side steps, one call each."""

    config: SiteConfig
    guard: BudgetGuard
    egress: EgressLog
    secret: SecretContext

    def spend(self, round: int, task: str) -> LedgerEntry:
        planned = PlannedSpend(run_id=RUN, round=round, task=task,  # type: ignore[arg-type]
                               noise_multiplier=1.2, sample_rate=0.1, steps=8, max_grad_norm=1.0)
        return self.guard.record(planned)

    def release(self, round: int, task: str, secret: SecretContext | None = None) -> None:
        """Train (not here), record the spend, encrypt [n w | n], log, (send)."""
        paid = self.spend(round, task)
        env, payload = encrypt_update(secret or self.secret, tiny_model(task, round), 40, site_id=SITE, run_id=RUN,
                                      task=task, round=round, model=task)
        self.egress.append(run_id=RUN, round=round, task=task, kind="update", payload=payload, envelope=env,
                           ledger_entry=paid)

    def evaluation_spend(self, round: int, task: str) -> LedgerEntry:
        """Metric sums of validation patients are a DP release (Gaussian mechanism: q = 1, one step)."""
        return self.guard.record(PlannedSpend(run_id=RUN, round=round, task=task,  # type: ignore[arg-type]
                                              noise_multiplier=3.0, sample_rate=1.0, steps=1, max_grad_norm=1.75))

    def metrics(self, round: int, task: str) -> None:
        paid = self.evaluation_spend(round, task)
        packed = np.append(np.arange(11, dtype=np.float64) / 100, 1 / 16)  # packed sums, then the count value
        payload = encrypt_packed(self.secret, packed)
        env = make_envelope(kind="update", run_id=RUN, task=task, round=round, model=f"metrics:{task}",
                            layout_sha256="1" * 64, n_params=11, ctx=self.secret.params, payload=payload,
                            content="metrics")
        self.egress.append(run_id=RUN, round=round, task=task, kind="metrics", payload=payload, envelope=env,
                           ledger_entry=paid)

    def decline(self, round: int, task: str, status: dict | None = None) -> None:
        """What a site sends when it declines: who, and "declined"; the reason is kept in the entry."""
        payload = json.dumps(status or {"site_id": SITE, "status": "declined"}).encode()
        self.egress.append(run_id=RUN, round=round, task=task, kind="declined", payload=payload,
                           reason="privacy budget: the round would pass the approved cap")

    def finish(self, round: int, task: str, status: dict | None = None) -> None:
        """What a site sends at the end of a run: who, and "ok"."""
        payload = json.dumps(status or {"site_id": SITE, "status": "ok"}).encode()
        self.egress.append(run_id=RUN, round=round, task=task, kind="finished", payload=payload)

    def forged_update(self, round: int, task: str, payload: bytes, *, model: str | None = None,
                      kind: str = "update", n_params: int = 38) -> None:
        """Log ``payload`` with a header made to look right for it: what a buggy or hostile client might send."""
        paid = self.spend(round, task) if kind == "update" else self.evaluation_spend(round, task)
        env = make_envelope(kind="update", run_id=RUN, task=task, round=round, model=model or task,
                            layout_sha256="2" * 64, n_params=n_params, ctx=self.secret.params, payload=payload,
                            content="metrics" if kind == "metrics" else "model")
        self.egress.append(run_id=RUN, round=round, task=task, kind=kind, payload=payload,  # type: ignore[arg-type]
                           envelope=env, ledger_entry=paid)

    def audit(self, **kw) -> AuditReport:
        return audit_site(self.config, **kw)

    def audit_without_agreed_params(self) -> AuditReport:
        return audit_site(self.config.model_copy(update={"he_params": None}))

    @property
    def state(self) -> Path:
        return self.config.state_dir


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The federation's key ceremony (default parameters): site-secret.ctx and server-params.ctx side by side."""
    out = tmp_path_factory.mktemp("ceremony") / "keys"
    key_ceremony(HEConfig(), out)
    return out


@pytest.fixture(scope="module")
def other_keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("other") / "keys"
    key_ceremony(OTHER_HE, out)
    return out


def make_site(root: Path, secret_context: Path | None, he_params: Path | None = None) -> Site:
    policy = root / "policy.yaml"
    policy.write_text(yaml.safe_dump({
        "site_id": SITE, "epsilon_cap": 50.0, "delta": 1e-5, "unit_of_privacy": "patient", "accountant": "rdp",
        "approved_by": "Test Ethics Committee", "approval_reference": "TEC-1", "approved_on": "2025-01-01",
        "expires_on": "2030-01-01"}))
    config = SiteConfig(site_id=SITE, data_dir=root / "data", state_dir=root / "state", privacy_policy=policy,
                        secret_context=secret_context, he_params=he_params)
    (root / "site.yaml").write_text(yaml.safe_dump(json.loads(config.model_dump_json())))
    init_state(config.state_dir, SITE)  # onboarding
    guard = open_site_budget(config, today=TODAY)
    secret = load_secret_context(secret_context) if secret_context else None
    return Site(config, guard, EgressLog.open(config.state_dir, SITE), secret)  # type: ignore[arg-type]


@pytest.fixture
def site(tmp_path: Path, keys: Path) -> Site:
    """Two rounds of both models, metrics after round 1, and a declined round 3."""
    s = make_site(tmp_path, keys / "site-secret.ctx", keys / "server-params.ctx")
    for round in (1, 2):
        for task in ("response", "evolution"):
            s.release(round, task)
    s.metrics(1, "response")
    s.metrics(1, "evolution")
    s.decline(3, "response")
    return s


def failed(report: AuditReport, name: str) -> list[str]:
    return [c.detail for c in report.checks if c.name == name and not c.ok]


def warned(report: AuditReport, name: str) -> list[str]:
    return [c.detail for c in report.checks if c.name == name and c.warning]


# --------------------------------------------------------------------------- a clean site


def test_a_clean_site_passes_every_check(site: Site, keys: Path) -> None:
    report = site.audit()
    assert report.ok, report.failures()
    assert report.warnings() == []
    assert report.messages_by_kind == {"update": 4, "metrics": 2, "declined": 1, "finished": 0}
    assert report.total_bytes == sum(e.byte_count for e in site.egress.entries)
    assert report.all_ciphertexts is True
    assert report.egress_head is not None and report.egress_head.count == 7
    assert report.egress_head.hash == site.egress.head_hash
    assert report.ledger_head is not None and report.ledger_head.count == 6
    assert report.epsilon_cap == 50.0 and 0 < report.epsilon_spent <= 50.0  # type: ignore[operator]
    assert report.he_fingerprint == site.secret.fingerprint
    assert report.params_source == f"key ceremony's params-only context {keys / 'server-params.ctx'} (he_params " \
                                   "of the site config)"
    assert [(a.app_hash, a.messages, a.installed) for a in report.app_hashes] == [(app_identity(), 7, True)]
    names = {c.name for c in report.checks}
    assert {"egress log", "privacy ledger", "HE parameters", "outbox", "ciphertext only", "declined",
            "ledger agreement", "budget", "code identity"} <= names


def test_ledger_agreement_counts_updates_and_metrics_messages_apart(site: Site) -> None:
    [detail] = [c.detail for c in site.audit().checks if c.name == "ledger agreement"]
    assert detail.startswith("4 update(s) and 2 metrics message(s), each covered by its own ledger entry")


def test_the_audit_reads_only(site: Site) -> None:
    head = site.state / "egress_log.head.json"
    site.decline(4, "evolution")
    head.write_bytes(b'{"count":7,"last_hash":"' + site.egress.entries[6].hash.encode() + b'"}\n')  # crash-like lag
    before = {p: p.read_bytes() for p in site.state.rglob("*") if p.is_file()}
    report = site.audit()
    assert report.ok
    assert any("head records 7 entries, the log holds 8" in d for d in warned(report, "egress log"))
    assert {p: p.read_bytes() for p in site.state.rglob("*") if p.is_file()} == before


def test_a_site_that_never_ran_passes_with_nothing_sent(tmp_path: Path, keys: Path) -> None:
    config = SiteConfig(site_id=SITE, data_dir=tmp_path, state_dir=tmp_path / "new", privacy_policy=tmp_path / "p",
                        secret_context=keys / "site-secret.ctx", he_params=keys / "server-params.ctx")
    init_state(config.state_dir, SITE)
    report = audit_site(config)
    assert report.ok and sum(report.messages_by_kind.values()) == 0 and report.all_ciphertexts is None
    assert warned(report, "budget")
    assert (report.ledger_head.count, report.egress_head.count) == (0, 0)  # type: ignore[union-attr]


def test_a_site_without_its_state_fails_saying_where_it_looked(tmp_path: Path, keys: Path) -> None:
    """A missing state is lost or deleted state, never "nothing sent, nothing spent"."""
    config = SiteConfig(site_id=SITE, data_dir=tmp_path, state_dir=tmp_path / "none", privacy_policy=tmp_path / "p",
                        secret_context=keys / "site-secret.ctx", he_params=keys / "server-params.ctx")
    report = audit_site(config)
    assert not report.ok
    for name in ("state directory", "egress log", "privacy ledger"):
        assert any(str(tmp_path / "none") in d for d in failed(report, name)), name
    assert not (tmp_path / "none").exists()


# --------------------------------------------------------------------------- tampering


def test_one_changed_byte_of_an_egress_entry_fails_the_audit(site: Site) -> None:
    path = site.state / "egress_log.jsonl"
    lines = path.read_bytes().splitlines(keepends=True)
    lines[2] = lines[2].replace(b'"round":2', b'"round":3', 1)
    path.write_bytes(b"".join(lines))
    report = site.audit()
    assert not report.ok
    assert "line 3: hash mismatch" in failed(report, "egress log")[0]
    assert report.egress_head is None


def test_a_changed_head_fails_the_audit(site: Site) -> None:
    head = site.state / "egress_log.head.json"
    head.write_bytes(head.read_bytes().replace(b'"count":7', b'"count":6'))
    report = site.audit()
    assert not report.ok and "the log or its head was rewritten" in failed(report, "egress log")[0]


def test_one_changed_byte_of_a_kept_payload_fails_the_audit(site: Site) -> None:
    payload = site.state / "outbox" / "000002-update.bin"
    data = bytearray(payload.read_bytes())
    data[len(data) // 2] ^= 0x01
    payload.write_bytes(bytes(data))
    report = site.audit()
    assert not report.ok
    assert failed(report, "outbox") == ["seq 2: 000002-update.bin does not match the logged sha256: changed "
                                        "after it was sent"]
    assert report.all_ciphertexts is False


def test_a_missing_payload_fails_the_audit(site: Site) -> None:
    (site.state / "outbox" / "000007-declined.bin").unlink()
    report = site.audit()
    assert not report.ok and "is missing" in failed(report, "outbox")[0]


def test_a_broken_privacy_ledger_fails_the_audit(site: Site) -> None:
    path = site.state / "privacy_ledger.jsonl"
    path.write_bytes(path.read_bytes().replace(b'"steps":8', b'"steps":1', 1))
    report = site.audit()
    assert not report.ok and "line 1: hash mismatch" in failed(report, "privacy ledger")[0]
    assert failed(report, "ledger agreement") == ["not checked: the privacy ledger did not verify"]


# --------------------------------------------------------------------------- nothing but ciphertexts left


def test_plaintext_weights_under_a_forged_envelope_are_caught(site: Site) -> None:
    weights = torch.cat([t.flatten() for t in tiny_model("response", 3).values()]).numpy().astype(np.float32)
    site.forged_update(3, "response", weights.tobytes(), n_params=weights.size)
    report = site.audit()
    assert not report.ok and report.all_ciphertexts is False
    [why] = failed(report, "ciphertext only")
    assert why.startswith("update seq 8 (run-1 round 3, response): not a ciphertext of the agreed parameters (garbage")


def test_raw_json_metrics_are_caught(site: Site) -> None:
    raw = json.dumps({"auc_histogram": [[3, 1, 0], [0, 2, 5]], "dice_num": 41.5, "dice_den": 60.0}).encode()
    site.forged_update(2, "response", raw, model="metrics:response", kind="metrics")
    report = site.audit()
    assert not report.ok
    assert "metrics seq 8" in failed(report, "ciphertext only")[0]


def test_an_update_encrypted_under_other_parameters_is_caught(site: Site, other_keys: Path) -> None:
    site.release(3, "response", secret=load_secret_context(other_keys / "site-secret.ctx"))
    report = site.audit()
    assert not report.ok
    assert "encrypted under other parameters: fingerprint" in failed(report, "ciphertext only")[0]


def test_a_foreign_ciphertext_claiming_the_agreed_fingerprint_is_caught(site: Site, other_keys: Path) -> None:
    other = load_secret_context(other_keys / "site-secret.ctx")
    state = tiny_model("response", 3)
    foreign = encrypt_update(other, state, 40, site_id=SITE, run_id=RUN, task="response", round=3,
                             model="response")[1]
    site.forged_update(3, "response", foreign, n_params=ParamLayout.from_state_dict(state).n_params)
    [why] = failed(site.audit(), "ciphertext only")
    assert "not a ciphertext of the agreed parameters (params" in why


def test_a_declined_status_carrying_more_than_declined_is_caught(site: Site) -> None:
    site.decline(4, "evolution", {"site_id": SITE, "status": "declined", "val_auc": 0.81})
    [why] = failed(site.audit(), "declined")
    assert why.startswith(f"seq 8 (run-1 round 4, evolution): must be the JSON status {{'site_id': '{SITE}'")


def test_a_finished_status_is_counted_and_one_saying_more_than_ok_is_caught(site: Site) -> None:
    site.finish(2, "response")
    report = site.audit()
    assert report.ok and report.messages_by_kind["finished"] == 1
    assert any('1 finished status(es) saying only "ok"' in c.detail for c in report.checks if c.name == "declined")
    site.finish(2, "evolution", {"site_id": SITE, "status": "ok", "val_dice": 0.61})
    [why] = failed(site.audit(), "declined")
    assert why.startswith("seq 9 (run-1 round 2, evolution): must be the JSON status") and "val_dice" in why


def test_a_declined_status_that_sent_its_reason_in_clear_is_a_warning(site: Site) -> None:
    """Sites before 0.2 told the server why they declined; the DPO learns that this reason left the site."""
    site.decline(4, "evolution", {"reason": "would bring epsilon from 7.73 to 8.48"})
    report = site.audit()
    assert report.ok
    [why] = warned(report, "declined")
    assert "sent its reason in clear" in why and "7.73" in why


# --------------------------------------------------------------------------- the agreed HE parameters


def test_without_agreed_parameters_the_site_does_not_vouch_for_itself(site: Site, keys: Path) -> None:
    """Neither --he-params nor he_params: fails, though the secret context (and a params file beside it) are there."""
    assert (keys / "server-params.ctx").exists() and site.config.secret_context == keys / "site-secret.ctx"
    report = site.audit_without_agreed_params()
    assert not report.ok
    [why] = failed(report, "HE parameters")
    assert "no agreed HE parameters" in why and "pass --he-params" in why and "he_params" in why
    assert report.all_ciphertexts is False and report.params_source is None and report.he_fingerprint is None
    assert "not checked: no HE parameters" in failed(report, "ciphertext only")[0]


def test_params_given_to_the_audit_take_precedence_over_the_site_config(site: Site, keys: Path,
                                                                         other_keys: Path) -> None:
    report = audit_site(site.config.model_copy(update={"he_params": other_keys / "server-params.ctx"}),
                        params_context=keys / "server-params.ctx")
    assert report.ok, report.failures()
    assert report.params_source is not None and report.params_source.endswith("(given with --he-params)")


def test_a_secret_context_of_other_parameters_than_the_agreed_ones_fails(site: Site, other_keys: Path) -> None:
    report = audit_site(site.config.model_copy(update={"secret_context": other_keys / "site-secret.ctx"}))
    assert not report.ok
    [why] = failed(report, "HE parameters")
    assert "the site's secret context" in why and "not from the same key ceremony's parameters" in why
    # The ciphertexts are still checked, against the agreed parameters: they pass.
    assert report.all_ciphertexts is True


def test_agreed_params_that_are_a_secret_context_are_refused(site: Site, keys: Path) -> None:
    report = site.audit(params_context=keys / "site-secret.ctx")
    assert not report.ok
    assert "cannot load the agreed parameters (given with --he-params)" in failed(report, "HE parameters")[0]


def test_a_missing_secret_context_is_a_warning_not_a_comparison(site: Site, tmp_path: Path) -> None:
    report = audit_site(site.config.model_copy(update={"secret_context": tmp_path / "elsewhere.ctx"}))
    assert report.ok, report.failures()
    [why] = warned(report, "HE parameters")
    assert "was not found: its parameters were not compared" in why


def test_a_params_file_from_another_ceremony_fails(site: Site, other_keys: Path) -> None:
    report = site.audit(params_context=other_keys / "server-params.ctx")
    assert not report.ok
    assert "not from the same key ceremony's parameters" in failed(report, "HE parameters")[0]


def test_without_any_he_parameters_the_ciphertexts_cannot_be_vouched_for(site: Site) -> None:
    report = audit_site(site.config.model_copy(update={"secret_context": None, "he_params": None}))
    assert not report.ok and "pass --he-params" in failed(report, "HE parameters")[0]
    assert report.all_ciphertexts is False


def test_the_audit_never_imports_key_handling() -> None:
    code = ("import sys; import flame_private.records.audit, flame_private.records.audit_cli; "
            "print(sorted(m for m in sys.modules if m.startswith('flame_private.secure.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "flame_private.secure.site" not in out and "flame_private.secure.public" in out, out


# --------------------------------------------------------------------------- ledger and egress agree


def test_an_update_naming_a_missing_ledger_entry_is_caught(site: Site) -> None:
    good = site.egress.entries[0]
    payload = (site.state / "outbox" / "000001-update.bin").read_bytes()
    site.egress.append(run_id=RUN, round=1, task="response", kind="update", payload=payload, envelope=good.envelope,
                       dp=good.dp, epsilon_after=good.epsilon_after, ledger_seq=99)
    [why] = failed(site.audit(), "ledger agreement")
    assert "names ledger entry 99, which does not exist" in why


def test_an_update_with_no_ledger_entry_is_caught(site: Site) -> None:
    good = site.egress.entries[0]
    payload = (site.state / "outbox" / "000001-update.bin").read_bytes()
    site.egress.append(run_id=RUN, round=1, task="response", kind="update", payload=payload, envelope=good.envelope)
    [why] = failed(site.audit(), "ledger agreement")
    assert "names no privacy-ledger entry" in why


def test_an_update_whose_epsilon_disagrees_with_the_ledger_is_caught(site: Site) -> None:
    paid = site.spend(3, "response")
    env, payload = encrypt_update(site.secret, tiny_model("response", 3), 40, site_id=SITE, run_id=RUN,
                                  task="response", round=3, model="response")
    site.egress.append(run_id=RUN, round=3, task="response", kind="update", payload=payload, envelope=env,
                       dp=site.egress.entries[0].dp, epsilon_after=paid.epsilon_after - 0.5, ledger_seq=paid.seq)
    [why] = failed(site.audit(), "ledger agreement")
    assert f"disagrees with ledger entry {paid.seq}" in why and "epsilon_after" in why


def test_two_updates_sharing_one_ledger_entry_are_caught(site: Site) -> None:
    first = site.egress.entries[0]
    payload = (site.state / "outbox" / "000001-update.bin").read_bytes()
    site.egress.append(run_id=RUN, round=1, task="response", kind="update", payload=payload,
                       envelope=first.envelope, dp=first.dp, epsilon_after=first.epsilon_after,
                       ledger_seq=first.ledger_seq)
    [why] = failed(site.audit(), "ledger agreement")
    assert "update seq 8 (run-1 round 1, response) and update seq 1 both name ledger entry 1" in why


def test_spend_recorded_but_never_released_is_only_a_warning(site: Site) -> None:
    site.spend(3, "evolution")  # e.g. the round failed after training, before sending
    report = site.audit()
    assert report.ok, report.failures()
    [why] = warned(report, "ledger agreement")
    assert why.startswith("1 ledger entry with no update or metrics message in the egress log: "
                          "7 (run-1 round 3, evolution)")


def test_a_payload_file_no_entry_names_is_a_warning(site: Site) -> None:
    (site.state / "outbox" / "000008-update.bin").write_bytes(b"prepared, never logged")
    report = site.audit()
    assert report.ok
    assert "interrupted before its log line: never sent" in warned(report, "outbox")[0]


def test_an_app_hash_other_than_the_installed_code_is_listed(site: Site) -> None:
    site.egress.append(run_id=RUN, round=4, task="response", kind="declined",
                       payload=json.dumps({"site_id": SITE, "status": "declined"}).encode(), reason="x",
                       app_hash="fab:" + "9" * 64)
    report = site.audit()
    assert report.ok
    assert [(a.app_hash[:4], a.messages, a.first_seq, a.installed) for a in report.app_hashes] == [
        (app_identity()[:4], 7, 1, True), ("fab:", 1, 8, False)]


# --------------------------------------------------------------------------- flame audit


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()
    app.command("audit")(audit)

    @app.command("noop")
    def _noop() -> None:  # a second command, so typer keeps "audit" as a subcommand as in the flame app
        pass

    return app


def test_cli_exits_0_on_a_clean_site_and_prints_the_summary(site: Site, cli: typer.Typer, tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    result = CliRunner().invoke(cli, ["audit", "--site", str(tmp_path / "site.yaml"), "--json-out", str(out)],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for text in ("messages: update", "all updates and metrics encrypted", "epsilon spent / cap", "audit passed",
                 app_identity()[:16]):
        assert text in result.output
    data = json.loads(out.read_text())
    assert data["ok"] is True and data["all_ciphertexts"] is True and data["messages_by_kind"]["update"] == 4


def test_cli_exits_1_when_a_check_fails(site: Site, cli: typer.Typer, tmp_path: Path) -> None:
    os.chmod(site.state / "outbox" / "000001-update.bin", 0o600)
    (site.state / "outbox" / "000001-update.bin").write_bytes(b"\0" * 10)
    out = tmp_path / "report.json"
    result = CliRunner().invoke(cli, ["audit", "-s", str(tmp_path / "site.yaml"), "--json", str(out)],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 1, result.output
    assert "AUDIT FAILED" in result.output and "FAIL" in result.output
    assert json.loads(out.read_text())["ok"] is False


def test_cli_takes_the_agreed_parameters_from_params_or_the_site_yaml(site: Site, cli: typer.Typer, keys: Path,
                                                                     tmp_path: Path) -> None:
    bare = tmp_path / "no-he-params.yaml"
    raw = yaml.safe_load((tmp_path / "site.yaml").read_text())
    assert raw.pop("he_params") == str(keys / "server-params.ctx")
    bare.write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(cli, ["audit", "--site", str(bare)], env={"COLUMNS": "400"})
    assert result.exit_code == 1, result.output
    assert "AUDIT FAILED" in result.output and "HE parameters" in result.output and "pass --he-params" in result.output
    result = CliRunner().invoke(cli, ["audit", "--site", str(bare), "--he-params", str(keys / "server-params.ctx")],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output


def test_cli_exits_2_on_an_unreadable_site_config(cli: typer.Typer, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["audit", "--site", str(tmp_path / "missing.yaml")], env={"COLUMNS": "200"})
    assert result.exit_code == 3 and "file not found" in result.output
