"""Bytes in and out of SEAL objects.

``tenseal.sealapi`` saves and loads only through file paths (docs/references.md 9).  On
Linux an anonymous in-memory file (``memfd_create``) gives a path without touching
a disk; elsewhere a private temporary directory (mode 0700) is used.  Only
ciphertexts and parameters travel through here: secret keys are loaded straight
from their own file by ``secure.site.keys`` and never copied to a temporary file.
Server-safe.

``fork_map`` spreads per-ciphertext SEAL work over forked copies of the calling
process: ``tenseal.sealapi`` holds the GIL, so threads do not run SEAL calls side
by side.  A forked child inherits what it needs (the context, a site's secret
key, parsed ciphertexts) in memory, as the caller holds it; nothing is pickled
or written to a file, and only the child's result (ciphertext bytes or decoded
values) comes back, through a pipe.  The children live only for that call.
"""

from __future__ import annotations

import gc
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

WORKERS_ENV = "FLAME_HE_WORKERS"
"""Environment variable: processes for the HE work of one call (default 1: no fork)."""
MIN_ITEMS_PER_WORKER = 32
"""Fewer ciphertexts than this per process and forking costs more than it saves."""


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


def default_workers() -> int:
    """Processes for HE work: ``FLAME_HE_WORKERS`` if set, else 1 (no fork).

    The split is opt-in: on 2 cores, idle or busy, it made a round slower
    (docs/benchmarks.md, "One federated round").
    """
    raw = os.environ.get(WORKERS_ENV, "").strip()
    if not raw:
        return 1
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{WORKERS_ENV}={raw!r} is not a whole number of processes") from None
    if value < 1:
        raise ValueError(f"{WORKERS_ENV}={raw!r}: at least 1 process is needed")
    return value


def _read_all(fd: int) -> bytes:
    parts = []
    while part := os.read(fd, 1 << 20):
        parts.append(part)
    return b"".join(parts)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _run_child(work: Callable[[int, int], bytes], lo: int, hi: int, fd: int) -> None:
    """In the forked child: run one block, send a zero byte and the result (or a one byte and the error), exit."""
    status = 1
    try:
        gc.disable()  # no collection of the parent's garbage here: finalisers (temporary files...) are the parent's
        try:
            data, status = b"\0" + work(lo, hi), 0
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises
            data = b"\1" + f"{type(exc).__name__}: {exc}".encode(errors="replace")
        _write_all(fd, data)
    finally:
        os._exit(status)  # no atexit handlers, no flushing of the parent's buffers


def fork_map(work: Callable[[int, int], bytes], n_items: int, workers: int | None = None, *,
             min_per_worker: int | None = None) -> list[bytes]:
    """``work(lo, hi)`` over contiguous blocks of ``range(n_items)``, the first block here, the others in forked
    children; the results in block order.  One block (no fork) when ``workers`` is 1, the items are few, or the OS
    cannot fork.  A child's failure is raised here as RuntimeError with its message.
    ``min_per_worker`` defaults to ``MIN_ITEMS_PER_WORKER``.
    """
    wanted = default_workers() if workers is None else workers
    if wanted < 1:
        raise ValueError(f"workers must be >= 1, got {wanted}")
    per_worker = MIN_ITEMS_PER_WORKER if min_per_worker is None else min_per_worker
    n_blocks = max(1, min(wanted, n_items // max(1, per_worker)))
    if n_blocks == 1 or not hasattr(os, "fork"):
        return [work(0, n_items)]
    bounds = [n_items * i // n_blocks for i in range(n_blocks + 1)]
    children: list[tuple[int, int]] = []
    try:
        for i in range(1, n_blocks):
            read_fd, write_fd = os.pipe()
            with warnings.catch_warnings():  # Python 3.12+ warns about forking with threads; the child runs no
                warnings.simplefilter("ignore", DeprecationWarning)  # thread's code, only `work`, then exits
                pid = os.fork()
            if pid == 0:  # pragma: no cover - runs in the child, which never returns
                os.close(read_fd)
                _run_child(work, bounds[i], bounds[i + 1], write_fd)
            os.close(write_fd)
            children.append((pid, read_fd))
        results = [work(bounds[0], bounds[1])]
        for i, (_, read_fd) in enumerate(children, start=1):
            data = _read_all(read_fd)
            if data[:1] != b"\0":
                detail = data[1:].decode(errors="replace") or "it ended without a result"
                raise RuntimeError(f"HE worker for items {bounds[i]}-{bounds[i + 1] - 1} failed: {detail}")
            results.append(data[1:])
        return results
    finally:
        for pid, read_fd in children:
            os.close(read_fd)  # a child still writing gets EPIPE and exits
            os.waitpid(pid, 0)
