"""The hash-chain format the site's records share: what is hashed, how, and what the head file holds.

Tamper evidence
    Each entry carries ``prev_hash`` (the previous entry's hash; 64 zeros for the
    first) and ``hash``: sha256 of the entry's canonical JSON without ``hash``
    (sorted keys, no spaces, ASCII).  A line must be byte-for-byte that canonical
    form.  ``<stem>.head.json`` holds ``{count, last_hash}`` and catches what a
    chain alone cannot: entries cut off its end.

These are pure functions of bytes and fields, so a DPO can recompute any hash
without flame's log classes (:mod:`flame_private.records.hashchain`).
"""

from __future__ import annotations

import hashlib
import json

GENESIS_HASH = "0" * 64


def canonical_json(obj: dict) -> str:
    """The one serialisation that is hashed and written: sorted keys, no spaces, ASCII."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def entry_hash(fields: dict) -> str:
    """sha256 of the canonical JSON of an entry's fields other than ``hash``."""
    body = {k: v for k, v in fields.items() if k != "hash"}
    return hashlib.sha256(canonical_json(body).encode("ascii")).hexdigest()


def encode_head(count: int, last_hash: str) -> bytes:
    """The head file's bytes for a log of ``count`` entries whose last hash is ``last_hash``."""
    return (canonical_json({"count": count, "last_hash": last_hash}) + "\n").encode("ascii")


def parse_head(data: bytes) -> tuple[int, str] | None:
    """``(count, last_hash)`` from a head file's bytes; None if they are not a valid head."""
    try:
        head = json.loads(data.decode("ascii"))
        count, last_hash = head["count"], head["last_hash"]
        ok = (set(head) == {"count", "last_hash"} and isinstance(count, int) and not isinstance(count, bool)
              and count >= 0 and isinstance(last_hash, str) and len(last_hash) == 64
              and all(c in "0123456789abcdef" for c in last_hash))
    except (UnicodeDecodeError, ValueError, TypeError, KeyError):
        ok = False
    return (count, last_hash) if ok else None
