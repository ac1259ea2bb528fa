"""An append-only, hash-chained, fsynced JSON-lines log with a head file: the mechanics shared by the privacy
ledger (``privacy/ledger.py``) and the egress log (``records/egress.py``).

Tamper evidence
    Each entry carries ``prev_hash`` (the previous entry's hash; 64 zeros for the
    first) and ``hash``: sha256 of the entry's canonical JSON without ``hash``
    (sorted keys, no spaces, ASCII).  A line must be byte-for-byte that canonical
    form.  ``<stem>.head.json`` holds ``{count, last_hash}`` and catches what a
    chain alone cannot: entries cut off its end.

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

:class:`HashChainLog` is parametrised by the entry model, the error class, the
file stem, the words its messages use and a per-entry validation hook; the
messages are the subclasses' own, byte for byte, because tests and people read them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ValidationError

try:  # POSIX; elsewhere appends are not serialised between processes
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

GENESIS_HASH = "0" * 64


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


def _write_synced(path: Path, data: bytes, flags: int) -> None:
    """Write ``data`` to ``path`` (opened with ``flags``, mode 0600) and fsync it before closing."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | flags, 0o600)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


E = TypeVar("E", bound=BaseModel)


class HashChainLog(Generic[E]):
    """A verified hash-chained log in ``state_dir``; subclasses set the class attributes and build entries.

    Entry models must have ``seq``, ``site_id``, ``prev_hash`` and ``hash`` fields.
    """

    entry_model: ClassVar[type[BaseModel]]
    error: ClassVar[type[Exception]]
    stem: ClassVar[str]
    """File names: ``<stem>.jsonl``, ``<stem>.head.json``, ``<stem>.lock``, ``<stem>.torn-<time>.txt``."""
    logger: ClassVar[logging.Logger]
    """Warnings go to the subclass's module logger (what operators filter on)."""
    # Words in messages: "the {noun} of", "the {noun} lock", "not {entry_noun}", "the {short} or its head" ...
    noun: ClassVar[str]
    short: ClassVar[str]
    entry_noun: ClassVar[str]
    released: ClassVar[str]
    """What nothing was, under a torn line: "released" / "sent"."""
    kept: ClassVar[str]
    """What a complete entry missing only its newline is: "counted" / "kept"."""
    holder: ClassVar[str]
    lag_note: ClassVar[str]
    less_note: ClassVar[str] = ""

    def __init__(self, state_dir: Path, site_id: str, *, readonly: bool) -> None:
        self.state_dir = state_dir
        self.site_id = site_id
        self.readonly = readonly
        self.path = state_dir / f"{self.stem}.jsonl"
        self.head_path = state_dir / f"{self.stem}.head.json"
        self.lock_path = state_dir / f"{self.stem}.lock"
        self.notices: list[str] = []
        """What opening had to note or repair (torn final line moved aside, head advanced)."""
        self._entries: list[E] = []
        self._disk: tuple[str, bytes] | None = None  # (sha256 of the log, head bytes) as last verified
        self._sha = hashlib.sha256()

    # ------------------------------------------------------------------ hooks

    def _verify_entries(self, entries: list[E], **opts: Any) -> None:
        """Checks across all parsed entries, before the head is reconciled; raise ``self._fail`` to refuse."""

    @staticmethod
    def _error_loc(error: Any) -> str:
        return ".".join(str(p) for p in error["loc"]) or "<entry>"

    # ------------------------------------------------------------------ opening

    def missing_advice(self) -> str:
        """What to do about a missing state: the words every 'missing' error ends with."""
        return (f"A new site: initialise its state with `flame site init-state --site <site.yaml>` (or "
                f"`flame site init`). A site that has trained before: its state was deleted or moved: restore "
                f"{self.state_dir} from backup and tell the DPO; never re-initialise it (that would start its "
                f"{self.noun} again from zero)")

    def _require_state(self) -> None:
        """Refuse a missing state directory or log: an onboarded site has both (and the head) from its first day.

        Without this a deleted ``state/`` would read as a site that never sent or spent anything.
        """
        if not self.state_dir.is_dir():
            raise self.error(f"{self.state_dir}: the state directory is missing (looked for the {self.noun} of "
                             f"site {self.site_id!r} there). {self.missing_advice()}")
        if not self.path.exists():
            raise self.error(f"{self.path}: the {self.noun} is missing (looked in {self.state_dir}). "
                             f"{self.missing_advice()}")

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
                _write_synced(log.path, b"", os.O_EXCL)
                _fsync_dir(log.state_dir)
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
            _fsync_dir(missing[-1].parent)
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

    def _fail(self, line: int | None, reason: str) -> Exception:
        where = f"{self.path}, line {line}" if line is not None else str(self.path)
        return self.error(f"{where}: {reason}")

    def _load(self, **verify_opts: Any) -> None:
        self.notices = []
        self._require_state()
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            raise self.error(f"{self.path}: the {self.noun} is missing (looked in {self.state_dir}). "
                             f"{self.missing_advice()}") from None
        except OSError as exc:
            raise self._fail(None, f"cannot read ({exc})") from None

        cut = data.rfind(b"\n") + 1
        complete, tail = data[:cut], data[cut:]
        entries: list[E] = []
        for lineno, raw in enumerate(complete.split(b"\n")[:-1], start=1):
            entries.append(self._parse_line(raw, lineno, entries))
        torn_reason = None
        if tail:
            try:
                entries.append(self._parse_line(tail, len(entries) + 1, entries))
            except self.error as why:
                torn_reason = str(why)
        self._verify_entries(entries, **verify_opts)

        # Every check passes before anything on disk is repaired.
        head_bytes = self._read_head()
        advance = self._check_head(entries, head_bytes)
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

    def _parse_line(self, raw: bytes, lineno: int, earlier: list[E]) -> E:
        try:
            text = raw.decode("ascii")
            fields = json.loads(text)
        except (UnicodeDecodeError, ValueError) as exc:
            raise self._fail(lineno, f"not valid JSON ({exc})") from None
        if not isinstance(fields, dict) or not isinstance(fields.get("hash"), str):
            raise self._fail(lineno, f"not {self.entry_noun} (a JSON object with a hash)")
        if entry_hash(fields) != fields["hash"]:
            raise self._fail(lineno, "hash mismatch: the entry was changed after it was written")
        if canonical_json(fields) != text:
            raise self._fail(lineno, "not in canonical form: the line was edited after it was written")
        try:
            entry: Any = self.entry_model.model_validate(fields, strict=True)
        except ValidationError as exc:
            raise self._fail(lineno, f"invalid entry ({exc.error_count()} field error(s): "
                                     f"{'; '.join(self._error_loc(e) + ': ' + e['msg'] for e in exc.errors())})"
                             ) from None
        seq = len(earlier) + 1
        if entry.seq != seq:
            raise self._fail(lineno, f"seq {entry.seq} where {seq} was expected: "
                                     "an entry is missing, duplicated or out of order")
        prev = earlier[-1].hash if earlier else GENESIS_HASH  # type: ignore[attr-defined]
        if entry.prev_hash != prev:
            raise self._fail(lineno, f"prev_hash {entry.prev_hash[:12]}... does not match the hash of the "
                                     f"previous entry ({prev[:12]}...): entries were removed, inserted or reordered")
        if entry.site_id != self.site_id:
            raise self._fail(lineno, f"entry is for site {entry.site_id!r}; this is the {self.noun} of "
                                     f"{self.site_id!r}")
        return entry

    def _set_aside(self, tail: bytes, lineno: int, why: str) -> None:
        if self.readonly:
            self.notices.append(f"line {lineno} is an incomplete write ({len(tail)} bytes, no final newline): "
                                f"not counted; nothing was {self.released} under it")
            return
        stamp = _utc_now().replace("-", "").replace(":", "").replace(".", "")
        aside = self.state_dir / f"{self.stem}.torn-{stamp}.txt"
        n = 1
        while aside.exists():
            aside, n = self.state_dir / f"{self.stem}.torn-{stamp}-{n}.txt", n + 1
        try:
            _write_synced(aside, tail, os.O_EXCL)
            size = self.path.stat().st_size
            with open(self.path, "r+b") as f:
                f.truncate(size - len(tail))
                f.flush()
                os.fsync(f.fileno())
            _fsync_dir(self.state_dir)
        except OSError as exc:
            raise self._fail(lineno, f"cannot move an incomplete final write aside ({exc})") from None
        message = (f"line {lineno} was an incomplete write ({len(tail)} bytes, no final newline; {why}); "
                   f"nothing was {self.released} under it; moved to {aside.name}")
        self.notices.append(message)
        self.logger.warning("%s: %s", self.path, message)

    def _read_head(self) -> bytes:
        try:
            return self.head_path.read_bytes()
        except FileNotFoundError:
            return b""
        except OSError as exc:
            raise self.error(f"{self.head_path}: cannot read ({exc})") from None

    def _check_head(self, entries: list[E], head_bytes: bytes) -> bool:
        """Raise unless the head agrees with ``entries``; True when it lags by the one entry a crash allows."""
        n = len(entries)
        if not head_bytes:
            if n:
                raise self.error(f"{self.head_path}: missing, but the {self.noun} holds {n} entries: "
                                 f"the head was deleted or the {self.short} copied without it")
            raise self.error(f"{self.head_path}: the head of the {self.noun} is missing (an initialised site "
                             f"has one from its first day). {self.missing_advice()}")
        count, last_hash = self._parse_head(head_bytes)
        if n < count:
            raise self.error(f"{self.path}: holds {n} entries but its head records {count}: entries were removed "
                             f"(truncated, or an older copy restored){self.less_note}")
        at_count = entries[count - 1].hash if count else GENESIS_HASH  # type: ignore[attr-defined]
        if at_count != last_hash:
            raise self.error(f"{self.path}: entry {count} has hash {at_count[:12]}... but the head records "
                             f"{last_hash[:12]}...: the {self.short} or its head was rewritten")
        if n > count + 1:
            raise self.error(f"{self.path}: holds {n} entries but its head records only {count}: a crash leaves at "
                             "most one unrecorded in the head; entries were added outside flame or the head rolled "
                             "back")
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
            raise self.error(f"{self.head_path}: not a valid head ({{count, last_hash}} expected)")
        return count, last_hash

    # ------------------------------------------------------------------ writing

    def _write_head(self, last: Any) -> bytes:
        """Replace the head with ``last``'s seq and hash (``None``: the empty log's head, count 0)."""
        count, last_hash = (last.seq, last.hash) if last is not None else (0, GENESIS_HASH)
        data = (canonical_json({"count": count, "last_hash": last_hash}) + "\n").encode("ascii")
        tmp = self.head_path.with_name(self.head_path.name + ".tmp")
        try:
            _write_synced(tmp, data, os.O_TRUNC)
            os.replace(tmp, self.head_path)
            _fsync_dir(self.state_dir)
        except OSError as exc:
            raise self.error(f"{self.head_path}: cannot write the head ({exc})") from None
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

    # ------------------------------------------------------------------ reading

    @property
    def entries(self) -> tuple[E, ...]:
        return tuple(self._entries)

    @property
    def head_hash(self) -> str:
        """Hash of the last entry (64 zeros when empty): the value to note down and compare later."""
        return self._entries[-1].hash if self._entries else GENESIS_HASH  # type: ignore[attr-defined]

    def __len__(self) -> int:
        return len(self._entries)
