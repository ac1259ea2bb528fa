"""``flame budget show`` and ``flame budget verify`` (privacy/cli.py), driven through typer's CliRunner."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
import yaml
from conftest import tree_digests
from typer.testing import CliRunner

from flame_private.config import SiteConfig, load_config
from flame_private.privacy.budget import open_site_budget
from flame_private.privacy.cli import budget_app
from flame_private.privacy.ledger import HEAD_NAME, LEDGER_NAME, Ledger, PlannedSpend
from flame_private.site_state import init_state

WIDE = {"COLUMNS": "240"}
POLICY = {
    "site_id": "site-a", "epsilon_cap": 8.0, "delta": 1e-5, "unit_of_privacy": "patient", "accountant": "rdp",
    "approved_by": "Research Ethics Committee A", "approval_reference": "REC-A-7",
    "approved_on": date(2025, 1, 1), "expires_on": date(2099, 1, 1),
}


def invoke(*args: str | Path):
    return CliRunner().invoke(budget_app, [str(a) for a in args], env=WIDE)


@pytest.fixture
def site_yaml(tmp_path: Path) -> Path:
    """A site with a valid policy and three recorded releases (both models, two rounds)."""
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(POLICY))
    path = tmp_path / "site-a.yaml"
    path.write_text(yaml.safe_dump({"site_id": "site-a", "data_dir": str(tmp_path / "data"),
                                    "state_dir": str(tmp_path / "state"),
                                    "privacy_policy": str(tmp_path / "policy.yaml")}))
    init_state(tmp_path / "state", "site-a")
    guard = open_site_budget(load_config(path, SiteConfig))
    for rnd, task in ((1, "response"), (1, "evolution"), (2, "response")):
        guard.record(PlannedSpend(run_id="demo", round=rnd, task=task, noise_multiplier=1.1, sample_rate=0.05,
                                  steps=20, max_grad_norm=1.0))
    return path


def test_show_prints_the_policy_every_release_and_the_total_against_the_cap(site_yaml: Path) -> None:
    ledger = Ledger.open(site_yaml.parent / "state", "site-a")
    result = invoke("show", "--site", site_yaml)
    assert result.exit_code == 0, result.output
    assert "REC-A-7" in result.output and "valid today" in result.output
    for e in ledger.entries:
        assert f"{e.epsilon_after:.3f}" in result.output and e.hash[:12] in result.output
    assert "evolution" in result.output and "demo" in result.output
    total = ledger.epsilon()
    assert f"total epsilon: {total:.3f} of the approved cap 8.00" in result.output
    assert f"remaining: {8.0 - total:.3f}; 3 release(s)" in result.output


def test_verify_prints_the_head_count_and_hash(site_yaml: Path) -> None:
    ledger = Ledger.open(site_yaml.parent / "state", "site-a")
    result = invoke("verify", "--site", site_yaml)
    assert result.exit_code == 0, result.output
    assert "ledger verified" in result.output
    assert "head count: 3" in result.output and f"head hash: {ledger.head_hash}" in result.output


def test_verify_exits_1_with_the_reason_on_a_tampered_ledger(site_yaml: Path) -> None:
    path = site_yaml.parent / "state" / LEDGER_NAME
    path.write_text(path.read_text().replace('"steps":20', '"steps":2', 1))
    result = invoke("verify", "--site", site_yaml)
    assert result.exit_code == 1
    assert "ledger verification FAILED" in result.output and "line 1: hash mismatch" in result.output
    assert invoke("show", "--site", site_yaml).exit_code == 1


def test_verify_exits_1_on_a_truncated_ledger(site_yaml: Path) -> None:
    path = site_yaml.parent / "state" / LEDGER_NAME
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:-1]))
    result = invoke("verify", "--site", site_yaml)
    assert result.exit_code == 1 and "holds 2 entries but its head records 3" in result.output


def test_verify_only_reads_and_reports_what_a_crash_left(site_yaml: Path) -> None:
    state = site_yaml.parent / "state"
    (state / LEDGER_NAME).write_bytes((state / LEDGER_NAME).read_bytes() + b'{"accountant":"r')
    before = {p.name: p.read_bytes() for p in state.iterdir()}
    result = invoke("verify", "--site", site_yaml)
    assert result.exit_code == 0, result.output
    assert "incomplete write" in result.output and "head count: 3" in result.output
    assert {p.name: p.read_bytes() for p in state.iterdir()} == before


def test_show_on_a_site_that_has_released_nothing(tmp_path: Path) -> None:
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump({**POLICY, "expires_on": date(2025, 6, 1)}))
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump({"site_id": "site-a", "data_dir": "d", "state_dir": str(tmp_path / "none"),
                                    "privacy_policy": str(tmp_path / "policy.yaml")}))
    init_state(tmp_path / "none", "site-a")
    before = tree_digests(tmp_path / "none")
    result = invoke("show", "--site", path)
    assert result.exit_code == 1, "an expired policy authorises nothing: show must not exit 0"
    assert "expired on 2025-06-01" in result.output and "total epsilon: 0.000" in result.output
    assert "does not authorise training today" in result.output
    assert tree_digests(tmp_path / "none") == before, "show changes nothing"
    assert invoke("verify", "--site", path).exit_code == 0, "verify checks the ledger, which is intact"


@pytest.mark.parametrize("policy", [
    pytest.param({**POLICY, "epsilon_cap": -1.0}, id="negative-cap"),
    pytest.param({**POLICY, "epsilon_capp": 8.0}, id="misspelt-key"),
    pytest.param({**POLICY, "site_id": "site-b"}, id="another-site"),
    pytest.param(None, id="missing"),
])
def test_show_exits_1_after_printing_everything_on_an_invalid_policy(site_yaml: Path, policy: dict | None) -> None:
    policy_path = site_yaml.parent / "policy.yaml"
    if policy is None:
        policy_path.unlink()
    else:
        policy_path.write_text(yaml.safe_dump(policy))
    result = invoke("show", "--site", site_yaml)
    assert result.exit_code == 1, result.output
    assert "policy status: no valid policy" in result.output or "policy status: not valid today" in result.output
    assert "total epsilon:" in result.output, "the ledger is still shown"
    assert "privacy ledger of site-a" in result.output


def test_relative_paths_in_the_site_yaml_do_not_depend_on_the_working_directory(
        site_yaml: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run from the wrong folder, verify must still find the 3 releases, not report an empty, intact ledger."""
    relative = tmp_path / "site-rel.yaml"
    relative.write_text(yaml.safe_dump({"site_id": "site-a", "data_dir": "data", "state_dir": "state",
                                        "privacy_policy": "policy.yaml"}))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = invoke("verify", "--site", relative)
    assert result.exit_code == 0, result.output
    assert "head count: 3" in result.output and "valid today" in result.output
    assert not (elsewhere / "state").exists()


def test_a_bad_site_yaml_exits_2_naming_the_file(tmp_path: Path) -> None:
    result = invoke("verify", "--site", tmp_path / "missing.yaml")
    assert result.exit_code == 3 and "missing.yaml: file not found" in result.output


def test_head_file_is_named_in_docs_and_code_alike() -> None:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "privacy-accounting.md").read_text()
    assert LEDGER_NAME in doc and HEAD_NAME in doc and "flame budget verify" in doc
