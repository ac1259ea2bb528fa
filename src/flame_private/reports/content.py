"""The facts of a site's ethics report, gathered from the site's own files and verified.

``build_ethics_report(site_yaml)`` reads the site config, its approved policy,
its privacy ledger and egress log (through ``records.audit.audit_site``,
which verifies both chains, every kept payload and every ciphertext, without
the site's key), replays the ledger with the Opacus accountant, and loads any
attack results.  The result is an :class:`EthicsReport`: data only, no wording
and no layout, so the HTML and PDF renderings, in either language, say the same.

Bad input (no site file, no policy, an unreadable ledger) raises ReportError
naming the file.  Records that *do not verify* are not bad input: they are the
most important finding, and the report states them in its verdict.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Literal

from flame_private.config import ConfigError, SiteConfig, load_config
from flame_private.privacy.accounting import epsilon_for
from flame_private.privacy.ledger import EPSILON_RTOL, Ledger, LedgerEntry, LedgerError
from flame_private.privacy.policy import PolicyError, PrivacyPolicy, check_policy_valid, load_policy
from flame_private.records.audit import AuditReport, audit_site
from flame_private.records.egress import EgressEntry, EgressLog, EgressLogError
from flame_private.reports.errors import ReportError
from flame_private.reports.evidence import load_attack_evidence
from flame_private.reports.facts import (
    NOT_RECORDED,
    AppHashFacts,
    CapRow,
    ChainFacts,
    CheckFacts,
    DeclinedRow,
    EgressFacts,
    EthicsReport,
    MeaningFacts,
    MechanismRow,
    MembershipBound,
    ParticipationRow,
    PolicyFacts,
    Reason,
    SpendFacts,
    SpendRow,
    Verdict,
)
from flame_private.reports.meaning import FALSE_ACCUSATION_RATES, max_true_positive_rate, odds_factor

log = logging.getLogger(__name__)


def build_ethics_report(site_yaml: Path | str, *, attacks_dir: Path | None = None, params: Path | None = None,
                        study: str | None = None, today: date | None = None,
                        now: datetime | None = None) -> EthicsReport:
    """Gather and verify the facts of ``site_yaml``'s ethics report; ReportError on bad input."""
    site = _site(Path(site_yaml))
    policy = _policy(site)
    state = Path(site.state_dir)
    for name in ("privacy_ledger.jsonl", "privacy_ledger.head.json", "egress_log.jsonl", "egress_log.head.json"):
        _readable(state / name)
    attacks = load_attack_evidence(attacks_dir) if attacks_dir is not None else []

    audit = audit_site(site, params, recompute="all")
    ledger, ledger_failure = _open_ledger(site)
    egress, egress_failure = _open_egress(site)

    policy_facts = _policy_facts(site, policy, today or date.today()).model_copy(update={"cap_history": [
        CapRow(first_seq=u.first_seq, last_seq=u.last_seq, epsilon_cap=u.policy.epsilon_cap if u.policy else None,
               approval_reference=u.policy.approval_reference if u.policy else None)
        for u in audit.policy_history]})
    spend = _headline(_spend(ledger, ledger_failure, egress, policy), ledger, egress, policy)
    egress_facts = _egress(audit, egress, egress_failure)
    chains = [ChainFacts(record="ledger", path=str(state / "privacy_ledger.jsonl"), verified=ledger is not None,
                         count=len(ledger) if ledger is not None else None,
                         hash=ledger.head_hash if ledger is not None else None, failure=ledger_failure),
              ChainFacts(record="egress", path=str(state / "egress_log.jsonl"), verified=egress is not None,
                         count=len(egress) if egress is not None else None,
                         hash=egress.head_hash if egress is not None else None, failure=egress_failure)]
    meaning = (_meaning(spend.headline, policy) if spend.spent is not None and spend.headline is not None
               else None)
    checks = [CheckFacts(name=c.name, severity=c.severity, detail=c.detail) for c in audit.checks]
    report = EthicsReport(
        study=study, site_id=site.site_id, site_config=str(site_yaml), state_dir=str(state),
        state_exists=state.is_dir(), generated_at=(now or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M"),
        policy=policy_facts, spend=spend, meaning=meaning, egress=egress_facts, chains=chains, checks=checks,
        app_hashes=[AppHashFacts(app_hash=a.app_hash, messages=a.messages, first_seq=a.first_seq,
                                 last_seq=a.last_seq, installed=a.installed) for a in audit.app_hashes],
        params_source=audit.params_source, attacks_dir=str(attacks_dir) if attacks_dir is not None else None,
        attacks=attacks, verdict=Verdict(level="ok", reasons=[]))
    verdict = Verdict.of(_reasons(report, audit))
    log.debug("%s: ethics report facts gathered (verdict %s)", site.site_id, verdict.level)
    return report.model_copy(update={"verdict": verdict})


def _site(path: Path) -> SiteConfig:
    try:
        return load_config(path, SiteConfig)
    except ConfigError as exc:
        raise ReportError(f"site config: {exc}") from None


def _policy(site: SiteConfig) -> PrivacyPolicy:
    try:
        return load_policy(site.privacy_policy)
    except PolicyError as exc:
        raise ReportError(f"{site.site_id}: {exc}; a report needs the approved policy") from None


def _readable(path: Path) -> None:
    """An existing record that cannot be read is bad input, not a finding: say which file."""
    try:
        with open(path, "rb"):
            pass
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ReportError(f"{path}: cannot read ({exc.strerror or exc})") from None


def _open_ledger(site: SiteConfig) -> tuple[Ledger | None, str | None]:
    try:
        return Ledger.open(site.state_dir, site.site_id, readonly=True, recompute="last"), None
    except LedgerError as exc:
        return None, str(exc)


def _open_egress(site: SiteConfig) -> tuple[EgressLog | None, str | None]:
    try:
        return EgressLog.open(site.state_dir, site.site_id, readonly=True), None
    except EgressLogError as exc:
        return None, str(exc)


def _policy_facts(site: SiteConfig, policy: PrivacyPolicy, today: date) -> PolicyFacts:
    try:
        check_policy_valid(policy, site.site_id, today)
        detail = None
    except PolicyError as exc:
        detail = str(exc)
    return PolicyFacts(path=str(site.privacy_policy), **policy.model_dump(), valid_today=detail is None,
                       status_detail=detail)


def _purpose(entry: LedgerEntry, kinds: Mapping[int, str]) -> Literal["training", "evaluation"]:
    """What a release was: the egress message that names it says; else a one-step q=1 release is evaluation."""
    kind = kinds.get(entry.seq)
    if kind is not None:
        return "evaluation" if kind == "metrics" else "training"
    return "evaluation" if entry.sample_rate == 1.0 and entry.steps == 1 else "training"


def _spend(ledger: Ledger | None, failure: str | None, egress: EgressLog | None,
           policy: PrivacyPolicy) -> SpendFacts:
    if ledger is None:
        return SpendFacts(verified=False, failure=failure, rows=[], spent=None, replay_agrees=False, mechanisms=[],
                          runs=[])
    kinds = {e.ledger_seq: e.kind for e in (egress.entries if egress is not None else ()) if e.ledger_seq}
    entries = list(ledger.entries)
    rows: list[SpendRow] = []
    agrees = True
    for i, e in enumerate(entries):
        replayed = epsilon_for([x.history_item() for x in entries[: i + 1]], e.delta, e.accountant)
        agrees &= math.isclose(replayed, e.epsilon_after, rel_tol=EPSILON_RTOL, abs_tol=1e-12)
        rows.append(SpendRow(seq=e.seq, time=e.time, run_id=e.run_id, round=e.round, task=e.task,
                             purpose=_purpose(e, kinds), noise_multiplier=e.noise_multiplier,
                             sample_rate=e.sample_rate, steps=e.steps, max_grad_norm=e.max_grad_norm,
                             epsilon_after=e.epsilon_after, epsilon_replayed=replayed, sent=e.seq in kinds,
                             hash=e.hash))
    mechanisms: dict[tuple[Literal["training", "evaluation"], str, float, float, float], list[int]] = {}
    for r in rows:
        key = (r.purpose, r.task, r.noise_multiplier, r.sample_rate, r.max_grad_norm)
        count = mechanisms.setdefault(key, [0, 0])
        count[0] += 1
        count[1] += r.steps
    spent = epsilon_for(ledger.history(), policy.delta, policy.accountant)
    return SpendFacts(
        verified=True, failure=None, rows=rows, spent=spent, replay_agrees=agrees,
        mechanisms=[MechanismRow(purpose=p, task=task, noise_multiplier=s, sample_rate=q, max_grad_norm=c,
                                 releases=n, steps=steps) for (p, task, s, q, c), (n, steps) in mechanisms.items()],
        runs=list(dict.fromkeys(r.run_id for r in rows)))


def _headline(spend: SpendFacts, ledger: Ledger | None, egress: EgressLog | None,
              policy: PrivacyPolicy) -> SpendFacts:
    """Every figure the records give for the total at the policy's delta, and the worse one to lead with.

    The ledger's last recorded total must equal the recomputed one; the largest total the egress log
    recorded with a release (the total when it left) must not exceed them.  Figures recorded at another delta
    or by another accountant (a renewed policy) are not comparable and are left out.  The report leads with
    the largest: never under-count.
    """
    def comparable(delta: float, accountant: str) -> bool:
        return delta == policy.delta and accountant == policy.accountant

    last = ledger.entries[-1] if ledger is not None and len(ledger) else None
    recorded = last.epsilon_after if last is not None and comparable(last.delta, last.accountant) else None
    sent = [e.epsilon_after for e in (egress.entries if egress is not None else ())
            if e.epsilon_after is not None and e.dp is not None and e.dp.delta == policy.delta]
    update = {"recorded": recorded, "egress_recorded": max(sent) if sent else None}
    totals = [v for v in (spend.spent, recorded) if v is not None]
    agree = all(math.isclose(v, w, rel_tol=EPSILON_RTOL, abs_tol=1e-9) for v in totals for w in totals)
    if update["egress_recorded"] is not None:  # a lower bound (a release's total when it left): never above
        ceiling = max(totals, default=0.0)
        agree &= update["egress_recorded"] <= ceiling or math.isclose(update["egress_recorded"], ceiling,
                                                                      rel_tol=EPSILON_RTOL, abs_tol=1e-9)
    figures = [*totals, *([update["egress_recorded"]] if update["egress_recorded"] is not None else [])]
    return spend.model_copy(update={**update, "headline": max(figures) if figures else None, "agree": agree})


def _meaning(spent: float, policy: PrivacyPolicy) -> MeaningFacts:
    return MeaningFacts(
        epsilon_spent=spent, epsilon_cap=policy.epsilon_cap, delta=policy.delta, odds_factor_spent=odds_factor(spent),
        odds_factor_cap=odds_factor(policy.epsilon_cap),
        bounds=[MembershipBound(false_positive_rate=f, tpr_spent=max_true_positive_rate(spent, policy.delta, f),
                                tpr_cap=max_true_positive_rate(policy.epsilon_cap, policy.delta, f))
                for f in FALSE_ACCUSATION_RATES])


def declined_reason(egress: EgressLog, entry: EgressEntry) -> str:
    """Why the site declined: the entry's own record (never sent), or, for entries written before 0.2, the
    reason the status then carried in its payload."""
    if entry.reason is not None:
        return entry.reason
    try:
        doc = json.loads(egress.payload_path(entry).read_bytes())
        reason = doc.get("reason") if isinstance(doc, dict) else None
        return reason if isinstance(reason, str) else "(no reason given)"
    except (OSError, ValueError):
        return "(the kept payload is missing or unreadable; see the outbox check)"


def _egress(audit: AuditReport, egress: EgressLog | None, failure: str | None) -> EgressFacts:
    entries = list(egress.entries) if egress is not None else []
    declined = [DeclinedRow(seq=e.seq, time=e.time, run_id=e.run_id, round=e.round, task=e.task,
                            reason=declined_reason(egress, e))
                for e in entries if e.kind == "declined"] if egress is not None else []
    return EgressFacts(verified=egress is not None, failure=failure, messages_by_kind=dict(audit.messages_by_kind),
                       bytes_by_kind=dict(audit.bytes_by_kind), total_bytes=audit.total_bytes,
                       all_ciphertexts=audit.all_ciphertexts,
                       first_time=entries[0].time if entries else None,
                       last_time=entries[-1].time if entries else None,
                       he_fingerprint=audit.he_fingerprint, declined=declined,
                       participation=participation(entries), transports=_transports(entries),
                       training_patients=_counts(entries, "update"), validation_patients=_counts(entries, "metrics"))


def _transports(entries: list[EgressEntry]) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in entries:
        key = e.transport or NOT_RECORDED
        out[key] = out.get(key, 0) + 1
    return out


def _counts(entries: list[EgressEntry], kind: str) -> list[int]:
    return sorted({e.patients for e in entries if e.kind == kind and e.patients is not None})


def participation(entries: list[EgressEntry]) -> list[ParticipationRow]:
    """Per run and model: the rounds the site sent an update for, and the rounds it declined."""
    table: dict[tuple[str, str], tuple[set[int], set[int]]] = {}
    for e in entries:
        if e.kind not in ("update", "declined"):  # metrics and the end-of-run status are not round participation
            continue
        sent, declined = table.setdefault((e.run_id, e.task), (set(), set()))
        (sent if e.kind == "update" else declined).add(e.round)
    return [ParticipationRow(run_id=run, task=task, rounds_sent=sorted(sent), rounds_declined=sorted(declined - sent))
            for (run, task), (sent, declined) in table.items()]


def _reasons(report: EthicsReport, audit: AuditReport) -> list[Reason]:
    out: list[Reason] = []
    ledger, egress = report.chain("ledger"), report.chain("egress")
    if not ledger.verified:
        out.append(Reason(code="ledger_broken", detail=ledger.failure or ""))
    if not egress.verified:
        out.append(Reason(code="egress_broken", detail=egress.failure or ""))
    spent = report.spend.headline
    over = spent is not None and spent > report.policy.epsilon_cap
    # Chain failures have their own reasons; "not checked" follows from them; an exceeded cap is over_cap.
    other = [c.name for c in audit.failures() if c.name not in ("egress log", "privacy ledger")
             and not c.detail.startswith("not checked") and not (over and c.name == "budget")]
    if other:
        out.append(Reason(code="audit_failed", detail=", ".join(dict.fromkeys(other))))
    if over:
        out.append(Reason(code="over_cap", detail=f"{spent:.3f} > {report.policy.epsilon_cap:.2f}"))
    if report.spend.verified and not report.spend.replay_agrees:
        out.append(Reason(code="replay_mismatch"))
    if not report.spend.agree:
        out.append(Reason(code="records_disagree", detail=", ".join(
            f"{k}={v:.3f}" for k, v in report.spend.figures().items())))
    for a in report.attacks:
        if a.result.positive_control_ok and not a.result.protection_held:
            out.append(Reason(code="attack_failed", detail=a.result.title))
        elif not a.result.positive_control_ok:
            out.append(Reason(code="attack_inconclusive", detail=a.result.title))
    if not report.state_exists:
        out.append(Reason(code="no_state", detail=report.state_dir))
    if not report.policy.valid_today:
        out.append(Reason(code="policy_not_valid", detail=report.policy.status_detail or ""))
    warnings = [c for c in audit.warnings() if c.name != "state directory"]
    if warnings:
        out.append(Reason(code="audit_warnings", detail=str(len(warnings))))
    return out
