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
    build_consortium_report,
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


@pytest.mark.slow  # about 6 s
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
        # A spend above the cap is a records-level failure: the report says what to do; an expired policy is not.
        assert ("What to do now" in _render_all(facts)[("en", "html")]) == (code == "over_cap")


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


# --------------------------------------------------------------------------- what a DPO reads on a record problem


def _render_all(facts) -> dict[tuple[str, str], str]:
    from report_harness import html_text

    from flame_private.reports.output import render

    return {(lang, fmt): (pdf_text(render(ethics_document(facts, lang), fmt)) if fmt == "pdf"
                          else html_text(render(ethics_document(facts, lang), fmt)))
            for lang in ("en", "fr") for fmt in ("html", "pdf")}


def _inflate_a_release(site: Path, factor: float = 3.0) -> float:
    """Log one more update whose recorded total is ``factor`` times the ledger's: a valid chain that disagrees
    with the ledger (what a rolled-back ledger beside an intact egress log looks like)."""
    from flame_private.records.egress import EgressLog

    state = site.parent / "state"
    log = EgressLog.open(state, "site-a")
    last = next(e for e in reversed(log.entries) if e.kind == "update")
    inflated = last.epsilon_after * factor
    log.append(run_id=last.run_id, round=last.round, task=last.task, kind="update",
               payload=log.payload_path(last).read_bytes(), envelope=last.envelope, dp=last.dp,
               epsilon_after=inflated, ledger_seq=last.ledger_seq, app_hash=last.app_hash)
    return inflated


def test_when_the_records_disagree_the_report_leads_with_the_larger_epsilon(site: Path) -> None:
    honest = build_ethics_report(site)
    assert honest.records_verified and honest.spend.agree and honest.spend.headline == honest.spend.spent
    inflated = _inflate_a_release(site)

    facts = build_ethics_report(site)
    assert facts.chain("ledger").verified and facts.chain("egress").verified  # both chains are intact...
    assert not facts.spend.agree and not facts.records_verified  # ...but they disagree
    assert facts.spend.spent == pytest.approx(honest.spend.spent)
    assert facts.spend.headline == pytest.approx(inflated) and inflated > facts.spend.spent
    assert facts.verdict.level == "fail" and "records_disagree" in [r.code for r in facts.verdict.reasons]
    assert facts.meaning is not None and facts.meaning.epsilon_spent == pytest.approx(inflated)

    bodies = _render_all(facts)
    for fmt in ("html", "pdf"):
        en, fr = bodies[("en", fmt)], bodies[("fr", fmt)]
        assert f"{inflated:.2f} of" in en and "the largest of the records' figures, which disagree" in en
        assert "NO: the epsilon figures disagree; a release disagrees with its ledger entry" in en
        assert f"This report uses the largest, {inflated:.3f}" in en
        assert f"{inflated:.2f}".replace(".", ",") + " sur" in fr and "NON : les chiffres d'epsilon divergent" in fr
        assert "inscrit au journal des envois avec une transmission" in fr
        shown = f"{inflated:.3f}"
        assert (f"The records disagree on the epsilon spent (recomputed from the ledger {facts.spend.spent:.3f}, "
                f"recorded in the ledger {facts.spend.recorded:.3f}, recorded in the egress log with a release "
                f"{shown}); this report uses the largest figure.") in en
        assert "Les registres divergent sur l'epsilon dépensé (recalculé à partir du registre" in fr
        # The failed check is named in the reader's language in the French verdict box.
        assert "concordance avec le registre" in fr and "Des contrôles d'audit sont en échec" not in en

    consortium = build_consortium_report([site])
    line = consortium.sites[0]
    assert line.spent == pytest.approx(inflated) and not line.records_verified


@pytest.mark.parametrize("lang", ["en", "fr"])
def test_a_records_failure_says_what_to_do_gdpr_article_33_included(site: Path, lang: str) -> None:
    flip_one_byte(site.parent / "state" / "privacy_ledger.jsonl", 1, b'"round":1', b'"round":2')
    facts = build_ethics_report(site)
    for fmt, body in _render_all(facts).items():
        if fmt[0] != lang:
            continue
        if lang == "en":
            assert "What to do now" in body and "GDPR (article 33)" in body, fmt
            assert "within 72 hours of becoming aware of it" in body and "supervisory authority" in body
            assert "for the controller to decide, advised by the data-protection officer" in body
        else:
            assert "Que faire maintenant" in body and "RGPD (article 33)" in body, fmt
            assert "72 heures au plus tard après en avoir pris connaissance" in body and "CNIL" in body
        # The egress log, still intact, gives a floor for the spend: the report shows it.
        floor = f"{facts.spend.headline:.2f}"
        assert (floor if lang == "en" else floor.replace(".", ",")) in body


def test_an_attack_that_breaks_the_protection_is_not_called_a_records_breach(fed: Federation, tmp_path: Path) -> None:
    from report_harness import gradient_inversion, write_attacks

    folder = write_attacks(tmp_path / "attacks", gradient_inversion(protection_held=False, figure=None))
    facts = build_ethics_report(fed.sites["site-b"], attacks_dir=folder)
    assert facts.verdict.level == "fail"
    assert "What to do now" not in _render_all(facts)[("en", "html")]
