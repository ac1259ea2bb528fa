"""The cap's history: which approved policy each ledger entry was recorded under, and what changed.

Every ledger entry records the policy in force when its spend was recorded (the
sha256 of the policy file's bytes, the cap and the approval reference).  Read back,
the entries give the cap's history, and two comparisons catch a policy edited
after spending:

* consecutive entries recording different policies;
* the policy file today differing from what the last entry recorded.

Severity (docs/privacy-accounting.md, "The cap's history"):

* same approval reference, different file or cap: **fail**.  An approved policy is
  the document the committee signed; changing it under the same reference is a
  change without a new approval (the "raise the cap from 8 to 80" case).
* a new approval reference: **warning**.  A renewal or amendment is legitimate, but
  only the committee's decision says whether it is the one approved: the DPO checks it.
* an entry recording an epsilon above the cap it recorded: **fail**.

Entries written before policies were recorded carry none: they are listed as such,
and nothing is compared across them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict

from flame_private.privacy.ledger import LedgerEntry
from flame_private.privacy.policy import PolicyStamp

SHA_SHOWN = 12
"""Characters of a policy hash shown in messages."""


class PolicyUse(BaseModel):
    """One stretch of consecutive ledger entries recorded under the same policy (or under none recorded)."""

    model_config = ConfigDict(frozen=True)

    policy: PolicyStamp | None
    """None: entries written before the policy was recorded in each entry."""
    first_seq: int
    last_seq: int

    @property
    def entries(self) -> int:
        return self.last_seq - self.first_seq + 1

    def describe(self) -> str:
        span = f"entry {self.first_seq}" if self.entries == 1 else f"entries {self.first_seq}-{self.last_seq}"
        if self.policy is None:
            return f"{span} ({self.entries}): written before the policy was recorded in each entry"
        return f"{span} ({self.entries}): {describe_stamp(self.policy)}"


class PolicyFinding(BaseModel):
    """A change of policy after the first spend, or an entry above its own cap."""

    model_config = ConfigDict(frozen=True)

    severity: Literal["warning", "fail"]
    detail: str


def describe_stamp(stamp: PolicyStamp) -> str:
    sha = stamp.policy_sha256[:SHA_SHOWN] if stamp.policy_sha256 else "(no file hash)"
    return f"policy {sha}, cap {stamp.epsilon_cap:.2f}, approval {stamp.approval_reference}"


def policy_history(entries: Sequence[LedgerEntry]) -> list[PolicyUse]:
    """Consecutive entries grouped by the policy they recorded, in ledger order."""
    out: list[PolicyUse] = []
    for e in entries:
        stamp = e.policy
        if out and out[-1].policy == stamp:
            out[-1] = out[-1].model_copy(update={"last_seq": e.seq})
        else:
            out.append(PolicyUse(policy=stamp, first_seq=e.seq, last_seq=e.seq))
    return out


def policy_change(before: PolicyStamp, after: PolicyStamp, where: str) -> PolicyFinding | None:
    same_file = (before.policy_sha256 is None or after.policy_sha256 is None
                 or before.policy_sha256 == after.policy_sha256)
    if same_file and before.epsilon_cap == after.epsilon_cap and before.approval_reference == after.approval_reference:
        return None
    what = f"{describe_stamp(before)} -> {describe_stamp(after)}"
    if before.approval_reference == after.approval_reference:
        changed = (f"the cap went from {before.epsilon_cap:.2f} to {after.epsilon_cap:.2f}"
                   if before.epsilon_cap != after.epsilon_cap else "the file's content changed, not its cap")
        return PolicyFinding(severity="fail", detail=f"{where}: the policy changed without a new approval: "
                                                     f"{changed} under the same approval reference "
                                                     f"{after.approval_reference} ({what})")
    return PolicyFinding(severity="warning", detail=f"{where}: a new approval reference ({what}): check it "
                                                    "against the committee's decision (reference, cap, dates)")


def last_recorded(entries: Sequence[LedgerEntry]) -> LedgerEntry | None:
    """The last entry that recorded its policy (None when none did)."""
    return next((e for e in reversed(entries) if e.policy is not None), None)


def policy_findings(entries: Sequence[LedgerEntry], current: PolicyStamp | None) -> list[PolicyFinding]:
    """What changed after the first spend, and entries above their own cap; empty when nothing did.

    ``current``: the policy file as it is today (None when it cannot be read: not compared).
    """
    findings: list[PolicyFinding] = []
    for e in entries:
        if e.epsilon_cap is not None and e.epsilon_after > e.epsilon_cap:
            findings.append(PolicyFinding(severity="fail", detail=f"ledger entry {e.seq} recorded epsilon "
                                          f"{e.epsilon_after:.3f}, above the cap {e.epsilon_cap:.2f} it recorded"))
    history = policy_history(entries)
    last_known: PolicyUse | None = None
    for use in history:
        if use.policy is None:
            if last_known is not None:
                findings.append(PolicyFinding(severity="warning", detail=(
                    f"ledger entries {use.first_seq}-{use.last_seq} record no policy, after entries that did: "
                    "written by an older flame-private than the entries before them")))
            continue
        if last_known is not None and last_known.policy is not None:
            change = policy_change(last_known.policy, use.policy,
                             f"between ledger entries {last_known.last_seq} and {use.first_seq}")
            if change is not None:
                findings.append(change)
        last_known = use
    if current is not None and last_known is not None and last_known.policy is not None:
        change = policy_change(last_known.policy, current, f"the policy file today differs from what ledger entry "
                                                     f"{last_known.last_seq} recorded")
        if change is not None:
            findings.append(change)
    return findings
