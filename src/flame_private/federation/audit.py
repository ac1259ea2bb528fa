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
                      chain heads the DPO certified last time (``federation/anchor.py``);
``app approval``      every message that names the app bundle (FAB) it came from (app pinning) names
                      one the site's approved-apps log approved before it was sent;
``code identity``     the app hashes that produced the messages (one per distinct value).

HE parameters: the agreed parameters are an input, never taken from what the
site holds (its own files cannot vouch for themselves): the key ceremony's
params-only context, given as ``params_context`` (``flame audit --params``) or
named by the site config's ``he_params``.  Without either the check fails.  The
*header* of the site's secret context is compared with them (its body, the key,
is never read), and every envelope must carry their fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import math
import stat
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, computed_field

from flame_private.config import SiteConfig
from flame_private.federation.anchor import AnchorError, AuditAnchor, ChainHead, extends
from flame_private.federation.egress import (
    KINDS,
    METRICS_MODEL_PREFIX,
    OUTBOX_NAME,
    EgressEntry,
    EgressLog,
    EgressLogError,
    app_identity,
)
from flame_private.privacy.ledger import EPSILON_RTOL, Ledger, LedgerEntry, LedgerError
from flame_private.privacy.policy import PolicyError, PolicyStamp, load_policy_with_sha
from flame_private.privacy.policy_history import PolicyUse, policy_findings, policy_history
from flame_private.secure.public.context_file import load_params_context, read_context_header
from flame_private.secure.public.envelope import parse_envelope, validate_envelope
from flame_private.secure.public.errors import CiphertextRejected, HEError
from flame_private.secure.public.params import ParamsContext

SERVER_PARAMS_NAME = "server-params.ctx"
"""The params-only context the key ceremony writes (secure.keys.PARAMS_NAME): the agreed parameters."""
NO_AGREED_PARAMS = ("no agreed HE parameters to check against: pass --params with the key ceremony's params-only "
                    f"context ({SERVER_PARAMS_NAME}, from the key custodian), or name it as he_params in the site "
                    "YAML. The site's own secret context cannot vouch for itself")
MAX_DECLINED_BYTES = 4096
"""A declined status is a short JSON ``{"site_id": ..., "status": "declined"}``; anything larger is not one."""

UNCHECKED = "not checked: the kept payload is missing or differs from what was logged (see outbox)"

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


class _Checks:
    def __init__(self) -> None:
        self.items: list[AuditCheck] = []

    def ok(self, name: str, detail: str) -> None:
        self.items.append(AuditCheck(name=name, ok=True, detail=detail))

    def warn(self, name: str, detail: str) -> None:
        self.items.append(AuditCheck(name=name, ok=True, detail=detail, warning=True))

    def fail(self, name: str, detail: str) -> None:
        self.items.append(AuditCheck(name=name, ok=False, detail=detail))


# --------------------------------------------------------------------------- HE parameters


def _he_parameters(site: SiteConfig, params_context: Path | None, checks: _Checks
                   ) -> tuple[ParamsContext | None, str | None, str | None]:
    """(agreed context to parse with, where it came from, its fingerprint); failures are recorded as checks.

    The agreed parameters come from ``params_context`` or ``site.he_params``, the
    key ceremony's params-only context; the site's secret context is checked
    against them, never used as its own reference.
    """
    name = "HE parameters"
    if params_context is not None:
        agreed, given = Path(params_context), "given with --params"
    elif site.he_params is not None:
        agreed, given = Path(site.he_params), "he_params of the site config"
    else:
        checks.fail(name, NO_AGREED_PARAMS)
        return None, None, None
    try:
        ctx = load_params_context(agreed)
    except HEError as exc:
        checks.fail(name, f"cannot load the agreed parameters ({given}): {exc}")
        return None, None, None
    source = f"key ceremony's params-only context {agreed} ({given})"
    fp = ctx.fingerprint
    secret = site.secret_context
    if secret is None:
        checks.ok(name, f"fingerprint {fp} from {source}; the site config names no secret_context to compare")
        return ctx, source, fp
    if not secret.exists():
        checks.warn(name, f"the site's secret context {secret} was not found: its parameters were not compared "
                          f"with the agreed ones (fingerprint {fp}, from {source})")
        return ctx, source, fp
    try:
        header = read_context_header(secret)  # the header only: the key is never read
    except HEError as exc:
        checks.fail(name, f"cannot read the header of the site's secret context: {exc}")
        return ctx, source, fp
    if header.kind != "secret":
        checks.fail(name, f"{secret}: the site's secret_context is a {header.kind} context, not the secret one")
    elif header.fingerprint != fp:
        checks.fail(name, f"the site's secret context {secret} has fingerprint {header.fingerprint[:16]}..., the "
                          f"agreed parameters {fp[:16]}... ({agreed}): they are not from the same key ceremony's "
                          "parameters")
    else:
        checks.ok(name, f"fingerprint {fp} from {source}; the site's secret context has the same parameters "
                        "(its key is not read)")
    return ctx, source, fp


# --------------------------------------------------------------------------- per-entry checks


def _read_payload(egress: EgressLog, entry: EgressEntry) -> tuple[bytes | None, str | None, bool]:
    """(payload, problem, too open): the bytes if they match the entry, else the reason."""
    path = egress.payload_path(entry)
    try:
        st = path.stat()
        data = path.read_bytes()
    except FileNotFoundError:
        return None, f"seq {entry.seq}: {path} is missing", False
    except OSError as exc:
        return None, f"seq {entry.seq}: cannot read {path} ({exc})", False
    if len(data) != entry.byte_count:
        return None, f"seq {entry.seq}: {path.name} has {len(data)} bytes, the log says {entry.byte_count}", False
    if hashlib.sha256(data).hexdigest() != entry.payload_sha256:
        return None, f"seq {entry.seq}: {path.name} does not match the logged sha256: changed after it was sent", \
            False
    return data, None, bool(stat.S_IMODE(st.st_mode) & 0o077)


def _check_ciphertext(entry: EgressEntry, payload: bytes, ctx: ParamsContext, site_fp: str) -> str | None:
    """None if ``payload`` is the ciphertext its envelope describes under ``ctx``; else why not."""
    try:
        env = parse_envelope(entry.envelope or {})
    except CiphertextRejected as exc:
        return f"envelope does not validate ({exc.detail})"
    if env.he_fingerprint != site_fp or entry.he_fingerprint != site_fp:
        return (f"encrypted under other parameters: fingerprint {env.he_fingerprint[:16]}..., the agreed one is "
                f"{site_fp[:16]}...")
    want_model = METRICS_MODEL_PREFIX + entry.task if entry.kind == "metrics" else None
    if want_model is not None and env.model != want_model:
        return f"metrics envelope names model {env.model!r}, expected {want_model!r}"
    if entry.kind == "update" and env.model.startswith(METRICS_MODEL_PREFIX):
        return f"update envelope names the metrics model {env.model!r}"
    try:
        cts = validate_envelope(env, payload, ctx, run_id=entry.run_id, task=entry.task, round=entry.round,
                                kind="update", source=f"egress seq {entry.seq}")
    except CiphertextRejected as exc:
        return f"not a ciphertext of the agreed parameters ({exc.reason}: {exc.detail})"
    transparent = [i for i, ct in enumerate(cts) if ct.is_transparent()]
    if transparent:
        return f"chunk(s) {transparent[:5]} are transparent ciphertexts: their plaintext is readable by anyone"
    return None


def _check_declined(payload: bytes, site_id: str) -> tuple[Severity, str] | None:
    """None for the generic status; a warning for the pre-0.2 ``{"reason": ...}``; a failure for anything else."""
    if len(payload) > MAX_DECLINED_BYTES:
        return "fail", f"{len(payload)} bytes, more than a declined status ({MAX_DECLINED_BYTES} bytes at most)"
    try:
        obj = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return "fail", "not JSON"
    if obj == {"site_id": site_id, "status": "declined"}:
        return None
    if isinstance(obj, dict) and set(obj) == {"reason"} and isinstance(obj["reason"], str):
        return "warning", f"the status sent its reason in clear (flame-private < 0.2): {obj['reason'][:120]!r}"
    keys = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
    return "fail", f"must be the JSON status {{'site_id': {site_id!r}, 'status': 'declined'}}; holds {keys}"


def _agreement(messages: list[EgressEntry], ledger: Ledger, checks: _Checks) -> None:
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
    checks = _Checks()
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

    ctx, source, site_fp = _he_parameters(site, params_context, checks)

    entries = list(egress.entries) if egress is not None else []
    by_kind = {k: 0 for k in KINDS}
    bytes_by_kind = {k: 0 for k in KINDS}
    for e in entries:
        by_kind[e.kind] += 1
        bytes_by_kind[e.kind] += e.byte_count

    if egress is not None:
        _check_payloads(egress, entries, ctx, site_fp, checks)
        if ledger is not None:
            _agreement([e for e in entries if e.kind in ("update", "metrics")], ledger, checks)
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
        _policy_history(ledger, history, current, checks)

    ledger_head = ChainHead(count=len(ledger), hash=ledger.head_hash) if ledger is not None else None
    egress_head = ChainHead(count=len(egress), hash=egress.head_hash) if egress is not None else None
    anchor_line = None
    if anchor is not None:
        anchor_line = f"{anchor.site_id}, certified {anchor.taken_at}"
        _continuity(site.site_id, anchor, ledger, egress, checks)

    if egress is not None:
        _app_approval(site, entries, checks)
    apps = _app_hashes(entries)
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


def _policy_history(ledger: Ledger, history: list[PolicyUse], current: PolicyStamp | None, checks: _Checks) -> None:
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


def _continuity(site_id: str, anchor: AuditAnchor, ledger: Ledger | None, egress: EgressLog | None,
                checks: _Checks) -> None:
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


def anchor_of(report: AuditReport) -> AuditAnchor:
    """The anchor a passed audit certifies: its two chain heads (``flame audit --save-anchor``)."""
    if not report.ok or report.ledger_head is None or report.egress_head is None:
        raise AnchorError("the audit did not pass: its chain heads are not certified; no anchor written")
    return AuditAnchor(site_id=report.site_id, taken_at=report.generated_at, ledger_head=report.ledger_head,
                       egress_head=report.egress_head, policy_sha256=report.policy_sha256)


def _check_payloads(egress: EgressLog, entries: list[EgressEntry], ctx: ParamsContext | None, site_fp: str | None,
                    checks: _Checks) -> None:
    missing = cipher_bad = declined_bad = 0
    open_files: list[int] = []
    n_cipher = n_declined = 0
    for e in entries:
        payload, problem, too_open = _read_payload(egress, e)
        if problem is not None:
            checks.fail("outbox", problem)
            missing += 1
        if too_open:
            open_files.append(e.seq)
        if e.kind == "declined":
            n_declined += 1
            verdict = _check_declined(payload, e.site_id) if payload is not None else ("fail", UNCHECKED)
            if verdict is not None:
                severity, why = verdict
                where = f"seq {e.seq} ({e.run_id} round {e.round}, {e.task}): {why}"
                if severity == "fail":
                    checks.fail("declined", where)
                    declined_bad += 1
                else:
                    checks.warn("declined", where)
            continue
        n_cipher += 1
        if payload is None:
            why: str | None = UNCHECKED
        elif ctx is None or site_fp is None:
            why = "not checked: no HE parameters (see HE parameters)"
        else:
            why = _check_ciphertext(e, payload, ctx, site_fp)
        if why is not None:
            checks.fail("ciphertext only", f"{e.kind} seq {e.seq} ({e.run_id} round {e.round}, {e.task}): {why}")
            cipher_bad += 1

    if not missing:
        checks.ok("outbox", f"{len(entries)} payload(s) in {egress.outbox}, each matching its logged byte count "
                            "and sha256")
    if open_files:
        checks.warn("outbox", f"payload(s) of seq {open_files[:10]} are readable by group or others: "
                              f"run `chmod 600` on them")
    logged = {e.payload_name for e in entries}
    try:
        on_disk = sorted(p.name for p in egress.outbox.iterdir() if p.is_file())
    except FileNotFoundError:
        on_disk = []
    orphans = [n for n in on_disk if n not in logged]
    if orphans:
        interrupted = f"{len(entries) + 1:06d}-"
        why = ("prepared by an append interrupted before its log line: never sent"
               if all(n.startswith((interrupted, ".")) for n in orphans) else "named by no entry: investigate")
        checks.warn("outbox", f"{len(orphans)} file(s) in {OUTBOX_NAME}/ not in the log ({why}): {orphans[:10]}")
    if n_cipher and not cipher_bad:
        checks.ok("ciphertext only", f"{n_cipher} update/metrics payload(s), each a valid CKKS ciphertext of the "
                                     "agreed parameters matching its envelope: no plaintext weights or metrics left")
    if n_declined and not declined_bad:
        checks.ok("declined", f"{n_declined} declined status(es), each saying only \"declined\" (the reasons "
                              "stay in the log, at the site)")


def _app_approval(site: SiteConfig, entries: list[EgressEntry], checks: _Checks) -> None:
    """Every message that names the FAB it came from (app pinning) names one approved before it was sent."""
    from flame_private.federation.site.approved_apps import ApprovedApps, ApprovedAppsError

    name = "app approval"
    pinned = [e for e in entries if e.fab_sha256 is not None]
    try:
        approvals = ApprovedApps.open(site.state_dir, site.site_id, readonly=True)
    except ApprovedAppsError as exc:
        if pinned:
            checks.fail(name, f"{exc}. {len(pinned)} message(s) name the app bundle (FAB) they came from, and "
                              "without a verified approved-apps log none of them can be shown to be approved")
        else:
            checks.warn(name, f"{exc}. No message names an app bundle: app pinning was not in use")
        return
    decisions = approvals.entries
    bad = 0
    for e in pinned:
        history = [d for d in decisions if d.fab_sha256 == e.fab_sha256 and d.time <= e.time]
        if not history or history[-1].action != "approve":
            state = "was revoked before" if history else "was not approved before"
            checks.fail(name, f"{e.kind} seq {e.seq} ({e.run_id} round {e.round}, {e.task}) came from FAB "
                              f"{e.fab_sha256}, which {state} it was sent at {e.time} ({approvals.path})")
            bad += 1
    unpinned = len(entries) - len(pinned)
    if pinned and not bad:
        fabs = sorted({e.fab_sha256 for e in pinned})  # type: ignore[type-var]
        checks.ok(name, f"{len(pinned)} message(s) from {len(fabs)} app bundle(s), each approved in "
                        f"{approvals.path} before it was sent: {', '.join(f[:16] + '...' for f in fabs)}")
    if unpinned and approvals.current():
        checks.warn(name, f"{unpinned} message(s) name no app bundle: they were produced outside the site's "
                          "launcher (no app pinning), while apps are approved here")
    elif not pinned:
        checks.ok(name, "app pinning not in use: no message names an app bundle (the code identity is the "
                        "installed release; docs/deployment.md, 'App pinning')")


def _app_hashes(entries: list[EgressEntry]) -> list[AppHashUse]:
    installed = app_identity()
    out: dict[str, AppHashUse] = {}
    for e in entries:
        seen = out.get(e.app_hash)
        if seen is None:
            out[e.app_hash] = AppHashUse(app_hash=e.app_hash, messages=1, first_seq=e.seq, last_seq=e.seq,
                                         first_time=e.time, last_time=e.time, installed=e.app_hash == installed)
        else:
            out[e.app_hash] = seen.model_copy(update={"messages": seen.messages + 1, "last_seq": e.seq,
                                                      "last_time": e.time})
    return list(out.values())

