"""A real deployment on loopback: one SuperLink (TLS + SuperNode authentication) and
three SuperNodes as separate processes, started by deploy/start-local.sh, the
flame-private apps submitted by deploy/run.sh (`flwr run`), everything stopped by
deploy/stop-local.sh (and, should that fail, by pid) whatever happens.

Tiny on purpose (3 sites x 4 patients, 24^3 grid, the response model, 2 rounds):
~3 min on 2 cores, most of it Flower starting one ClientApp process per message.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from deploy_harness import local_federation as start_federation
from deploy_harness import prepare_sites, submit, wait_for_summary

from flame_private.privacy import Ledger

pytestmark = pytest.mark.slow


@pytest.fixture
def local_federation(tmp_path: Path, cohort_dir: Path):
    with start_federation(tmp_path, prepare_sites(tmp_path, cohort_dir, rounds=2)) as f:
        yield f


def test_real_deployment_runs_two_rounds_with_tls_and_node_auth(local_federation) -> None:
    f = local_federation
    t0 = time.monotonic()
    submit(f, "deploy-test", f["run_dir"])
    summary = wait_for_summary(f, f["run_dir"])

    rounds = [r for r in summary["rounds"] if r["task"] == "response"]
    assert [r["round"] for r in rounds] == [1, 2]
    for r in rounds:
        assert sorted(r["contributors"]) == sorted(f["sites"]), r
        assert "refused" not in r
    assert summary["exports"]["response"] == {sid: "ok" for sid in f["sites"]}
    for sid, yaml in f["sites"].items():
        entries = Ledger.open(yaml.parent / "state", sid).entries
        # Two DP-SGD releases (one per round) and the DP release of the final metric sums
        # (sample rate 1, one step), each recorded before it left the site.
        training = [e for e in entries if e.sample_rate < 1.0]
        evaluation = [e for e in entries if e.sample_rate == 1.0]
        assert sorted((e.task, e.round) for e in training) == [("response", 1), ("response", 2)], sid
        assert [(e.task, e.round, e.steps) for e in evaluation] == [("response", 2, 1)], sid
    print(f"deployment run: {time.monotonic() - t0:.0f} s from `flwr run` to summary.json")
