"""``flame train local|central`` and ``flame predict``: thin wrappers over ``experiments`` and ``predict``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from flame_private.cli_common import TaskChoice, fail, load, refusals, value
from flame_private.config import SITE_YAML_HELP, FederationConfig, SiteConfig, Task
from flame_private.errors import ExitCode

console = Console(soft_wrap=True)  # paths and digests stay on one line, whatever the terminal width

train_app = typer.Typer(help="Train the response or evolution model locally or pooled.", no_args_is_help=True)
TaskOption = Annotated[TaskChoice, typer.Option("--task", help="Which model to train.")]
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
    task: TaskOption = TaskChoice.response,
    federation: FederationOption = None,
    dp: Annotated[bool, typer.Option("--dp/--no-dp", help="DP-SGD (spends the site's budget).")] = True,
    epochs: Annotated[Optional[int], typer.Option(min=1, help="Override local_epochs.")] = None,
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
    name: Task = value(task)
    with _step_progress() as progress, refusals():
        bar = progress.add_task("train", total=None, loss="-")
        report = run_local(site_cfg, name, fed, out, dp=dp, epochs=epochs, truth=_truth_for(site_cfg, truth),
                           skip_invalid=skip_invalid,
                           on_step=lambda i, loss: progress.update(bar, completed=i, loss=f"{loss:.3f}"))
    _print_skipped({site_cfg.site_id: report["skipped_cases"]})
    _print_report(report, f"{site_cfg.site_id}: {name} ({'DP' if dp else 'no DP'})")
    if report.get("epsilon_site_total") is not None:
        console.print(f"site epsilon after this run: {report['epsilon_site_total']:.3f} (delta {report['delta']:g})")
    console.print(f"model: {out / (name + '.pt')}  card: {out / (name + '.json')}")


@train_app.command("central")
def train_central(
    sites: Annotated[list[Path], typer.Option("--sites", help="Site YAMLs to pool (repeat the option).")],
    task: TaskOption = TaskChoice.response,
    federation: FederationOption = None,
    epochs: Annotated[Optional[int], typer.Option(min=0, help="Override local_epochs (0: save the start).")]
    = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")] = Path("runs/central"),
    truth: Annotated[Optional[Path], typer.Option(help="Counterfactual truth JSON, for scoring only.")] = None,
    skip_invalid: Annotated[bool, typer.Option(help="Leave out invalid cases (listed) instead of stopping.")] = False,
    start_from_regression: Annotated[bool, typer.Option(
        "--start-from-regression",
        help="Response: set the linear part to the logistic regression of its features first.")] = False,
) -> None:
    """Pool the sites' data without privacy: the upper reference, or public weights a federation starts from."""
    from flame_private.experiments import run_central
    from flame_private.models.io import file_sha256

    site_cfgs = [load(s, SiteConfig) for s in sites]
    fed = _federation(federation)
    name: Task = value(task)
    if start_from_regression and name != "response":
        raise fail("--start-from-regression is for the response model (its linear part)", ExitCode.USAGE)
    with _step_progress() as progress, refusals():
        bar = progress.add_task("train", total=None, loss="-")
        report = run_central(site_cfgs, name, fed, out, epochs=epochs, truth=_truth_for(site_cfgs[0], truth),
                             skip_invalid=skip_invalid, regression_start=start_from_regression,
                             on_step=lambda i, loss: progress.update(bar, completed=i, loss=f"{loss:.3f}"))
    _print_skipped(report["skipped_cases"])
    _print_report(report, f"central {name} (pooled, no DP)")
    path = out / f"{name}.pt"
    digest = file_sha256(path)  # printed unwrapped: it is copied into the federation YAML
    console.print(f"model: {path}  sha256: {digest}", soft_wrap=True, highlight=False)
    console.print("Only where these sites hold public data may a federation start from this model, with this "
                  "line in its YAML (docs/training.md):", highlight=False)
    console.print(f"initial_weights: {{{name}: {{path: {path.resolve()}, sha256: {digest}}}}}", soft_wrap=True,
                  highlight=False, markup=False)


def predict(
    model: Annotated[Path, typer.Option(help="Folder with response.pt and evolution.pt.")],
    case: Annotated[Path, typer.Option(help=(
        "Patient folder: baseline t1, t1ce, t2, flair and seg NIfTI (seg optional with a segmentation model)."))],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="PNG to write (default <case>-prediction.png).")]
    = None,
    interval_days: Annotated[int, typer.Option(help="Follow-up time after the planning MRI.")] = 120,
    age: Annotated[Optional[float], typer.Option(help="Age in years (else from the site manifest).")] = None,
    sex: Annotated[Optional[str], typer.Option(help="F or M.")] = None,
    mgmt: Annotated[Optional[bool], typer.Option("--mgmt/--no-mgmt", help="MGMT promoter methylated.")] = None,
    resection: Annotated[Optional[str], typer.Option(help="gross_total, subtotal or biopsy.")] = None,
    dicom_series: Annotated[Optional[Path], typer.Option(help=(
        "The patient's baseline series (or study) in DICOM: also write the predictions as DICOM-SEG on it and "
        "an encapsulated PDF, for the viewer (docs/site-data.md)."))] = None,
    dicom_out: Annotated[Optional[Path], typer.Option(help=(
        "Where the DICOM files go, outside the site folder (default: <site folder>-dicom/<case> beside it)."))]
    = None,
    pseudonyms: Annotated[Optional[Path], typer.Option(help=(
        "The import's pseudonym map, to check that the series is this case's patient (default: beside the "
        "site folder, as flame data import writes it)."), show_default=False)] = None,
    segmentation_model: Annotated[Optional[Path], typer.Option(help=(
        "The baseline segmentation model (segmentation.pt), for a case without a segmentation (default: "
        "segmentation.pt in --model when it is there). The outputs say the segmentation is automatic."),
        show_default=False)] = None,
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
        can_segment = segmentation_model is not None or (model / "segmentation.pt").is_file()
        record = case_from_folder(case, covariates, need_seg=not can_segment)
        pred = predict_case(model, record, interval_days, segmentation_model)
    if pred.baseline_seg_source != "reference":
        console.print(f"[yellow]the baseline segmentation is {pred.baseline_seg_source}: check it on the "
                      "figure before reading the predictions[/]")
    table = Table(title=f"{pred.patient_id}: predicted response to chemoradiation")
    for col in ("modality", "P(responder)", f"enhancing mL at day {interval_days}"):
        table.add_column(col, justify="left" if col == "modality" else "right")
    enh = pred.enhancing_ml()
    for m, p in pred.probabilities.items():
        table.add_row(m, f"{p:.3f}", f"{enh[m]:.1f}")
    console.print(table)
    png = plot_prediction(pred, out or case.parent / f"{case.name}-prediction.png")
    console.print(f"wrote {png}")
    if dicom_series is not None:
        from flame_private.models.io import file_sha256
        from flame_private.predict_dicom import write_prediction_dicom

        site = case.resolve().parent
        with refusals():
            written = write_prediction_dicom(
                pred, dicom_series, dicom_out or site.parent / f"{site.name}-dicom" / case.resolve().name,
                pseudonyms or site.parent / f"{site.name}-pseudonyms.csv", site.name,
                models={name: file_sha256(model / f"{name}.pt") for name in ("response", "evolution")}
                | ({"segmentation": pred.segmentation_model_sha256} if pred.segmentation_model_sha256 else {}))
        console.print(f"wrote {len(written)} DICOM files for the viewer: {', '.join(str(p) for p in written)}")
