"""Budget enforcement: a site refuses, before training and with the reason, any round it may not spend."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import pytest
import yaml

from flame_private.config import SiteConfig, load_config
from flame_private.privacy.accounting import epsilon_for
from flame_private.privacy.budget import REFUSALS, BudgetExceeded, BudgetGuard, open_site_budget
from flame_private.privacy.ledger import LEDGER_NAME, Ledger, LedgerError, PlannedSpend
from flame_private.privacy.policy import PolicyError, PrivacyPolicy, file_sha256
from flame_private.site_state import init_state

SITE = "site-a"
TODAY = date(2027, 3, 1)
POLICY = {
    "site_id": SITE, "epsilon_cap": 3.8, "delta": 1e-5, "unit_of_privacy": "patient", "accountant": "rdp",
    "approved_by": "Research Ethics Committee A", "approval_reference": "REC-A-7",
    "approved_on": date(2026, 1, 1), "expires_on": date(2028, 1, 1),
}


def planned(rnd: int, task: str = "response", steps: int = 15) -> PlannedSpend:
    return PlannedSpend(run_id="demo", round=rnd, task=task, noise_multiplier=1.0, sample_rate=4 / 60, steps=steps,
                        max_grad_norm=1.0)


def site_config(tmp_path: Path, **policy_changes: object) -> SiteConfig:
    """An onboarded site: its policy (written with ``policy_changes``) and its initialised state."""
    policy_file = tmp_path / "privacy_budgets" / f"{SITE}.yaml"
    policy_file.parent.mkdir(exist_ok=True)
    policy_file.write_text(yaml.safe_dump({**POLICY, **policy_changes}))
    if not (tmp_path / "state").exists():
        init_state(tmp_path / "state", SITE)
    return SiteConfig(site_id=SITE, data_dir=tmp_path / "data", state_dir=tmp_path / "state",
                      privacy_policy=policy_file)


def ledger_bytes(site: SiteConfig) -> bytes:
    path = site.state_dir / LEDGER_NAME
    return path.read_bytes() if path.exists() else b""


def test_rounds_are_authorised_and_recorded_until_the_cap(tmp_path: Path) -> None:
    guard = open_site_budget(site_config(tmp_path), today=TODAY)
    preview = guard.authorise(planned(1))
    assert (preview.spent, preview.cap, preview.releases) == (0.0, 3.8, 0)
    assert preview.would_be == pytest.approx(epsilon_for([(1.0, 4 / 60, 15)], 1e-5, "rdp"))
    entry = guard.record(planned(1))
    assert entry.epsilon_after == preview.would_be and (entry.delta, entry.accountant) == (1e-5, "rdp")
    guard.record(planned(1, "evolution"))
    assert guard.spent() == pytest.approx(epsilon_for([(1.0, 4 / 60, 30)], 1e-5, "rdp"))
    assert guard.preview(planned(2)).remaining == pytest.approx(3.8 - guard.spent())


def test_a_round_that_would_pass_the_cap_is_refused_before_anything_is_recorded(tmp_path: Path) -> None:
    site = site_config(tmp_path)
    guard = open_site_budget(site, today=TODAY)
    for task in ("response", "evolution"):
        guard.authorise(planned(1, task))
        guard.record(planned(1, task))
    before = ledger_bytes(site)
    spent = guard.spent()
    with pytest.raises(BudgetExceeded) as refused:
        guard.authorise(planned(2))
    would_be = epsilon_for([(1.0, 4 / 60, 45)], 1e-5, "rdp")
    assert str(refused.value).startswith(
        f"site-a: round 2 of run demo (response) would bring epsilon from {spent:.2f} to {would_be:.2f}, "
        "above the approved cap of 3.80 (delta=1e-05, RDP accountant; policy REC-A-7")
    assert "2 release(s) recorded" in str(refused.value)
    assert refused.value.preview.would_be == pytest.approx(would_be) and not refused.value.preview.allowed
    assert ledger_bytes(site) == before
    assert len(Ledger.open(site.state_dir, SITE)) == 2


def test_record_rechecks_the_cap_so_rounds_authorised_together_cannot_pass_it(tmp_path: Path) -> None:
    """Both tasks authorised side by side, each within the cap alone: the second record is refused."""
    site = site_config(tmp_path, epsilon_cap=3.0)
    guard = open_site_budget(site, today=TODAY)
    guard.authorise(planned(1, "response"))
    guard.authorise(planned(1, "evolution"))
    guard.record(planned(1, "response"))
    before = ledger_bytes(site)
    with pytest.raises(BudgetExceeded, match="must not leave the site"):
        guard.record(planned(1, "evolution"))
    assert ledger_bytes(site) == before


def test_spend_recorded_by_another_process_counts(tmp_path: Path) -> None:
    site = site_config(tmp_path)
    first, second = open_site_budget(site, today=TODAY), open_site_budget(site, today=TODAY)
    first.record(planned(1))
    assert second.spent() == first.spent() > 0
    assert second.preview(planned(2)).releases == 1


def test_no_policy_file_is_refused_with_the_reason(tmp_path: Path) -> None:
    site = site_config(tmp_path)
    site.privacy_policy.unlink()
    with pytest.raises(PolicyError, match=r"no valid privacy policy: .*site-a\.yaml: file not found"):
        open_site_budget(site, today=TODAY)


@pytest.mark.parametrize(("changes", "today", "reason"), [
    ({"expires_on": date(2027, 3, 1)}, TODAY, "expired on 2027-03-01"),
    ({"approved_on": date(2027, 4, 1)}, TODAY, "not yet valid: it applies from 2027-04-01"),
    ({"site_id": "site-b"}, TODAY, "policy given is for site 'site-b', not 'site-a'"),
])
def test_an_invalid_policy_refuses_every_round_and_records_nothing(tmp_path: Path, changes: dict, today: date,
                                                                    reason: str) -> None:
    site = site_config(tmp_path, **changes)
    guard = open_site_budget(site, today=today)
    with pytest.raises(PolicyError, match=reason):
        guard.authorise(planned(1))
    with pytest.raises(PolicyError, match=reason):
        guard.record(planned(1))
    assert ledger_bytes(site) == b""


def test_a_policy_that_expires_during_a_long_run_stops_it(tmp_path: Path) -> None:
    guard = open_site_budget(site_config(tmp_path), today=TODAY)
    guard.record(planned(1))
    expired = BudgetGuard(guard.policy, guard.ledger, today=date(2028, 1, 1))
    with pytest.raises(PolicyError, match="expired"):
        expired.authorise(planned(2))


def test_a_broken_chain_refuses_the_site_until_a_person_acts(tmp_path: Path) -> None:
    site = site_config(tmp_path)
    guard = open_site_budget(site, today=TODAY)
    for rnd in (1, 2):
        guard.record(planned(rnd, steps=5))
    path = site.state_dir / LEDGER_NAME
    first, second = path.read_text().splitlines(keepends=True)
    path.write_text(first.replace('"steps":5', '"steps":1') + second)
    with pytest.raises(LedgerError, match="line 1: hash mismatch"):
        open_site_budget(site, today=TODAY)
    # A guard opened before the damage re-reads the ledger and refuses too.
    with pytest.raises(LedgerError, match="line 1: hash mismatch"):
        guard.authorise(planned(3))
    with pytest.raises(LedgerError, match="line 1: hash mismatch"):
        guard.record(planned(3))


def test_refusals_are_one_family_to_catch() -> None:
    assert set(REFUSALS) == {PolicyError, LedgerError, BudgetExceeded}


def test_the_demo_sites_budgets_open_from_their_site_yaml(tmp_path: Path, monkeypatch) -> None:
    repo = Path(__file__).resolve().parents[1]
    shutil.copytree(repo / "privacy_budgets", tmp_path / "privacy_budgets")
    shutil.copytree(repo / "configs" / "sites", tmp_path / "configs" / "sites")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # site YAML paths are relative to the YAML's folder, not to here
    for name in ("site-a", "site-b", "site-c", "site-d"):
        site = load_config(tmp_path / "configs" / "sites" / f"{name}.yaml", SiteConfig)
        with pytest.raises(LedgerError, match="the state directory is missing"):
            open_site_budget(site)  # not onboarded yet
        init_state(site.state_dir, site.site_id)
        guard = open_site_budget(site)
        assert isinstance(guard.policy, PrivacyPolicy) and len(guard.ledger) == 0
        guard.check_policy()
    assert sorted(p.name for p in (tmp_path / "runs" / "demo" / "state").iterdir()) == [
        "site-a", "site-b", "site-c", "site-d"]


def test_each_recorded_release_carries_the_policy_in_force(tmp_path: Path) -> None:
    """The file's sha256, cap and approval reference: what lets the audit catch a policy edited after spending."""
    site = site_config(tmp_path)
    entry = open_site_budget(site, today=TODAY).record(planned(1))
    assert (entry.policy_sha256, entry.epsilon_cap, entry.approval_reference) == (
        file_sha256(site.privacy_policy), 3.8, "REC-A-7")
    assert Ledger.open(site.state_dir, SITE).entries[0].policy == entry.policy


@pytest.mark.parametrize("lost", ["state directory", "ledger", "ledger and head"])
def test_a_site_whose_state_was_deleted_refuses_to_train_instead_of_starting_from_zero(tmp_path: Path,
                                                                                      lost: str) -> None:
    site = site_config(tmp_path)
    guard = open_site_budget(site, today=TODAY)
    guard.record(planned(1))
    if lost == "state directory":
        shutil.rmtree(site.state_dir)
    else:
        (site.state_dir / LEDGER_NAME).unlink()
        if lost == "ledger and head":
            (site.state_dir / "privacy_ledger.head.json").unlink()
    with pytest.raises(LedgerError, match="missing") as refused:
        open_site_budget(site, today=TODAY)
    assert "restore" in str(refused.value) and "tell the DPO" in str(refused.value)
    with pytest.raises(LedgerError, match="missing"):  # a guard opened before the loss refuses too
        guard.authorise(planned(2))


def test_a_cap_raised_in_the_file_after_spending_is_refused_and_a_renewal_is_not(tmp_path: Path) -> None:
    """Same approval reference, another cap: the policy changed without a new approval; the site does not spend."""
    site = site_config(tmp_path)
    open_site_budget(site, today=TODAY).record(planned(1))
    site_config(tmp_path, epsilon_cap=38.0)
    guard = open_site_budget(site, today=TODAY)
    with pytest.raises(PolicyError, match="the cap went from 3.80 to 38.00 under the same approval reference "
                                          "REC-A-7"):
        guard.authorise(planned(2))
    with pytest.raises(PolicyError, match="without a new approval"):
        guard.record(planned(2))
    assert len(Ledger.open(site.state_dir, SITE)) == 1
    site_config(tmp_path, epsilon_cap=38.0, approval_reference="REC-A-8")  # the committee's renewal
    renewed = open_site_budget(site, today=TODAY)
    renewed.authorise(planned(2))
    assert renewed.record(planned(2)).approval_reference == "REC-A-8"


def test_spend_authorises_then_computes_then_records_before_handing_the_result_out(tmp_path: Path) -> None:
    """The privacy rule, once: the release is computed only when authorised, and leaves only with its entry."""
    site = site_config(tmp_path)
    guard = open_site_budget(site, today=TODAY)
    recorded_while_training = []

    def train() -> str:
        recorded_while_training.append(len(Ledger.open(site.state_dir, SITE)))
        return "update"

    spent = guard.spend(planned(1), train)
    assert recorded_while_training == [0]  # trained before anything was recorded ...
    ledger = Ledger.open(site.state_dir, SITE)
    assert spent.value == "update" and spent.entry == ledger.entries[-1]  # ... handed out only once recorded
    assert (spent.entry.run_id, spent.entry.round, spent.entry.task) == ("demo", 1, "response")


def test_spend_refused_before_training_computes_nothing_and_records_nothing(tmp_path: Path) -> None:
    site = site_config(tmp_path, epsilon_cap=0.01)
    guard = open_site_budget(site, today=TODAY)
    with pytest.raises(BudgetExceeded, match="Refused before training"):
        guard.spend(planned(1), lambda: pytest.fail("trained although the budget refused the round"))
    assert ledger_bytes(site) == b""


def test_spend_refused_at_record_time_drops_the_update_and_records_nothing(tmp_path: Path) -> None:
    """Another process records its release while this one trains; together they would pass the cap."""
    site = site_config(tmp_path, epsilon_cap=3.0)
    guard, other = open_site_budget(site, today=TODAY), open_site_budget(site, today=TODAY)

    def train_while_the_other_records() -> str:
        other.record(planned(1, "evolution"))
        return "update"

    with pytest.raises(BudgetExceeded, match="must not leave the site"):
        guard.spend(planned(1, "response"), train_while_the_other_records)
    assert [e.task for e in Ledger.open(site.state_dir, SITE).entries] == ["evolution"]


def test_spend_records_nothing_when_training_fails(tmp_path: Path) -> None:
    """An exception during training: no update exists, nothing was released, nothing is counted."""
    site = site_config(tmp_path)
    guard = open_site_budget(site, today=TODAY)

    def crash() -> str:
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):
        guard.spend(planned(1), crash)
    assert ledger_bytes(site) == b""
