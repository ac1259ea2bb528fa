"""The audit's checks of what left: each kept payload is what was logged, and says no more than it may.

``outbox``           every entry's payload file exists with the logged byte count and sha256;
``ciphertext only``  every "update" and "metrics" payload is its envelope's CKKS ciphertexts under
                     the agreed parameters, none transparent;
``declined``         every "declined" payload is the generic status ``{"site_id", "status": "declined"}``,
                     every "finished" payload ``{"site_id", "status": "ok"}``: statuses say nothing more.
"""

from __future__ import annotations

import hashlib
import json
import stat

from flame_private.records.audit_report import Checks, Severity
from flame_private.records.egress import OUTBOX_NAME, STATUS_KINDS, EgressEntry, EgressLog
from flame_private.secure.public.envelope import parse_envelope, validate_envelope
from flame_private.secure.public.errors import CiphertextRejected
from flame_private.secure.public.params import ParamsContext

MAX_DECLINED_BYTES = 4096
"""A status is a short JSON ``{"site_id": ..., "status": "declined" | "ok"}``; anything larger is not one."""

UNCHECKED = "not checked: the kept payload is missing or differs from what was logged (see outbox)"


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
    want = "metrics" if entry.kind == "metrics" else "model"
    if env.content != want:
        return f"{entry.kind} envelope holds {env.content!r} content, expected {want!r}"
    try:
        cts = validate_envelope(env, payload, ctx, run_id=entry.run_id, task=entry.task, round=entry.round,
                                kind="update", source=f"egress seq {entry.seq}")
    except CiphertextRejected as exc:
        return f"not a ciphertext of the agreed parameters ({exc.reason}: {exc.detail})"
    transparent = [i for i, ct in enumerate(cts) if ct.is_transparent()]
    if transparent:
        return f"chunk(s) {transparent[:5]} are transparent ciphertexts: their plaintext is readable by anyone"
    return None


def _check_status(payload: bytes, site_id: str, kind: str) -> tuple[Severity, str] | None:
    """None for the generic status of ``kind``; for "declined", a warning for the pre-0.2 ``{"reason": ...}``;
    a failure for anything else."""
    status = STATUS_KINDS[kind]
    if len(payload) > MAX_DECLINED_BYTES:
        return "fail", f"{len(payload)} bytes, more than a status ({MAX_DECLINED_BYTES} bytes at most)"
    try:
        obj = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return "fail", "not JSON"
    if obj == {"site_id": site_id, "status": status}:
        return None
    if kind == "declined" and isinstance(obj, dict) and set(obj) == {"reason"} and isinstance(obj["reason"], str):
        return "warning", f"the status sent its reason in clear (flame-private < 0.2): {obj['reason'][:120]!r}"
    return "fail", (f"must be the JSON status {{'site_id': {site_id!r}, 'status': {status!r}}}; holds "
                    f"{json.dumps(obj)[:200]}")


def check_payloads(egress: EgressLog, entries: list[EgressEntry], ctx: ParamsContext | None, site_fp: str | None,
                   checks: Checks) -> None:
    """The outbox, ciphertext-only and declined checks of every entry's kept payload."""
    missing = cipher_bad = declined_bad = 0
    open_files: list[int] = []
    n_cipher = n_declined = n_finished = 0
    for e in entries:
        payload, problem, too_open = _read_payload(egress, e)
        if problem is not None:
            checks.fail("outbox", problem)
            missing += 1
        if too_open:
            open_files.append(e.seq)
        if e.kind in STATUS_KINDS:
            n_declined += e.kind == "declined"
            n_finished += e.kind == "finished"
            verdict = _check_status(payload, e.site_id, e.kind) if payload is not None else ("fail", UNCHECKED)
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
            problem = UNCHECKED
        elif ctx is None or site_fp is None:
            problem = "not checked: no HE parameters (see HE parameters)"
        else:
            problem = _check_ciphertext(e, payload, ctx, site_fp)
        if problem is not None:
            checks.fail("ciphertext only",
                        f"{e.kind} seq {e.seq} ({e.run_id} round {e.round}, {e.task}): {problem}")
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
    if (n_declined or n_finished) and not declined_bad:
        finished = f" and {n_finished} finished status(es) saying only \"ok\"" if n_finished else ""
        checks.ok("declined", f"{n_declined} declined status(es), each saying only \"declined\"{finished} (the "
                              "reasons stay in the log, at the site)")
