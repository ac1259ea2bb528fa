"""The server's checkpoint survives SIGKILL at any moment: it always resumes from one consistent round.

A writer process commits rounds in a loop (a model and its metric sums, each
named by its round, then ``state.json``) and prints ``committed k`` once
``commit`` returned.  It is killed after a random, seeded delay, many times.
After each kill the test opens the checkpoint as a restarted server would: it
must load, hold at least every round reported committed (and at most one more),
and every file it names must be whole and of the round it says is done.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import pytest
from crash_harness import killed_writers

from flame_private.federation.server.checkpoint import Checkpoint, checkpoint_bytes, read_checkpoint_file

ITERATIONS = 40
SEED = 20261130

HELPER = r"""
import hashlib, json, os, sys
from pathlib import Path
from flame_private.federation.server.checkpoint import Checkpoint

root = Path(sys.argv[1])
print("helper ready", flush=True)
for command in sys.stdin:
    pid = os.fork()
    if pid == 0:
        try:
            ckpt = Checkpoint(root)
            k = ckpt.last_round("response")
            while True:
                k += 1
                payloads = {kind: os.urandom(300_000) for kind in ("model", "metrics")}
                cts = {kind: (json.dumps({"round": k, "kind": "aggregate", "n_bytes": len(p),
                                          "payload_sha256": hashlib.sha256(p).hexdigest()}), p)
                       for kind, p in payloads.items()}
                ckpt.commit("response", k, {"contributors": ["a", "b", "c"]}, model=cts["model"],
                            metrics=cts["metrics"])
                os.write(1, f"committed {k}\n".encode())
        except BaseException as exc:
            os.write(1, f"writer failed: {exc!r}\n".encode())
        finally:
            os._exit(1)
    print(f"writer {pid}", flush=True)
    os.waitpid(pid, 0)
    print("reaped", flush=True)
"""


def _consistent(root: Path) -> int:
    """Open the checkpoint as a restarted server; check every file it names; return the round it resumes after."""
    ckpt = Checkpoint(root)
    done = ckpt.last_round("response")
    assert [r["round"] for r in ckpt.state["rounds"]] == list(range(1, done + 1))
    for ct in (ckpt.model("response"), ckpt.metrics("response")):
        if done == 0:
            assert ct is None
            continue
        assert ct is not None
        assert json.loads(ct[0])["round"] == done  # never a header or payload of another round
    return done


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork and SIGKILL")
def test_sigkill_at_random_moments_always_leaves_one_consistent_round(tmp_path: Path) -> None:
    root = tmp_path / "server"
    committed = 0
    kills = killed_writers(HELPER, root, tmp_path / "helper.stderr", ITERATIONS, SEED, 0.3, reported="committed ")
    with contextlib.closing(kills):
        for i, reported in enumerate(kills):
            done = _consistent(root)
            assert done >= committed + reported, f"iteration {i}: a committed round was lost"
            assert done <= committed + reported + 1, f"iteration {i}: more than one unreported round"
            committed = done
    assert committed > ITERATIONS  # not vacuous: rounds were committed between the kills
    # Reopening tidied what the crashes left: only the last committed round's files remain.
    assert sorted(p.name for p in root.iterdir()) == sorted(
        ["state.json", f"response-model.r{committed:05d}.ckpt", f"response-metrics.r{committed:05d}.ckpt"])


def test_a_checkpoint_file_whose_payload_does_not_match_its_header_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.ckpt"
    path.write_bytes(checkpoint_bytes(('{"n_bytes": 3, "payload_sha256": "00"}', b"abc")))
    with pytest.raises(ValueError, match="does not match its header"):
        read_checkpoint_file(path)


def test_a_checkpoint_from_before_atomic_rounds_is_refused_with_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text(json.dumps({"done": {"response": 2}, "rounds": []}))
    with pytest.raises(RuntimeError, match="start a new run id"):
        Checkpoint(tmp_path)
