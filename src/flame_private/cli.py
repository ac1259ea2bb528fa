"""The ``flame`` command.  Thin: parse arguments, call the library, print results."""

from __future__ import annotations

import logging
import os
import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from flame_private import __version__
from flame_private.attacks.cli import attack_app
from flame_private.cli_common import LayoutChoice, TaskChoice, fail, load, refusals, value
from flame_private.config import (
    SITE_YAML_HELP,
    CohortConfig,
    DataConfig,
    DPConfig,
    FederationConfig,
    HEConfig,
    ModelConfig,
    SiteConfig,
)
from flame_private.errors import ExitCode
from flame_private.federation.site.approved_apps_cli import approve_app, approved_apps, revoke_app, write_launcher
from flame_private.privacy.cli import budget_app
from flame_private.records.audit_cli import audit as audit_command
from flame_private.reports.cli import report_app
from flame_private.secure.site.cli import keys_app
from flame_private.site_init import site_init_command
from flame_private.site_state import init_state_command

app = typer.Typer(help="flame-private: privacy-first federated learning for glioblastoma radiotherapy.",
                  no_args_is_help=True, add_completion=False)
cohort_app = typer.Typer(help="Synthetic multi-centre glioblastoma cohort.", no_args_is_help=True)
data_app = typer.Typer(help="Check and load a site's scans.", no_args_is_help=True)
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

console = Console()
CONFIG_KINDS = {
    "cohort": CohortConfig,
    "site": SiteConfig,
    "federation": FederationConfig,
    "model": ModelConfig,
    "dp": DPConfig,
    "he": HEConfig,
    "data": DataConfig,
}
ConfigKind = Enum("ConfigKind", {k: k for k in CONFIG_KINDS}, type=str)  # type: ignore[misc]


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
    summary = _synthesise(cfg, out, workers or _default_workers(), overwrite)  # type: ignore[arg-type]
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
    layout: Annotated[Optional[LayoutChoice], typer.Option(  # type: ignore[valid-type]
        "--layout", help="The folder's layout; detected when omitted.", show_default=False)] = None,
    site_id: Annotated[Optional[str], typer.Option(help="Site name to report (default: from the folder).")] = None,
    quick: Annotated[bool, typer.Option(help="Headers only: fast, but misses corrupt or NaN data.")] = False,
) -> None:
    """Validate every case of a site's folder and print a table; exit 1 if any case is invalid."""
    from flame_private.data.checks import check_site, render_check_table

    if not directory.is_dir():
        raise fail(f"{directory}: not a folder")
    report = check_site(directory, layout=value(layout), site_id=site_id, full=not quick)  # type: ignore[arg-type]
    console.print(render_check_table(report))
    if not report.ok:
        raise typer.Exit(1)


@config_app.command("validate")
def config_validate(
    path: Annotated[Path, typer.Argument(help="YAML file to validate.")],
    kind: Annotated[ConfigKind, typer.Option("--kind", help="What the file configures.")]  # type: ignore[valid-type]
    = ConfigKind.cohort,  # type: ignore[attr-defined]
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
        local = both.get("local_not_released", {})
        rows = [("site-a's test patients (not released)", local.get("test", {}))]
        rows += [(f"  baseline '{name.replace('_', ' ')}', same patients", b)
                 for name, b in local.get("test_baselines", {}).items()]
        rows += [("all sites' validation patients (DP release, noise std "
                  f"{both.get('federated_dp', {}).get('dp_noise_std_per_sum', 0):.1f} per sum)",
                  both.get("federated_dp", {}))]
        for label, m in rows:
            metrics.add_row(task, label, ", ".join(_released(m, k) for k in keys))
    console.print(metrics)
    console.print(f"cohort: {out / 'cohort'}   exports: {out / 'state' / '<site>' / 'exports' / result.run_id}")
    console.print(f"server checkpoints: {out / 'federation' / 'server'}   summary: {out / 'demo-summary.json'}")
    console.print(f"reports for ethics committees and DPOs: {out / 'reports'} (ethics-<site>-<lang>.pdf/.html per "
                  "site, consortium-<lang>.pdf/.html; English and French; see docs/reports.md)")
    console.print("times: " + ", ".join(f"{k} {v:.0f} s" for k, v in result.seconds.items())
                  + f", total {time.perf_counter() - t0:.0f} s")
    if not all(r["audit_ok"] and r.get("report") != "fail" for r in result.sites):
        raise typer.Exit(1)


train_app = typer.Typer(help="Train the response or evolution model locally or pooled.", no_args_is_help=True)
app.add_typer(train_app, name="train")
TaskOption = Annotated[TaskChoice, typer.Option("--task", help="Which model to train.")]  # type: ignore[valid-type]
FED_CONFIG_HELP = ("Federation YAML: model, DP and training settings. Required: the consortium's file for a site "
                   "(docs/site-setup.md); configs/federation/demo.yaml in a source checkout for the demo.")
FederationOption = Annotated[Optional[Path], typer.Option("--federation", "-f", help=FED_CONFIG_HELP,
                                                          show_default=False)]


def _federation(federation: Optional[Path]) -> FederationConfig:
    """The federation config named by --federation; no default, since a site's DP spend depends on it."""
    if federation is None:
        raise fail("--federation is required: the federation YAML whose model, DP and training settings to use "
                    "(a site uses its consortium's, see docs/site-setup.md; the demo's is "
                    "configs/federation/demo.yaml in a source checkout)", ExitCode.USAGE)
    return load(federation, FederationConfig)


def _truth_for(site_cfg: SiteConfig, truth: Optional[Path]) -> Optional[Path]:
    """The synthetic cohort's counterfactual truth, for scoring treatment comparisons only."""
    if truth is not None:
        return truth
    guess = Path(site_cfg.data_dir).parent / "truth" / "counterfactuals.json"
    return guess if guess.is_file() else None


def _released(m: dict, key: str) -> str:
    """One metric for a person: value with its interval or DP spread, or why there is none."""
    value = m.get(key)
    if value is None:
        return f"{key}: {m.get(f'{key}_status', 'n/a')}"
    text = f"{key}={value:.3f}" if isinstance(value, float) else f"{key}={value}"
    if isinstance(m.get(f"{key}_ci95"), list) and None not in m[f"{key}_ci95"]:
        lo, hi = m[f"{key}_ci95"]
        text += f" [{lo:.2f}, {hi:.2f}]"
    elif isinstance(m.get(f"{key}_dp_sd"), float):
        text += f" (+/- {m[f'{key}_dp_sd']:.2f} DP)"
    return text


def _print_skipped(by_site: dict) -> None:
    """Cases left out with --skip-invalid, each with its reasons: never a silent skip."""
    for site_id, cases in by_site.items():
        for case in cases:
            console.print(f"[yellow]skipped[/] {site_id}/{case['patient_id']}: " + "; ".join(case["problems"]),
                          highlight=False)


def _print_report(report: dict, title: str) -> None:
    table = Table(title=title)
    table.add_column("split / site")
    table.add_column("metrics")
    rows = [(k, report[k]) for k in ("val", "test", "treatment_comparison") if k in report]
    rows += [(f"baseline: {name.replace('_', ' ')}", m) for name, m in report.get("baselines", {}).items()]
    rows += list(report.get("sites", {}).items())

    def shown(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.3f}"
        if isinstance(v, list):
            return "[" + ", ".join(shown(x) for x in v) + "]"
        return str(v)

    for name, metrics in rows:
        table.add_row(name, ", ".join(f"{k}={shown(v)}" for k, v in metrics.items()))
    console.print(table)
    if report.get("baselines"):
        console.print("test and baselines: the same test patients; [lo, hi] are 95 % bootstrap intervals.")


def _step_progress():  # noqa: ANN202 - a context manager factory
    columns = (TextColumn("[bold]training"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
               TimeElapsedColumn())
    return Progress(*columns, console=console, transient=True)


@train_app.command("local")
def train_local(
    site: Annotated[Path, typer.Option("--site", "-s", help=SITE_YAML_HELP)],
    task: TaskOption = TaskChoice.response,  # type: ignore[attr-defined]
    federation: FederationOption = None,
    dp: Annotated[bool, typer.Option("--dp/--no-dp", help="DP-SGD (spends the site's budget).")] = True,
    epochs: Annotated[Optional[int], typer.Option(help="Override local_epochs.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output folder (default runs/local/<site>).")]
    = None,
    truth: Annotated[Optional[Path], typer.Option(help="Counterfactual truth JSON, for scoring only.")] = None,
    skip_invalid: Annotated[bool, typer.Option(help="Leave out invalid cases (listed) instead of stopping.")] = False,
) -> None:
    """Train one site's model on its own data (DP-SGD by default, recorded in its ledger)."""
    from flame_private.experiments import run_local

    site_cfg = load(site, SiteConfig)
    fed = _federation(federation)
    out = out or Path("runs/local") / site_cfg.site_id
    task = task.value
    with _step_progress() as progress, refusals():
        bar = progress.add_task("train", total=None, loss="-")
        report = run_local(site_cfg, task, fed, out, dp=dp, epochs=epochs, truth=_truth_for(site_cfg, truth),
                           skip_invalid=skip_invalid,
                           on_step=lambda i, loss: progress.update(bar, completed=i, loss=f"{loss:.3f}"))
    _print_skipped({site_cfg.site_id: report["skipped_cases"]})
    _print_report(report, f"{site_cfg.site_id}: {task} ({'DP' if dp else 'no DP'})")
    if report.get("epsilon_site_total") is not None:
        console.print(f"site epsilon after this run: {report['epsilon_site_total']:.3f} (delta {report['delta']:g})")
    console.print(f"model: {out / (task + '.pt')}  card: {out / (task + '.json')}")


@train_app.command("central")
def train_central(
    sites: Annotated[list[Path], typer.Option("--sites", help="Site YAMLs to pool (repeat the option).")],
    task: TaskOption = TaskChoice.response,  # type: ignore[attr-defined]
    federation: FederationOption = None,
    epochs: Annotated[Optional[int], typer.Option(help="Override local_epochs.")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("runs/central"),
    truth: Annotated[Optional[Path], typer.Option(help="Counterfactual truth JSON, for scoring only.")] = None,
    skip_invalid: Annotated[bool, typer.Option(help="Leave out invalid cases (listed) instead of stopping.")] = False,
) -> None:
    """Pool the sites' data without privacy: the upper reference for the federation."""
    from flame_private.experiments import run_central

    site_cfgs = [load(s, SiteConfig) for s in sites]
    fed = _federation(federation)
    task = task.value
    with _step_progress() as progress, refusals():
        bar = progress.add_task("train", total=None, loss="-")
        report = run_central(site_cfgs, task, fed, out, epochs=epochs, truth=_truth_for(site_cfgs[0], truth),
                             skip_invalid=skip_invalid,
                             on_step=lambda i, loss: progress.update(bar, completed=i, loss=f"{loss:.3f}"))
    _print_skipped(report["skipped_cases"])
    _print_report(report, f"central {task} (pooled, no DP)")
    console.print(f"model: {out / (task + '.pt')}")


@app.command("predict")
def predict(
    model: Annotated[Path, typer.Option(help="Folder with response.pt and evolution.pt.")],
    case: Annotated[Path, typer.Option(help="Patient folder: baseline t1, t1ce, t2, flair and seg NIfTI.")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="PNG to write (default <case>-prediction.png).")]
    = None,
    interval_days: Annotated[int, typer.Option(help="Follow-up time after the planning MRI.")] = 120,
    age: Annotated[Optional[float], typer.Option(help="Age in years (else from the site manifest).")] = None,
    sex: Annotated[Optional[str], typer.Option(help="F or M.")] = None,
    mgmt: Annotated[Optional[bool], typer.Option("--mgmt/--no-mgmt", help="MGMT promoter methylated.")] = None,
    resection: Annotated[Optional[str], typer.Option(help="gross_total, subtotal or biopsy.")] = None,
) -> None:
    """Compare photons, protons and carbon ions for one patient: probabilities and predicted follow-up."""
    from flame_private.data.records import Covariates
    from flame_private.predict import case_from_folder, plot_prediction, predict_case

    given = {"age": age, "sex": sex, "mgmt_methylated": mgmt, "resection": resection}
    if any(v is not None for v in given.values()) and any(v is None for v in given.values()):
        missing = [k for k, v in given.items() if v is None]
        raise fail(f"give all clinical covariates or none; missing: {', '.join(missing)}")
    try:
        covariates = Covariates(**given) if all(v is not None for v in given.values()) else None  # type: ignore[arg-type]
    except ValueError as exc:
        raise fail(f"invalid covariates: {exc}") from None
    with refusals():
        record = case_from_folder(case, covariates)
        pred = predict_case(model, record, interval_days)
    table = Table(title=f"{pred.patient_id}: predicted response to chemoradiation")
    for col in ("modality", "P(responder)", f"enhancing mL at day {interval_days}"):
        table.add_column(col, justify="left" if col == "modality" else "right")
    enh = pred.enhancing_ml()
    for m, p in pred.probabilities.items():
        table.add_row(m, f"{p:.3f}", f"{enh[m]:.1f}")
    console.print(table)
    png = plot_prediction(pred, out or case.parent / f"{case.name}-prediction.png")
    console.print(f"wrote {png}")


app.command("audit")(audit_command)


@app.command("version")
def version() -> None:
    """Print the installed version."""
    console.print(__version__)


if __name__ == "__main__":  # pragma: no cover
    app()
