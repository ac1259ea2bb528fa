"""The ethics report's sections on safeguards: what left the site, what the attacks showed, what the system
does not protect against, how to prove later that nothing was rewritten, and the sign-off.
"""

from __future__ import annotations

from pathlib import Path

from flame_private.records.egress import KINDS
from flame_private.reports.blocks import Block, Bullets, Callout, Figure, Heading, Paragraph, Signature, Table, Tone
from flame_private.reports.doc_parts import FigureCounter, full_heads, head_cell, verdict_callout
from flame_private.reports.evidence import AttackEvidence
from flame_private.reports.facts import NOT_RECORDED, EthicsReport
from flame_private.reports.i18n import Lang, check_name, grouped, integer, num, t, task_name, timestamp, tn, yes_no


def egress_section(r: EthicsReport, lang: Lang, _figures: FigureCounter) -> list[Block]:
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


def attacks_section(r: EthicsReport, lang: Lang, figures: FigureCounter) -> list[Block]:
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


def _attack(ev: AttackEvidence, lang: Lang, figures: FigureCounter) -> list[Block]:
    a = ev.result
    tone: Tone
    if a.passed:
        tone, key = "ok", "attack.passed"
    elif not a.positive_control_ok:
        tone, key = "attention", "attack.inconclusive"
    else:
        tone, key = "fail", "attack.failed"
    out: list[Block] = [Heading(text=a.title, level=2)]
    if lang != "en":
        out.append(Paragraph(text=t("attack.summary_note", lang), style="small"))
    out += [Paragraph(text=a.summary), Callout(tone=tone, text=t(key, lang))]
    columns = [t(k, lang) for k in ("col.arm", "col.protection", "col.control", "col.succeeded", "col.metrics")]
    rows: list[list[str]] = []
    tones: list[Tone | None] = []
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


def threat_section(r: EthicsReport, lang: Lang, _figures: FigureCounter) -> list[Block]:
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


_SEVERITY_TONE: dict[str, Tone | None] = {"pass": None, "warning": "attention", "fail": "fail"}
"""How an integrity check's row is marked."""


def integrity_section(r: EthicsReport, lang: Lang, _figures: FigureCounter) -> list[Block]:
    out: list[Block] = [Heading(text=t("integrity.title", lang)), Paragraph(text=t("integrity.intro", lang))]
    columns = [t(k, lang) for k in ("col.record", "col.verified", "col.entries", "col.head")]
    rows: list[list[str]] = []
    tones: list[Tone | None] = []
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
    tones = [_SEVERITY_TONE[c.severity] for c in r.checks]
    out.append(Table(columns=columns, rows=rows, widths=[0.17, 0.12, 0.71], tones=tones, small=True))
    if r.app_hashes:
        out.append(Paragraph(text=t("integrity.code", lang)))
        columns = [t(k, lang) for k in ("col.app_hash", "col.seqs", "col.installed")]
        rows = [[a.app_hash, f"{a.messages} ({a.first_seq}–{a.last_seq})", yes_no(a.installed, lang)]
                for a in r.app_hashes]
        out.append(Table(columns=columns, rows=rows, widths=[0.66, 0.19, 0.15], mono=[0], small=True))
    out.append(verdict_callout(r.verdict, lang))
    return out


def sign_off_section(r: EthicsReport, lang: Lang, _figures: FigureCounter) -> list[Block]:
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
