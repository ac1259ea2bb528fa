"""The site's egress log: an append-only, hash-chained record of every message that leaves the site.

Each message a site sends the server (an encrypted model update, encrypted
metric sums, or a plaintext "declined" status) is logged *before* it is sent
(DESIGN.md 2, "egress log: append"), so the site's data-protection officer (DPO)
can see, and re-check byte for byte, everything that left (docs/dpo-guide.md).

Files in the site's ``state_dir``
    ``egress_log.jsonl``       one JSON object per line, one line per message;
    ``egress_log.head.json``   ``{count, last_hash}``: catches entries cut off the end;
    ``egress_log.lock``        advisory lock serialising appends of one site;
    ``outbox/<seq:06d>-<kind>.bin``  the exact payload bytes that left (mode 0600).

The chain, the head and the crash rules are those of the privacy ledger
(``privacy/ledger.py``), with the same canonical JSON and hash helpers: each
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

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, model_validator

from flame_private.config import StrictModel, Task
from flame_private.privacy.ledger import (
    GENESIS_HASH,
    LedgerEntry,
    _fsync_dir,
    _utc_now,
    _write_all,
    canonical_json,
    entry_hash,
)
from flame_private.secure.errors import CiphertextRejected
from flame_private.secure.params import CiphertextEnvelope, parse_envelope

try:  # POSIX; elsewhere appends are not serialised between processes
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

LOG_NAME = "egress_log.jsonl"
HEAD_NAME = "egress_log.head.json"
LOCK_NAME = "egress_log.lock"
OUTBOX_NAME = "outbox"
PAYLOAD_MODE = 0o600

EgressKind = Literal["update", "metrics", "declined"]
KINDS: tuple[str, ...] = ("update", "metrics", "declined")
METRICS_MODEL_PREFIX = "metrics:"
"""Envelope model name of encrypted metric sums: ``metrics:<task>``."""

_HEX64 = r"^[0-9a-f]{64}$"
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"


class EgressLogError(Exception):
    """The egress log cannot be trusted (broken chain, truncation, tampering) or cannot be written."""


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
    """The CiphertextEnvelope header sent with an update or metrics payload; None for "declined"."""
    he_fingerprint: Annotated[str, Field(pattern=_HEX64)] | None
    dp: DPRecord | None
    """DP-SGD settings of the training behind an update; None for metrics and declined."""
    epsilon_after: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] | None
    """The site's total epsilon after this release, as recorded in the privacy ledger."""
    ledger_seq: Annotated[int, Field(ge=1)] | None
    """The privacy-ledger entry that covers this release (updates only)."""
    app_hash: Annotated[str, Field(min_length=1, max_length=200)]
    """Identity of the code that produced the message: Flower's FAB hash, or ``app_identity()``."""
    prev_hash: Annotated[str, Field(pattern=_HEX64)]
    hash: Annotated[str, Field(pattern=_HEX64)]

    @model_validator(mode="after")
    def _envelope_by_kind(self) -> EgressEntry:
        if self.kind == "declined" and (self.envelope is not None or self.he_fingerprint is not None):
            raise ValueError("a declined status carries no ciphertext envelope or HE fingerprint")
        if self.kind != "declined" and (self.envelope is None or self.he_fingerprint is None):
            raise ValueError(f"a {self.kind} message must carry its ciphertext envelope and HE fingerprint")
        return self

    @property
    def payload_name(self) -> str:
        return outbox_name(self.seq, self.kind)


def outbox_name(seq: int, kind: str) -> str:
    """File name of a message's payload in ``<state_dir>/outbox/``."""
    return f"{seq:06d}-{kind}.bin"


# --------------------------------------------------------------------------- code identity


def _package_root() -> Path:
    import flame_private

    return Path(flame_private.__file__).resolve().parent


def app_identity(root: Path | str | None = None) -> str:
    """sha256 (hex) identifying the installed ``flame_private`` code; the ``app_hash`` when Flower's FAB hash is absent.

    For every ``.py`` file under the package directory, in order of relative POSIX
    path: the path (UTF-8), a NUL byte, the file size as 8 bytes big-endian, and the
    file's bytes.  Compiled files, data files and ``__pycache__`` are not included.
    Recompute it with ``python -c "from flame_private.federation.egress import
    app_identity; print(app_identity())"`` on the approved installation.
    """
    if root is None:
        return _installed_identity()
    return _identity_of(Path(root))


@lru_cache(maxsize=1)
def _installed_identity() -> str:
    return _identity_of(_package_root())


def _identity_of(root: Path) -> str:
    h = hashlib.sha256()
    files = sorted((p.relative_to(root).as_posix(), p) for p in root.rglob("*.py")
                   if p.is_file() and "__pycache__" not in p.parts)
    for rel, path in files:
        data = path.read_bytes()
        h.update(rel.encode("utf-8") + b"\0" + len(data).to_bytes(8, "big"))
        h.update(data)
    return h.hexdigest()


# --------------------------------------------------------------------------- the log


class EgressLog:
    """A site's verified egress log.  Get one with :meth:`EgressLog.open`."""

    def __init__(self, state_dir: Path, site_id: str, *, readonly: bool) -> None:
        self.state_dir = state_dir
        self.site_id = site_id
        self.readonly = readonly
        self.path = state_dir / LOG_NAME
        self.head_path = state_dir / HEAD_NAME
        self.lock_path = state_dir / LOCK_NAME
        self.outbox = state_dir / OUTBOX_NAME
        self.notices: list[str] = []
        """What opening had to note or repair (torn final line moved aside, head advanced)."""
        self._entries: list[EgressEntry] = []
        self._disk: tuple[str, bytes] | None = None  # (sha256 of the log, head bytes) as last verified
        self._sha = hashlib.sha256()

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, state_dir: Path | str, site_id: str, *, readonly: bool = False) -> EgressLog:
        """Open and verify the egress log of ``site_id`` in ``state_dir``; raise EgressLogError on any break.

        Every line's hash, canonical form, seq, prev_hash and site are checked and
        the head is reconciled.  ``readonly`` changes nothing on disk (what the
        audit uses): a torn final line or a lagging head is reported in
        ``notices`` instead of repaired, and appending is refused.
        """
        egress = cls(Path(state_dir), site_id, readonly=readonly)
        if not readonly:
            egress._ensure_dir(egress.state_dir)
        with egress._locked():
            egress._load()
        return egress

    def _ensure_dir(self, path: Path) -> None:
        if path.is_dir():
            return
        missing = [p for p in (path, *path.parents) if not p.exists()]
        try:
            path.mkdir(parents=True, mode=0o700)
            os.chmod(path, 0o700)
            _fsync_dir(missing[-1].parent)
        except OSError as exc:
            raise EgressLogError(f"{path}: cannot create the directory ({exc})") from None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if self.readonly or fcntl is None:
            yield
            return
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise EgressLogError(f"{self.lock_path}: cannot open the egress log lock ({exc})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _fail(self, line: int | None, reason: str) -> EgressLogError:
        where = f"{self.path}, line {line}" if line is not None else str(self.path)
        return EgressLogError(f"{where}: {reason}")

    def _load(self) -> None:
        self.notices = []
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            data = b""
        except OSError as exc:
            raise self._fail(None, f"cannot read ({exc})") from None

        cut = data.rfind(b"\n") + 1
        complete, tail = data[:cut], data[cut:]
        entries: list[EgressEntry] = []
        for lineno, raw in enumerate(complete.split(b"\n")[:-1], start=1):
            entries.append(self._parse_line(raw, lineno, entries))
        torn_reason = None
        if tail:
            try:
                entries.append(self._parse_line(tail, len(entries) + 1, entries))
            except EgressLogError as why:
                torn_reason = str(why)

        # Every check passes before anything on disk is repaired.
        head_bytes = self._read_head()
        advance = self._check_head(entries, head_bytes)
        if tail and torn_reason is not None:
            self._set_aside(tail, len(entries) + 1, torn_reason)
        elif tail:
            if self.readonly:
                self.notices.append(f"line {len(entries)} lacks its final newline (a complete, valid entry: kept)")
            else:
                self._append_bytes(b"\n")
                self.notices.append(f"line {len(entries)} lacked its final newline; completed (entry kept)")
            complete = data + b"\n"
        if advance:
            n = len(entries)
            if self.readonly:
                self.notices.append(f"head records {n - 1} entries, the log holds {n}: a crash fell between writing "
                                    "the last entry and the head (the entry is kept: it may have been sent)")
            else:
                head_bytes = self._write_head(entries[-1])
                self.notices.append(f"head advanced from {n - 1} to {n} entries "
                                    "(a crash fell between writing the entry and the head)")
                log.warning("%s: head advanced from %d to %d entries after an interrupted append", self.path, n - 1, n)
        self._entries = entries
        self._sha = hashlib.sha256(complete)
        self._disk = (self._sha.hexdigest(), head_bytes)

    def _parse_line(self, raw: bytes, lineno: int, earlier: list[EgressEntry]) -> EgressEntry:
        try:
            text = raw.decode("ascii")
            fields = json.loads(text)
        except (UnicodeDecodeError, ValueError) as exc:
            raise self._fail(lineno, f"not valid JSON ({exc})") from None
        if not isinstance(fields, dict) or not isinstance(fields.get("hash"), str):
            raise self._fail(lineno, "not an egress entry (a JSON object with a hash)")
        if entry_hash(fields) != fields["hash"]:
            raise self._fail(lineno, "hash mismatch: the entry was changed after it was written")
        if canonical_json(fields) != text:
            raise self._fail(lineno, "not in canonical form: the line was edited after it was written")
        try:
            entry = EgressEntry.model_validate(fields, strict=True)
        except ValidationError as exc:
            raise self._fail(lineno, f"invalid entry ({exc.error_count()} field error(s): "
                                     f"{'; '.join(_loc(e) + ': ' + e['msg'] for e in exc.errors())})") from None
        seq = len(earlier) + 1
        if entry.seq != seq:
            raise self._fail(lineno, f"seq {entry.seq} where {seq} was expected: "
                                     "an entry is missing, duplicated or out of order")
        prev = earlier[-1].hash if earlier else GENESIS_HASH
        if entry.prev_hash != prev:
            raise self._fail(lineno, f"prev_hash {entry.prev_hash[:12]}... does not match the hash of the "
                                     f"previous entry ({prev[:12]}...): entries were removed, inserted or reordered")
        if entry.site_id != self.site_id:
            raise self._fail(lineno, f"entry is for site {entry.site_id!r}; this is the egress log of "
                                     f"{self.site_id!r}")
        return entry

    def _set_aside(self, tail: bytes, lineno: int, why: str) -> None:
        if self.readonly:
            self.notices.append(f"line {lineno} is an incomplete write ({len(tail)} bytes, no final newline): "
                                "not counted; nothing was sent under it")
            return
        stamp = _utc_now().replace("-", "").replace(":", "").replace(".", "")
        aside = self.state_dir / f"egress_log.torn-{stamp}.txt"
        n = 1
        while aside.exists():
            aside, n = self.state_dir / f"egress_log.torn-{stamp}-{n}.txt", n + 1
        try:
            fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                _write_all(fd, tail)
                os.fsync(fd)
            finally:
                os.close(fd)
            size = self.path.stat().st_size
            with open(self.path, "r+b") as f:
                f.truncate(size - len(tail))
                f.flush()
                os.fsync(f.fileno())
            _fsync_dir(self.state_dir)
        except OSError as exc:
            raise self._fail(lineno, f"cannot move an incomplete final write aside ({exc})") from None
        message = (f"line {lineno} was an incomplete write ({len(tail)} bytes, no final newline; {why}); "
                   f"nothing was sent under it; moved to {aside.name}")
        self.notices.append(message)
        log.warning("%s: %s", self.path, message)

    def _read_head(self) -> bytes:
        try:
            return self.head_path.read_bytes()
        except FileNotFoundError:
            return b""
        except OSError as exc:
            raise EgressLogError(f"{self.head_path}: cannot read ({exc})") from None

    def _check_head(self, entries: list[EgressEntry], head_bytes: bytes) -> bool:
        """Raise EgressLogError unless the head agrees with ``entries``; True when it lags by one (a crash)."""
        n = len(entries)
        if not head_bytes:
            if n >= 2:
                raise EgressLogError(f"{self.head_path}: missing, but the egress log holds {n} entries: "
                                     "the head was deleted or the log copied without it")
            count, last_hash = 0, GENESIS_HASH
        else:
            count, last_hash = self._parse_head(head_bytes)
        if n < count:
            raise EgressLogError(f"{self.path}: holds {n} entries but its head records {count}: entries were "
                                 "removed (truncated, or an older copy restored)")
        at_count = entries[count - 1].hash if count else GENESIS_HASH
        if at_count != last_hash:
            raise EgressLogError(f"{self.path}: entry {count} has hash {at_count[:12]}... but the head records "
                                 f"{last_hash[:12]}...: the log or its head was rewritten")
        if n > count + 1:
            raise EgressLogError(f"{self.path}: holds {n} entries but its head records only {count}: a crash leaves "
                                 "at most one unrecorded in the head; entries were added outside flame or the head "
                                 "rolled back")
        return n == count + 1

    def _parse_head(self, head_bytes: bytes) -> tuple[int, str]:
        try:
            head = json.loads(head_bytes.decode("ascii"))
            count, last_hash = head["count"], head["last_hash"]
            ok = (set(head) == {"count", "last_hash"} and isinstance(count, int) and not isinstance(count, bool)
                  and count >= 0 and isinstance(last_hash, str) and len(last_hash) == 64
                  and all(c in "0123456789abcdef" for c in last_hash))
        except (UnicodeDecodeError, ValueError, TypeError, KeyError):
            ok = False
        if not ok:
            raise EgressLogError(f"{self.head_path}: not a valid head ({{count, last_hash}} expected)")
        return count, last_hash

    # ------------------------------------------------------------------ writing

    def _write_head(self, last: EgressEntry) -> bytes:
        data = (canonical_json({"count": last.seq, "last_hash": last.hash}) + "\n").encode("ascii")
        tmp = self.head_path.with_name(HEAD_NAME + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                _write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.head_path)
            _fsync_dir(self.state_dir)
        except OSError as exc:
            raise EgressLogError(f"{self.head_path}: cannot write the head ({exc})") from None
        return data

    def _append_bytes(self, data: bytes) -> None:
        created = not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            _fsync_dir(self.state_dir)

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
            _write_all(fd, payload)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
        _fsync_dir(self.outbox)

    def _changed_on_disk(self) -> bool:
        return self._disk != self._fingerprint()

    def _fingerprint(self) -> tuple[str, bytes]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            data = b""
        return hashlib.sha256(data).hexdigest(), self._read_head()

    def refresh(self) -> None:
        """Re-read and re-verify the log if anything changed on disk since it was last verified."""
        with self._locked():
            if self._changed_on_disk():
                self._load()

    def append(self, *, run_id: str, round: int, task: str, kind: EgressKind, payload: bytes,
               envelope: CiphertextEnvelope | dict | str | bytes | None = None,
               ledger_entry: LedgerEntry | None = None, dp: DPRecord | dict | None = None,
               epsilon_after: float | None = None, ledger_seq: int | None = None,
               app_hash: str | None = None) -> EgressEntry:
        """Record a message about to leave the site; only after this returns may it be sent.

        ``payload`` is the exact byte string that will be sent; ``envelope`` its
        ciphertext header (required for "update" and "metrics", refused for
        "declined").  For an update, pass the privacy-ledger entry that covers it
        as ``ledger_entry`` (its seq, DP settings and epsilon_after are copied), or
        ``dp``, ``epsilon_after`` and ``ledger_seq`` explicitly.  ``app_hash``
        defaults to :func:`app_identity`; pass Flower's FAB hash when there is one.

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
        with self._locked():
            if self._changed_on_disk():
                self._load()
            seq = len(self._entries) + 1
            fields: dict[str, Any] = {
                "seq": seq,
                "time": _utc_now(),
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
            if isinstance(fields["dp"], dict):  # normalise floats so the written JSON is what validates strictly
                try:
                    fields["dp"] = DPRecord.model_validate(fields["dp"]).model_dump()
                except ValidationError as exc:
                    raise EgressLogError(f"refusing to log: invalid dp ({exc.errors()[0]['msg']})") from None
            fields["hash"] = entry_hash(fields)
            try:
                entry = EgressEntry.model_validate(fields, strict=True)
            except ValidationError as exc:
                raise EgressLogError(f"{self.path}: refusing to write an invalid entry "
                                     f"({'; '.join(_loc(e) + ': ' + e['msg'] for e in exc.errors())}); "
                                     "the message must not be sent") from None
            line = (canonical_json(fields) + "\n").encode("ascii")
            self._disk = None  # whatever happens next, re-read before trusting memory again
            try:
                self._write_payload(entry.payload_name, payload)
                self._append_bytes(line)
            except OSError as exc:
                raise EgressLogError(f"{self.path}: cannot record the message ({exc}); it must not be sent") from None
            self._entries.append(entry)
            self._sha.update(line)
            head = self._write_head(entry)
            self._disk = (self._sha.hexdigest(), head)
            return entry

    @staticmethod
    def _check_envelope(kind: str, envelope: object, payload: bytes, sha: str, run_id: str, task: str,
                        round: int) -> tuple[dict[str, Any] | None, str | None]:
        if kind == "declined":
            if envelope is not None:
                raise EgressLogError("a declined status carries no ciphertext envelope")
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
        is_metrics = env.model.startswith(METRICS_MODEL_PREFIX)
        if kind == "metrics" and env.model != METRICS_MODEL_PREFIX + task:
            problems.append(f"metrics must name model {METRICS_MODEL_PREFIX + task!r}, not {env.model!r}")
        if kind == "update" and is_metrics:
            problems.append(f"model {env.model!r} is a metrics name; log it as kind 'metrics'")
        if env.kind != "update":
            problems.append(f"a site sends envelopes of kind 'update', not {env.kind!r}")
        if problems:
            raise EgressLogError(f"refusing to log a {kind} message: {'; '.join(problems)}; it must not be sent")
        return env.model_dump(mode="json"), env.he_fingerprint

    # ------------------------------------------------------------------ reading

    @property
    def entries(self) -> tuple[EgressEntry, ...]:
        return tuple(self._entries)

    @property
    def head_hash(self) -> str:
        """Hash of the last entry (64 zeros when empty): the value to note down and compare later."""
        return self._entries[-1].hash if self._entries else GENESIS_HASH

    def __len__(self) -> int:
        return len(self._entries)

    def payload_path(self, entry: EgressEntry) -> Path:
        """Where the exact bytes of ``entry``'s message are kept."""
        return self.outbox / entry.payload_name


def _loc(error: Any) -> str:
    return ".".join(str(p) for p in error["loc"]) or "<entry>"
