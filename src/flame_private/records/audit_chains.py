"""The audit's checks of the records against each other and against the last audit.

``ledger agreement``  every update and metrics message names the ledger entry that paid for it;
``policy history``    the cap's history from the policies the ledger entries recorded;
``continuity``        today's ledger and egress log extend the chain heads certified at the last
                      audit (``records/anchor.py``).
"""

from __future__ import annotations

import math

from flame_private.privacy.ledger import EPSILON_RTOL, Ledger, LedgerEntry
from flame_private.privacy.policy import PolicyStamp
from flame_private.privacy.policy_history import PolicyUse, policy_findings
from flame_private.records.anchor import AuditAnchor, extends
from flame_private.records.audit_report import Checks
from flame_private.records.egress import EgressEntry, EgressLog


def check_ledger_agreement(messages: list[EgressEntry], ledger: Ledger, checks: Checks) -> None:
    """Each update and metrics message (both DP releases) against the ledger entry that paid for it."""
    name = "ledger agreement"
    by_seq = {e.seq: e for e in ledger.entries}
    claimed: dict[int, EgressEntry] = {}
    problems = 0
    for u in messages:
        where = f"{u.kind} seq {u.seq} ({u.run_id} round {u.round}, {u.task})"
        if u.ledger_seq is None:
            checks.fail(name, f"{where} names no privacy-ledger entry: its privacy spend is not accounted for")
            problems += 1
            continue
        le: LedgerEntry | None = by_seq.get(u.ledger_seq)
        if le is None:
            checks.fail(name, f"{where} names ledger entry {u.ledger_seq}, which does not exist "
                              f"(the ledger holds {len(ledger)}): released without recorded spend")
            problems += 1
            continue
        diffs = [f"{k} {a!r} vs {b!r}" for k, a, b in (("run", u.run_id, le.run_id), ("round", u.round, le.round),
                                                       ("task", u.task, le.task)) if a != b]
        if u.epsilon_after is None or not math.isclose(u.epsilon_after, le.epsilon_after, rel_tol=EPSILON_RTOL,
                                                        abs_tol=1e-12):
            diffs.append(f"epsilon_after {u.epsilon_after!r} vs {le.epsilon_after!r}")
        if u.dp is None:
            diffs.append("no DP settings")
        else:
            for k in ("noise_multiplier", "sample_rate", "steps", "max_grad_norm", "delta"):
                a, b = getattr(u.dp, k), getattr(le, k)
                if a != b:
                    diffs.append(f"{k} {a!r} vs {b!r}")
        if le.time > u.time:
            diffs.append(f"ledger entry written at {le.time}, after the {u.kind} message left at {u.time}")
        if diffs:
            checks.fail(name, f"{where} disagrees with ledger entry {le.seq} (egress vs ledger): {'; '.join(diffs)}")
            problems += 1
        if u.ledger_seq in claimed:
            first = claimed[u.ledger_seq]
            checks.fail(name, f"{where} and {first.kind} seq {first.seq} both name ledger entry "
                              f"{u.ledger_seq}: one release's spend was recorded for two messages")
            problems += 1
        else:
            claimed[u.ledger_seq] = u
    if not problems:
        # Each kind counted and named as what it is: "4 update(s) and 2 metrics message(s)".
        counts = {"update(s)": sum(m.kind == "update" for m in messages),
                  "metrics message(s)": sum(m.kind == "metrics" for m in messages)}
        released = " and ".join(f"{n} {noun}" for noun, n in counts.items() if n) or "no update or metrics message"
        checks.ok(name, f"{released}, each covered by its own ledger entry with the same run, "
                        "round, task, DP settings and epsilon, recorded before it left")
    unreleased = [e for e in ledger.entries if e.seq not in claimed]
    if unreleased:
        shown = ", ".join(f"{e.seq} ({e.run_id} round {e.round}, {e.task})" for e in unreleased[:10])
        more = f" and {len(unreleased) - 10} more" if len(unreleased) > 10 else ""
        checks.warn(name, f"{len(unreleased)} ledger entr{'y' if len(unreleased) == 1 else 'ies'} with no update "
                          f"or metrics message in the egress log: {shown}{more}. Spend recorded but never released "
                          "(e.g. the round failed after training): safe, the budget over-counts")


def check_policy_history(ledger: Ledger, history: list[PolicyUse], current: PolicyStamp | None,
                         checks: Checks) -> None:
    """The cap's history: a change under one approval fails, a new approval is a warning to check."""
    name = "policy history"
    if not len(ledger):
        checks.ok(name, "no spend recorded yet: nothing to compare")
        return
    findings = policy_findings(ledger.entries, current)
    for f in findings:
        (checks.fail if f.severity == "fail" else checks.warn)(name, f.detail)
    if not any(f.severity == "fail" for f in findings):
        listed = "; ".join(u.describe() for u in history)
        compared = ("" if current is None else
                    f"; the policy file today is {current.policy_sha256[:12] if current.policy_sha256 else '?'}")
        checks.ok(name, f"{len(history)} polic{'y' if len(history) == 1 else 'ies'} recorded: {listed}{compared}")


def check_continuity(site_id: str, anchor: AuditAnchor, ledger: Ledger | None, egress: EgressLog | None,
                     checks: Checks) -> None:
    """Today's privacy ledger and egress log extend the chain heads ``anchor`` certified."""
    name = "continuity"
    if anchor.site_id != site_id:
        checks.fail(name, f"the anchor is for site {anchor.site_id!r}, not {site_id!r}")
        return
    problems = 0
    for what, log, head in (("privacy ledger", ledger, anchor.ledger_head),
                            ("egress log", egress, anchor.egress_head)):
        if log is None:
            checks.fail(name, f"the {what} did not verify: cannot show that it extends the anchor of "
                              f"{anchor.taken_at}")
            problems += 1
            continue
        why = extends(head, log.entries, what)
        if why is not None:
            checks.fail(name, f"{why} (anchor of {anchor.taken_at}: {head.count} entries, {head.hash[:12]}...)")
            problems += 1
    if not problems:
        checks.ok(name, f"the privacy ledger and egress log extend the heads certified at {anchor.taken_at} "
                        f"(ledger {anchor.ledger_head.count} -> {len(ledger)} entries, egress log "  # type: ignore[arg-type]
                        f"{anchor.egress_head.count} -> {len(egress)} entries)")  # type: ignore[arg-type]
