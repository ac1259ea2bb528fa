"""A small federation on the test cohort, run through the in-process Grid, for the federation tests.

``LocalGrid`` (``flame_private.federation.inprocess``) delivers each message to the
real ClientApp in this process, so the server code, the strategy and the site code
run unchanged; a test can drop a site's reply (a site killed mid-round or too
late) or tamper with it in flight.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from flame_private.federation.inprocess import LocalGrid, Tamper
from flame_private.federation.server.server_app import ServerSettings, run_server
from flame_private.site_state import init_state

__all__ = ["LocalGrid", "Tamper", "make_federation", "run"]


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
reply_timeout_s: 300  # generous: a loaded 2-core CI machine must not turn slow sites into missing ones
data: {{grid: 24, val_fraction: 0.25, test_fraction: 0.0}}
model: {{response_channels: [4, 8], evolution_channels: [4, 8], segmentation_channels: [4, 8], norm_groups: 2}}
tasks: {tasks}
he: {{max_patients: 16}}  # public bound on the test cohort's patients (4 sites x 4 at most): the packing's C
"""


def make_federation(root: Path, cohort_dir: Path, ceremony_dir: Path, n_sites: int = 4, rounds: int = 1,
                    caps: dict[str, float] | None = None,
                    tasks: str = "[response, evolution]") -> tuple[dict[str, Path], Path]:
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
                        f"privacy_policy: {folder / 'policy.yaml'}\nsecret_context: {secret}\n"
                        f"he_params: {ceremony_dir / 'server-params.ctx'}\n")
        init_state(folder / "state", sid)  # onboarding: a site trains only from an initialised state
        sites[sid] = yaml
    fed = root / "federation.yaml"
    fed.write_text(FEDERATION.format(rounds=rounds, tasks=tasks))
    return sites, fed


def run(grid: LocalGrid, fed: Path, ceremony_dir: Path, run_dir: Path, run_id: str = "run-1") -> dict:
    settings = ServerSettings(federation_config=fed, params_context=ceremony_dir / "server-params.ctx",
                              run_dir=run_dir, run_id=run_id, expected_sites=0, node_wait_s=1)
    return run_server(grid, settings)
