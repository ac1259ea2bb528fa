"""A real federation on loopback for the deployment tests: deploy/start-local.sh (one SuperLink with TLS +
SuperNode authentication, one SuperNode per site, as separate processes), apps submitted with deploy/run.sh
(`flwr run`), everything stopped by deploy/stop-local.sh (and, should that fail, SIGKILL by recorded pid)
whatever happens.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from federation_harness import make_federation

from flame_private.config import HEConfig
from flame_private.secure.site.ceremony import key_ceremony

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
VENV_BIN = REPO / ".venv" / "bin"
REQUIRED = ["flower-superlink", "flower-supernode", "flower-superexec", "flwr-serverapp", "flwr-clientapp", "flwr"]
SUMMARY_TIMEOUT_S = 420


def missing_tools() -> list[str]:
    missing = [exe for exe in REQUIRED if not (VENV_BIN / exe).exists()]
    missing += [tool for tool in ("openssl", "ssh-keygen", "bash") if shutil.which(tool) is None]
    return missing


def _ephemeral_range() -> range:
    """The ports the OS hands to outgoing connections: a listening port chosen there can be taken by one of
    them (a SuperNode's own connection to the SuperLink) between the choice and the bind."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return range(low, high + 1)


def _all_free(ports: range) -> bool:
    socks = []
    try:
        for p in ports:
            s = socket.socket()
            socks.append(s)
            s.bind(("127.0.0.1", p))
        return True
    except OSError:
        return False
    finally:
        for s in socks:
            s.close()


def consecutive_free_ports(n: int) -> int:
    """A base port with base .. base+n-1 free now on 127.0.0.1, outside the ephemeral range, so that no
    outgoing connection of the federation itself can take one before its server binds it."""
    ephemeral = _ephemeral_range()
    candidates = [p for p in range(10000, 65536 - n) if p not in ephemeral and p + n - 1 not in ephemeral]
    rng = random.Random()  # a different run per test process: parallel runs on one machine rarely meet
    for _ in range(200):
        base = rng.choice(candidates)
        if _all_free(range(base, base + n)):
            return base
    raise RuntimeError("no run of free ports on 127.0.0.1 outside the ephemeral range")


def free_ports(n: int) -> list[int]:
    """n distinct ports free now on 127.0.0.1, outside the ephemeral range (see ``consecutive_free_ports``)."""
    ports: list[int] = []
    while len(ports) < n:
        port = consecutive_free_ports(1)
        if port not in ports:
            ports.append(port)
    return ports


def kill_recorded(pids_file: Path) -> None:
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


def prepare_sites(tmp_path: Path, cohort_dir: Path, rounds: int) -> dict:
    """3 sites x the test cohort, the response model only, and a key ceremony, under ``tmp_path``."""
    ceremony = tmp_path / "ceremony"
    key_ceremony(HEConfig(), ceremony)
    sites, fed = make_federation(tmp_path / "sites", cohort_dir, ceremony, n_sites=3, rounds=rounds,
                                 tasks="[response]")
    # One ClientApp process per message, 3 sites on 2 cores: a train reply takes ~30 s here.
    fed.write_text(fed.read_text().replace("reply_timeout_s: 30", "reply_timeout_s: 240"))
    return {"sites": sites, "fed": fed, "ceremony": ceremony}


@contextlib.contextmanager
def local_federation(tmp_path: Path, prepared: dict, **settings: str) -> Iterator[dict]:
    """deploy/start-local.sh on free ports for the ``prepared`` sites (``settings``: more environment, e.g.
    FLAME_APP_PINNING="1"); yields what the tests need; always stops everything."""
    missing = missing_tools()
    if missing:
        pytest.skip(f"a real deployment needs {', '.join(missing)} (not found)")
    sites = prepared["sites"]
    deploy_dir = tmp_path / "deploy"
    env = {**os.environ, "FLAME_DEPLOY_DIR": str(deploy_dir), "FLAME_LINK_PORT": str(free_ports(1)[0]),
           "FLAME_NODE_PORT_BASE": str(consecutive_free_ports(len(sites))), "VENV": str(REPO / ".venv")}
    env.pop("FLAME_TRUSTED_ENTITIES", None)
    env.pop("FLAME_APP_PINNING", None)
    env.pop("FLAME_APP", None)
    env.update(settings)
    try:
        start = subprocess.run([str(DEPLOY / "start-local.sh"), *map(str, sites.values())], env=env, cwd=REPO,
                               capture_output=True, text=True, timeout=240, check=False)
        assert start.returncode == 0, f"start-local.sh failed:\n{start.stdout}\n{start.stderr}"
        yield {**prepared, "env": env, "deploy": deploy_dir, "run_dir": tmp_path / "run"}
    finally:
        stop = subprocess.run([str(DEPLOY / "stop-local.sh")], env=env, cwd=REPO, capture_output=True, text=True,
                              timeout=60, check=False)
        if stop.returncode != 0:
            kill_recorded(deploy_dir / "pids")
        if os.environ.get("FLAME_KEEP_DEPLOY_LOGS"):
            print(f"deployment logs under {deploy_dir}")


def submit(f: dict, run_id: str, run_dir: Path, expected_sites: int = 3, **env: str) -> None:
    """deploy/run.sh with every path in the run config; asserts that `flwr run` accepted the run."""
    run_config = (f"federation-config='{f['fed']}' params-context='{f['ceremony'] / 'server-params.ctx'}' "
                  f"run-dir='{run_dir}' run-id='{run_id}' expected-sites={expected_sites}")
    submitted = subprocess.run([str(DEPLOY / "run.sh"), "--run-config", run_config, "--format", "json"],
                               env={**f["env"], **env}, cwd=REPO, capture_output=True, text=True, timeout=120,
                               check=False)
    assert submitted.returncode == 0, f"flwr run failed:\n{submitted.stdout}\n{submitted.stderr}"
    assert json.loads(submitted.stdout[submitted.stdout.index("{"):])["success"] is True


def wait_for_summary(f: dict, run_dir: Path, timeout_s: float = SUMMARY_TIMEOUT_S) -> dict:
    """The server's summary.json of the run writing to ``run_dir``; fails with the deployment's logs if late."""
    summary_path = run_dir / "server" / "summary.json"
    deadline = time.monotonic() + timeout_s
    while not summary_path.is_file() and time.monotonic() < deadline:
        time.sleep(2)
    logs = "\n".join(p.read_text(errors="replace")[-3000:] for p in sorted(f["deploy"].rglob("*.log")))
    assert summary_path.is_file(), f"no {summary_path} after {timeout_s} s; logs:\n{logs}"
    return json.loads(summary_path.read_text())
