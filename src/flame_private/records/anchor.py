"""Continuity the DPO can prove: the chain heads certified at one audit, checked at the next.

A hash chain proves that nothing inside it was changed, but not that it is the same
chain as last time: a deleted ``state/`` re-initialised, or a ledger rewritten from
scratch, is a perfectly valid chain of its own.  So at each audit the DPO keeps the
two chain heads (entry count and last hash of the privacy ledger and of the egress
log) in an *anchor* file (``flame audit --save-anchor FILE``), and the next audit
(``flame audit --anchor FILE``) fails unless today's chains extend them: same site,
no fewer entries, and the entry at the anchored count has the anchored hash.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from flame_private.errors import ExitCode, FlameError
from flame_private.records.chain import GENESIS_HASH

ANCHOR_VERSION = 1


class ChainHead(BaseModel):
    """What to write down at each review: entries so far and the hash of the last one."""

    model_config = ConfigDict(extra="forbid")

    count: Annotated[int, Field(ge=0)]
    hash: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class AuditAnchor(BaseModel):
    """The heads a DPO certified at one audit (``flame audit --save-anchor``)."""

    model_config = ConfigDict(extra="forbid")

    version: int = ANCHOR_VERSION
    site_id: str
    taken_at: str
    """UTC time of the audit that certified these heads."""
    ledger_head: ChainHead
    egress_head: ChainHead
    policy_sha256: str | None = None
    """sha256 of the policy file at that audit (for the record; the ledger entries carry the history)."""


class AnchorError(FlameError, ValueError):
    """The anchor file cannot be read or written."""

    exit_code = ExitCode.INPUT


def load_anchor(path: Path | str) -> AuditAnchor:
    """Read an anchor file; AnchorError naming the file and the field on any problem."""
    path = Path(path)
    try:
        return AuditAnchor.model_validate(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise AnchorError(f"{path}: anchor file not found") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        if isinstance(exc, ValidationError):
            first = exc.errors()[0]
            why = f"{'.'.join(str(p) for p in first['loc']) or '<anchor>'}: {first['msg']}"
        else:
            why = str(exc)
        raise AnchorError(f"{path}: not a valid audit anchor ({why})") from None


def save_anchor(anchor: AuditAnchor, path: Path | str) -> None:
    """Write ``anchor`` as JSON to a new file, whole or not at all; never overwrites (each anchor is kept)."""
    path = Path(path)
    if path.exists():
        raise AnchorError(f"{path}: exists already; anchors are kept, not overwritten (choose a new name, "
                          "e.g. with the date)")
    data = (anchor.model_dump_json(indent=2) + "\n").encode("utf-8")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)  # atomic, and fails rather than replace a file that appeared meanwhile
    except FileExistsError:
        raise AnchorError(f"{path}: exists already; anchors are kept, not overwritten") from None
    except OSError as exc:
        raise AnchorError(f"{path}: cannot write the anchor ({exc})") from None
    finally:
        tmp.unlink(missing_ok=True)


def extends(anchored: ChainHead, entries: Sequence[object], what: str) -> str | None:
    """None if the chain ``entries`` (objects with ``.hash``) extends ``anchored``; else why not."""
    n = len(entries)
    if n < anchored.count:
        return (f"the {what} holds {n} entries, fewer than the {anchored.count} certified: entries were removed, "
                "or the state was deleted and re-initialised")
    at = entries[anchored.count - 1].hash if anchored.count else GENESIS_HASH  # type: ignore[attr-defined]
    if at != anchored.hash:
        return (f"entry {anchored.count} of the {what} has hash {at[:12]}..., the anchor certified "
                f"{anchored.hash[:12]}...: the {what} was rewritten or replaced since (or the state re-initialised)")
    return None
