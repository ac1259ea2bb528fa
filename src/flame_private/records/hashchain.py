"""An append-only, hash-chained, fsynced JSON-lines log with a head file: the mechanics shared by the privacy
ledger (``privacy/ledger.py``), the egress log (``records/egress.py``) and the approved-apps log.

The format (what is hashed, what the head holds) is :mod:`flame_private.records.chain`;
the checks on open are :mod:`flame_private.records.chain_verify`.  This module writes:
appends, the head, and the repairs a crash allows.

Crash safety
    An append writes the line, flushes and fsyncs the file (and the directory when
    the file is new); only then does it update the head (write a temporary file,
    fsync, rename, fsync the directory); only then does ``append`` return.  On
    open, a final line without its newline that is not a valid next entry is a
    write that never completed: it is moved to ``<stem>.torn-<time>.txt``; one
    complete entry more than the head counts is a crash between the two writes:
    the head is advanced; anything else that disagrees with the head is
    truncation, rollback or tampering, and raises.  Every check passes before
    anything on disk is repaired.

Onboarding
    :meth:`HashChainLog.initialise` writes the empty log and its head (count 0).  From
    then on a missing state directory, log or head is refused on every open, read-only
    included: a deleted state must never read as an empty record.

Appends from several processes are serialised by an advisory lock on
``<stem>.lock``; each append first re-reads what others appended.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from flame_private.records.chain import GENESIS_HASH, canonical_json, encode_head, entry_hash
from flame_private.records.chain_verify import ChainVerifier, E
from flame_private.records.durable import fsync_dir, utc_now, write_all, write_synced

try:  # POSIX; elsewhere appends are not serialised between processes
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]


class HashChainLog(ChainVerifier[E]):
    """A verified hash-chained log in ``state_dir`` that can be appended to; subclasses set the class attributes
    (:class:`~flame_private.records.chain_verify.ChainVerifier`) and build entries.
    """

    def __init__(self, state_dir: Path, site_id: str, *, readonly: bool) -> None:
        super().__init__(state_dir, site_id, readonly=readonly)
        self._disk: tuple[str, bytes] | None = None  # (sha256 of the log, head bytes) as last verified
        self._sha = hashlib.sha256()

    # ------------------------------------------------------------------ opening

    @classmethod
    def initialise(cls, state_dir: Path | str, site_id: str) -> Path:
        """Onboarding: create ``state_dir`` (0700), an empty log and its head (count 0); returns the log's path.

        Refuses a log or head that exists already (never re-initialise a site that has
        trained); completes an initialisation interrupted after its empty log was written.
        """
        log = cls(Path(state_dir), site_id, readonly=False)
        log._ensure_dir(log.state_dir, "state directory")
        interrupted = log.path.is_file() and log.path.stat().st_size == 0 and not log.head_path.exists()
        if not interrupted and (log.path.exists() or log.head_path.exists()):
            raise cls.error(f"{log.path}: the {cls.noun} exists already: refusing to initialise it again "
                            f"(that would start the {cls.noun} of site {site_id!r} again from zero)")
        try:
            if not interrupted:
                write_synced(log.path, b"", os.O_EXCL)
                fsync_dir(log.state_dir)
        except OSError as exc:
            raise cls.error(f"{log.path}: cannot create the {cls.noun} ({exc})") from None
        log._write_head(None)
        return log.path

    def _ensure_dir(self, path: Path, label: str | None = None) -> None:
        if path.is_dir():
            return
        missing = [p for p in (path, *path.parents) if not p.exists()]
        try:
            path.mkdir(parents=True, mode=0o700)
            os.chmod(path, 0o700)
            fsync_dir(missing[-1].parent)
        except OSError as exc:
            raise self.error(f"{path}: cannot create the {label or 'directory'} ({exc})") from None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if self.readonly or fcntl is None:
            yield
            return
        self._require_state()  # a state deleted under a running site is refused, not re-created by the lock
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise self.error(f"{self.lock_path}: cannot open the {self.noun} lock ({exc})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _load(self, **verify_opts: Any) -> None:
        self.notices = []
        data, entries, tail, torn_reason, head_bytes, advance = self._read_verified(**verify_opts)
        # Every check has passed: only now is anything on disk repaired.
        complete = data[:len(data) - len(tail)]
        if tail and torn_reason is not None:
            self._set_aside(tail, len(entries) + 1, torn_reason)
        elif tail:
            # A whole, valid entry cut just before its newline: keep it (over-report, never under-report).
            if self.readonly:
                self.notices.append(f"line {len(entries)} lacks its final newline (a complete, valid entry: "
                                    f"{self.kept})")
            else:
                self._append_bytes(b"\n")
                self.notices.append(f"line {len(entries)} lacked its final newline; completed (entry {self.kept})")
            complete = data + b"\n"
        if advance:
            n = len(entries)
            if self.readonly:
                self.notices.append(f"head records {n - 1} entries, {self.holder} holds {n}: a crash fell between "
                                    f"writing the last entry and the head ({self.lag_note})")
            else:
                head_bytes = self._write_head(entries[-1])
                self.notices.append(f"head advanced from {n - 1} to {n} entries "
                                    "(a crash fell between writing the entry and the head)")
                self.logger.warning("%s: head advanced from %d to %d entries after an interrupted append",
                                    self.path, n - 1, n)
        self._entries = entries
        self._sha = hashlib.sha256(complete)  # running digest of the verified bytes, extended by each append
        self._disk = (self._sha.hexdigest(), head_bytes)

    def _set_aside(self, tail: bytes, lineno: int, why: str) -> None:
        if self.readonly:
            self.notices.append(f"line {lineno} is an incomplete write ({len(tail)} bytes, no final newline): "
                                f"not counted; nothing was {self.released} under it")
            return
        stamp = utc_now().replace("-", "").replace(":", "").replace(".", "")
        aside = self.state_dir / f"{self.stem}.torn-{stamp}.txt"
        n = 1
        while aside.exists():
            aside, n = self.state_dir / f"{self.stem}.torn-{stamp}-{n}.txt", n + 1
        try:
            write_synced(aside, tail, os.O_EXCL)
            size = self.path.stat().st_size
            with open(self.path, "r+b") as f:
                f.truncate(size - len(tail))
                f.flush()
                os.fsync(f.fileno())
            fsync_dir(self.state_dir)
        except OSError as exc:
            raise self._fail(lineno, f"cannot move an incomplete final write aside ({exc})") from None
        message = (f"line {lineno} was an incomplete write ({len(tail)} bytes, no final newline; {why}); "
                   f"nothing was {self.released} under it; moved to {aside.name}")
        self.notices.append(message)
        self.logger.warning("%s: %s", self.path, message)

    # ------------------------------------------------------------------ writing

    def _write_head(self, last: Any) -> bytes:
        """Replace the head with ``last``'s seq and hash (``None``: the empty log's head, count 0)."""
        count, last_hash = (last.seq, last.hash) if last is not None else (0, GENESIS_HASH)
        data = encode_head(count, last_hash)
        tmp = self.head_path.with_name(self.head_path.name + ".tmp")
        try:
            write_synced(tmp, data, os.O_TRUNC)
            os.replace(tmp, self.head_path)
            fsync_dir(self.state_dir)
        except OSError as exc:
            raise self.error(f"{self.head_path}: cannot write the head ({exc})") from None
        return data

    def _append_bytes(self, data: bytes) -> None:
        created = not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            fsync_dir(self.state_dir)

    def _changed_on_disk(self) -> bool:
        """Whether the log or head differ, byte for byte, from what was last verified (or written)."""
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

    def _append_entry(self, make_fields: Callable[[], dict[str, Any]], *,
                      invalid: Callable[[ValidationError], str], cannot_record: str,
                      before_line: Callable[[E], None] | None = None) -> E:
        """Under the lock: re-verify what others appended, build the entry, then write + fsync the line, then the head.

        ``make_fields()`` runs under the lock after the re-read (so ``len(self)`` and
        ``head_hash`` are current) and may raise to refuse: then nothing is written.
        ``before_line(entry)`` writes what must be durable before the line is
        (an ``OSError`` there, as in the line's write, raises ``cannot_record``).
        """
        with self._locked():
            if self._changed_on_disk():
                self._load()
            fields = make_fields()
            fields["hash"] = entry_hash(fields)
            try:
                entry: Any = self.entry_model.model_validate(fields, strict=True)
            except ValidationError as exc:
                raise self.error(invalid(exc)) from None
            line = (canonical_json(fields) + "\n").encode("ascii")
            self._disk = None  # whatever happens next, re-read before trusting memory again
            try:
                if before_line is not None:
                    before_line(entry)
                self._append_bytes(line)
            except OSError as exc:
                raise self.error(f"{self.path}: cannot record the {cannot_record} ({exc}); "
                                 "it must not be sent") from None
            self._entries.append(entry)
            self._sha.update(line)
            head = self._write_head(entry)
            self._disk = (self._sha.hexdigest(), head)
            return entry
