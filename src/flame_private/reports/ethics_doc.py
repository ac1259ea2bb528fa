"""An ethics report's facts laid out as a document in one language: sections, tables, plots, sign-off.

The order follows what a committee asks: is everything in order (verdict
first), what was approved, how much was spent and what that means for a
patient, what left the site, what the attacks showed, what the system does
not protect against, and how to prove later that nothing was rewritten.
"""

from __future__ import annotations

import math
from pathlib import Path

from flame_private.reports.blocks import (
    Block,
    Bullets,
    Callout,
    Document,
    Figure,
    Heading,
    Paragraph,
    Signature,
    Table,
    Title,
    Tone,
)
from flame_private.reports.content import BREACH_LIKE, NOT_RECORDED, ChainFacts, EthicsReport, Reason, Verdict
from flame_private.reports.evidence import AttackEvidence
from flame_private.reports.figures import spend_plot
from flame_private.reports.i18n import (
    Lang,
    check_name,
    day,
    factor,
    grouped,
    integer,
    num,
    percent,
    small,
    t,
    task_name,
    timestamp,
    tn,
    yes_no,
)
from flame_private.reports.meaning import is_weak, per_hundred

KINDS = ("update", "metrics", "declined")


def reason_text(r: Reason, lang: Lang) -> str:
    """One reason in the reader's language: check names and figure sources translated, counts in words."""
    if r.code == "audit_failed":
        names = r.detail.split(", ") if r.detail else []
        return tn("reason.audit_failed", lang, len(names), detail=", ".join(check_name(n, lang) for n in names))
    if r.code == "audit_warnings":
        return tn("reason.audit_warnings", lang, int(r.detail or 0), detail=r.detail)
    if r.code == "records_disagree":
        pairs = [p.split("=") for p in r.detail.split(", ") if "=" in p]
        return t("reason.records_disagree", lang, detail=", ".join(f"{t(f'figure.{k}', lang)} {num(float(v), lang, 3)}"
                                                                     for k, v in pairs))
    return t(f"reason.{r.code}", lang, detail=r.detail)


def verdict_callout(verdict: Verdict, lang: Lang, key: str = "verdict") -> Callout:
    """The verdict box: one sentence, then each reason in the reader's language, then the technical detail."""
    tone: Tone = {"ok": "ok", "attention": "attention", "fail": "fail"}[verdict.level]  # type: ignore[assignment]
    items, detail = [], []
    for r in verdict.reasons:
        items.append(reason_text(r, lang))
        if r.code in ("ledger_broken", "egress_broken", "policy_not_valid") and r.detail:
            detail.append(r.detail)
    return Callout(tone=tone, text=t(f"{key}.{verdict.level}", lang), items=items, detail=detail)


def breach_callout(verdicts: list[Verdict], lang: Lang) -> list[Block]:
    """What to do, GDPR article 33 included, when the site's own records or spend failed (not a simulation)."""
    if not any(r.code in BREACH_LIKE for v in verdicts for r in v.reasons):
        return []
    return [Callout(tone="fail", text=t("breach.title", lang), items=[t(f"breach.{i}", lang) for i in (1, 2, 3)])]


def chain_cell(chain: ChainFacts, lang: Lang) -> str:
    return t("unverified", lang).upper() if not chain.verified else f"{chain.count}"


def head_cell(chain: ChainFacts, lang: Lang) -> str:
    """The head as a short fingerprint a person can read aloud (the full hash is in ``full_heads``)."""
    return grouped(chain.hash) if chain.hash else t("unverified", lang).upper()


def full_heads(rows: list[tuple[str, ChainFacts]]) -> str:
    """One line per chain, ``<label> <record file> entries=<n> sha256=<64 hex>``: to copy, compare or parse."""
    names = {"ledger": "privacy_ledger", "egress": "egress_log"}
    return "\n".join(f"{label}{names[c.record]} entries={c.count if c.count is not None else '-'} "
                     f"sha256={c.hash or '-'}" for label, c in rows)


def head_metadata(rows: list[tuple[str, ChainFacts]]) -> dict[str, str]:
    """The heads for the file's metadata (HTML meta tags, PDF keywords): ``<count>:<sha256>`` per record."""
    names = {"ledger": "privacy-ledger-head", "egress": "egress-log-head"}
    return {f"flame:{label}{names[c.record]}": f"{c.count}:{c.hash}" if c.verified else "does-not-verify"
            for label, c in rows}


def ethics_document(report: EthicsReport, lang: Lang) -> Document:
    """The whole ethics report for ``report`` in ``lang``."""
    figures = _FigureCounter()
    blocks: list[Block] = [*_title(report, lang), verdict_callout(report.verdict, lang),
                           *breach_callout([report.verdict], lang), *_glance(report, lang)]
    sections = [_policy, _spend, _meaning, _egress, _attacks, _threat, _integrity, _sign_off]
    number = 0
    for section in sections:
        part = section(report, lang, figures)
        if part and isinstance(part[0], Heading) and part[0].level == 1:
            number += 1
            part[0] = part[0].model_copy(update={"text": f"{number}. {part[0].text}"})
        blocks += part
    return Document(lang=lang, title=t("ethics.header", lang, site=report.site_id),
                    header=t("ethics.header", lang, site=report.site_id),
                    footer=f"{report.site_id} · {t('generated', lang, when=report.generated_at)}", blocks=blocks,
                    metadata=head_metadata([("", c) for c in report.chains]))


class _FigureCounter:
    def __init__(self) -> None:
        self.n = 0

    def caption(self, text: str, lang: Lang) -> str:
        self.n += 1
        return t("figure", lang, n=self.n, caption=text)


def _title(r: EthicsReport, lang: Lang) -> list[Block]:
    ledger, egress = r.chain("ledger"), r.chain("egress")
    records = t("sep.list", lang).join(t(f"f.records_{c.record}", lang, n=c.count) if c.verified
                        else t("f.records_broken", lang, record=t(f"record.{c.record}", lang))
                        for c in (ledger, egress))
    facts = [(t("f.study", lang), r.study or t("default_study", lang)),
             (t("f.site", lang), r.site_id),
             (t("f.committee", lang), r.policy.approved_by),
             (t("f.reference", lang), r.policy.approval_reference),
             (t("f.generated", lang), f"{r.generated_at} UTC"),
             (t("f.records", lang), records)]
    if r.spend.runs:
        facts.append((t("f.runs", lang), ", ".join(r.spend.runs)))
    facts.append((t("f.software", lang), t("software", lang, version=r.flame_version)))
    return [Title(title=t("ethics.title", lang), subtitle=t("ethics.subtitle", lang), facts=facts)]


def _spent_value(r: EthicsReport, lang: Lang) -> str:
    """The worse figure the records give; an unverified ledger gives none, but the egress log's is a floor."""
    cap, worst = r.policy.epsilon_cap, r.spend.headline
    if r.spend.spent is None:
        if worst is None:
            return t("unverified", lang).upper()
        return t("glance.egress_only", lang, eps=num(worst, lang), cap=num(cap, lang))
    assert worst is not None
    text = t("glance.spent_value", lang, spent=num(worst, lang), cap=num(cap, lang), share=percent(worst / cap, lang))
    return text if r.spend.agree else f"{text}: {t('glance.worse', lang)}"


def _verified_value(r: EthicsReport, lang: Lang) -> str:
    why = r.unverified()
    if not why:
        return t("glance.verified_yes", lang)
    return t("glance.verified_no", lang, why=t("sep.list", lang).join(t(f"why.{k}", lang) for k in why))


def _patients_value(r: EthicsReport, lang: Lang) -> str:
    e = r.egress
    if e.patients is None:
        return t("patients.not_recorded", lang)
    return t("patients.value", lang, n=e.patients, train=max(e.training_patients),
             val=max(e.validation_patients, default=0))


def _glance(r: EthicsReport, lang: Lang) -> list[Block]:
    e = r.egress
    total = sum(e.messages_by_kind.values())
    ciphertexts = (t("glance.nothing_sent", lang) if e.all_ciphertexts is None else yes_no(e.all_ciphertexts, lang))
    attacks = (t("glance.attacks_value", lang, n=len(r.attacks), passed=sum(a.result.passed for a in r.attacks))
               if r.attacks else t("glance.attacks_none", lang))
    rows = [[t("glance.spent", lang), _spent_value(r, lang)],
            [t("glance.delta", lang), small(r.policy.delta, lang)],
            [t("glance.patients", lang), _patients_value(r, lang)],
            [t("glance.releases", lang), str(len(r.spend.rows)) if r.spend.verified else "-"],
            [t("glance.messages", lang), t("glance.messages_value", lang, total=total,
                                           declined=e.messages_by_kind.get("declined", 0))],
            [t("glance.ciphertexts", lang), ciphertexts],
            [t("glance.verified", lang), _verified_value(r, lang)],
            [t("glance.attacks", lang), attacks]]
    tones: list[Tone | None] = [None] * len(rows)
    worst = r.spend.headline
    if r.spend.spent is None or not r.spend.agree or (worst is not None and worst > r.policy.epsilon_cap):
        tones[0] = "fail"
    if e.all_ciphertexts is False:
        tones[5] = "fail"
    if not r.records_verified:
        tones[6] = "fail"
    return [Heading(text=t("glance.title", lang), level=2),
            Table(columns=[], rows=rows, widths=[0.45, 0.55], tones=tones)]


def _policy(r: EthicsReport, lang: Lang, _figures: _FigureCounter) -> list[Block]:
    p = r.policy
    rows = [[t("f.site", lang), p.site_id],
            [t("policy.cap", lang), num(p.epsilon_cap, lang)],
            [t("policy.delta", lang), small(p.delta, lang)],
            [t("policy.unit", lang), t("policy.unit_patient", lang) if p.unit_of_privacy == "patient"
             else p.unit_of_privacy],
            [t("policy.accountant", lang), t(f"accountant.{p.accountant}", lang)],
            [t("f.committee", lang), p.approved_by],
            [t("f.reference", lang), p.approval_reference],
            [t("policy.approved_on", lang), day(p.approved_on, lang)],
            [t("policy.expires_on", lang), day(p.expires_on, lang)],
            [t("policy.status", lang), t("policy.valid" if p.valid_today else "policy.invalid", lang)]]
    tones: list[Tone | None] = [None] * len(rows)
    tones[-1] = None if p.valid_today else "fail"
    if p.notes:
        rows.append([t("policy.notes", lang), p.notes])
        tones.append(None)
    rows.append([t("policy.file", lang), p.path])
    tones.append(None)
    if p.cap_history:
        rows.append([t("policy.cap_history", lang), "; ".join(
            t("policy.cap_stretch", lang, first=c.first_seq, last=c.last_seq,
              cap=num(c.epsilon_cap, lang) if c.epsilon_cap is not None else t("policy.cap_unknown", lang),
              ref=c.approval_reference or "-") for c in p.cap_history)])
        tones.append(None)
    out: list[Block] = [Heading(text=t("policy.title", lang)), Paragraph(text=t("policy.intro", lang)),
                        Table(columns=[], rows=rows, widths=[0.38, 0.62], tones=tones)]
    if p.status_detail:
        out.append(Paragraph(text=t("technical", lang, detail=p.status_detail), style="small"))
    return out


def _spend(r: EthicsReport, lang: Lang, figures: _FigureCounter) -> list[Block]:
    s, p = r.spend, r.policy
    out: list[Block] = [Heading(text=t("spend.title", lang)), Paragraph(text=t("spend.intro", lang))]
    if not s.verified:
        return [*out, Callout(tone="fail", text=t("spend.broken", lang), detail=[s.failure or ""])]
    if not s.rows:
        return [*out, Paragraph(text=t("spend.empty", lang))]
    accountant = p.accountant.upper()
    out.append(Paragraph(text=t("spend.replayed", lang, accountant=accountant) if s.replay_agrees
                         else t("spend.replay_bad", lang)))
    columns = [t(k, lang) for k in ("col.seq", "col.date", "col.run", "col.model", "col.round", "col.purpose",
                                    "col.eps_after", "col.eps_replayed", "col.sent")]
    rows, tones = [], []
    for row in s.rows:
        rows.append([str(row.seq), timestamp(row.time), row.run_id, task_name(row.task, lang), str(row.round),
                     t(f"purpose.{row.purpose}", lang), num(row.epsilon_after, lang, 3),
                     num(row.epsilon_replayed, lang, 3), yes_no(row.sent, lang)])
        tones.append("fail" if row.epsilon_after > p.epsilon_cap else None)
    out.append(Table(columns=columns, rows=rows, widths=[0.04, 0.12, 0.20, 0.12, 0.07, 0.13, 0.11, 0.13, 0.08],
                     align=["R", "L", "L", "L", "R", "L", "R", "R", "C"], tones=tones, small=True))
    if not s.agree:
        out.append(Callout(tone="fail", text=t("spend.disagree", lang, figures=_figures(r, lang),
                                               worst=num(s.headline or 0.0, lang, 3))))
    spent = s.headline or 0.0
    out.append(Paragraph(text=t("spend.total", lang, spent=num(spent, lang), cap=num(p.epsilon_cap, lang),
                                share=percent(spent / p.epsilon_cap, lang),
                                remaining=num(max(0.0, p.epsilon_cap - spent), lang))))
    if not all(row.sent for row in s.rows):
        out.append(Paragraph(text=t("spend.unsent", lang), style="small"))
    png = spend_plot([x.time for x in s.rows], [x.round for x in s.rows], [x.run_id for x in s.rows],
                     [x.epsilon_after for x in s.rows], [x.purpose for x in s.rows], p.epsilon_cap, lang)
    out.append(Figure(png=png, caption=figures.caption(t("fig.spend", lang), lang)))
    out += [Heading(text=t("mech.title", lang), level=2),
            Paragraph(text=t("mech.intro", lang, accountant=accountant, delta=small(p.delta, lang)))]
    columns = [t(k, lang) for k in ("col.model", "col.purpose", "col.sigma", "col.q", "col.clip", "col.releases",
                                    "col.steps")]
    rows = [[task_name(m.task, lang), t(f"purpose.{m.purpose}", lang), num(m.noise_multiplier, lang, 2),
             num(m.sample_rate, lang, 3), num(m.max_grad_norm, lang, 2), str(m.releases), integer(m.steps, lang)]
            for m in s.mechanisms]
    out.append(Table(columns=columns, rows=rows, widths=[0.17, 0.17, 0.14, 0.14, 0.13, 0.11, 0.14],
                     align=["L", "L", "R", "R", "R", "R", "R"], small=True))
    return out


def _figures(r: EthicsReport, lang: Lang) -> str:
    return t("sep.list", lang).join(f"{t(f'figure.{k}', lang)} {num(v, lang, 3)}"
                                    for k, v in r.spend.figures().items())


def _patients(r: EthicsReport, lang: Lang) -> list[Block]:
    """How many patients the budget covers, and delta against 1/n (delta must be far below 1/n)."""
    e, delta = r.egress, r.policy.delta
    n = e.patients
    if not n:
        return [Paragraph(text=t("delta.unknown", lang))]
    out: list[Block] = [Paragraph(text=t("meaning.patients", lang, n=n, train=max(e.training_patients),
                                         val=max(e.validation_patients, default=0)))]
    ratio = 1.0 / (n * delta)
    if ratio >= 10:
        whole = round(ratio)
        shown = integer(whole if math.isclose(ratio, whole) else math.floor(ratio), lang)  # never overstated
        out.append(Paragraph(text=t("delta.ratio", lang, delta=small(delta, lang), n=integer(n, lang), ratio=shown)))
    else:
        out.append(Callout(tone="attention", text=t("delta.large", lang, delta=small(delta, lang),
                                                     n=integer(n, lang))))
    return out


def _meaning(r: EthicsReport, lang: Lang, _figures: _FigureCounter) -> list[Block]:
    m = r.meaning
    if m is None:
        return []
    at_1pct = next(b for b in m.bounds if b.false_positive_rate == 0.01)
    eps, cap = num(m.epsilon_spent, lang), num(m.epsilon_cap, lang)
    sentence = t("meaning.sentence", lang, eps=eps, cap=cap, delta=small(m.delta, lang),
                 x=_per100(at_1pct.tpr_spent, lang), xcap=_per100(at_1pct.tpr_cap, lang))
    columns = [t("meaning.col_fpr", lang), t("meaning.col_spent", lang, eps=eps), t("meaning.col_cap", lang, eps=cap)]
    rows = [[t("meaning.rate", lang, n=integer(round(1 / b.false_positive_rate), lang)),
             t("meaning.per100", lang, x=_per100(b.tpr_spent, lang)),
             t("meaning.per100", lang, x=_per100(b.tpr_cap, lang))] for b in m.bounds]
    caveat = "meaning.weak" if is_weak(m.epsilon_spent, m.delta) else "meaning.strong"
    formal = [] if r.attacks else [Paragraph(text=t("meaning.formal_only", lang))]
    return [Heading(text=t("meaning.title", lang)),
            Paragraph(text=t("meaning.intro", lang)),
            Callout(tone="info", text=sentence),
            *_patients(r, lang),
            Paragraph(text=t("meaning.odds", lang, factor=factor(m.odds_factor_spent, lang))),
            Paragraph(text=t(caveat, lang)),
            *formal,
            Table(columns=columns, rows=rows, widths=[0.34, 0.33, 0.33], align=["L", "R", "R"]),
            Heading(text=t("meaning.cannot", lang), level=2),
            Bullets(items=[t(f"meaning.cannot.{i}", lang) for i in (1, 2, 3)]),
            Heading(text=t("meaning.can", lang), level=2),
            Bullets(items=[t(f"meaning.can.{i}", lang) for i in (1, 2)])]


def _per100(rate: float, lang: Lang) -> str:
    x = per_hundred(rate)
    return num(x, lang, 0) if x == int(x) else num(x, lang, 1)


def _egress(r: EthicsReport, lang: Lang, _figures: _FigureCounter) -> list[Block]:
    e = r.egress
    out: list[Block] = [Heading(text=t("egress.title", lang)), Paragraph(text=t("egress.intro", lang))]
    if not e.verified:
        out.append(Callout(tone="fail", text=t("egress.broken", lang), detail=[e.failure or ""]))
    columns = [t(k, lang) for k in ("col.kind", "col.messages", "col.bytes", "col.content")]
    rows = [[t(f"kind.{k}", lang), str(e.messages_by_kind.get(k, 0)), integer(e.bytes_by_kind.get(k, 0), lang),
             t(f"content.{k}", lang)] for k in KINDS]
    rows.append([t("egress.total", lang), str(sum(e.messages_by_kind.values())), integer(e.total_bytes, lang), ""])
    out.append(Table(columns=columns, rows=rows, widths=[0.22, 0.12, 0.16, 0.50], align=["L", "R", "R", "L"],
                     tones=[None, None, None, "info"]))
    period = (f"{timestamp(e.first_time)} – {timestamp(e.last_time)}" if e.first_time and e.last_time else "-")
    facts = [[t("egress.ciphertexts", lang), t("glance.nothing_sent", lang) if e.all_ciphertexts is None
              else yes_no(e.all_ciphertexts, lang)],
             [t("egress.chain", lang), yes_no(e.verified, lang)],
             [t("egress.period", lang), period],
             [t("egress.transport", lang), transport_text(e.transports, lang)],
             [t("egress.fingerprint", lang), e.he_fingerprint or "-"]]
    out.append(Table(columns=[], rows=facts, widths=[0.45, 0.55], mono=[],
                     tones=[None if e.all_ciphertexts is not False else "fail", None if e.verified else "fail",
                            None, None, None]))
    if e.participation:
        columns = [t(k, lang) for k in ("col.run", "col.model", "col.rounds_sent", "col.rounds_declined")]
        rows = [[p.run_id, task_name(p.task, lang), _rounds(p.rounds_sent), _rounds(p.rounds_declined)]
                for p in e.participation]
        out += [Heading(text=t("egress.participation", lang), level=2),
                Table(columns=columns, rows=rows, widths=[0.3, 0.22, 0.28, 0.2])]
    if e.declined:
        columns = [t(k, lang) for k in ("col.date", "col.run", "col.model", "col.round", "col.reason")]
        rows = [[timestamp(d.time), d.run_id, task_name(d.task, lang), str(d.round), d.reason] for d in e.declined]
        out += [Heading(text=t("egress.declined", lang), level=2), Paragraph(text=t("egress.declined_intro", lang)),
                Table(columns=columns, rows=rows, widths=[0.13, 0.15, 0.13, 0.06, 0.53], small=True,
                      align=["L", "L", "L", "R", "L"])]
    out += [Heading(text=t("egress.never", lang), level=2),
            Bullets(items=[t(f"egress.never.{i}", lang) for i in (1, 2, 3, 4)])]
    return out


def transport_text(transports: dict[str, int], lang: Lang) -> str:
    """How the messages travelled, as the egress log records it: each way with its number of messages."""
    if not transports:
        return t("transport.none", lang)
    order = ["simulation", "in-process", "supernode-tls", "supernode", NOT_RECORDED]
    return t("sep.list", lang).join(t("transport.count", lang, how=t(f"transport.{k}", lang),
                                      messages=tn("messages", lang, transports[k]))
                                    for k in sorted(transports, key=order.index))


def _rounds(rounds: list[int]) -> str:
    """``1-3, 5`` for [1, 2, 3, 5]; ``-`` when empty."""
    if not rounds:
        return "-"
    spans, start, prev = [], rounds[0], rounds[0]
    for r in [*rounds[1:], None]:
        if r is not None and r == prev + 1:
            prev = r
            continue
        spans.append(f"{start}" if start == prev else f"{start}–{prev}")
        if r is not None:
            start = prev = r
    return ", ".join(spans)


def _attacks(r: EthicsReport, lang: Lang, figures: _FigureCounter) -> list[Block]:
    out: list[Block] = [Heading(text=t("attacks.title", lang))]
    if not r.attacks:
        text = t("attacks.none", lang)
        if r.attacks_dir is not None:
            text = f"{t('attacks.none_in', lang, folder=r.attacks_dir)} {text}"
        return [*out, Paragraph(text=text)]
    out.append(Paragraph(text=t("attacks.intro", lang)))
    for evidence in r.attacks:
        out += _attack(evidence, lang, figures)
    return out


def _attack(ev: AttackEvidence, lang: Lang, figures: _FigureCounter) -> list[Block]:
    a = ev.result
    if a.passed:
        tone, key = "ok", "attack.passed"
    elif not a.positive_control_ok:
        tone, key = "attention", "attack.inconclusive"
    else:
        tone, key = "fail", "attack.failed"
    out: list[Block] = [Heading(text=a.title, level=2)]
    if lang != "en":
        out.append(Paragraph(text=t("attack.summary_note", lang), style="small"))
    out += [Paragraph(text=a.summary), Callout(tone=tone, text=t(key, lang))]  # type: ignore[arg-type]
    columns = [t(k, lang) for k in ("col.arm", "col.protection", "col.control", "col.succeeded", "col.metrics")]
    rows, tones = [], []
    for arm in a.arms:
        metrics = "; ".join(f"{k} = {_metric(v, lang)}" for k, v in arm.metrics.items())
        name = f"{arm.name}\n{arm.detail}" if arm.detail else arm.name
        rows.append([name, t(f"protection.{arm.protection}", lang), yes_no(arm.is_control, lang),
                     yes_no(arm.attack_succeeded, lang), metrics])
        bad = arm.attack_succeeded != arm.is_control
        tones.append("fail" if bad and not arm.is_control else "attention" if bad else None)
    out.append(Table(columns=columns, rows=rows, widths=[0.30, 0.13, 0.09, 0.11, 0.37], small=True, tones=tones,
                     align=["L", "L", "C", "C", "L"]))
    if a.accounted_epsilon is not None:
        out.append(Paragraph(text=t("attack.epsilon", lang, eps=num(a.accounted_epsilon, lang))))
    for fig in ev.figures:
        if fig.present:
            out.append(Figure(png=Path(fig.path).read_bytes(), caption=figures.caption(f"{a.title}: {fig.name}",
                                                                                       lang)))
        else:
            out.append(Paragraph(text=t("attack.figure_missing", lang, name=fig.name), style="small"))
    out.append(Paragraph(text=t("attack.settings", lang, seed=a.seed, size=a.size, seconds=num(a.seconds, lang, 0),
                                source=Path(ev.source).name), style="small"))
    return out


def _metric(v: object, lang: Lang) -> str:
    if isinstance(v, bool) or v is None:
        return yes_no(v, lang, nothing="none") if isinstance(v, bool) else "-"
    if isinstance(v, float):
        return num(v, lang, 3) if abs(v) < 1000 else integer(round(v), lang)
    return str(v)


def _threat(r: EthicsReport, lang: Lang, _figures: _FigureCounter) -> list[Block]:
    transports = r.egress.transports
    transport = (t("threat.g.3.tls", lang) if transports and set(transports) == {"supernode-tls"}
                 else t("threat.g.3.other", lang, how=transport_text(transports, lang)))
    return [Heading(text=t("threat.title", lang)),
            Heading(text=t("threat.parties", lang), level=2),
            Bullets(items=[t(f"threat.party.{i}", lang) for i in (1, 2, 3)]),
            Heading(text=t("threat.guarantees", lang), level=2),
            Bullets(items=[*(t(f"threat.g.{i}", lang) for i in (1, 2)), transport], numbered=True),
            Heading(text=t("threat.limits", lang), level=2),
            Bullets(items=[t(f"threat.l.{i}", lang) for i in range(1, 8)], numbered=True)]


def _integrity(r: EthicsReport, lang: Lang, _figures: _FigureCounter) -> list[Block]:
    out: list[Block] = [Heading(text=t("integrity.title", lang)), Paragraph(text=t("integrity.intro", lang))]
    columns = [t(k, lang) for k in ("col.record", "col.verified", "col.entries", "col.head")]
    rows, tones = [], []
    for c in r.chains:
        rows.append([t(f"record.{c.record}", lang), yes_no(c.verified, lang),
                     str(c.count) if c.count is not None else "-", head_cell(c, lang)])
        tones.append(None if c.verified else "fail")
    out.append(Table(columns=columns, rows=rows, widths=[0.3, 0.1, 0.1, 0.5], mono=[3], tones=tones,
                     align=["L", "C", "R", "L"]))
    out += [Paragraph(text=t("integrity.full", lang), style="small"),
            Paragraph(text=full_heads([("", c) for c in r.chains]), style="mono")]
    for c in r.chains:
        if not c.verified:
            record = t(f"record.{c.record}", lang)
            out.append(Callout(tone="fail", text=t("integrity.failed", lang, record=record[:1].upper() + record[1:]),
                               detail=[c.failure or ""]))
    out.append(Heading(text=t("integrity.checks", lang), level=2))
    columns = [t(k, lang) for k in ("col.check", "col.result", "col.detail")]
    rows = [[check_name(c.name, lang), t(f"severity.{c.severity}", lang), c.detail] for c in r.checks]
    tones = [{"pass": None, "warning": "attention", "fail": "fail"}[c.severity] for c in r.checks]  # type: ignore[misc]
    out.append(Table(columns=columns, rows=rows, widths=[0.17, 0.12, 0.71], tones=tones, small=True))
    if r.app_hashes:
        out.append(Paragraph(text=t("integrity.code", lang)))
        columns = [t(k, lang) for k in ("col.app_hash", "col.seqs", "col.installed")]
        rows = [[a.app_hash, f"{a.messages} ({a.first_seq}–{a.last_seq})", yes_no(a.installed, lang)]
                for a in r.app_hashes]
        out.append(Table(columns=columns, rows=rows, widths=[0.66, 0.19, 0.15], mono=[0], small=True))
    out.append(verdict_callout(r.verdict, lang))
    return out


def _sign_off(r: EthicsReport, lang: Lang, _figures: _FigureCounter) -> list[Block]:
    ledger = r.chain("ledger")
    head = grouped(ledger.hash) if ledger.hash else t("unverified", lang)
    return [Heading(text=t("sign.title", lang)),
            Signature(intro=t("sign.intro", lang, site=r.site_id, count=ledger.count if ledger.count is not None
                              else "-", head=head),
                      decision_label=t("sign.decision", lang), decisions=[t(f"sign.d.{i}", lang) for i in (1, 2, 3)],
                      remarks_label=t("sign.remarks", lang),
                      labels=(t("sign.name", lang), t("sign.role", lang), t("sign.date", lang),
                              t("sign.signature", lang)),
                      roles=[t("role.chair", lang), t("role.dpo", lang), t("role.pi", lang)])]
