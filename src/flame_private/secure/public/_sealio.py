"""Bytes in and out of SEAL objects.

``tenseal.sealapi`` saves and loads only through file paths (docs/references.md 9).  On
Linux an anonymous in-memory file (``memfd_create``) gives a path without touching
a disk; elsewhere a private temporary directory (mode 0700) is used.  Only
ciphertexts and parameters travel through here: secret keys are loaded straight
from their own file by ``secure.site.keys`` and never copied to a temporary file.
Server-safe.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


class ScratchFile:
    """One reusable path whose content can be written and read as bytes."""

    def __init__(self, path: str, fd: int | None) -> None:
        self.path = path
        self._fd = fd

    def write(self, data: bytes) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            view = memoryview(data)
            offset = 0
            while offset < len(view):
                offset += os.pwrite(self._fd, view[offset:], offset)
        else:
            Path(self.path).write_bytes(data)

    def read(self) -> bytes:
        if self._fd is not None:
            size = os.fstat(self._fd).st_size
            chunks, offset = [], 0
            while offset < size:
                part = os.pread(self._fd, size - offset, offset)
                if not part:
                    break
                chunks.append(part)
                offset += len(part)
            return b"".join(chunks)
        return Path(self.path).read_bytes()


@contextmanager
def scratch() -> Iterator[ScratchFile]:
    """A scratch path for SEAL's path-only save/load, in memory where the OS allows."""
    if hasattr(os, "memfd_create") and Path("/proc/self/fd").is_dir():
        fd = os.memfd_create("flame-he", getattr(os, "MFD_CLOEXEC", 0))
        try:
            yield ScratchFile(f"/proc/self/fd/{fd}", fd)
        finally:
            os.close(fd)
    else:  # pragma: no cover - non-Linux fallback
        with tempfile.TemporaryDirectory(prefix="flame-he-") as tmp:
            yield ScratchFile(str(Path(tmp) / "obj.bin"), None)


def save_bytes(save: Callable[[str], None], file: ScratchFile) -> bytes:
    """Run ``obj.save(path)`` into ``file`` and return what it wrote."""
    save(file.path)
    return file.read()
