"""The consortium overview laid out as a document in one language: one table, one plot, refusals, heads."""

from __future__ import annotations

from datetime import timedelta

from flame_private.reports.blocks import (
    Block,
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
from flame_private.reports.consortium import ConsortiumReport
from flame_private.reports.doc_parts import (
    breach_callout,
    chain_cell,
    full_heads,
    head_cell,
    head_metadata,
    reason_text,
)
from flame_private.reports.figures import consortium_plot
from flame_private.reports.i18n import (
    Lang,
    day,
    num,
    percent,
    t,
    task_name,
    timestamp,
    tn,
    yes_no,
)


def consortium_document(report: ConsortiumReport, lang: Lang) -> Document:
    blocks: list[Block] = [
        Title(title=t("cons.title", lang), subtitle=t("cons.subtitle", lang),
              facts=[(t("f.study", lang), report.study or t("default_study", lang)),
                     (t("cons.sites", lang), ", ".join(s.site_id for s in report.sites)),
                     (t("f.generated", lang), f"{report.generated_at} UTC"),
                     (t("f.software", lang), t("software", lang, version=report.flame_version))]),
        _verdict(report, lang),
        *breach_callout([s.verdict for s in report.sites], lang),
        Paragraph(text=t("cons.intro", lang)),
        _table(report, lang),
        Figure(png=consortium_plot([s.site_id for s in report.sites], [s.spent for s in report.sites],
                                   [s.epsilon_cap for s in report.sites], lang),
               caption=t("figure", lang, n=1, caption=t("fig.consortium", lang)), width=0.75),
        *_declined(report, lang),
        Heading(text=t("cons.heads", lang), level=2),
        _heads(report, lang),
        Paragraph(text=t("integrity.full", lang), style="small"),
        Paragraph(text=full_heads([(f"{s.site_id} ", c) for s in report.sites for c in (s.ledger, s.egress)]),
                  style="mono"),
        Heading(text=t("sign.title", lang), level=2),
        Signature(intro=tn("cons.sign_intro", lang, len(report.sites)), decision_label=t("sign.decision", lang),
                  decisions=[t(f"sign.d.{i}", lang) for i in (1, 2, 3)], remarks_label=t("sign.remarks", lang),
                  labels=(t("sign.name", lang), t("sign.role", lang), t("sign.date", lang),
                          t("sign.signature", lang)),
                  roles=[t("role.coordinator", lang), t("role.dpo", lang)]),
    ]
    return Document(lang=lang, title=t("cons.title", lang), header=t("cons.header", lang),
                    footer=f"{', '.join(s.site_id for s in report.sites)} · "
                           f"{t('generated', lang, when=report.generated_at)}", blocks=blocks,
                    metadata=head_metadata([(f"{s.site_id}:", c) for s in report.sites for c in (s.ledger, s.egress)]))


def _verdict(report: ConsortiumReport, lang: Lang) -> Callout:
    level = report.level
    bad = [s.site_id for s in report.sites if s.verdict.level == "fail"]
    items = [f"{s.site_id}: {reason_text(r, lang)}"
             for s in report.sites for r in s.verdict.reasons]
    return Callout(tone=level, text=t(f"cons.verdict.{level}", lang, sites=", ".join(bad)), items=items)


def _table(report: ConsortiumReport, lang: Lang) -> Table:
    columns = [t(k, lang) for k in ("f.site", "col.committee", "col.expires", "col.spent_cap", "col.used",
                                    "col.taken_part", "col.declined", "col.records_ok", "col.verdict")]
    rows: list[list[str]] = []
    tones: list[Tone | None] = []
    for s in report.sites:
        if s.spent is not None:
            spent = f"{num(s.spent, lang)} / {num(s.epsilon_cap, lang)}"
        else:
            floor = f" (≥ {num(s.floor, lang)})" if s.floor is not None else ""
            spent = f"{t('unverified', lang).upper()}{floor} / {num(s.epsilon_cap, lang)}"
        used = percent(s.spent / s.epsilon_cap, lang) if s.spent is not None else "-"
        records = yes_no(s.records_verified, lang)
        last_day = s.expires_on - timedelta(days=1)  # expires_on is the first day the policy no longer applies
        expires = day(last_day, lang) + ("" if s.policy_valid else f" ({t('policy.invalid', lang).split(':')[0]})")
        rows.append([s.site_id, f"{s.approved_by} ({s.approval_reference})", expires, spent, used,
                     str(s.rounds_taken_part), str(s.rounds_declined), records, t(f"level.{s.verdict.level}", lang)])
        tones.append(None if s.verdict.level == "ok" else s.verdict.level)
    return Table(columns=columns, rows=rows, widths=[0.07, 0.27, 0.13, 0.11, 0.07, 0.10, 0.08, 0.08, 0.09],
                 align=["L", "L", "L", "R", "R", "R", "R", "C", "C"], tones=tones, small=True)


def _declined(report: ConsortiumReport, lang: Lang) -> list[Block]:
    rows = [[s.site_id, timestamp(d.time), d.run_id, task_name(d.task, lang), str(d.round), d.reason]
            for s in report.sites for d in s.declined]
    if not rows:
        return [Heading(text=t("cons.declined", lang), level=2), Paragraph(text=t("cons.no_declined", lang))]
    columns = [t(k, lang) for k in ("f.site", "col.date", "col.run", "col.model", "col.round", "col.reason")]
    return [Heading(text=t("cons.declined", lang), level=2),
            Table(columns=columns, rows=rows, widths=[0.08, 0.13, 0.14, 0.12, 0.06, 0.47], small=True,
                  align=["L", "L", "L", "L", "R", "L"])]


def _heads(report: ConsortiumReport, lang: Lang) -> Table:
    """Two rows per site (ledger, egress log), each head as a fingerprint to read aloud; full hashes follow."""
    rows: list[list[str]] = []
    tones: list[Tone | None] = []
    for s in report.sites:
        for chain in (s.ledger, s.egress):
            rows.append([s.site_id, t(f"record.{chain.record}", lang), chain_cell(chain, lang),
                         head_cell(chain, lang)])
            tones.append(None if chain.verified else "fail")
    return Table(columns=[t(k, lang) for k in ("f.site", "col.record", "col.entries", "col.head")], rows=rows,
                 widths=[0.08, 0.24, 0.09, 0.59], mono=[3], small=True, tones=tones,
                 align=["L", "L", "R", "L"])
