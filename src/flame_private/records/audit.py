"""The site audit: can the DPO verify everything that left the site?  Read-only, key-free.

``audit_site(site)`` opens the site's egress log and privacy ledger read-only
(nothing on disk is changed, even where a crash left something to tidy) and
checks, in order:

``egress log``        chain, canonical form and head verify (``EgressLog.open``);
``privacy ledger``    chain and head verify, every ``epsilon_after`` recomputed by Opacus;
``outbox``            every entry's payload file exists with the logged byte count and sha256;
``ciphertext only``   every "update" and "metrics" payload is its envelope's CKKS ciphertexts
                      under the agreed parameters, none transparent: no plaintext weights or
                      metrics left the site;
``declined``          every "declined" payload is the generic status ``{"site_id", "status"}``:
                      the reason stays in the entry, at the site (a payload that carried its
                      reason, as before 0.2, is a *warning*: that reason reached the server);
                      every "finished" payload (the last step's "ok") is ``{"site_id", "status": "ok"}``;
``ledger agreement``  every update names the ledger entry that paid for it, with the same run,
                      round, task, DP settings and epsilon, recorded no later than the update;
                      no two updates share one entry.  A ledger entry without an update is a
                      *warning* (spend recorded but never released: over-counting, safe);
``budget``            the site's epsilon is within the cap of its approved policy;
``policy history``    the cap's history from the policy each ledger entry recorded: a change
                      after the first spend under the same approval reference (file or cap)
                      fails, a new approval reference is a *warning* to check against the
                      committee's decision (``privacy/policy_history.py``);
``continuity``        with an anchor (``--anchor``): today's ledger and egress log extend the
                      chain heads the DPO certified last time (``records/anchor.py``);
``app approval``      every message that names the app bundle (FAB) it came from (app pinning) names
                      one the site's approved-apps log approved before it was sent;
``code identity``     the app hashes that produced the messages (one per distinct value).

HE parameters: the agreed parameters are an input, never taken from what the
site holds (its own files cannot vouch for themselves): the key ceremony's
params-only context, given as ``params_context`` (``flame audit --he-params``) or
named by the site config's ``he_params``.  Without either the check fails.  The
*header* of the site's secret context is compared with them (its body, the key,
is never read), and every envelope must carry their fingerprint.

The checks live by job: ``audit_payloads`` (outbox, ciphertext only, declined),
``audit_chains`` (ledger agreement, policy history, continuity) and ``audit_provenance``
(HE parameters, app approval, code identity); what they find is ``audit_report``.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from flame_private.config import SiteConfig
from flame_private.privacy.ledger import Ledger, LedgerError
from flame_private.privacy.policy import PolicyError, PolicyStamp, load_policy_with_sha
from flame_private.privacy.policy_history import policy_history
from flame_private.records.anchor import AnchorError, AuditAnchor, ChainHead
from flame_private.records.audit_chains import check_continuity, check_ledger_agreement, check_policy_history
from flame_private.records.audit_payloads import check_payloads
from flame_private.records.audit_provenance import (
    NO_AGREED_PARAMS,
    SERVER_PARAMS_NAME,
    app_hash_uses,
    check_app_approval,
    check_he_parameters,
)
from flame_private.records.audit_report import AppHashUse, AuditCheck, AuditReport, Checks, Severity
from flame_private.records.egress import KINDS, EgressLog, EgressLogError

__all__ = ["NO_AGREED_PARAMS", "SERVER_PARAMS_NAME", "AppHashUse", "AuditCheck", "AuditReport", "Severity",
           "anchor_of", "audit_site"]
"""The audit's public names, importable from here whichever module holds them."""


# --------------------------------------------------------------------------- the audit


def audit_site(site: SiteConfig, params_context: Path | None = None, *,
               recompute: Literal["last", "all"] = "all", anchor: AuditAnchor | None = None) -> AuditReport:
    """Audit everything ``site`` has sent, read-only and without its secret key.

    ``params_context``: the key ceremony's params-only context, the agreed
    parameters (default: ``site.he_params``; with neither, the HE-parameters
    check fails and no ciphertext is vouched for).  ``recompute``: whose ``epsilon_after`` the
    ledger check recomputes with Opacus (every entry's by default, like
    ``flame budget verify``).  ``anchor``: the chain heads the DPO certified last
    time; the audit fails unless today's chains extend them.
    """
    checks = Checks()
    state = site.state_dir
    if not state.exists():
        checks.fail("state directory", f"{state} does not exist: an onboarded site's state holds its privacy "
                                       "ledger and egress log from the first day; a missing state is lost or "
                                       "deleted, never \"nothing spent\". New site: `flame site init-state`; a "
                                       "site that trained: restore the state from backup and tell the DPO")

    egress: EgressLog | None = None
    try:
        egress = EgressLog.open(state, site.site_id, readonly=True)
        checks.ok("egress log", f"{egress.path}: {len(egress)} entries, hash chain intact, head agrees")
        for note in egress.notices:
            checks.warn("egress log", note)
    except EgressLogError as exc:
        checks.fail("egress log", f"{exc}. The egress log cannot be trusted: the other checks of sent messages "
                                  "were not run")

    ledger: Ledger | None = None
    try:
        ledger = Ledger.open(state, site.site_id, readonly=True, recompute=recompute)
        checks.ok("privacy ledger", f"{ledger.path}: {len(ledger)} entries, hash chain intact, head agrees, "
                                    f"epsilon_after recomputed with Opacus ({recompute} entries)")
        for note in ledger.notices:
            checks.warn("privacy ledger", note)
    except LedgerError as exc:
        checks.fail("privacy ledger", str(exc))

    ctx, source, site_fp = check_he_parameters(site, params_context, checks)

    entries = list(egress.entries) if egress is not None else []
    by_kind = {k: 0 for k in KINDS}
    bytes_by_kind = {k: 0 for k in KINDS}
    for e in entries:
        by_kind[e.kind] += 1
        bytes_by_kind[e.kind] += e.byte_count

    if egress is not None:
        check_payloads(egress, entries, ctx, site_fp, checks)
        if ledger is not None:
            check_ledger_agreement([e for e in entries if e.kind in ("update", "metrics")], ledger, checks)
        else:
            checks.fail("ledger agreement", "not checked: the privacy ledger did not verify")

    epsilon_spent, epsilon_cap, policy_line, policy_sha = None, None, None, None
    current: PolicyStamp | None = None
    try:
        policy, policy_sha = load_policy_with_sha(site.privacy_policy)
        current = PolicyStamp.of(policy, policy_sha)
        policy_line = policy.describe()
        epsilon_cap = policy.epsilon_cap
        if ledger is not None:
            epsilon_spent = ledger.epsilon(policy.delta, policy.accountant) if len(ledger) else 0.0
            if epsilon_spent <= epsilon_cap:
                checks.ok("budget", f"epsilon {epsilon_spent:.3f} of the approved cap {epsilon_cap:.2f} "
                                    f"(delta={policy.delta:g}, {policy.accountant.upper()})")
            else:
                checks.fail("budget", f"epsilon {epsilon_spent:.3f} exceeds the approved cap {epsilon_cap:.2f} "
                                      f"(delta={policy.delta:g}, {policy.accountant.upper()})")
        if policy.site_id != site.site_id:
            checks.fail("budget", f"{site.privacy_policy} is the policy of {policy.site_id!r}, not {site.site_id!r}")
    except PolicyError as exc:
        policy_line = f"not readable: {exc}"
        checks.warn("budget", f"cannot compare the spend with a cap: {exc}")

    history = policy_history(ledger.entries) if ledger is not None else []
    if ledger is not None:
        check_policy_history(ledger, history, current, checks)

    ledger_head = ChainHead(count=len(ledger), hash=ledger.head_hash) if ledger is not None else None
    egress_head = ChainHead(count=len(egress), hash=egress.head_hash) if egress is not None else None
    anchor_line = None
    if anchor is not None:
        anchor_line = f"{anchor.site_id}, certified {anchor.taken_at}"
        check_continuity(site.site_id, anchor, ledger, egress, checks)

    if egress is not None:
        check_app_approval(site, entries, checks)
    apps = app_hash_uses(entries)
    if apps:
        listed = "; ".join(f"{a.app_hash} ({a.messages} message(s), seq {a.first_seq}-{a.last_seq}"
                           f"{', = installed code' if a.installed else ''})" for a in apps)
        checks.ok("code identity", f"{len(apps)} distinct app hash(es): {listed}. Compare with the approved release")

    return AuditReport(site_id=site.site_id, state_dir=str(state),
                       generated_at=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                       checks=checks.items, messages_by_kind=by_kind, bytes_by_kind=bytes_by_kind,
                       egress_head=egress_head, ledger_head=ledger_head, params_source=source, he_fingerprint=site_fp,
                       epsilon_spent=epsilon_spent, epsilon_cap=epsilon_cap, policy=policy_line, app_hashes=apps,
                       policy_sha256=policy_sha, policy_history=history, anchor=anchor_line)


def anchor_of(report: AuditReport) -> AuditAnchor:
    """The anchor a passed audit certifies: its two chain heads (``flame audit --save-anchor``)."""
    if not report.ok or report.ledger_head is None or report.egress_head is None:
        raise AnchorError("the audit did not pass: its chain heads are not certified; no anchor written")
    return AuditAnchor(site_id=report.site_id, taken_at=report.generated_at, ledger_head=report.ledger_head,
                       egress_head=report.egress_head, policy_sha256=report.policy_sha256)
