"""What an audit finds: each check's verdict, and the report the DPO reads (``flame audit``, ethics reports).

Data only: the checks are in ``audit_payloads``, ``audit_chains`` and ``audit_provenance``,
run in order by :func:`flame_private.records.audit.audit_site`; the wording on screen is
``audit_cli``'s and the reports'.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, computed_field

from flame_private.privacy.policy_history import PolicyUse
from flame_private.records.anchor import ChainHead

Severity = Literal["pass", "warning", "fail"]


class AuditCheck(BaseModel):
    """One finding: what was checked, whether it passed, and the detail a DPO can act on."""

    model_config = ConfigDict(frozen=True)

    name: str
    ok: bool
    detail: str
    warning: bool = False
    """True for findings that are not failures but deserve a look (e.g. spend recorded, never released)."""

    @property
    def severity(self) -> Severity:
        return "fail" if not self.ok else "warning" if self.warning else "pass"


class AppHashUse(BaseModel):
    """One distinct code identity and the messages it produced."""

    app_hash: str
    messages: int
    first_seq: int
    last_seq: int
    first_time: str
    last_time: str
    installed: bool
    """Whether it equals ``app_identity()`` of the flame_private installed where the audit runs."""


class AuditReport(BaseModel):
    """The result of ``audit_site``: every check, and the summary the DPO reads first."""

    site_id: str
    state_dir: str
    generated_at: str
    checks: list[AuditCheck]
    messages_by_kind: dict[str, int]
    bytes_by_kind: dict[str, int]
    egress_head: ChainHead | None
    ledger_head: ChainHead | None
    params_source: str | None
    """Where the HE parameters the ciphertexts were checked against came from."""
    he_fingerprint: str | None
    epsilon_spent: float | None
    epsilon_cap: float | None
    policy: str | None
    """The approved policy in one line, or why it could not be read."""
    policy_sha256: str | None = None
    """sha256 of the policy file's bytes today (None when it cannot be read)."""
    policy_history: list[PolicyUse] = []
    """The policies the ledger entries recorded, in order: the cap's history."""
    anchor: str | None = None
    """The anchor checked (``--anchor``): whose heads, certified when; None without one."""
    app_hashes: list[AppHashUse]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ok(self) -> bool:
        """False if any check failed; warnings do not fail the audit."""
        return all(c.ok for c in self.checks)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def all_ciphertexts(self) -> bool | None:
        """Whether every update and metrics payload was verified as ciphertext (None: nothing to check)."""
        if not any(self.messages_by_kind.get(k) for k in ("update", "metrics")):
            return None
        relevant = [c for c in self.checks if c.name == "ciphertext only"]
        return bool(relevant) and all(c.ok for c in relevant)

    @property
    def total_bytes(self) -> int:
        return sum(self.bytes_by_kind.values())

    def failures(self) -> list[AuditCheck]:
        return [c for c in self.checks if not c.ok]

    def warnings(self) -> list[AuditCheck]:
        return [c for c in self.checks if c.ok and c.warning]


class Checks:
    """The findings of one audit as the checks record them, in order."""

    def __init__(self) -> None:
        self.items: list[AuditCheck] = []

    def ok(self, name: str, detail: str) -> None:
        self.items.append(AuditCheck(name=name, ok=True, detail=detail))

    def warn(self, name: str, detail: str) -> None:
        self.items.append(AuditCheck(name=name, ok=True, detail=detail, warning=True))

    def fail(self, name: str, detail: str) -> None:
        self.items.append(AuditCheck(name=name, ok=False, detail=detail))
