"""The site's privacy ledger: an append-only, hash-chained record of every release.

``<state_dir>/privacy_ledger.jsonl`` holds one JSON object per line, one line per
release of a model update trained on the site's patients.  The entries *are* the
accountant's history (STYLE.md): replaying the ledger is handing its
``(noise_multiplier, sample_rate, steps)`` to Opacus, nothing else.

Tamper evidence
    Each entry carries ``prev_hash`` (the previous entry's hash; 64 zeros for the
    first) and ``hash``: sha256 of the entry's canonical JSON without ``hash``
    (sorted keys, no spaces, ASCII).  A line must be byte-for-byte that canonical
    form.  ``<state_dir>/privacy_ledger.head.json`` holds ``{count, last_hash}``
    and catches what a chain alone cannot: entries cut off its end.

Crash safety (spend is never under-counted)
    An append writes the line, flushes and fsyncs the file (and the directory when
    the file is new); only then does it update the head (write a temporary file,
    fsync, rename, fsync the directory); only then does ``append`` return and may
    the update leave the site.  On open:

    * a final line without its newline that is not a valid next entry is a write
      that never completed, so nothing was released under it: it is moved to
      ``privacy_ledger.torn-<time>.txt`` and a warning logged;
    * one complete entry more than the head counts: the crash fell between the two
      writes; the head is advanced;
    * fewer entries than the head counts, more than one extra, or a different hash
      at the head's count: truncation, rollback or tampering.  ``LedgerError``; a
      human must act.  Less spend is never accepted silently.

Appends from several processes of one site are serialised by an advisory lock on
``privacy_ledger.lock``; each append first re-reads what others appended.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError

from flame_private.config import StrictModel, Task
from flame_private.privacy.accounting import HistoryItem, epsilon_for

try:  # POSIX; elsewhere appends are not serialised between processes
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

GENESIS_HASH = "0" * 64
LEDGER_NAME = "privacy_ledger.jsonl"
HEAD_NAME = "privacy_ledger.head.json"
LOCK_NAME = "privacy_ledger.lock"
EPSILON_RTOL = 1e-9
"""Recorded and recomputed epsilon must agree this closely (same Opacus, same history)."""

_HEX64 = r"^[0-9a-f]{64}$"
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"


class LedgerError(Exception):
    """The ledger cannot be trusted (broken chain, truncation, tampering) or cannot be written."""


class PlannedSpend(StrictModel):
    """One release about to be trained: what the accountant needs, and which round of which run it is."""

    run_id: Annotated[str, Field(pattern=_NAME)]
    round: Annotated[int, Field(ge=1)]
    task: Task
    noise_multiplier: Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
    sample_rate: Annotated[float, Field(gt=0.0, le=1.0)]
    """Poisson sampling probability q (expected batch size / training patients)."""
    steps: Annotated[int, Field(ge=1)]
    """Optimizer steps (noisy gradient releases) in this round."""
    max_grad_norm: Annotated[float, Field(gt=0.0, allow_inf_nan=False)]

    def history_item(self) -> HistoryItem:
        """This release as Opacus history: ``(noise_multiplier, sample_rate, num_steps)``."""
        return (self.noise_multiplier, self.sample_rate, self.steps)


class LedgerEntry(PlannedSpend):
    """One line of the ledger: a release, where it came from, and the site's epsilon after it."""

    seq: Annotated[int, Field(ge=1)]
    time: Annotated[str, Field(pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")]
    """UTC, when the entry was written."""
    site_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]
    delta: Annotated[float, Field(gt=0.0, lt=1.0)]
    accountant: Literal["prv", "rdp"]
    epsilon_after: Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
    """The site's total epsilon at ``delta`` after composing this entry with all earlier ones."""
    prev_hash: Annotated[str, Field(pattern=_HEX64)]
    hash: Annotated[str, Field(pattern=_HEX64)]


def canonical_json(obj: dict) -> str:
    """The one serialisation that is hashed and written: sorted keys, no spaces, ASCII."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def entry_hash(fields: dict) -> str:
    """sha256 of the canonical JSON of an entry's fields other than ``hash``."""
    body = {k: v for k, v in fields.items() if k != "hash"}
    return hashlib.sha256(canonical_json(body).encode("ascii")).hexdigest()


def _utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class Ledger:
    """A site's verified ledger.  Get one with :meth:`Ledger.open`."""

    def __init__(self, state_dir: Path, site_id: str, *, readonly: bool) -> None:
        self.state_dir = state_dir
        self.site_id = site_id
        self.readonly = readonly
        self.path = state_dir / LEDGER_NAME
        self.head_path = state_dir / HEAD_NAME
        self.lock_path = state_dir / LOCK_NAME
        self.notices: list[str] = []
        """What opening had to note or repair (torn final line moved aside, head advanced)."""
        self._entries: list[LedgerEntry] = []
        self._disk: tuple[str, bytes] | None = None  # (sha256 of the ledger, head bytes) as last verified
        self._sha = hashlib.sha256()

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, state_dir: Path | str, site_id: str, *, readonly: bool = False,
             recompute: Literal["last", "all"] = "last") -> Ledger:
        """Open and verify the ledger of ``site_id`` in ``state_dir``; raise LedgerError on any break.

        Every line's hash, seq, prev_hash and site are checked, and the head is
        reconciled.  ``recompute`` says whose ``epsilon_after`` is recomputed with
        Opacus: the last entry's (the site's total; the default) or every entry's
        (what ``flame budget verify`` does; one accountant run per entry).
        ``readonly`` changes nothing on disk: a torn final line or a lagging head is
        reported in ``notices`` instead of repaired, and appending is refused.
        """
        ledger = cls(Path(state_dir), site_id, readonly=readonly)
        if not readonly:
            ledger._ensure_state_dir()
        with ledger._locked():
            ledger._load(recompute)
        return ledger

    def _ensure_state_dir(self) -> None:
        if self.state_dir.is_dir():
            return
        missing = [p for p in (self.state_dir, *self.state_dir.parents) if not p.exists()]
        try:
            self.state_dir.mkdir(parents=True, mode=0o700)
            os.chmod(self.state_dir, 0o700)
            _fsync_dir(missing[-1].parent)
        except OSError as exc:
            raise LedgerError(f"{self.state_dir}: cannot create the state directory ({exc})") from None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if self.readonly or fcntl is None:
            yield
            return
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise LedgerError(f"{self.lock_path}: cannot open the ledger lock ({exc})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _fail(self, line: int | None, reason: str) -> LedgerError:
        where = f"{self.path}, line {line}" if line is not None else str(self.path)
        return LedgerError(f"{where}: {reason}")

    def _load(self, recompute: Literal["last", "all"]) -> None:
        self.notices = []
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            data = b""
        except OSError as exc:
            raise self._fail(None, f"cannot read ({exc})") from None

        cut = data.rfind(b"\n") + 1
        complete, tail = data[:cut], data[cut:]
        entries: list[LedgerEntry] = []
        for lineno, raw in enumerate(complete.split(b"\n")[:-1], start=1):
            entries.append(self._parse_line(raw, lineno, entries))
        torn_reason = None
        if tail:
            try:
                entries.append(self._parse_line(tail, len(entries) + 1, entries))
            except LedgerError as why:
                torn_reason = str(why)

        to_check = range(len(entries)) if recompute == "all" else range(max(0, len(entries) - 1), len(entries))
        for i in to_check:
            e = entries[i]
            expected = epsilon_for([x.history_item() for x in entries[: i + 1]], e.delta, e.accountant)
            if not math.isclose(e.epsilon_after, expected, rel_tol=EPSILON_RTOL, abs_tol=1e-12):
                raise self._fail(i + 1, f"epsilon_after={e.epsilon_after!r} but Opacus ({e.accountant}, "
                                        f"delta={e.delta:g}) gives {expected!r} for the history up to this entry")

        # Every check passes before anything on disk is repaired.
        head_bytes = self._read_head()
        advance = self._check_head(entries, head_bytes)
        if tail and torn_reason is not None:
            self._set_aside(tail, len(entries) + 1, torn_reason)
        elif tail:
            # A whole, valid entry cut just before its newline: keep it (more spend, never less).
            if self.readonly:
                self.notices.append(f"line {len(entries)} lacks its final newline (a complete, valid entry: counted)")
            else:
                self._append_bytes(b"\n")
                self.notices.append(f"line {len(entries)} lacked its final newline; completed (entry counted)")
            complete = data + b"\n"
        if advance:
            n = len(entries)
            if self.readonly:
                self.notices.append(f"head records {n - 1} entries, ledger holds {n}: a crash fell between writing "
                                    "the last entry and the head (the entry is counted)")
            else:
                head_bytes = self._write_head(entries[-1])
                self.notices.append(f"head advanced from {n - 1} to {n} entries "
                                    "(a crash fell between writing the entry and the head)")
                log.warning("%s: head advanced from %d to %d entries after an interrupted append", self.path, n - 1, n)
        self._entries = entries
        self._sha = hashlib.sha256(complete)  # running digest of the verified bytes, extended by each append
        self._disk = (self._sha.hexdigest(), head_bytes)

    def _parse_line(self, raw: bytes, lineno: int, earlier: list[LedgerEntry]) -> LedgerEntry:
        try:
            text = raw.decode("ascii")
            fields = json.loads(text)
        except (UnicodeDecodeError, ValueError) as exc:
            raise self._fail(lineno, f"not valid JSON ({exc})") from None
        if not isinstance(fields, dict) or not isinstance(fields.get("hash"), str):
            raise self._fail(lineno, "not a ledger entry (a JSON object with a hash)")
        if entry_hash(fields) != fields["hash"]:
            raise self._fail(lineno, "hash mismatch: the entry was changed after it was written")
        if canonical_json(fields) != text:
            raise self._fail(lineno, "not in canonical form: the line was edited after it was written")
        try:
            entry = LedgerEntry.model_validate(fields, strict=True)
        except ValidationError as exc:
            raise self._fail(lineno, f"invalid entry ({exc.error_count()} field error(s): "
                                     f"{'; '.join(str(e['loc'][0]) + ': ' + e['msg'] for e in exc.errors())})"
                             ) from None
        seq = len(earlier) + 1
        if entry.seq != seq:
            raise self._fail(lineno, f"seq {entry.seq} where {seq} was expected: "
                                     "an entry is missing, duplicated or out of order")
        prev = earlier[-1].hash if earlier else GENESIS_HASH
        if entry.prev_hash != prev:
            raise self._fail(lineno, f"prev_hash {entry.prev_hash[:12]}... does not match the hash of the "
                                     f"previous entry ({prev[:12]}...): entries were removed, inserted or reordered")
        if entry.site_id != self.site_id:
            raise self._fail(lineno, f"entry is for site {entry.site_id!r}; this is the ledger of {self.site_id!r}")
        return entry

    def _set_aside(self, tail: bytes, lineno: int, why: str) -> None:
        if self.readonly:
            self.notices.append(f"line {lineno} is an incomplete write ({len(tail)} bytes, no final newline): "
                                "not counted; nothing was released under it")
            return
        stamp = _utc_now().replace("-", "").replace(":", "").replace(".", "")
        aside = self.state_dir / f"privacy_ledger.torn-{stamp}.txt"
        n = 1
        while aside.exists():
            aside, n = self.state_dir / f"privacy_ledger.torn-{stamp}-{n}.txt", n + 1
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
                   f"nothing was released under it; moved to {aside.name}")
        self.notices.append(message)
        log.warning("%s: %s", self.path, message)

    def _read_head(self) -> bytes:
        try:
            return self.head_path.read_bytes()
        except FileNotFoundError:
            return b""
        except OSError as exc:
            raise LedgerError(f"{self.head_path}: cannot read ({exc})") from None

    def _check_head(self, entries: list[LedgerEntry], head_bytes: bytes) -> bool:
        """Raise LedgerError unless the head agrees with ``entries``; True when it lags by the one entry a crash allows."""
        n = len(entries)
        if not head_bytes:
            if n >= 2:
                raise LedgerError(f"{self.head_path}: missing, but the ledger holds {n} entries: "
                                  "the head was deleted or the ledger copied without it")
            count, last_hash = 0, GENESIS_HASH
        else:
            count, last_hash = self._parse_head(head_bytes)
        if n < count:
            raise LedgerError(f"{self.path}: holds {n} entries but its head records {count}: entries were removed "
                              "(truncated, or an older copy restored); refusing to accept less spend")
        at_count = entries[count - 1].hash if count else GENESIS_HASH
        if at_count != last_hash:
            raise LedgerError(f"{self.path}: entry {count} has hash {at_count[:12]}... but the head records "
                              f"{last_hash[:12]}...: the ledger or its head was rewritten")
        if n > count + 1:
            raise LedgerError(f"{self.path}: holds {n} entries but its head records only {count}: a crash leaves at "
                              "most one unrecorded in the head; entries were added outside flame or the head rolled back")
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
            raise LedgerError(f"{self.head_path}: not a valid head ({{count, last_hash}} expected)")
        return count, last_hash

    # ------------------------------------------------------------------ writing

    def _write_head(self, last: LedgerEntry) -> bytes:
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
            raise LedgerError(f"{self.head_path}: cannot write the head ({exc})") from None
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

    def _changed_on_disk(self) -> bool:
        """Whether the ledger or head differ, byte for byte, from what was last verified (or written)."""
        return self._disk != self._fingerprint()

    def _fingerprint(self) -> tuple[str, bytes]:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            data = b""
        return hashlib.sha256(data).hexdigest(), self._read_head()

    def refresh(self) -> None:
        """Re-read and re-verify the ledger if anything changed on disk since it was last verified."""
        with self._locked():
            if self._changed_on_disk():
                self._load("last")

    def append(self, spend: PlannedSpend, *, delta: float, accountant: Literal["prv", "rdp"],
               check: Callable[[float], None] | None = None) -> LedgerEntry:
        """Record ``spend`` durably and return its entry; only after this returns may the update leave.

        Under the lock: re-verify what other processes appended, compute the site's
        epsilon with this release composed in, call ``check(epsilon_after)`` (which
        may raise to refuse: then nothing is written), write + fsync the line, then
        the head.
        """
        if self.readonly:
            raise LedgerError(f"{self.path}: opened read-only; cannot record a release")
        with self._locked():
            if self._changed_on_disk():
                self._load("last")
            eps = epsilon_for([*self.history(), spend.history_item()], delta, accountant)
            if check is not None:
                check(eps)
            fields = {
                **spend.model_dump(),
                "seq": len(self._entries) + 1,
                "time": _utc_now(),
                "site_id": self.site_id,
                "delta": float(delta),
                "accountant": accountant,
                "epsilon_after": eps,
                "prev_hash": self.head_hash,
            }
            fields["hash"] = entry_hash(fields)
            try:
                entry = LedgerEntry.model_validate(fields, strict=True)
            except ValidationError as exc:
                raise LedgerError(f"{self.path}: refusing to write an invalid entry ({exc})") from None
            line = (canonical_json(fields) + "\n").encode("ascii")
            self._disk = None  # whatever happens next, re-read before trusting memory again
            try:
                self._append_bytes(line)
            except OSError as exc:
                raise LedgerError(f"{self.path}: cannot record the release ({exc}); it must not be sent") from None
            self._entries.append(entry)
            self._sha.update(line)
            head = self._write_head(entry)
            self._disk = (self._sha.hexdigest(), head)
            return entry

    # ------------------------------------------------------------------ reading

    @property
    def entries(self) -> tuple[LedgerEntry, ...]:
        return tuple(self._entries)

    @property
    def head_hash(self) -> str:
        """Hash of the last entry (64 zeros when empty): the value to note down and compare later."""
        return self._entries[-1].hash if self._entries else GENESIS_HASH

    def __len__(self) -> int:
        return len(self._entries)

    def history(self) -> list[HistoryItem]:
        """The Opacus accountant history: one ``(noise_multiplier, sample_rate, steps)`` per entry."""
        return [e.history_item() for e in self._entries]

    def epsilon(self, delta: float | None = None, accountant: Literal["prv", "rdp"] | None = None) -> float:
        """The site's total epsilon; by default at the last entry's delta and accountant (0.0 when empty)."""
        if not self._entries and delta is None:
            return 0.0
        last = self._entries[-1] if self._entries else None
        return epsilon_for(self.history(), delta if delta is not None else last.delta,  # type: ignore[union-attr]
                           accountant or (last.accountant if last else "prv"))
