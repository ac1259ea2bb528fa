"""The site's egress log: an append-only, hash-chained record of every message that leaves the site.

Each message a site sends the server (an encrypted model update, encrypted
metric sums, or a plaintext "declined" or "finished" status) is logged *before* it is sent
(docs/design.md 2, "egress log: append"), so the site's data-protection officer (DPO)
can see, and re-check byte for byte, everything that left (docs/dpo-guide.md).

Files in the site's ``state_dir``
    ``egress_log.jsonl``       one JSON object per line, one line per message;
    ``egress_log.head.json``   ``{count, last_hash}``: catches entries cut off the end;
    ``egress_log.lock``        advisory lock serialising appends of one site;
    ``outbox/<seq:06d>-<kind>.bin``  the exact payload bytes that left (mode 0600).

The chain, the head and the crash rules are those of the privacy ledger
(``privacy/ledger.py``), implemented once in :mod:`flame_private.records.hashchain`: each
entry carries ``prev_hash`` (64 zeros for the first) and ``hash``, the sha256
of its canonical JSON without ``hash``; a line must be byte for byte that
canonical form.

Crash order (nothing is ever sent that is not on disk first)
    1. the payload is written to ``outbox/.<name>.tmp``, fsynced, renamed to its
       final name, and the directory fsynced;
    2. the log line is appended and fsynced;
    3. the head is replaced (temporary file, fsync, rename, fsync directory);
    4. ``append`` returns: only now may the message be sent.

On open:

* a final line without its newline that is not a valid next entry is an append
  that never completed, so nothing was sent under it: it is moved to
  ``egress_log.torn-<time>.txt`` and a warning logged;
* a complete, valid final line without its newline is kept (its newline added);
* one complete entry more than the head counts: the crash fell between the line
  and the head; the entry is kept (the message may or may not have left: the log
  over-reports, never under-reports) and the head advanced;
* fewer entries than the head counts, more than one extra, or another hash at the
  head's count: truncation, rollback or tampering: ``EgressLogError`` naming the
  file and line; a person must act.

A payload file without a log line (step 1 done, step 2 not) was never sent; the
next append of that sequence number replaces it, and the audit lists it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, model_validator

from flame_private.config import StrictModel, Task
from flame_private.errors import ExitCode, FlameError
from flame_private.privacy.ledger import LedgerEntry
from flame_private.records.code_identity import app_identity
from flame_private.records.durable import fsync_dir, utc_now, write_all
from flame_private.records.hashchain import HashChainLog
from flame_private.secure.public.envelope import CiphertextEnvelope, parse_envelope
from flame_private.secure.public.errors import CiphertextRejected

log = logging.getLogger(__name__)

LOG_NAME = "egress_log.jsonl"
HEAD_NAME = "egress_log.head.json"
LOCK_NAME = "egress_log.lock"
OUTBOX_NAME = "outbox"
PAYLOAD_MODE = 0o600

EgressKind = Literal["update", "metrics", "declined", "finished"]
KINDS: tuple[str, ...] = ("update", "metrics", "declined", "finished")
STATUS_KINDS: dict[str, str] = {"declined": "declined", "finished": "ok"}
"""Kinds whose payload is the plaintext status ``{"site_id", "status"}`` alone, with the status each says:
"declined" for a refused step, "ok" for the last step of a run (the final model received and exported)."""
Transport = Literal["simulation", "in-process", "supernode", "supernode-tls"]
TRANSPORTS: tuple[str, ...] = ("simulation", "in-process", "supernode", "supernode-tls")
"""How a message travelled to the server: ``simulation`` (Flower's simulation engine, one machine, no network),
``in-process`` (the in-process grid of tests and attack simulations, no network), ``supernode`` (the site's
Flower SuperNode, over the network; its TLS setting is not visible to the app), ``supernode-tls`` (the same,
with the node configuration declaring TLS, as ``deploy/`` does)."""

MAX_REASON_CHARS = 4000
"""Longest decline reason an entry holds."""

_HEX64 = r"^[0-9a-f]{64}$"
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"


class EgressLogError(FlameError):
    """The egress log cannot be trusted (broken chain, truncation, tampering) or cannot be written."""

    exit_code = ExitCode.CHECK_FAILED


class DPRecord(StrictModel):
    """The DP-SGD settings of the training that produced an update (the ledger entry's accountant inputs)."""

    noise_multiplier: Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
    sample_rate: Annotated[float, Field(gt=0.0, le=1.0)]
    steps: Annotated[int, Field(ge=1)]
    max_grad_norm: Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
    delta: Annotated[float, Field(gt=0.0, lt=1.0)]

    @classmethod
    def from_ledger(cls, entry: LedgerEntry) -> DPRecord:
        return cls(noise_multiplier=entry.noise_multiplier, sample_rate=entry.sample_rate, steps=entry.steps,
                   max_grad_norm=entry.max_grad_norm, delta=entry.delta)


class EgressEntry(StrictModel):
    """One line of the egress log: one message that left the site."""

    seq: Annotated[int, Field(ge=1)]
    time: Annotated[str, Field(pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")]
    """UTC, when the entry was written (just before the message was sent)."""
    site_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]
    run_id: Annotated[str, Field(pattern=_NAME)]
    round: Annotated[int, Field(ge=0)]
    task: Task
    kind: EgressKind
    byte_count: Annotated[int, Field(ge=0)]
    """Length of the payload (``outbox/<seq>-<kind>.bin``)."""
    payload_sha256: Annotated[str, Field(pattern=_HEX64)]
    envelope: dict[str, Any] | None
    """The CiphertextEnvelope header sent with an update or metrics payload; None for the statuses ("declined",
    "finished")."""
    he_fingerprint: Annotated[str, Field(pattern=_HEX64)] | None
    dp: DPRecord | None
    """DP-SGD settings of the training behind an update; None for metrics and declined."""
    epsilon_after: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] | None
    """The site's total epsilon after this release, as recorded in the privacy ledger."""
    ledger_seq: Annotated[int, Field(ge=1)] | None
    """The privacy-ledger entry that covers this release (updates only)."""
    app_hash: Annotated[str, Field(min_length=1, max_length=200)]
    """Identity of the code that produced the message: Flower's FAB hash, or ``app_identity()``."""
    reason: Annotated[str, Field(min_length=1, max_length=MAX_REASON_CHARS)] | None = None
    """Why the site declined ("declined" only).  Kept here, never sent: the status that leaves says only
    "declined" (entries written before this field existed carry the reason in their payload)."""
    transport: Transport | None = None
    """How the message travelled to the server (see ``TRANSPORTS``); None in entries written before it was
    recorded."""
    patients: Annotated[int, Field(ge=0)] | None = None
    """The patients of the site's split behind the release: training patients for an update (the count the
    ciphertext carries), validation patients for metrics; None for the statuses and in entries written before it
    was recorded."""
    fab_sha256: Annotated[str, Field(pattern=_HEX64)] | None = None
    """The sha256 of the app bundle (FAB) the site's launcher verified against its approved list and ran
    (``app_launcher``); None where the site runs without app pinning, and in entries written before."""
    prev_hash: Annotated[str, Field(pattern=_HEX64)]
    hash: Annotated[str, Field(pattern=_HEX64)]

    @model_validator(mode="after")
    def _envelope_by_kind(self) -> EgressEntry:
        status = self.kind in STATUS_KINDS
        if status and (self.envelope is not None or self.he_fingerprint is not None):
            raise ValueError(f"a {self.kind} status carries no ciphertext envelope or HE fingerprint")
        if not status and (self.envelope is None or self.he_fingerprint is None):
            raise ValueError(f"a {self.kind} message must carry its ciphertext envelope and HE fingerprint")
        if self.kind != "declined" and self.reason is not None:
            raise ValueError(f"a {self.kind} message carries no decline reason")
        if status and self.patients is not None:
            raise ValueError(f"a {self.kind} status releases nothing computed from patients")
        return self

    @property
    def payload_name(self) -> str:
        return outbox_name(self.seq, self.kind)


def outbox_name(seq: int, kind: str) -> str:
    """File name of a message's payload in ``<state_dir>/outbox/``."""
    return f"{seq:06d}-{kind}.bin"


# --------------------------------------------------------------------------- code identity (app pinning)


PINNED_FAB_ENV = "FLAME_PINNED_FAB_SHA256"
"""Set by the site's app launcher, in the ClientApp's own process, to the sha256 of the FAB it verified."""


def pinned_fab_sha256() -> str | None:
    """The approved FAB this process runs (set by ``app_launcher`` before Flower loads it), else None."""
    value = os.environ.get(PINNED_FAB_ENV)
    if value is None:
        return None
    if not re.fullmatch(_HEX64, value):
        raise EgressLogError(f"{PINNED_FAB_ENV}={value!r} is not a sha256: refusing to record or send anything")
    return value


# --------------------------------------------------------------------------- the log


class EgressLog(HashChainLog[EgressEntry]):
    """A site's verified egress log.  Get one with :meth:`EgressLog.open`."""

    entry_model = EgressEntry
    error = EgressLogError
    stem = "egress_log"
    logger = log
    noun = "egress log"
    short = "log"
    holder = "the log"
    entry_noun = "an egress entry"
    released = "sent"
    kept = "kept"
    lag_note = "the entry is kept: it may have been sent"
    """The log over-reports, never under-reports: a lagging head's entry may or may not have left."""

    def __init__(self, state_dir: Path, site_id: str, *, readonly: bool) -> None:
        super().__init__(state_dir, site_id, readonly=readonly)
        self.outbox = state_dir / OUTBOX_NAME

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, state_dir: Path | str, site_id: str, *, readonly: bool = False) -> EgressLog:
        """Open and verify the egress log of ``site_id`` in ``state_dir``; raise EgressLogError on any break.

        Every line's hash, canonical form, seq, prev_hash and site are checked and
        the head is reconciled.  ``readonly`` changes nothing on disk (what the
        audit uses): a torn final line or a lagging head is reported in
        ``notices`` instead of repaired, and appending is refused.  A missing state
        directory, log or head is refused in both modes (onboarding creates them:
        :meth:`initialise`).
        """
        egress = cls(Path(state_dir), site_id, readonly=readonly)
        egress._require_state()
        with egress._locked():
            egress._load()
        return egress

    # ------------------------------------------------------------------ writing

    def _write_payload(self, name: str, payload: bytes) -> None:
        """Write the payload under its final name, durably, replacing a file an interrupted append left."""
        self._ensure_dir(self.outbox)
        final = self.outbox / name
        tmp = self.outbox / f".{name}.tmp"
        if final.exists():
            log.warning("%s: replacing a payload an interrupted append left (never logged, never sent)", final)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PAYLOAD_MODE)
        try:
            os.fchmod(fd, PAYLOAD_MODE)
            write_all(fd, payload)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
        fsync_dir(self.outbox)

    def append(self, *, run_id: str, round: int, task: str, kind: EgressKind, payload: bytes,
               envelope: CiphertextEnvelope | dict | str | bytes | None = None,
               ledger_entry: LedgerEntry | None = None, dp: DPRecord | dict | None = None,
               epsilon_after: float | None = None, ledger_seq: int | None = None,
               app_hash: str | None = None, reason: str | None = None, transport: Transport | None = None,
               patients: int | None = None, fab_sha256: str | None = None) -> EgressEntry:
        """Record a message about to leave the site; only after this returns may it be sent.

        ``payload`` is the exact byte string that will be sent; ``envelope`` its
        ciphertext header (required for "update" and "metrics", refused for
        the statuses "declined", whose ``reason`` is recorded here and not sent, and "finished").  For an update,
        pass the privacy-ledger entry that covers it
        as ``ledger_entry`` (its seq, DP settings and epsilon_after are copied), or
        ``dp``, ``epsilon_after`` and ``ledger_seq`` explicitly.  ``app_hash``
        defaults to :func:`app_identity`; pass Flower's FAB hash when there is one.
        ``transport`` (how the message will travel) and ``patients`` (how many patients the release is
        computed from) are recorded for the site's reports when given.  ``fab_sha256`` defaults to
        :func:`pinned_fab_sha256`: the app bundle the site's launcher approved, when this process runs one.

        Refuses (EgressLogError, nothing written) a header that does not describe
        this payload, run, task and round: such a message must not be sent.
        Ciphertext validity is not checked here (the log records what leaves);
        ``flame audit`` checks it.
        """
        if self.readonly:
            raise EgressLogError(f"{self.path}: opened read-only; cannot record a message")
        if not isinstance(payload, (bytes, bytearray, memoryview)):
            raise EgressLogError(f"refusing to log a {type(payload).__name__} payload: bytes expected")
        payload = bytes(payload)
        sha = hashlib.sha256(payload).hexdigest()
        env_dict, fingerprint = self._check_envelope(kind, envelope, payload, sha, run_id, task, round)
        if ledger_entry is not None:
            if (ledger_entry.run_id, ledger_entry.round, ledger_entry.task) != (run_id, round, task):
                raise EgressLogError(f"ledger entry {ledger_entry.seq} covers {ledger_entry.run_id!r} round "
                                     f"{ledger_entry.round} ({ledger_entry.task}), not {run_id!r} round {round} "
                                     f"({task}): refusing to log; the message must not be sent")
            if dp is not None or epsilon_after is not None or ledger_seq is not None:
                raise EgressLogError("give either ledger_entry or dp/epsilon_after/ledger_seq, not both")
            dp = DPRecord.from_ledger(ledger_entry)
            epsilon_after, ledger_seq = ledger_entry.epsilon_after, ledger_entry.seq

        def make_fields() -> dict[str, Any]:
            fields: dict[str, Any] = {
                "seq": len(self._entries) + 1,
                "time": utc_now(),
                "site_id": self.site_id,
                "run_id": run_id,
                "round": round,
                "task": task,
                "kind": kind,
                "byte_count": len(payload),
                "payload_sha256": sha,
                "envelope": env_dict,
                "he_fingerprint": fingerprint,
                "dp": (dp.model_dump() if isinstance(dp, DPRecord) else dp),
                "epsilon_after": None if epsilon_after is None else float(epsilon_after),
                "ledger_seq": ledger_seq,
                "app_hash": app_hash if app_hash is not None else app_identity(),
                "prev_hash": self.head_hash,
            }
            # Optional keys are absent, not null, when not given: older entries hash without them.
            pinned = fab_sha256 if fab_sha256 is not None else pinned_fab_sha256()
            for key, value in (("reason", reason), ("transport", transport), ("patients", patients),
                               ("fab_sha256", pinned)):
                if value is not None:
                    fields[key] = value
            if isinstance(fields["dp"], dict):  # normalise floats so the written JSON is what validates strictly
                try:
                    fields["dp"] = DPRecord.model_validate(fields["dp"]).model_dump()
                except ValidationError as exc:
                    raise EgressLogError(f"refusing to log: invalid dp ({exc.errors()[0]['msg']})") from None
            return fields

        def invalid(exc: ValidationError) -> str:
            return (f"{self.path}: refusing to write an invalid entry "
                    f"({'; '.join(_loc(e) + ': ' + e['msg'] for e in exc.errors())}); the message must not be sent")

        # The payload is on disk before its line: nothing is ever sent that is not on disk first.
        return self._append_entry(make_fields, invalid=invalid, cannot_record="message",
                                  before_line=lambda entry: self._write_payload(entry.payload_name, payload))

    @staticmethod
    def _check_envelope(kind: str, envelope: object, payload: bytes, sha: str, run_id: str, task: str,
                        round: int) -> tuple[dict[str, Any] | None, str | None]:
        if kind in STATUS_KINDS:
            if envelope is not None:
                raise EgressLogError(f"a {kind} status carries no ciphertext envelope")
            return None, None
        if kind not in KINDS:
            raise EgressLogError(f"unknown message kind {kind!r} (one of {', '.join(KINDS)})")
        if envelope is None:
            raise EgressLogError(f"a {kind} message needs its ciphertext envelope; refusing to log it")
        try:
            env = parse_envelope(envelope)
        except CiphertextRejected as exc:
            raise EgressLogError(f"refusing to log a {kind} message: {exc}; it must not be sent") from None
        problems = []
        if env.payload_sha256 != sha or env.n_bytes != len(payload):
            problems.append("the envelope's byte count / sha256 do not describe this payload")
        if (env.run_id, env.task, env.round) != (run_id, task, round):
            problems.append(f"the envelope is for {env.run_id!r} round {env.round} ({env.task}), "
                            f"not {run_id!r} round {round} ({task})")
        want = "metrics" if kind == "metrics" else "model"
        if env.content != want:
            problems.append(f"the envelope holds {env.content!r} content, not what kind {kind!r} carries ({want!r})")
        if env.kind != "update":
            problems.append(f"a site sends envelopes of kind 'update', not {env.kind!r}")
        if problems:
            raise EgressLogError(f"refusing to log a {kind} message: {'; '.join(problems)}; it must not be sent")
        return env.model_dump(mode="json"), env.he_fingerprint

    # ------------------------------------------------------------------ reading

    def payload_path(self, entry: EgressEntry) -> Path:
        """Where the exact bytes of ``entry``'s message are kept."""
        return self.outbox / entry.payload_name


def _loc(error: Any) -> str:
    return ".".join(str(p) for p in error["loc"]) or "<entry>"
