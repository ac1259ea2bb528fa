"""privacy_budgets/<site>.yaml: the approved policy, its loading errors, and when it authorises spending."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
import yaml

from flame_private.config import SiteConfig, load_config
from flame_private.privacy.policy import PolicyError, PrivacyPolicy, check_policy_valid, load_policy

REPO = Path(__file__).resolve().parents[1]
BUDGETS = REPO / "privacy_budgets"
GOOD = {
    "site_id": "site-x",
    "epsilon_cap": 8.0,
    "delta": 1e-5,
    "unit_of_privacy": "patient",
    "accountant": "prv",
    "approved_by": "Research Ethics Committee X",
    "approval_reference": "REC-X-1",
    "approved_on": date(2025, 1, 1),
    "expires_on": date(2028, 1, 1),
}


def write(tmp_path: Path, **changes: object) -> Path:
    data = {k: v for k, v in {**GOOD, **changes}.items() if v is not ...}
    path = tmp_path / "site-x.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_shipped_policies_all_load_and_match_the_demo_sites() -> None:
    files = sorted(BUDGETS.glob("*.yaml"))
    assert [f.stem for f in files] == ["site-a", "site-b", "site-c", "site-d"]
    for f in files:
        policy = load_policy(f)
        assert policy.site_id == f.stem
        assert policy.unit_of_privacy == "patient" and policy.delta == 1e-5
        site = load_config(REPO / "configs" / "sites" / f.name, SiteConfig)
        assert site.privacy_policy == (REPO / "privacy_budgets" / f.name).resolve()
        check_policy_valid(policy, site.site_id, date(2027, 6, 1))


def test_a_good_policy_loads_with_prv_by_default(tmp_path: Path) -> None:
    policy = load_policy(write(tmp_path, accountant=...))
    assert policy.accountant == "prv"
    assert "8.00" in policy.describe() and "REC-X-1" in policy.describe()


@pytest.mark.parametrize(("change", "field"), [
    ({"epsilon_cap": 0}, "epsilon_cap"),
    ({"epsilon_cap": -1.0}, "epsilon_cap"),
    ({"delta": 0.0}, "delta"),
    ({"delta": 0.01}, "delta"),
    ({"unit_of_privacy": "record"}, "unit_of_privacy"),
    ({"accountant": "gdp"}, "accountant"),
    ({"approved_by": "  "}, "approved_by"),
    ({"approval_reference": ...}, "approval_reference"),
    ({"expires_on": date(2024, 12, 31)}, "expires_on"),
    ({"expires_on": date(2025, 1, 1)}, "expires_on"),
    ({"epsilon_capp": 8.0}, "epsilon_capp"),
])
def test_errors_name_the_file_and_the_field(tmp_path: Path, change: dict, field: str) -> None:
    path = write(tmp_path, **change)
    with pytest.raises(PolicyError) as err:
        load_policy(path)
    assert str(path) in str(err.value)
    assert f"  {field}:" in str(err.value)


def test_a_missing_policy_file_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"no valid privacy policy: .*nope\.yaml: file not found"):
        load_policy(tmp_path / "nope.yaml")


def test_a_key_given_twice_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path)
    path.write_text(path.read_text() + "epsilon_cap: 80.0\n")
    with pytest.raises(PolicyError, match="duplicate key 'epsilon_cap'"):
        load_policy(path)


@pytest.mark.parametrize(("site", "today", "reason"), [
    ("site-y", date(2026, 1, 1), "policy given is for site 'site-x', not 'site-y'"),
    ("site-x", date(2024, 12, 31), "not yet valid: it applies from 2025-01-01"),
    ("site-x", date(2028, 1, 1), "expired on 2028-01-01"),
    ("site-x", date(2030, 5, 5), "expired on 2028-01-01"),
])
def test_policy_does_not_authorise_outside_its_site_and_period(site: str, today: date, reason: str) -> None:
    policy = PrivacyPolicy.model_validate(GOOD)
    with pytest.raises(PolicyError, match=reason):
        check_policy_valid(policy, site, today)


def test_policy_authorises_from_approval_to_the_day_before_expiry() -> None:
    policy = PrivacyPolicy.model_validate(GOOD)
    check_policy_valid(policy, "site-x", date(2025, 1, 1))
    check_policy_valid(policy, "site-x", date(2027, 12, 31))
