"""Run a whole federation in Flower's simulation engine (Ray), on one machine.

Same ServerApp and ClientApp as a real deployment; each site is a virtual
SuperNode whose partition id picks its site config.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from flame_private.federation.server.server_app import ServerSettings, make_server_app
from flame_private.federation.site.client_app import make_client_app

log = logging.getLogger(__name__)


def simulate_federation(fed_yaml: Path, site_yamls: list[Path], params_context: Path, run_dir: Path, run_id: str,
                        cpus: int | None = None) -> dict[str, Any]:
    """Run the federation; returns the server's summary (rounds, contributors, refusals, exports)."""
    from flwr.simulation import run_simulation

    os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    cpus = cpus or max(1, min(os.cpu_count() or 1, len(site_yamls)))
    settings = ServerSettings(federation_config=fed_yaml, params_context=params_context, run_dir=run_dir,
                              run_id=run_id, expected_sites=len(site_yamls))
    run_dir.mkdir(parents=True, exist_ok=True)
    run_simulation(
        server_app=make_server_app(settings),
        client_app=make_client_app([Path(p) for p in site_yamls], fed_yaml),
        num_supernodes=len(site_yamls),
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                        "init_args": {"num_cpus": cpus, "include_dashboard": False, "log_to_driver": True}},
    )
    summary_path = run_dir / "server" / "summary.json"
    if not summary_path.is_file():
        raise RuntimeError(f"the federation did not complete: no {summary_path} (see the log above)")
    return json.loads(summary_path.read_text(encoding="utf-8"))
