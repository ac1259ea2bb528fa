"""Durable writes: the fsync discipline every record on a site's disk follows (logs, heads, payloads, checkpoints).

A record is only as good as its last fsync: data is written and fsynced before the
call returns, and a new or renamed file's directory is fsynced too, so a crash
leaves either the old state or the new one, never a file the directory forgot.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path


def utc_now() -> str:
    """The timestamp records carry: UTC, microseconds, ``Z`` suffix."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def fsync_dir(path: Path) -> None:
    """fsync directory ``path``, so that files created, renamed or removed in it survive a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (``os.write`` may write less than asked)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_synced(path: Path, data: bytes, flags: int) -> None:
    """Write ``data`` to ``path`` (opened with ``flags``, mode 0600) and fsync it before closing."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | flags, 0o600)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
