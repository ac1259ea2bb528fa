"""A rewritten record is never hidden: ``flame audit`` and ``flame report`` both say so, and exit non-zero.

Each test damages a copy of a real site's state (three sites, one round of
the response model) and runs the commands a DPO runs.

Specification (docs/reports.md, docs/dpo-guide.md):

* one changed byte of a privacy-ledger entry, or of an egress-log entry, makes
  ``flame audit`` exit 1 naming the failing check and the line;
* ``flame report ethics`` on the same state still writes the report, which
  says prominently that the record does not verify (verdict, integrity section,
  no spend figure from an untrusted ledger), and exits 1;
* a spend above the approved cap (the committee lowered it) fails the verdict;
  an expired policy asks for attention without failing it;
* a report is written whole or not at all.
"""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import pytest
import yaml
from report_harness import (
    Federation,
    build_federation,
    copy_site,
    flip_one_byte,
    html_text,
    pdf_text,
)
from typer.testing import CliRunner

from flame_private.cli import app
from flame_private.reports import (
    ReportError,
    build_ethics_report,
    ethics_document,
    write_document,
)
from flame_private.reports import output as report_output

WIDE = {"COLUMNS": "220"}


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory, cohort_dir: Path) -> Federation:
    return build_federation(tmp_path_factory.mktemp("fed"), cohort_dir, n_sites=3, rounds=1, tasks="[response]")


@pytest.fixture
def site(fed: Federation, tmp_path: Path) -> Path:
    """A copy of site-a's state and config, safe to damage."""
    return copy_site(fed.sites["site-a"], tmp_path / "copy")


def flame(*args: str | Path):
    return CliRunner().invoke(app, [str(a) for a in args], env=WIDE)


def one_line(output: str) -> str:
    return " ".join(output.split())


def test_an_intact_site_passes_the_audit_and_the_report(site: Path, tmp_path: Path) -> None:
    audit = flame("audit", "--site", site)
    assert audit.exit_code == 0, audit.output
    assert "audit passed" in audit.output and "epsilon spent / cap" in audit.output
    report = flame("report", "ethics", "--site", site, "--out", tmp_path / "r.html")
    assert report.exit_code == 0, report.output


def test_one_changed_byte_of_a_ledger_entry_fails_the_audit_and_the_report(site: Path, tmp_path: Path) -> None:
    ledger = site.parent / "state" / "privacy_ledger.jsonl"
    flip_one_byte(ledger, 1, b'"round":1', b'"round":2')

    audit = flame("audit", "--site", site)
    assert audit.exit_code == 1, audit.output
    text = one_line(audit.output)
    assert "AUDIT FAILED" in text and "(privacy ledger" in text
    assert "privacy_ledger.jsonl, line 1: hash mismatch" in text

    out = tmp_path / "ethics.pdf"
    report = flame("report", "ethics", "--site", site, "--out", out)
    assert report.exit_code == 1, report.output
    assert "PROBLEM FOUND" in report.output and "ledger_broken" in report.output
    body = pdf_text(out)
    assert "VERDICT: PROBLEM FOUND" in body
    assert "The privacy ledger does not verify" in body and "PRIVACY LEDGER DOES NOT VERIFY" in body.upper()
    assert "line 1: hash mismatch: the entry was changed after it was written" in body
    assert "its figures are not shown: they cannot be trusted" in body  # no spend figure from a broken ledger
    facts = build_ethics_report(site)
    assert facts.spend.spent is None and facts.meaning is None and not facts.chain("ledger").verified


def test_one_changed_byte_of_an_egress_entry_fails_the_audit_and_the_report(site: Path, tmp_path: Path) -> None:
    flip_one_byte(site.parent / "state" / "egress_log.jsonl", 1, b'"kind":"update"', b'"kind":"updatf"')

    audit = flame("audit", "--site", site)
    assert audit.exit_code == 1, audit.output
    text = one_line(audit.output)
    assert "AUDIT FAILED" in text and "(egress log" in text
    assert "egress_log.jsonl, line 1: hash mismatch" in text

    out = tmp_path / "ethics.html"
    report = flame("report", "ethics", "--site", site, "--out", out, "--lang", "fr")
    assert report.exit_code == 1, report.output
    body = one_line(out.read_text(encoding="utf-8").replace("\u00a0", " "))
    assert "CONCLUSION : PROBLÈME DÉTECTÉ" in body
    assert "Le journal des envois (la trace de tout ce que le site a envoyé) ne se vérifie pas" in body
    assert "egress_log.jsonl, line 1: hash mismatch" in body


def test_a_truncated_ledger_is_flagged_even_though_every_remaining_line_is_intact(fed: Federation,
                                                                                 tmp_path: Path) -> None:
    site = copy_site(fed.sites["site-b"], tmp_path / "copy")
    ledger = site.parent / "state" / "privacy_ledger.jsonl"
    ledger.write_bytes(b"".join(ledger.read_bytes().splitlines(keepends=True)[:-1]))  # last release removed
    facts = build_ethics_report(site)
    assert facts.verdict.level == "fail" and "ledger_broken" in [r.code for r in facts.verdict.reasons]
    assert "entries were removed" in facts.chain("ledger").failure


def test_a_spend_above_the_cap_fails_and_an_expired_policy_asks_for_attention(site: Path) -> None:
    cfg = yaml.safe_load(site.read_text())
    policy = yaml.safe_load(Path(cfg["privacy_policy"]).read_text())
    lowered = site.parent / "lowered.yaml"
    lowered.write_text(yaml.safe_dump({**policy, "epsilon_cap": 0.5}))
    approved = Path(cfg["privacy_policy"])  # expired: the approved file, unchanged, read after its expiry date
    for path, today, level, code in ((lowered, None, "fail", "over_cap"),
                                     (approved, date(2099, 6, 1), "attention", "policy_not_valid")):
        site.write_text(yaml.safe_dump({**cfg, "privacy_policy": str(path)}))
        facts = build_ethics_report(site, today=today)
        assert facts.verdict.level == level and code in [r.code for r in facts.verdict.reasons], facts.verdict


def test_a_cap_raised_after_spending_fails_the_report_which_shows_the_cap_recorded(site: Path,
                                                                                  tmp_path: Path) -> None:
    policy = Path(yaml.safe_load(site.read_text())["privacy_policy"])
    before = yaml.safe_load(policy.read_text())
    policy.write_text(yaml.safe_dump({**before, "epsilon_cap": before["epsilon_cap"] * 10}))
    facts = build_ethics_report(site)
    assert facts.verdict.level == "fail"
    assert "policy history" in [r.detail for r in facts.verdict.reasons if r.code == "audit_failed"][0]
    assert [c.epsilon_cap for c in facts.policy.cap_history] == [before["epsilon_cap"]]
    out = write_document(ethics_document(facts, "en"), tmp_path / "report.html")
    assert f"1-{facts.policy.cap_history[0].last_seq}: {before['epsilon_cap']:.2f}" in html_text(out.read_bytes())


def test_a_report_is_written_whole_or_not_at_all(site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "reports" / "ethics.pdf"
    out.parent.mkdir()
    out.write_bytes(b"last month's report")
    doc = ethics_document(build_ethics_report(site), "en")

    def broken_render(*_a: object) -> bytes:
        raise RuntimeError("renderer crashed")

    monkeypatch.setattr(report_output, "render", broken_render)
    with pytest.raises(RuntimeError):
        write_document(doc, out)
    monkeypatch.undo()

    def full_disk(_fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(ReportError, match="ethics.pdf: cannot write"):
        write_document(doc, out)
    monkeypatch.undo()
    assert out.read_bytes() == b"last month's report" and sorted(p.name for p in out.parent.iterdir()) == ["ethics.pdf"]

    write_document(doc, out)
    assert out.read_bytes().startswith(b"%PDF") and sorted(p.name for p in out.parent.iterdir()) == ["ethics.pdf"]
