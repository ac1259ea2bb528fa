"""Verification on open: a hash-chained log and its head are read, parsed and checked, and nothing is changed.

Every line must be a canonical entry of the model, in sequence, chained to the one
before it (:mod:`flame_private.records.chain`), for this site; the head must agree
with the entries but for the one entry a crash may leave unrecorded.  What is found
and what a writer must repair (a torn final line, a lagging head) is returned as a
:class:`Reading`; repairs are :class:`~flame_private.records.hashchain.HashChainLog`'s
job, and they happen only after every check here has passed.

:class:`ChainVerifier` is parametrised by the entry model, the error class, the file
stem, the words its messages use and a per-entry validation hook; the messages are
the logs' own, byte for byte, because tests and people read them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, ClassVar, Generic, NamedTuple, TypeVar

from pydantic import BaseModel, ValidationError

from flame_private.records.chain import GENESIS_HASH, canonical_json, entry_hash, parse_head

E = TypeVar("E", bound=BaseModel)


class Reading(NamedTuple):
    """What one verified read of a log found: the bytes, the entries, and what a writer would repair."""

    data: bytes
    """The log's bytes as read."""
    entries: list[Any]
    tail: bytes
    """Bytes after the last newline: a final write that lacks its newline (empty if none)."""
    torn_reason: str | None
    """Why ``tail`` is not a valid next entry (an incomplete write to set aside); None if it is one, or empty."""
    head_bytes: bytes
    advance: bool
    """The head lags the entries by the one entry a crash between line and head leaves."""


class ChainVerifier(Generic[E]):
    """A hash-chained log in ``state_dir``, read and verified; subclasses set the class attributes.

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

    def _fail(self, line: int | None, reason: str) -> Exception:
        where = f"{self.path}, line {line}" if line is not None else str(self.path)
        return self.error(f"{where}: {reason}")

    def _read_verified(self, **verify_opts: Any) -> Reading:
        """Read the log and its head and verify both; raise ``self.error`` on anything a crash cannot explain."""
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

        head_bytes = self._read_head()
        advance = self._check_head(entries, head_bytes)
        return Reading(data, entries, tail, torn_reason, head_bytes, advance)

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
        parsed = parse_head(head_bytes)
        if parsed is None:
            raise self.error(f"{self.head_path}: not a valid head ({{count, last_hash}} expected)")
        return parsed

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
