"""The privacy rule of a site, on its one path: authorise, train, record, then encrypt, log and send.

``Site._release`` (over ``BudgetGuard.spend``) is the only way a site's update or
metric sums leave it.  These tests state the rule at the site: an update is
encrypted only once its ledger entry is on disk, and logged with that entry; a
refusal at record time (another process spent meanwhile) leaves no ledger entry
and no update in the egress log, only the generic "declined", with the reason
kept at the site; a crash during training records nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from federation_harness import make_federation

import flame_private.federation.site.site as site_module
import flame_private.federation.site.task as task_module
from flame_private.config import HEConfig
from flame_private.federation.site.site import Site
from flame_private.privacy import Ledger, epsilon_for, open_site_budget
from flame_private.records.egress import EgressLog
from flame_private.secure.site.ceremony import key_ceremony

RUN = "run-1"


@pytest.fixture(scope="module")
def ceremony(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("keys")
    key_ceremony(HEConfig(), out)
    return out


@pytest.fixture
def site_yaml(tmp_path: Path, cohort_dir: Path, ceremony: Path) -> tuple[Path, Path]:
    sites, fed = make_federation(tmp_path, cohort_dir, ceremony, n_sites=3, rounds=1, tasks="[response]")
    return sites["site-a"], fed


def _logs(site: Site) -> tuple[Ledger, EgressLog]:
    state = site.config.state_dir
    return Ledger.open(state, site.site_id), EgressLog.open(state, site.site_id, readonly=True)


def _set_cap(site_yaml: Path, cap: float) -> None:
    policy = site_yaml.parent / "policy.yaml"
    policy.write_text("\n".join(f"epsilon_cap: {cap!r}" if line.startswith("epsilon_cap:") else line
                                for line in policy.read_text().splitlines()) + "\n")


def test_an_update_is_encrypted_only_once_its_ledger_entry_is_on_disk_and_logged_with_it(
        site_yaml: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """The honest round: the control for the refusal below."""
    site = Site.load(*site_yaml)
    encrypt = site_module.encrypt_update
    entries_when_encrypted = []

    def encrypt_update(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        entries_when_encrypted.append(len(_logs(site)[0]))
        return encrypt(*args, **kwargs)

    monkeypatch.setattr(site_module, "encrypt_update", encrypt_update)
    reply = site.train_round(RUN, "response", 1, None, None)
    assert reply.status == "ok" and reply.payload is not None
    ledger, egress = _logs(site)
    assert entries_when_encrypted == [1]
    [entry], [sent] = ledger.entries, egress.entries
    assert (sent.kind, sent.ledger_seq, sent.epsilon_after) == ("update", entry.seq, entry.epsilon_after)
    assert entry.time <= sent.time  # the audit's order: the ledger entry no later than the update
    assert egress.payload_path(sent).read_bytes() == reply.payload


def test_a_refusal_at_record_time_leaves_no_ledger_entry_and_no_update_in_the_egress_log(
        site_yaml: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    real_train, plans = task_module.train, []

    def crash(model, task, dataset, settings, plan, **kwargs):  # noqa: ANN001, ANN003, ANN202
        plans.append(plan)
        raise RuntimeError("killed mid-training")

    # A crash during training: nothing was released, nothing is counted or logged.
    monkeypatch.setattr(task_module, "train", crash)
    with pytest.raises(RuntimeError, match="killed mid-training"):
        Site.load(*site_yaml).train_round(RUN, "response", 1, None, None)
    ledger, egress = _logs(Site.load(*site_yaml))
    assert len(ledger) == 0 and len(egress) == 0

    # A cap that fits this round alone; another process records the same spend while this one trains.
    spend = plans[0].planned_spend(RUN, 1, "response")
    _set_cap(site_yaml[0], 1.05 * epsilon_for([spend.history_item()], 1e-5, "prv"))
    site = Site.load(*site_yaml)

    def spend_meanwhile(model, task, dataset, settings, plan, **kwargs):  # noqa: ANN001, ANN003, ANN202
        open_site_budget(site.config).record(plan.planned_spend("other-run", 1, task))
        return real_train(model, task, dataset, settings, plan, **kwargs)

    monkeypatch.setattr(task_module, "train", spend_meanwhile)
    monkeypatch.setattr(site_module, "encrypt_update", lambda *a, **k: pytest.fail("encrypted an unrecorded update"))
    reply = site.train_round(RUN, "response", 1, None, None)
    assert (reply.status, reply.header_json, reply.payload) == ("declined", None, None)
    ledger, egress = _logs(site)
    assert [e.run_id for e in ledger.entries] == ["other-run"]  # this round's spend was not recorded ...
    [declined] = egress.entries  # ... and its update never logged: only the generic status left
    assert declined.kind == "declined" and "must not leave the site" in (declined.reason or "")
    assert json.loads(egress.payload_path(declined).read_bytes()) == {"site_id": "site-a", "status": "declined"}
