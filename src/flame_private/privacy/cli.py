"""``flame budget``: show and verify a site's privacy ledger.  Thin: read, verify, print.

Both commands only read: a torn final line or a head one entry behind (what a crash
leaves) is reported, not repaired; the site's next training run repairs it.  Both
print the two chain heads (privacy ledger and egress log: count and hash) and the
cap's history (the policy each ledger entry recorded).  ``verify`` exits 1 on what
``flame audit`` fails on about the ledger: a broken or missing ledger, head, egress
log or state directory, and a policy changed after spending without a new approval.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from flame_private.cli_common import load
from flame_private.config import SITE_YAML_HELP, SiteConfig
from flame_private.privacy.accounting import epsilon_for
from flame_private.privacy.ledger import Ledger, LedgerError
from flame_private.privacy.policy import (
    PolicyError,
    PolicyStamp,
    PrivacyPolicy,
    check_policy_valid,
    load_policy,
    load_policy_with_sha,
)
from flame_private.privacy.policy_history import policy_findings, policy_history

budget_app = typer.Typer(help="A site's privacy budget: approved policy and hash-chained ledger.",
                         no_args_is_help=True)

SiteOption = Annotated[Path, typer.Option("--site", "-s", help=SITE_YAML_HELP)]


def _out() -> Console:
    return Console(highlight=False)


def _err() -> Console:
    return Console(stderr=True, highlight=False)


def _site(path: Path) -> SiteConfig:
    return load(path, SiteConfig)


def _policy(site: SiteConfig) -> tuple[PrivacyPolicy | None, str, bool]:
    """The policy, a one-line status (valid today, or why not), and whether it authorises spending today."""
    try:
        policy = load_policy(site.privacy_policy)
    except PolicyError as exc:
        return None, f"[red]no valid policy[/]: {exc}", False
    try:
        check_policy_valid(policy, site.site_id, date.today())
    except PolicyError as exc:
        return policy, f"[red]not valid today[/]: {exc}", False
    return policy, "[green]valid today[/]", True


def _open(site: SiteConfig, recompute: str) -> Ledger:
    try:
        return Ledger.open(site.state_dir, site.site_id, readonly=True, recompute=recompute)  # type: ignore[arg-type]
    except LedgerError as exc:
        _err().print(f"[bold red]ledger verification FAILED[/]: {exc}")
        _err().print("The site must not train until a person has examined the ledger (docs/privacy-accounting.md).")
        raise typer.Exit(exc.exit_code) from None


def _notices(ledger: Ledger) -> None:
    for note in ledger.notices:
        _out().print(f"[yellow]note:[/] {note}")


def _heads_and_history(site: SiteConfig, ledger: Ledger) -> bool:
    """Print both chain heads and the cap's history with what changed; True when something fails."""
    from flame_private.records.egress import EgressLog, EgressLogError

    out, failed = _out(), False
    out.print(f"privacy ledger head: {len(ledger)} entries, {ledger.head_hash}")
    try:
        egress = EgressLog.open(site.state_dir, site.site_id, readonly=True)
        out.print(f"egress log head: {len(egress)} entries, {egress.head_hash}")
    except EgressLogError as exc:
        out.print(f"[bold red]egress log head: does not verify[/]: {exc}")
        failed = True
    try:
        policy, sha = load_policy_with_sha(site.privacy_policy)
        current: PolicyStamp | None = PolicyStamp.of(policy, sha)
    except PolicyError:
        current = None  # said in the policy status line
    for use in policy_history(ledger.entries):
        out.print(f"cap history: {use.describe()}")
    for finding in policy_findings(ledger.entries, current):
        label = "[bold red]FAIL[/]" if finding.severity == "fail" else "[yellow]warning[/]"
        out.print(f"{label}: {finding.detail}")
        failed = failed or finding.severity == "fail"
    return failed


@budget_app.command("show")
def show(site_yaml: SiteOption) -> None:
    """Print the site's approved policy, every recorded release, and the total against the cap.

    Exit status: 0 when the policy is valid today and the ledger verifies; 1 when the policy
    is missing, malformed, another site's, not yet valid or expired (everything else is still
    printed: the site trains nothing until it is fixed), when the ledger does not verify or when
    the cap's history fails (the policy changed after spending under the same approval);
    3 when the site YAML cannot be read (docs/cli.md).
    """
    site = _site(site_yaml)
    policy, status, valid = _policy(site)
    out = _out()
    if policy is not None:
        out.print(f"[bold]{site.site_id}[/] policy {site.privacy_policy}: {policy.describe()}")
    out.print(f"policy status: {status}")
    ledger = _open(site, "last")
    _notices(ledger)
    table = Table(title=f"privacy ledger of {site.site_id}: {ledger.path}")
    for col in ("seq", "time (UTC)", "run", "round", "task", "sigma", "q", "steps", "C", "epsilon after", "hash"):
        table.add_column(col, justify="left" if col in ("time (UTC)", "run", "task", "hash") else "right")
    for e in ledger.entries:
        table.add_row(str(e.seq), e.time[:19].replace("T", " "), e.run_id, str(e.round), e.task,
                      f"{e.noise_multiplier:g}", f"{e.sample_rate:.4g}", str(e.steps), f"{e.max_grad_norm:g}",
                      f"{e.epsilon_after:.3f}", e.hash[:12])
    out.print(table)
    history_failed = _heads_and_history(site, ledger)
    if policy is None:
        total = ledger.epsilon()
        out.print(f"total epsilon: {total:.3f} (no valid policy to compare with)")
    else:
        total = epsilon_for(ledger.history(), policy.delta, policy.accountant)
        out.print(f"total epsilon: {total:.3f} of the approved cap {policy.epsilon_cap:.2f} "
                  f"(delta={policy.delta:g}, {policy.accountant.upper()}); "
                  f"remaining: {max(0.0, policy.epsilon_cap - total):.3f}; {len(ledger)} release(s)")
    if not valid:
        _err().print("[bold red]the privacy policy does not authorise training today[/]: the site declines every "
                     "round until it does (exit status 1)")
    if history_failed:
        _err().print("[bold red]the cap's history FAILED[/]: see above (docs/dpo-guide.md, 'When a check fails')")
    if not valid or history_failed:
        raise typer.Exit(1)


@budget_app.command("verify")
def verify(site_yaml: SiteOption) -> None:
    """Verify the hash chain, the head and every recorded epsilon; exit 1 with the reason on any break."""
    site = _site(site_yaml)
    ledger = _open(site, "all")
    _notices(ledger)
    out = _out()
    out.print(f"[green]ledger verified[/]: {ledger.path}: {len(ledger)} entries, hash chain intact, head agrees, "
              "every epsilon_after recomputed with Opacus")
    out.print(f"head count: {len(ledger)}")
    out.print(f"head hash: {ledger.head_hash}")
    failed = _heads_and_history(site, ledger)
    _, status, _ = _policy(site)
    out.print(f"policy {site.privacy_policy}: {status}")
    if failed:
        _err().print("[bold red]verification FAILED[/]: see above. The site must not train until a person has "
                     "examined it (docs/dpo-guide.md, 'When a check fails').")
        raise typer.Exit(1)
