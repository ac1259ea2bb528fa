"""The facts of the consortium overview: each site's spend against its own cap, participation and refusals.

Built from each site's ethics-report facts (``content.build_ethics_report``,
so the same verification runs), reduced to one line per site.  Refusals come
from each site's egress log, where a site records every round it declines,
with the reason, before it answers the server.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Literal

from flame_private import __version__
from flame_private.config import StrictModel
from flame_private.reports.content import build_ethics_report
from flame_private.reports.errors import ReportError
from flame_private.reports.facts import ChainFacts, DeclinedRow, EthicsReport, Verdict


class SiteLine(StrictModel):
    site_id: str
    site_config: str
    approved_by: str
    approval_reference: str
    expires_on: date
    policy_valid: bool
    epsilon_cap: float
    delta: float
    spent: float | None
    """The worse figure the site's records give (``SpendFacts.headline``); None when its ledger does not
    verify."""
    floor: float | None = None
    """When the ledger does not verify: the largest total the egress log recorded (spend is at least this)."""
    records_verified: bool = True
    """Both chains verify and their figures agree (``EthicsReport.records_verified``)."""
    releases: int | None
    rounds_taken_part: int
    """Rounds of a model for which the site sent an encrypted update (over every run)."""
    rounds_declined: int
    """Rounds the site refused and never sent an update for."""
    declined: list[DeclinedRow]
    ledger: ChainFacts
    egress: ChainFacts
    verdict: Verdict


class ConsortiumReport(StrictModel):
    kind: Literal["consortium"] = "consortium"
    study: str | None
    generated_at: str
    flame_version: str = __version__
    sites: list[SiteLine]

    @property
    def level(self) -> Literal["ok", "attention", "fail"]:
        levels = {s.verdict.level for s in self.sites}
        return "fail" if "fail" in levels else "attention" if "attention" in levels else "ok"


def build_consortium_report(site_yamls: list[Path], *, params: Path | None = None, study: str | None = None,
                            today: date | None = None, now: datetime | None = None) -> ConsortiumReport:
    """One line per site, in the order given; ReportError on bad input or a site given twice."""
    if not site_yamls:
        raise ReportError("no site configs given")
    now = now or datetime.now(UTC)
    seen: dict[str, Path] = {}
    reports = []
    for path in site_yamls:
        r = build_ethics_report(path, params=params, study=study, today=today, now=now)
        if r.site_id in seen:
            raise ReportError(f"{path}: site {r.site_id!r} is already given by {seen[r.site_id]}")
        seen[r.site_id] = Path(path)
        reports.append(r)
    return consortium_from(reports, study=study, now=now)


def consortium_from(reports: list[EthicsReport], *, study: str | None = None,
                    now: datetime | None = None) -> ConsortiumReport:
    """The overview of sites whose ethics-report facts are already built (the demo builds them once)."""
    lines: list[SiteLine] = []
    for r in reports:
        part = r.egress.participation
        lines.append(SiteLine(
            site_id=r.site_id, site_config=r.site_config, approved_by=r.policy.approved_by,
            approval_reference=r.policy.approval_reference, expires_on=r.policy.expires_on,
            policy_valid=r.policy.valid_today, epsilon_cap=r.policy.epsilon_cap, delta=r.policy.delta,
            spent=r.spend.headline if r.spend.spent is not None else None,
            floor=r.spend.headline if r.spend.spent is None else None, records_verified=r.records_verified,
            releases=len(r.spend.rows) if r.spend.verified else None,
            rounds_taken_part=sum(len(p.rounds_sent) for p in part),
            rounds_declined=sum(len(p.rounds_declined) for p in part), declined=r.egress.declined,
            ledger=r.chain("ledger"), egress=r.chain("egress"), verdict=r.verdict))
    return ConsortiumReport(study=study, generated_at=(now or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M"),
                            sites=lines)
