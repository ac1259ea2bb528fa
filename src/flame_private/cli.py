"""The ``flame`` command.  Thin: parse arguments, call the library, print results."""

from __future__ import annotations

import logging
import os
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from flame_private import __version__
from flame_private.attacks.cli import attack_app
from flame_private.cli_common import LayoutChoice, fail, load, metric_text, refusals, value
from flame_private.config import (
    CohortConfig,
    DataConfig,
    DPConfig,
    FederationConfig,
    HEConfig,
    ModelConfig,
    SiteConfig,
    StrictModel,
)
from flame_private.data.dicom.cli import export_command, import_command
from flame_private.federation.site.approved_apps_cli import approve_app, approved_apps, revoke_app, write_launcher
from flame_private.privacy.cli import budget_app
from flame_private.records.audit_cli import audit as audit_command
from flame_private.reports.cli import report_app
from flame_private.secure.site.cli import keys_app
from flame_private.site_init import site_init_command
from flame_private.site_state import init_state_command
from flame_private.study_cli import study as study_command
from flame_private.train_cli import predict, train_app

app = typer.Typer(help="flame-private: privacy-first federated learning for glioblastoma radiotherapy.",
                  no_args_is_help=True, add_completion=False)
cohort_app = typer.Typer(help="Synthetic multi-centre glioblastoma cohort.", no_args_is_help=True)
data_app = typer.Typer(help="Import, check and load a site's scans.", no_args_is_help=True)
config_app = typer.Typer(help="Validate configuration files.", no_args_is_help=True)
app.add_typer(cohort_app, name="cohort")
app.add_typer(data_app, name="data")
app.add_typer(config_app, name="config")
app.add_typer(keys_app, name="keys")
app.add_typer(budget_app, name="budget")
app.add_typer(report_app, name="report")
app.add_typer(attack_app, name="attack")
site_app = typer.Typer(help="Set up a new site and pin the apps it runs (IT team and DPO).", no_args_is_help=True)
app.add_typer(site_app, name="site")
site_app.command("init")(site_init_command)
site_app.command("approve-app")(approve_app)
site_app.command("revoke-app")(revoke_app)
site_app.command("approved-apps")(approved_apps)
site_app.command("write-launcher")(write_launcher)
site_app.command("init-state")(init_state_command)
data_app.command("import")(import_command)
data_app.command("export-dicom")(export_command)

console = Console(soft_wrap=True)  # paths and digests stay on one line, whatever the terminal width
CONFIG_KINDS: dict[str, type[StrictModel]] = {
    "cohort": CohortConfig,
    "site": SiteConfig,
    "federation": FederationConfig,
    "model": ModelConfig,
    "dp": DPConfig,
    "he": HEConfig,
    "data": DataConfig,
}


class ConfigKind(StrEnum):
    """What a configuration file configures (the keys of CONFIG_KINDS; a test keeps them equal)."""

    cohort = "cohort"
    site = "site"
    federation = "federation"
    model = "model"
    dp = "dp"
    he = "he"
    data = "data"


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug messages.")] = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(message)s",
                        handlers=[RichHandler(console=Console(stderr=True), show_path=False)])


def _default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


def _synthesise(cfg: CohortConfig, out: Path, workers: int, overwrite: bool) -> dict:
    from flame_private.cohort.writer import CohortExistsError, synthesise_cohort

    total = sum(s.n_patients for s in cfg.sites)
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(f"simulating {cfg.name} ({cfg.grid}^3)", total=total)
        try:
            return synthesise_cohort(cfg, out, workers=workers, overwrite=overwrite,
                                     on_patient=lambda _r: progress.advance(task))
        except CohortExistsError as exc:
            raise fail(f"{exc}; use --overwrite", exc.exit_code) from None


def _print_cohort_summary(summary: dict, out: Path) -> None:
    table = Table(title=f"cohort '{summary['name']}' in {out}")
    for col in ("site", "patients", "responders", "photon", "proton", "carbon", "pseudoprog.", "radionecrosis"):
        table.add_column(col, justify="right" if col != "site" else "left")
    for s in summary["sites"]:
        t = s["treatments"]
        table.add_row(s["site_id"], str(s["patients"]), str(s["responders"]), str(t["photon"]), str(t["proton"]),
                      str(t["carbon"]), str(s["pseudoprogression"]), str(s["radionecrosis"]))
    console.print(table)
    console.print(f"site folders: {', '.join(str(out / s['site_id']) for s in summary['sites'])}")
    console.print(f"counterfactual truth (never read by training): {out / 'truth'}")
    console.print(f"took {summary['seconds']:.1f} s")


@cohort_app.command("synth")
def cohort_synth(
    config: Annotated[Path, typer.Option("--config", "-c", help="Cohort YAML (see configs/cohort/).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    workers: Annotated[int, typer.Option(help="Worker processes (results do not depend on it).")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output folder.")] = False,
) -> None:
    """Simulate a synthetic multi-centre cohort and write it as NIfTI with manifests."""
    cfg = load(config, CohortConfig)
    summary = _synthesise(cfg, out, workers or _default_workers(), overwrite)
    _print_cohort_summary(summary, out)


@cohort_app.command("figure")
def cohort_figure(
    cohort: Annotated[Path, typer.Argument(help="A cohort folder written by 'flame cohort synth'.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG to write.")] = Path("cohort.png"),
    site_id: Annotated[Optional[str], typer.Option(help="Site to show (default: one that gives carbon).")] = None,
    patients: Annotated[int, typer.Option(help="How many patients (rows).")] = 3,
) -> None:
    """Plot baseline and first-evaluation slices of a few patients under each modality."""
    from flame_private.cohort.figure import plot_patients

    if not (cohort / "truth" / "counterfactuals.json").is_file():
        raise fail(f"{cohort}: not a synthetic cohort folder (no truth/counterfactuals.json)")
    console.print(f"wrote {plot_patients(cohort, out, site_id, patients)}")


@data_app.command("check")
def data_check(
    directory: Annotated[Path, typer.Argument(help="A site's data folder.")],
    layout: Annotated[Optional[LayoutChoice], typer.Option(
        "--layout", help="The folder's layout; detected when omitted.", show_default=False)] = None,
    site_id: Annotated[Optional[str], typer.Option(help="Site name to report (default: from the folder).")] = None,
    quick: Annotated[bool, typer.Option(help="Headers only: fast, but misses corrupt or NaN data.")] = False,
) -> None:
    """Validate every case of a site's folder and print a table; exit 1 if any case is invalid."""
    from flame_private.data.checks import check_site, render_check_table

    if not directory.is_dir():
        raise fail(f"{directory}: not a folder")
    report = check_site(directory, layout=value(layout), site_id=site_id, full=not quick)
    console.print(render_check_table(report))
    if not report.ok:
        raise typer.Exit(1)


@config_app.command("validate")
def config_validate(
    path: Annotated[Path, typer.Argument(help="YAML file to validate.")],
    kind: Annotated[ConfigKind, typer.Option("--kind", help="What the file configures.")]
    = ConfigKind.cohort,
) -> None:
    """Check a configuration file; errors name the file and the field."""
    load(path, CONFIG_KINDS[kind.value])
    console.print(f"{path}: valid {kind.value} config")


@app.command("demo")
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Where the demo run and its configs go.")]
    = Path("runs/demo"),
    workers: Annotated[int, typer.Option(help="Worker processes for the cohort.")] = 0,
    attacks: Annotated[bool, typer.Option("--attacks/--no-attacks", help=(
        "Also run the four simulated attacks (about 6 min more) and put their results in the reports."))] = False,
) -> None:
    """The embedded default: synthetic 4-site cohort, key ceremony, federation, exports, audits, reports."""
    from flame_private.demo import run_demo

    t0 = time.perf_counter()
    with Progress(TextColumn("[bold]{task.description}"), TimeElapsedColumn(), console=console) as progress:
        current: dict[str, object] = {}

        def step(name: str, detail: str = "") -> None:
            if "task" in current:
                progress.update(current["task"], completed=1, total=1)  # type: ignore[arg-type]
            current["task"] = progress.add_task(f"{name}: {detail}", total=None)

        with refusals():
            result = run_demo(out, workers, progress=step, attacks=attacks)
        progress.update(current["task"], completed=1, total=1)  # type: ignore[arg-type]
    table = Table(title=f"demo run {result.run_id}: per-site privacy and audit")
    for col in ("site", "epsilon spent", "cap", "delta", "releases", "declined", "audit", "report"):
        table.add_column(col, justify="left" if col == "site" else "right")
    for r in result.sites:
        table.add_row(r["site_id"], f"{r['epsilon']:.2f}", f"{r['cap']:.2f}", f"{r['delta']:g}",
                      str(r["releases"]), str(r["declined"]),
                      "[green]ok[/]" if r["audit_ok"] else f"[red]FAILED: {', '.join(r['audit_failures'])}[/]",
                      {"ok": "[green]ok[/]", "attention": "[yellow]attention[/]"}.get(r.get("report", ""),
                                                                                      "[red]PROBLEM[/]"))
    console.print(table)
    metrics = Table(title="global models, as decrypted by site-a")
    metrics.add_column("model")
    metrics.add_column("evaluated on")
    metrics.add_column("metrics")
    for task, both in result.metrics.items():
        keys = ("auc", "balanced_accuracy", "brier", "n") if task == "response" else (
            "dice_whole_tumour", "dice_enhancing", "enhancing_volume_error_ml", "rano_class_agreement", "n")
        if task == "segmentation":
            keys = ("dice_whole_tumour", "dice_enhancing", "dice_necrotic_core", "n")
        local = both.get("local_not_released", {})
        rows = [("site-a's test patients (not released)", local.get("test", {}))]
        rows += [(f"  baseline '{name.replace('_', ' ')}', same patients", b)
                 for name, b in local.get("test_baselines", {}).items()]
        rows += [("all sites' validation patients (DP release, noise std "
                  f"{both.get('federated_dp', {}).get('dp_noise_std_per_sum', 0):.1f} per sum)",
                  both.get("federated_dp", {}))]
        for label, m in rows:
            metrics.add_row(task, label, ", ".join(metric_text(m, k) for k in keys))
    console.print(metrics)
    console.print(f"cohort: {out / 'cohort'}   exports: {out / 'state' / '<site>' / 'exports' / result.run_id}")
    console.print(f"server checkpoints: {out / 'federation' / 'server'}   summary: {out / 'demo-summary.json'}")
    console.print(f"reports for ethics committees and DPOs: {out / 'reports'} (ethics-<site>-<lang>.pdf/.html per "
                  "site, consortium-<lang>.pdf/.html; English and French; see docs/reports.md)")
    console.print("times: " + ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items())
                  + f", total {time.perf_counter() - t0:.0f} s")
    if not all(r["audit_ok"] and r.get("report") != "fail" for r in result.sites):
        raise typer.Exit(1)


app.add_typer(train_app, name="train")
app.command("predict")(predict)
app.command("audit")(audit_command)
app.command("study")(study_command)


@app.command("version")
def version() -> None:
    """Print the installed version."""
    console.print(__version__)


if __name__ == "__main__":  # pragma: no cover
    app()
