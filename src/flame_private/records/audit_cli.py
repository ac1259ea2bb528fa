"""``flame audit``: the DPO's view of everything that left a site.  Thin: load, audit, print.

Wire into the main app with ``app.command("audit")(audit)``.  Read-only: nothing
on disk is changed, and the site's secret key is never read.  Exit status: 0 when
every check passed (warnings allowed), 1 when any failed, 3 when the site YAML or the
anchor given cannot be read, or the new anchor cannot be saved (docs/cli.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from flame_private.cli_common import fail, load, refusals
from flame_private.config import SITE_YAML_HELP, SiteConfig
from flame_private.records.anchor import AnchorError, load_anchor, save_anchor
from flame_private.records.audit import AuditReport, anchor_of, audit_site

_STYLE = {"pass": "[green]pass[/]", "warning": "[yellow]warning[/]", "fail": "[bold red]FAIL[/]"}


def audit(
    site: Annotated[Path, typer.Option("--site", "-s", help=SITE_YAML_HELP)],
    he_params: Annotated[Optional[Path], typer.Option(
        "--he-params", help="The key ceremony's params-only context (server-params.ctx): the agreed HE parameters. "
                         "Default: he_params in the site YAML; with neither, the HE parameters check fails.")
    ] = None,
    json_out: Annotated[Optional[Path], typer.Option(
        "--json-out", "--json", help="Also write the full report as JSON to this file.")] = None,
    anchor: Annotated[Optional[Path], typer.Option(
        "--anchor", help="The anchor saved at the last audit (--save-anchor): fail unless today's privacy ledger "
                         "and egress log extend the chain heads certified then.")] = None,
    save: Annotated[Optional[Path], typer.Option(
        "--save-anchor", help="If the audit passes, write today's two chain heads to this new file (JSON), to "
                              "give as --anchor next time. Never overwrites.")] = None,
) -> None:
    """Verify everything the site sent: egress log, outbox payloads, ciphertexts, ledger agreement, code identity."""
    out = Console(highlight=False)
    site_cfg = load(site, SiteConfig)
    with refusals():
        anchored = load_anchor(anchor) if anchor is not None else None
    report = audit_site(site_cfg, he_params, anchor=anchored)
    _print(out, report)
    if json_out is not None:
        json_out.write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
        out.print(f"JSON report written to {json_out}")
    if not report.ok:
        names = ", ".join(dict.fromkeys(c.name for c in report.failures()))
        out.print(f"[bold red]AUDIT FAILED[/]: {len(report.failures())} check(s) failed ({names}). "
                  "See docs/dpo-guide.md, 'When a check fails'.")
        if save is not None:
            out.print(f"no anchor written to {save}: only a passed audit certifies the chain heads")
        raise typer.Exit(1)
    out.print(f"[green]audit passed[/] ({len(report.warnings())} warning(s)).")
    if save is not None:
        try:
            save_anchor(anchor_of(report), save)
        except AnchorError as exc:
            raise fail(f"anchor not written: {exc}", exc.exit_code) from None
        out.print(f"anchor written to {save}: keep it with this audit's records; give it as --anchor next time")


def _yes_no(value: bool | None) -> str:
    return "[dim]nothing to check[/]" if value is None else "[green]yes[/]" if value else "[bold red]NO[/]"


def _print(out: Console, report: AuditReport) -> None:
    summary = Table(title=f"site {report.site_id}: what left the site ({report.state_dir})", show_header=False)
    summary.add_column("", style="bold")
    summary.add_column("")
    for kind, n in report.messages_by_kind.items():
        summary.add_row(f"messages: {kind}", f"{n} ({report.bytes_by_kind[kind]:,} bytes)")
    summary.add_row("total bytes sent", f"{report.total_bytes:,}")
    summary.add_row("all updates and metrics encrypted", _yes_no(report.all_ciphertexts))
    summary.add_row("HE fingerprint", report.he_fingerprint or "[red]unknown[/]")
    for label, head in (("egress log head", report.egress_head), ("privacy ledger head", report.ledger_head)):
        summary.add_row(label, f"{head.count} entries, {head.hash}" if head else "[bold red]does not verify[/]")
    if report.epsilon_cap is not None and report.epsilon_spent is not None:
        summary.add_row("epsilon spent / cap", f"{report.epsilon_spent:.3f} / {report.epsilon_cap:.2f} "
                                               f"(remaining {max(0.0, report.epsilon_cap - report.epsilon_spent):.3f})")
    summary.add_row("policy", report.policy or "-")
    if report.policy_sha256:
        summary.add_row("policy file sha256", report.policy_sha256)
    if report.anchor:
        summary.add_row("anchor checked", report.anchor)
    out.print(summary)

    if report.policy_history:
        caps = Table(title="cap history: the policy each ledger entry recorded")
        for col in ("entries", "policy sha256", "cap", "approval reference"):
            caps.add_column(col, overflow="fold")
        for use in report.policy_history:
            p = use.policy
            caps.add_row(f"{use.first_seq}-{use.last_seq} ({use.entries})",
                         (p.policy_sha256 or "-")[:12] if p else "[dim]not recorded (older entries)[/]",
                         f"{p.epsilon_cap:.2f}" if p else "-", p.approval_reference if p else "-")
        out.print(caps)

    checks = Table(title="checks")
    checks.add_column("result")
    checks.add_column("check")
    checks.add_column("detail", overflow="fold")
    for c in report.checks:
        checks.add_row(_STYLE[c.severity], c.name, c.detail)
    out.print(checks)

    if report.app_hashes:
        apps = Table(title="code identity (app hashes): compare with the approved release")
        for col in ("app hash", "messages", "seq", "first (UTC)", "last (UTC)", "installed here"):
            apps.add_column(col, overflow="fold")
        for a in report.app_hashes:
            apps.add_row(a.app_hash, str(a.messages), f"{a.first_seq}-{a.last_seq}", a.first_time[:19],
                         a.last_time[:19], "yes" if a.installed else "no")
        out.print(apps)
