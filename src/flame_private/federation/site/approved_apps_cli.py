"""``flame site approve-app | revoke-app | approved-apps | write-launcher``: the DPO pins the app bundles the site
runs, and the IT team installs the launcher that enforces it.  Thin.

Exit status (docs/cli.md): 0 done, 1 refused (not a FAB, already approved, nothing to
revoke, a log that does not verify), 3 the site YAML cannot be read.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from flame_private.cli_common import load, refusals
from flame_private.config import SiteConfig
from flame_private.records.approved_apps import (
    ApprovalEntry,
    ApprovedApps,
    approve_fab,
    revoke_fab,
)

SiteOpt = Annotated[Path, typer.Option("--site", "-s", help="The site's YAML; the approvals live in its state_dir.")]
ByOpt = Annotated[str, typer.Option("--by", help="Who decides (the DPO's name and role), recorded with the entry.")]
NoteOpt = Annotated[Optional[str], typer.Option("--note", help="The approval's reference, or why it is revoked.")]


def _decide(site: Path, decide: Callable[..., ApprovalEntry], *args: Any) -> tuple[SiteConfig, ApprovalEntry]:
    """Run an approve/revoke decision for the site's approved-apps log; exit 1 with the reason on a refusal."""
    cfg = load(site, SiteConfig)
    with refusals():
        return cfg, decide(cfg.state_dir, cfg.site_id, *args)


def approve_app(
    fab: Annotated[Path, typer.Argument(help="The built app bundle (.fab, from `flwr build` on the approved "
                                             "release).")],
    site: SiteOpt,
    by: ByOpt,
    note: NoteOpt = None,
) -> None:
    """Approve a built FAB for this site: its sha256, name and version, who and when, in the approved-apps log."""
    cfg, entry = _decide(site, approve_fab, fab, by, note)
    typer.echo(f"approved {entry.publisher}/{entry.name} {entry.version}\n  sha256 {entry.fab_sha256}\n"
               f"  by {entry.decided_by}, {entry.time} (entry {entry.seq} of {cfg.state_dir / 'approved_apps.jsonl'})")


def revoke_app(
    sha256: Annotated[str, typer.Argument(help="The FAB hash to withdraw (see `flame site approved-apps`).")],
    site: SiteOpt,
    by: ByOpt,
    note: NoteOpt = None,
) -> None:
    """Withdraw an approval: the site's launcher refuses that FAB from its next message on."""
    _, entry = _decide(site, revoke_fab, sha256, by, note)
    typer.echo(f"revoked {entry.publisher}/{entry.name} {entry.version} (sha256 {entry.fab_sha256}) by "
               f"{entry.decided_by}, {entry.time}")


def approved_apps(site: SiteOpt) -> None:
    """List the FABs this site runs now (read-only; the log is verified first)."""
    cfg = load(site, SiteConfig)
    with refusals():
        apps = ApprovedApps.open(cfg.state_dir, cfg.site_id, readonly=True)
    current = apps.current()
    table = Table(title=f"site {cfg.site_id}: approved apps ({apps.path}, {len(apps)} entries, head "
                        f"{apps.head_hash[:16]}...)")
    for col in ("app", "version", "FAB sha256", "approved by", "when", "note"):
        table.add_column(col, overflow="fold")
    for e in current.values():
        table.add_row(f"{e.publisher}/{e.name}", e.version, e.fab_sha256, e.decided_by, e.time, e.note or "")
    Console(highlight=False).print(table)
    if not current:
        typer.echo("no app approved: the site's launcher refuses every app bundle")


def write_launcher(
    bin_dir: Annotated[Path, typer.Argument(help="The folder to create and put first on the site's "
                                                 "flower-superexec PATH.")],
    site: SiteOpt,
) -> None:
    """Write the site's launcher: its flwr-clientapp runs only approved FABs; every other task command refuses."""
    from flame_private.federation.site.app_launcher import write_launcher_bin

    load(site, SiteConfig)
    written = write_launcher_bin(bin_dir, site)
    typer.echo(f"wrote {len(written)} command(s) in {bin_dir.absolute()}; start the site's superexec with\n"
               f"  PATH={bin_dir.absolute()}:$PATH flower-superexec --runtime-api-address <SuperNode's runtime API> "
               "...")
