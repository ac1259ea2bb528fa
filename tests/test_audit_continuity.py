"""Tampering around the privacy ledger, the policy and the state's continuity: a DPO following docs/dpo-guide.md.

Specification (records/audit.py, records/anchor.py, privacy/policy_history.py):

* ``flame budget verify`` and ``flame audit`` agree: both fail on every tampering with
  the ledger, its head, the state or the approved cap, and both pass on the honest state;
* every ledger entry records the policy in force; a policy changed after spending under
  the same approval reference fails the audit, a new approval reference is a warning;
* ``flame audit --save-anchor`` certifies the chain heads of a passed audit, and
  ``flame audit --anchor`` fails unless today's chains extend them.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import typer
import yaml
from test_audit import SITE, TODAY, Site, failed, keys, make_site, warned  # noqa: F401 (keys: a fixture)
from typer.testing import CliRunner

from flame_private.privacy.budget import BudgetGuard, open_site_budget
from flame_private.privacy.cli import budget_app
from flame_private.privacy.ledger import HEAD_NAME, LEDGER_NAME, Ledger, PlannedSpend
from flame_private.privacy.policy import PolicyError, file_sha256, load_policy_with_sha
from flame_private.records.anchor import AuditAnchor, load_anchor
from flame_private.records.audit import audit_site
from flame_private.records.audit_cli import audit
from flame_private.site_state import init_state

WIDE = {"COLUMNS": "400"}


@pytest.fixture
def site(tmp_path: Path, keys: Path) -> Site:  # noqa: F811
    """Two rounds of the response model and its metrics: three ledger entries, three messages sent."""
    s = make_site(tmp_path, keys / "site-secret.ctx", keys / "server-params.ctx")
    s.release(1, "response")
    s.release(2, "response")
    s.metrics(2, "response")
    return s


def audit_app() -> typer.Typer:
    app = typer.Typer()
    app.command("audit")(audit)
    app.command("noop")(lambda: None)  # a second command keeps "audit" a subcommand, as in the flame app
    return app


def flame_audit(site: Site, *args: str | Path):
    return CliRunner().invoke(audit_app(), ["audit", "--site", str(site.state.parent / "site.yaml"),
                                            *map(str, args)], env=WIDE)


def budget(command: str, site: Site):
    return CliRunner().invoke(budget_app, [command, "--site", str(site.state.parent / "site.yaml")], env=WIDE)


def rewrite_policy(site: Site, **changes: object) -> None:
    path = site.config.privacy_policy
    path.write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()), **changes}))


def ledger_lines(state: Path) -> list[str]:
    return (state / LEDGER_NAME).read_text().splitlines(keepends=True)


# --------------------------------------------------------------------------- verify and audit agree

def _edit_entry(s: Site) -> None:
    lines = ledger_lines(s.state)
    lines[0] = lines[0].replace('"steps":8', '"steps":1', 1)
    (s.state / LEDGER_NAME).write_text("".join(lines))


def _delete_entry(s: Site) -> None:
    lines = ledger_lines(s.state)
    (s.state / LEDGER_NAME).write_text("".join(lines[:1] + lines[2:]))


def _truncate(s: Site) -> None:
    (s.state / LEDGER_NAME).write_text("".join(ledger_lines(s.state)[:-1]))


TAMPERING: dict[str, Callable[[Site], None]] = {
    "an entry edited": _edit_entry,
    "an entry deleted": _delete_entry,
    "the last entry cut off": _truncate,
    "the head deleted": lambda s: (s.state / HEAD_NAME).unlink(),
    "the ledger deleted": lambda s: (s.state / LEDGER_NAME).unlink(),
    "ledger and head deleted": lambda s: [(s.state / n).unlink() for n in (LEDGER_NAME, HEAD_NAME)],
    "the state deleted": lambda s: shutil.rmtree(s.state),
    "the cap raised (same approval)": lambda s: rewrite_policy(s, epsilon_cap=500.0),
}


def test_budget_verify_and_the_audit_both_pass_on_the_honest_state(site: Site) -> None:
    verify, audited = budget("verify", site), flame_audit(site)
    assert verify.exit_code == 0, verify.output
    assert audited.exit_code == 0, audited.output


@pytest.mark.parametrize("tampering", TAMPERING, ids=list(TAMPERING))
def test_budget_verify_and_the_audit_both_fail_on_each_tampering(site: Site, tampering: str) -> None:
    TAMPERING[tampering](site)
    verify, audited = budget("verify", site), flame_audit(site)
    assert verify.exit_code == 1, verify.output
    assert "0 entries, hash chain intact" not in verify.output
    assert audited.exit_code == 1 and "AUDIT FAILED" in audited.output, audited.output
    if tampering in ("the ledger deleted", "ledger and head deleted", "the state deleted"):
        assert str(site.state) in verify.output and "flame site init-state" in verify.output, "says where and what"


# --------------------------------------------------------------------------- the cap's history

def test_the_cap_raised_after_spending_under_the_same_approval_fails_naming_both_caps(site: Site) -> None:
    before = file_sha256(site.config.privacy_policy)
    rewrite_policy(site, epsilon_cap=500.0)
    report = site.audit()
    [why] = failed(report, "policy history")
    assert "changed without a new approval" in why and "from 50.00 to 500.00" in why and "TEC-1" in why
    assert before[:12] in why
    assert report.policy_history[0].policy is not None and report.policy_history[0].policy.epsilon_cap == 50.0
    shown = budget("show", site)
    assert "cap history: entries 1-3 (3): policy " + before[:12] + ", cap 50.00, approval TEC-1" in shown.output
    assert "FAIL" in shown.output


def test_an_edit_that_keeps_the_cap_still_needs_a_new_approval(site: Site) -> None:
    rewrite_policy(site, notes="amended by the site")
    [why] = failed(site.audit(), "policy history")
    assert "the file's content changed, not its cap" in why


def test_a_renewal_under_a_new_reference_is_a_warning_to_check_with_the_committee(site: Site) -> None:
    rewrite_policy(site, epsilon_cap=60.0, approval_reference="TEC-2")
    site.guard = open_site_budget(site.config, today=TODAY)
    site.release(3, "response")  # the site trains on under the renewal
    report = site.audit()
    assert report.ok, report.failures()
    [why] = warned(report, "policy history")
    assert "new approval reference" in why and "TEC-1" in why and "TEC-2" in why and "committee's decision" in why
    assert budget("verify", site).exit_code == 0


def test_entries_recording_different_policies_under_one_reference_fail(site: Site) -> None:
    rewrite_policy(site, epsilon_cap=500.0)
    with pytest.raises(PolicyError, match="changed without a new approval"):
        open_site_budget(site.config, today=TODAY).authorise(PlannedSpend(
            run_id="run-1", round=3, task="response", noise_multiplier=1.2, sample_rate=0.1, steps=8,
            max_grad_norm=1.0))  # the site itself refuses to spend under the edited file
    # Code that does not check (an older flame-private) records under it anyway: the audit still catches it.
    policy, sha = load_policy_with_sha(site.config.privacy_policy)
    site.guard = BudgetGuard(policy, site.guard.ledger, today=TODAY, policy_sha256=sha)
    site.guard.check_policy = lambda: None  # type: ignore[method-assign]
    site.release(3, "response")
    report = site.audit()
    assert [u.policy.epsilon_cap for u in report.policy_history] == [50.0, 500.0]  # type: ignore[union-attr]
    assert [(u.first_seq, u.last_seq) for u in report.policy_history] == [(1, 3), (4, 4)]
    [why] = failed(report, "policy history")
    assert why.startswith("between ledger entries 3 and 4: the policy changed without a new approval")


def test_entries_written_before_policies_were_recorded_are_listed_as_such(tmp_path: Path, keys: Path) -> None:  # noqa: F811
    s = make_site(tmp_path, keys / "site-secret.ctx", keys / "server-params.ctx")
    old = PlannedSpend(run_id="run-0", round=1, task="response", noise_multiplier=1.2, sample_rate=0.1, steps=8,
                       max_grad_norm=1.0)
    s.guard.ledger.append(old, delta=1e-5, accountant="rdp")  # as flame-private wrote entries before
    s.release(1, "response")
    raw = json.loads(ledger_lines(s.state)[0])
    assert "policy_sha256" not in raw and "epsilon_cap" not in raw
    report = s.audit()
    assert not failed(report, "policy history")
    [ok] = [c.detail for c in report.checks if c.name == "policy history"]
    assert "entry 1 (1): written before the policy was recorded in each entry" in ok
    assert "entry 2 (1): policy " in ok


# --------------------------------------------------------------------------- continuity: the anchor

def test_an_anchor_saved_at_one_audit_is_extended_by_later_rounds(site: Site, tmp_path: Path) -> None:
    anchor = tmp_path / "anchor-1.json"
    saved = flame_audit(site, "--save-anchor", anchor)
    assert saved.exit_code == 0 and "anchor written" in saved.output, saved.output
    certified = load_anchor(anchor)
    assert (certified.site_id, certified.ledger_head.count, certified.egress_head.count) == (SITE, 3, 3)
    assert certified.ledger_head.hash == site.guard.ledger.head_hash
    site.release(3, "response")
    later = flame_audit(site, "--anchor", anchor)
    assert later.exit_code == 0, later.output
    assert "extend the heads certified" in later.output
    assert flame_audit(site, "--save-anchor", anchor).exit_code == 3, "an anchor is never overwritten"


def _reinitialised(s: Site) -> None:
    shutil.rmtree(s.state)
    init_state(s.state, SITE)


def _ledger_rewritten(s: Site) -> None:
    """The same spends recorded again in a new chain: valid in itself, but not the chain certified."""
    entries = Ledger.open(s.state, SITE).entries
    for name in (LEDGER_NAME, HEAD_NAME):
        (s.state / name).unlink()
    Ledger.initialise(s.state, SITE)
    guard = open_site_budget(s.config, today=TODAY)
    for e in entries:
        guard.record(PlannedSpend(**{k: getattr(e, k) for k in PlannedSpend.model_fields}))


@pytest.mark.parametrize(("damage", "reason"), [
    (_reinitialised, "fewer than the 3 certified"),
    (_ledger_rewritten, "entry 3 of the privacy ledger has hash .* the anchor certified"),
], ids=["state deleted and re-initialised", "ledger rewritten"])
def test_a_chain_that_does_not_extend_the_anchor_fails(site: Site, tmp_path: Path,
                                                        damage: Callable[[Site], None], reason: str) -> None:
    anchor = tmp_path / "anchor.json"
    assert flame_audit(site, "--save-anchor", anchor).exit_code == 0
    damage(site)
    report = site.audit(anchor=load_anchor(anchor))
    assert any(re.search(reason, d) for d in failed(report, "continuity")), report.checks
    assert flame_audit(site, "--anchor", anchor).exit_code == 1


def test_an_anchor_of_another_site_fails(site: Site, tmp_path: Path) -> None:
    anchor = tmp_path / "anchor.json"
    assert flame_audit(site, "--save-anchor", anchor).exit_code == 0
    data = json.loads(anchor.read_text())
    anchor.write_text(json.dumps({**data, "site_id": "site-b"}))
    [why] = failed(site.audit(anchor=load_anchor(anchor)), "continuity")
    assert "for site 'site-b', not 'site-a'" in why


def test_no_anchor_is_saved_from_a_failed_audit_and_a_bad_anchor_file_exits_2(site: Site, tmp_path: Path) -> None:
    _truncate(site)
    result = flame_audit(site, "--save-anchor", tmp_path / "a.json")
    assert result.exit_code == 1 and "no anchor written" in result.output and not (tmp_path / "a.json").exists()
    (tmp_path / "bad.json").write_text('{"site_id": "site-a"}')
    bad = flame_audit(site, "--anchor", tmp_path / "bad.json")
    assert bad.exit_code == 3 and "not a valid audit anchor" in bad.output
    assert AuditAnchor.model_fields.keys() >= {"site_id", "taken_at", "ledger_head", "egress_head"}


def test_budget_show_and_verify_print_both_chain_heads(site: Site) -> None:
    for command in ("show", "verify"):
        out = budget(command, site).output
        assert f"privacy ledger head: 3 entries, {site.guard.ledger.head_hash}" in out
        assert f"egress log head: 3 entries, {site.egress.head_hash}" in out


def test_the_audit_of_a_missing_state_never_reads_as_nothing_spent(site: Site) -> None:
    shutil.rmtree(site.state)
    report = audit_site(site.config)
    assert not report.ok and report.ledger_head is None and report.epsilon_spent is None
