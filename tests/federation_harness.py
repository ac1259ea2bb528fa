"""An in-process Flower Grid and a small federation on the test cohort, for the federation tests.

``LocalGrid`` delivers each message to the real ClientApp in this process, so the
server code, the strategy and the site code run unchanged; a test can drop a
site's reply (a site killed mid-round or too late) or tamper with it in flight.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from flwr.app import Context, Error, Message, RecordDict
from flwr.serverapp import Grid

from flame_private.federation.client_app import make_client_app
from flame_private.federation.server_app import ServerSettings, run_server

Tamper = Callable[[str, Message], Message | None]
"""(site_id, reply) -> the reply to deliver, or None to drop it."""


class LocalGrid(Grid):
    def __init__(self, site_yamls: dict[str, Path], fed_yaml: Path, tamper: Tamper | None = None) -> None:
        from flwr.supercore.task_identity import TaskIdentity

        TaskIdentity.run_id = 1  # what Flower's runtime sets before a ServerApp creates messages
        TaskIdentity.node_id = 0
        TaskIdentity.task_id = 1
        self.app = make_client_app()
        self.sites = {1000 + i: (sid, path) for i, (sid, path) in enumerate(site_yamls.items())}
        self.contexts = {node: Context(run_id=1, node_id=node, node_config={"site-config": str(path)},
                                       state=RecordDict(), run_config={"federation-config": str(fed_yaml)})
                         for node, (_, path) in self.sites.items()}
        self.tamper = tamper
        self.delivered: list[tuple[str, str]] = []

    def set_run(self, run) -> None:  # noqa: ANN001
        pass

    @property
    def run(self):  # noqa: ANN201
        raise NotImplementedError

    def create_message(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
        raise NotImplementedError

    def get_node_ids(self) -> list[int]:
        return list(self.sites)

    def push_messages(self, messages):  # noqa: ANN001, ANN201
        raise NotImplementedError

    def pull_messages(self, message_ids):  # noqa: ANN001, ANN201
        raise NotImplementedError

    def send_and_receive(self, messages, *, timeout=None) -> list[Message]:  # noqa: ANN001
        replies = []
        for msg in messages:
            node = msg.metadata.dst_node_id
            site_id = self.sites[node][0]
            try:
                reply = self.app(msg, self.contexts[node])
            except Exception as exc:  # noqa: BLE001 - a crashing site is an error reply, as in Flower
                reply = Message(Error(code=1, reason=f"{type(exc).__name__}: {exc}"), reply_to=msg)
            self.delivered.append((site_id, msg.metadata.message_type))
            if self.tamper is not None:
                reply = self.tamper(site_id, reply)
            if reply is not None:
                replies.append(reply)
        return replies


POLICY = """site_id: {site}
epsilon_cap: {cap}
delta: 1.0e-5
unit_of_privacy: patient
accountant: prv
approved_by: Test Committee
approval_reference: T-{site}
approved_on: 2025-01-01
expires_on: 2099-01-01
"""

FEDERATION = """run_name: test
seed: 3
rounds: {rounds}
batch_size: 2
min_sites: 3
reply_timeout_s: 30
data: {{grid: 24, val_fraction: 0.25, test_fraction: 0.0}}
model: {{response_channels: [4, 8], evolution_channels: [4, 8], norm_groups: 2}}
tasks: {tasks}
"""


def make_federation(root: Path, cohort_dir: Path, ceremony_dir: Path, n_sites: int = 4, rounds: int = 1,
                    caps: dict[str, float] | None = None, tasks: str = "[response, evolution]") -> tuple[dict[str, Path], Path]:
    """Site YAMLs (site-d reuses site-a's scans), policies, keys and a federation YAML under ``root``."""
    data = {"site-a": "site-a", "site-b": "site-b", "site-c": "site-c", "site-d": "site-a"}
    sites = {}
    for sid in list(data)[:n_sites]:
        folder = root / sid
        folder.mkdir(parents=True, exist_ok=True)
        secret = folder / "secret.ctx"
        shutil.copyfile(ceremony_dir / "site-secret.ctx", secret)
        os.chmod(secret, 0o600)
        (folder / "policy.yaml").write_text(POLICY.format(site=sid, cap=(caps or {}).get(sid, 100.0)))
        yaml = folder / "site.yaml"
        yaml.write_text(f"site_id: {sid}\ndata_dir: {cohort_dir / data[sid]}\nstate_dir: {folder / 'state'}\n"
                        f"privacy_policy: {folder / 'policy.yaml'}\nsecret_context: {secret}\n")
        sites[sid] = yaml
    fed = root / "federation.yaml"
    fed.write_text(FEDERATION.format(rounds=rounds, tasks=tasks))
    return sites, fed


def run(grid: LocalGrid, fed: Path, ceremony_dir: Path, run_dir: Path, run_id: str = "run-1") -> dict:
    settings = ServerSettings(federation_config=fed, params_context=ceremony_dir / "server-params.ctx",
                              run_dir=run_dir, run_id=run_id, expected_sites=0, node_wait_s=1)
    return run_server(grid, settings)
