"""A real deployment on loopback: one SuperLink (TLS + SuperNode authentication) and
three SuperNodes as separate processes, started by deploy/start-local.sh, the
flame-private apps submitted by deploy/run.sh (`flwr run`), everything stopped by
deploy/stop-local.sh (and, should that fail, by pid) whatever happens.

Tiny on purpose (3 sites x 4 patients, 24^3 grid, the response model, 2 rounds):
~3 min on 2 cores, most of it Flower starting one ClientApp process per message.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from federation_harness import make_federation
from flame_private.config import HEConfig
from flame_private.privacy import Ledger
from flame_private.secure.keys import key_ceremony

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
VENV_BIN = REPO / ".venv" / "bin"
REQUIRED = ["flower-superlink", "flower-supernode", "flower-superexec", "flwr-serverapp", "flwr-clientapp", "flwr"]
SUMMARY_TIMEOUT_S = 420


def _missing_tools() -> list[str]:
    missing = [exe for exe in REQUIRED if not (VENV_BIN / exe).exists()]
    missing += [tool for tool in ("openssl", "ssh-keygen", "bash") if shutil.which(tool) is None]
    return missing


def _free_ports(n: int) -> list[int]:
    """n ports free now on 127.0.0.1 (a small race with other processes is accepted)."""
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def _consecutive_free_ports(n: int) -> int:
    """A base port with base .. base+n-1 free (SuperNode Runtime API ports)."""
    for _ in range(50):
        base = _free_ports(1)[0]
        if base + n > 65535:
            continue
        try:
            socks = []
            for p in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no run of free ports on 127.0.0.1")


def _kill_recorded(pids_file: Path) -> None:
    """Last resort if stop-local.sh failed: SIGKILL the recorded processes and their children."""
    if not pids_file.is_file():
        return
    pids = [int(line.split()[-1]) for line in pids_file.read_text().splitlines() if line.strip()]
    family: list[int] = []

    def children(pid: int) -> list[int]:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False).stdout
        return [int(x) for x in out.split()]

    todo = list(pids)
    while todo:
        pid = todo.pop()
        family.append(pid)
        todo.extend(children(pid))
    for pid in family:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.fixture
def local_federation(tmp_path: Path, cohort_dir: Path):
    missing = _missing_tools()
    if missing:
        pytest.skip(f"a real deployment needs {', '.join(missing)} (not found)")
    ceremony = tmp_path / "ceremony"
    key_ceremony(HEConfig(), ceremony)
    sites, fed = make_federation(tmp_path / "sites", cohort_dir, ceremony, n_sites=3, rounds=2, tasks="[response]")
    # One ClientApp process per message, 3 sites on 2 cores: a train reply takes ~30 s here.
    fed.write_text(fed.read_text().replace("reply_timeout_s: 30", "reply_timeout_s: 240"))
    deploy_dir = tmp_path / "deploy"
    env = {**os.environ, "FLAME_DEPLOY_DIR": str(deploy_dir), "FLAME_LINK_PORT": str(_free_ports(1)[0]),
           "FLAME_NODE_PORT_BASE": str(_consecutive_free_ports(len(sites))), "VENV": str(REPO / ".venv")}
    env.pop("FLAME_TRUSTED_ENTITIES", None)
    try:
        start = subprocess.run([str(DEPLOY / "start-local.sh"), *map(str, sites.values())], env=env, cwd=REPO,
                               capture_output=True, text=True, timeout=240, check=False)
        assert start.returncode == 0, f"start-local.sh failed:\n{start.stdout}\n{start.stderr}"
        yield {"sites": sites, "fed": fed, "ceremony": ceremony, "env": env, "deploy": deploy_dir,
               "run_dir": tmp_path / "run"}
    finally:
        stop = subprocess.run([str(DEPLOY / "stop-local.sh")], env=env, cwd=REPO, capture_output=True, text=True,
                              timeout=60, check=False)
        if stop.returncode != 0:
            _kill_recorded(deploy_dir / "pids")
        if os.environ.get("FLAME_KEEP_DEPLOY_LOGS"):
            print(f"deployment logs under {deploy_dir}")


def test_real_deployment_runs_two_rounds_with_tls_and_node_auth(local_federation) -> None:
    f = local_federation
    t0 = time.monotonic()
    run_config = (f"federation-config='{f['fed']}' params-context='{f['ceremony'] / 'server-params.ctx'}' "
                  f"run-dir='{f['run_dir']}' run-id='deploy-test' expected-sites=3")
    submitted = subprocess.run([str(DEPLOY / "run.sh"), "--run-config", run_config, "--format", "json"],
                               env=f["env"], cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert submitted.returncode == 0, f"flwr run failed:\n{submitted.stdout}\n{submitted.stderr}"
    assert json.loads(submitted.stdout[submitted.stdout.index("{"):])["success"] is True

    summary_path = f["run_dir"] / "server" / "summary.json"
    deadline = time.monotonic() + SUMMARY_TIMEOUT_S
    while not summary_path.is_file() and time.monotonic() < deadline:
        time.sleep(2)
    logs = "\n".join(p.read_text(errors="replace")[-3000:] for p in sorted(f["deploy"].rglob("*.log")))
    assert summary_path.is_file(), f"no {summary_path} after {SUMMARY_TIMEOUT_S} s; logs:\n{logs}"
    summary = json.loads(summary_path.read_text())

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
