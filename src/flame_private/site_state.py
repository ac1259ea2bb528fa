"""A site's state at onboarding: the empty privacy ledger, egress log and approved-apps log, each with its head.

Training refuses a site whose state directory, ledger, egress log or heads are
missing (``Ledger.open``, ``EgressLog.open``): deleting ``state/`` must not read as
"nothing spent yet".  So onboarding creates them explicitly, once: ``flame site
init`` for a new site folder, ``flame site init-state --site site.yaml`` for a site
configured by hand (and the demo, the simulation and the tests do the same).

Re-initialising the state of a site that trained would reset its record: that is
why nothing here overwrites a log, and why the DPO certifies the chain heads at each
audit (``flame audit --save-anchor`` / ``--anchor``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flame_private.cli_common import refusals
from flame_private.config import SiteConfig, load_config
from flame_private.errors import ExitCode, FlameError


class StateInitError(FlameError, ValueError):
    """The state cannot be initialised (it exists already, or cannot be written)."""

    exit_code = ExitCode.INPUT


def init_state(state_dir: Path | str, site_id: str) -> list[Path]:
    """Create what is missing of ``site_id``'s state in ``state_dir``; returns the logs created.

    Each log (privacy ledger, egress log, approved-apps log: nothing approved yet) that
    exists with its head is left as it is; one that does not is created empty with its
    head (count 0).  Refuses when all exist (nothing to do: the site is initialised)
    and a log found without its head.
    """
    from flame_private.privacy.ledger import Ledger, LedgerError
    from flame_private.records.approved_apps import ApprovedApps, ApprovedAppsError
    from flame_private.records.egress import EgressLog, EgressLogError

    state = Path(state_dir)
    logs = (Ledger, EgressLog, ApprovedApps)
    present = [cls for cls in logs if (state / f"{cls.stem}.jsonl").exists() and
               (state / f"{cls.stem}.head.json").exists()]
    if len(present) == len(logs):
        raise StateInitError(f"{state}: the state of site {site_id!r} is already initialised (privacy ledger, "
                             "egress log and approved-apps log with their heads); refusing to initialise it again")
    created = []
    for cls in logs:
        if cls in present:
            continue
        try:
            created.append(cls.initialise(state, site_id))
        except (LedgerError, EgressLogError, ApprovedAppsError) as exc:
            raise StateInitError(str(exc)) from None
    return created


def init_state_command(
    site: Annotated[Path, typer.Option("--site", "-s", help="The site's YAML (see configs/sites/).")],
) -> None:
    """Initialise the state of a NEW site: its empty privacy ledger, egress log and approved-apps log.

    Never for a site that has trained and lost its state: restore that from backup and tell the DPO.
    """
    with refusals():
        cfg = load_config(site, SiteConfig)
        created = init_state(cfg.state_dir, cfg.site_id)
    for path in created:
        typer.echo(f"created {path} (empty, head count 0)")
