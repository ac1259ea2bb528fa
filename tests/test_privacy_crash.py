"""Crash safety: a site process killed (SIGKILL) at random moments never leaves less spend than it released.

One helper process imports the package and Opacus once (torch takes seconds to
import), then forks a writer per iteration.  The writer opens the site's ledger
and records releases in a loop, writing ``released k`` (one os.write) only after
``append`` returned, i.e. at the moment the update would be allowed to leave.  The
test kills the writer with SIGKILL after a random, seeded delay, then opens the
ledger: it must verify, and hold at least every release the writer reported (at
most one more: the one written but not yet reported when the kill came).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
from crash_harness import killed_writers

from flame_private.privacy.ledger import Ledger

SITE = "site-a"
ITERATIONS = 40
SEED = 20251130

HELPER = r"""
import os, sys
from flame_private.privacy.accounting import epsilon_for
from flame_private.privacy.ledger import Ledger, PlannedSpend

epsilon_for([(1.0, 0.05, 1)], 1e-5, "rdp")  # import Opacus before forking
state = sys.argv[1]
print("helper ready", flush=True)
for command in sys.stdin:
    run = command.split()[1]
    pid = os.fork()
    if pid == 0:
        try:
            ledger = Ledger.open(state, "site-a")
            k = 0
            while True:
                k += 1
                spend = PlannedSpend(run_id="crash-" + run, round=k, task=("response", "evolution")[k % 2],
                                     noise_multiplier=1.0, sample_rate=0.05, steps=10, max_grad_norm=1.0)
                ledger.append(spend, delta=1e-5, accountant="rdp")
                os.write(1, f"released {k}\n".encode())  # one write: a kill cannot leave half a line
        except BaseException as exc:
            os.write(1, f"writer failed: {exc!r}\n".encode())
        finally:
            os._exit(1)
    print(f"writer {pid}", flush=True)
    os.waitpid(pid, 0)
    print("reaped", flush=True)
"""


@pytest.mark.slow  # about 15 s
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork and SIGKILL")
def test_sigkill_at_random_moments_never_leaves_less_spend_than_was_released(tmp_path: Path) -> None:
    state = tmp_path / "state"
    Ledger.initialise(state, SITE)  # onboarding
    released_total, entries_before = 0, 0
    kills = killed_writers(HELPER, state, tmp_path / "helper.stderr", ITERATIONS, SEED, 0.25, reported="released ")
    with contextlib.closing(kills):
        for i, released in enumerate(kills):
            ledger = Ledger.open(state, SITE)  # verifies the chain and the head; repairs what a crash leaves
            assert len(ledger) >= entries_before + released, f"iteration {i}: released spend lost"
            assert len(ledger) <= entries_before + released + 1, f"iteration {i}: more than one unreported entry"
            released_total += released
            entries_before = len(ledger)
    final = Ledger.open(state, SITE, recompute="all")
    # Not vacuous: releases did happen and were interrupted (how many depends on the machine's speed).
    assert len(final) >= released_total > 0
