"""Parts both documents (a site's ethics report, the consortium overview) use: the verdict box and its
reasons in the reader's language, breach notices, record heads to read aloud, numbered figure captions.
"""

from __future__ import annotations

from flame_private.reports.blocks import Block, Callout, Tone
from flame_private.reports.facts import BREACH_LIKE, ChainFacts, Reason, Verdict
from flame_private.reports.i18n import Lang, check_name, grouped, num, t, tn


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
    tone: Tone = verdict.level
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


class FigureCounter:
    def __init__(self) -> None:
        self.n = 0

    def caption(self, text: str, lang: Lang) -> str:
        self.n += 1
        return t("figure", lang, n=self.n, caption=text)
