"""Kill a writer process with SIGKILL at random moments, many times: shared by the crash-safety tests.

A helper process (its code given by the test) imports what it needs once, then
for each ``go`` line on its stdin forks a writer, prints ``writer <pid>``, waits
for it and prints ``reaped``.  The writer appends to a log in a loop and reports
each completed append on stdout.  This module kills each writer after a random,
seeded delay and tells the test how many appends the writer reported, so the
test can open its log and check that nothing reported was lost.
"""

from __future__ import annotations

import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path


class Lines:
    """The helper's stdout, read by a thread so that a read can time out."""

    def __init__(self, stream) -> None:  # noqa: ANN001
        self._q: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [self._q.put(line.rstrip("\n")) for line in stream], daemon=True).start()

    def until(self, prefix: str, timeout: float = 60.0) -> tuple[str, list[str]]:
        """Lines up to the first that starts with ``prefix``: (that line, the ones before it)."""
        before: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            line = self._q.get(timeout=max(0.01, deadline - time.monotonic()))
            if line.startswith(prefix):
                return line, before
            before.append(line)


def killed_writers(helper_code: str, state: Path, stderr: Path, iterations: int, seed: int, max_delay_s: float,
                   reported: str) -> Iterator[int]:
    """After each killed writer, yield how many lines starting with ``reported`` it printed.

    Fails the test if a writer reports ``writer failed``.  The helper is stopped
    when the iteration ends, however it ends.
    """
    rng = random.Random(seed)
    errors = stderr.open("w")
    helper = subprocess.Popen([sys.executable, "-c", helper_code, str(state)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=errors, text=True, bufsize=1)
    try:
        out = Lines(helper.stdout)
        out.until("helper ready", timeout=120)
        for i in range(iterations):
            helper.stdin.write(f"go {i}\n")  # type: ignore[union-attr]
            helper.stdin.flush()  # type: ignore[union-attr]
            line, early = out.until("writer ")
            time.sleep(rng.uniform(0.0, max_delay_s))
            os.kill(int(line.split()[1]), signal.SIGKILL)
            _, late = out.until("reaped")
            said = early + late
            assert not [s for s in said if s.startswith("writer failed")], said
            yield sum(s.startswith(reported) for s in said)
    finally:
        helper.kill()
        helper.wait()
        errors.close()
