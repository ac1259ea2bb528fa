"""An ethics report's facts laid out as a document in one language: sections, tables, plots, sign-off.

The order follows what a committee asks: is everything in order (verdict
first), what was approved, how much was spent and what that means for a
patient, what left the site, what the attacks showed, what the system does
not protect against, and how to prove later that nothing was rewritten.
This module lays out the document up to the meaning of the spend; the
sections from what left the site onward are in ``ethics_safeguards``.
"""

from __future__ import annotations

import math

from flame_private.reports.blocks import (
    Block,
    Bullets,
    Callout,
    Document,
    Figure,
    Heading,
    Paragraph,
    Table,
    Title,
    Tone,
)
from flame_private.reports.doc_parts import FigureCounter, breach_callout, head_metadata, verdict_callout
from flame_private.reports.ethics_safeguards import (
    attacks_section,
    egress_section,
    integrity_section,
    sign_off_section,
    threat_section,
)
from flame_private.reports.facts import EthicsReport
from flame_private.reports.figures import spend_plot
from flame_private.reports.i18n import Lang, day, factor, integer, num, percent, small, t, task_name, timestamp, yes_no
from flame_private.reports.meaning import is_weak, per_hundred


def ethics_document(report: EthicsReport, lang: Lang) -> Document:
    """The whole ethics report for ``report`` in ``lang``."""
    figures = FigureCounter()
    blocks: list[Block] = [*_title(report, lang), verdict_callout(report.verdict, lang),
                           *breach_callout([report.verdict], lang), *_glance(report, lang)]
    sections = [_policy, _spend, _meaning, egress_section, attacks_section, threat_section, integrity_section,
                sign_off_section]
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


def _policy(r: EthicsReport, lang: Lang, _figures: FigureCounter) -> list[Block]:
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


def _spend(r: EthicsReport, lang: Lang, figures: FigureCounter) -> list[Block]:
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
    rows: list[list[str]] = []
    tones: list[Tone | None] = []
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


def _meaning(r: EthicsReport, lang: Lang, _figures: FigureCounter) -> list[Block]:
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
