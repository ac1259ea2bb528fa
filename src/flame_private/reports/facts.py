"""What a site's ethics report states: its facts, the reasons for its verdict, and the verdict.

Data only, no wording and no layout (``content.build_ethics_report`` gathers them; ``ethics_doc`` lays them
out), so the HTML and PDF renderings, in either language, say the same.
"""

from __future__ import annotations

from datetime import date
from typing import Literal

from flame_private import __version__
from flame_private.config import StrictModel
from flame_private.reports.evidence import AttackEvidence

Level = Literal["ok", "attention", "fail"]
ReasonCode = Literal["ledger_broken", "egress_broken", "audit_failed", "over_cap", "replay_mismatch",
                     "records_disagree", "attack_failed", "attack_inconclusive", "policy_not_valid", "audit_warnings",
                     "no_state"]
FAILING: frozenset[str] = frozenset({"ledger_broken", "egress_broken", "audit_failed", "over_cap",
                                     "replay_mismatch", "records_disagree", "attack_failed"})
"""Reasons that make the verdict "fail" (and the command exit non-zero); the others ask for attention."""
BREACH_LIKE: frozenset[str] = FAILING - {"attack_failed"}
"""Failures of the site's own records or spend (not of a simulation): the report says what to do, breach rules
included."""
NOT_RECORDED = "not-recorded"
"""Key of messages whose egress entry predates the recording of their transport."""


class CapRow(StrictModel):
    """Ledger entries ``first_seq``-``last_seq`` were recorded under this cap (None: before caps were recorded)."""

    first_seq: int
    last_seq: int
    epsilon_cap: float | None
    approval_reference: str | None


class PolicyFacts(StrictModel):
    """The approved policy, as the committee approved it, and whether it authorises spending today."""

    path: str
    site_id: str
    epsilon_cap: float
    delta: float
    unit_of_privacy: str
    accountant: str
    approved_by: str
    approval_reference: str
    approved_on: date
    expires_on: date
    notes: str | None
    valid_today: bool
    status_detail: str | None
    """Why the policy does not authorise spending today (expired, not yet valid, another site's); None if it does."""
    cap_history: list[CapRow] = []
    """The cap each stretch of ledger entries recorded (flame audit's cap history); empty when none is known."""


class SpendRow(StrictModel):
    """One privacy-ledger entry: one release of something computed from the site's patients."""

    seq: int
    time: str
    run_id: str
    round: int
    task: str
    purpose: Literal["training", "evaluation"]
    noise_multiplier: float
    sample_rate: float
    steps: int
    max_grad_norm: float
    epsilon_after: float
    """As recorded in the ledger."""
    epsilon_replayed: float
    """Recomputed for this report from the ledger's history up to this entry."""
    sent: bool
    """Whether an egress-log message names this entry (False: spend recorded, never released; over-counts)."""
    hash: str


class MechanismRow(StrictModel):
    """One distinct DP setting and how often it was used."""

    purpose: Literal["training", "evaluation"]
    task: str
    noise_multiplier: float
    sample_rate: float
    max_grad_norm: float
    releases: int
    steps: int


class SpendFacts(StrictModel):
    verified: bool
    failure: str | None
    rows: list[SpendRow]
    spent: float | None
    """The site's epsilon at the policy's delta, by its accountant; None when the ledger does not verify."""
    replay_agrees: bool
    mechanisms: list[MechanismRow]
    runs: list[str]
    recorded: float | None = None
    """The last ledger entry's ``epsilon_after`` as recorded; None when the ledger is empty or does not verify."""
    egress_recorded: float | None = None
    """The largest ``epsilon_after`` the egress log recorded with a release; None when it records none."""
    headline: float | None = None
    """The figure the report leads with: the largest of ``spent``, ``recorded`` and ``egress_recorded`` (the
    worse one when the records disagree); None when none is available."""
    agree: bool = True
    """Whether the figures are consistent: recomputed = recorded, and the egress log's no larger."""

    def figures(self) -> dict[str, float]:
        """Every epsilon the records give for the site's total, by source."""
        out = {"recomputed": self.spent, "ledger": self.recorded, "egress": self.egress_recorded}
        return {k: v for k, v in out.items() if v is not None}


class MembershipBound(StrictModel):
    false_positive_rate: float
    tpr_spent: float
    tpr_cap: float


class MeaningFacts(StrictModel):
    """What the spend and the cap allow any attacker, in the terms of a membership test."""

    epsilon_spent: float
    epsilon_cap: float
    delta: float
    odds_factor_spent: float
    odds_factor_cap: float
    bounds: list[MembershipBound]


class DeclinedRow(StrictModel):
    seq: int
    time: str
    run_id: str
    round: int
    task: str
    reason: str


class ParticipationRow(StrictModel):
    run_id: str
    task: str
    rounds_sent: list[int]
    rounds_declined: list[int]


class EgressFacts(StrictModel):
    verified: bool
    failure: str | None
    messages_by_kind: dict[str, int]
    bytes_by_kind: dict[str, int]
    total_bytes: int
    all_ciphertexts: bool | None
    """True: every update and metrics payload verified as ciphertext; None: none was sent."""
    first_time: str | None
    last_time: str | None
    he_fingerprint: str | None
    declined: list[DeclinedRow]
    participation: list[ParticipationRow]
    transports: dict[str, int] = {}
    """Messages by how they travelled to the server, as the egress log records it (``not-recorded`` for
    entries written before it was)."""
    training_patients: list[int] = []
    """The distinct training-patient counts recorded with the site's updates (empty: not recorded)."""
    validation_patients: list[int] = []
    """The distinct validation-patient counts recorded with the site's metrics (empty: not recorded)."""

    @property
    def patients(self) -> int | None:
        """Patients the budget covers (training and validation, the largest recorded); None if not recorded."""
        if not self.training_patients:
            return None
        return max(self.training_patients) + max(self.validation_patients, default=0)


class ChainFacts(StrictModel):
    """One hash chain and its head: what the committee writes in its minutes."""

    record: Literal["ledger", "egress"]
    path: str
    verified: bool
    count: int | None
    hash: str | None
    failure: str | None


class CheckFacts(StrictModel):
    name: str
    severity: Literal["pass", "warning", "fail"]
    detail: str


class AppHashFacts(StrictModel):
    app_hash: str
    messages: int
    first_seq: int
    last_seq: int
    installed: bool


class Reason(StrictModel):
    code: ReasonCode
    detail: str = ""
    """Technical detail (the library's English message, a check name, a title)."""


class Verdict(StrictModel):
    level: Level
    reasons: list[Reason]

    @classmethod
    def of(cls, reasons: list[Reason]) -> Verdict:
        level: Level = ("fail" if any(r.code in FAILING for r in reasons) else "attention" if reasons else "ok")
        return cls(level=level, reasons=reasons)


class EthicsReport(StrictModel):
    """Everything one site's ethics report states."""

    kind: Literal["ethics"] = "ethics"
    study: str | None
    site_id: str
    site_config: str
    state_dir: str
    state_exists: bool
    generated_at: str
    """UTC, ``YYYY-MM-DD HH:MM``."""
    flame_version: str = __version__
    policy: PolicyFacts
    spend: SpendFacts
    meaning: MeaningFacts | None
    egress: EgressFacts
    chains: list[ChainFacts]
    checks: list[CheckFacts]
    app_hashes: list[AppHashFacts]
    params_source: str | None
    attacks_dir: str | None
    attacks: list[AttackEvidence]
    verdict: Verdict

    def chain(self, record: Literal["ledger", "egress"]) -> ChainFacts:
        return next(c for c in self.chains if c.record == record)

    def unverified(self) -> list[Literal["ledger", "egress", "figures", "agreement"]]:
        """Why the records cannot be vouched for: a chain that does not verify, epsilon figures that disagree,
        a release that disagrees with its ledger entry (the audit's "ledger agreement"); [] when none."""
        agreement = all(c.severity != "fail" for c in self.checks if c.name == "ledger agreement")
        checks: tuple[tuple[Literal["ledger", "egress", "figures", "agreement"], bool], ...] = (
            ("ledger", not self.chain("ledger").verified), ("egress", not self.chain("egress").verified),
            ("figures", not (self.spend.agree and self.spend.replay_agrees)), ("agreement", not agreement))
        return [k for k, bad in checks if bad]

    @property
    def records_verified(self) -> bool:
        return not self.unverified()
