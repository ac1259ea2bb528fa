"""``flame study``: a thin wrapper over ``flame_private.study`` (resumable, with a progress bar and a summary)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from flame_private.cli_common import refusals

console = Console(soft_wrap=True)  # paths and digests stay on one line, whatever the terminal width


def _cell(rows: list[dict[str, Any]], key: str) -> str:
    values = [r[key] for r in rows if r.get("status") == "ok" and isinstance(r.get(key), float)]
    if not values:
        return "-"
    if len(values) == 1:
        lo_hi = rows[0].get(f"{key}_ci95") or [None, None]
        ci = f" [{lo_hi[0]:.2f}, {lo_hi[1]:.2f}]" if None not in lo_hi else ""
        return f"{values[0]:.3f}{ci}"
    return f"{min(values):.3f}-{max(values):.3f} ({len(values)} sites)"


def print_summary(results: dict[str, Any]) -> None:
    """Per task: each arm's headline metric on each held-out site, and the baselines on the same patients."""
    from flame_private.study.summary import HEADLINE, arm_label

    rows = results["rows"]
    for task, key in HEADLINE.items():
        task_rows = [r for r in rows if r["task"] == task]
        if not task_rows:
            continue
        held = sorted({r["held_out_site"] for r in task_rows})
        table = Table(title=f"{task}: {key} on each held-out site (all its patients)")
        table.add_column("arm")
        for h in held:
            table.add_column(h, justify="right")
        labels: dict[str, list[dict[str, Any]]] = {}
        for r in task_rows:
            labels.setdefault(arm_label(r), []).append(r)
        for label, group in labels.items():
            table.add_row(label, *[_cell([r for r in group if r["held_out_site"] == h], key) for h in held])
        for name in task_rows[0].get("baselines", {}):
            table.add_row(f"baseline: {name.replace('_', ' ')}",
                          *[_cell([{"status": "ok", **next(r for r in task_rows if r["held_out_site"] == h
                                                             and "baselines" in r)["baselines"][name]}], key)
                            for h in held])
        console.print(table)


def study(
    config: Annotated[Path, typer.Option("--config", "-c", help="Study YAML (configs/study.yaml).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The study's folder: cohort, units, study.json.")]
    = Path("runs/study-eval"),
    size: Annotated[Optional[str], typer.Option(help="A named variant under the config's sizes (e.g. ci).")] = None,
    workers: Annotated[int, typer.Option(help="Worker processes to synthesise the cohort.")] = 1,
    cohort_dir: Annotated[Optional[Path], typer.Option(
        help="An already synthesised copy of the study's cohort (checked against its config) instead of "
             "<out>/cohort.")] = None,
) -> None:
    """Leave-one-site-out study: single-site, federated (plain and DP + CKKS) and central models on unseen sites.

    Resumable: run the same command again and it goes on from the last finished unit.
    """
    from flame_private.study.config import load_study_config
    from flame_private.study.runner import StudyRunner

    command = shlex.join(["flame", *sys.argv[1:]]) if Path(sys.argv[0]).name == "flame" else ""
    with refusals():
        cfg = load_study_config(config, size)
        if cohort_dir is not None:
            cfg = cfg.model_copy(update={"cohort_dir": cohort_dir.resolve()})
        runner = StudyRunner(cfg, out, command=command or f"flame study --config {config}"
                             + (f" --size {size}" if size else "") + f" --out {out}"
                             + (f" --cohort-dir {cohort_dir}" if cohort_dir else ""), workers=workers)
        columns = (TextColumn("[bold]study"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[unit]}"),
                   TimeElapsedColumn())
        with Progress(*columns, console=console) as progress:
            bar = progress.add_task("study", total=len(runner.units), unit="")

            def on_unit(i: int, n: int, unit: Any, state: str) -> None:
                progress.update(bar, completed=i + (state != "running"), unit=f"{unit.key} ({state})")

            results = runner.run(on_unit)
    print_summary(results)
    from flame_private.study.plots import draw_all
    from flame_private.study.summary import markdown

    plots = draw_all(results, out / "plots", cfg.name)
    (out / "study.md").write_text(markdown(results), encoding="utf-8")
    console.print(f"plots: {', '.join(str(p) for p in plots)}")
    console.print(f"rows: {out / 'study.json'} ({len(results['rows'])} rows, {results['units']['done']} of "
                  f"{results['units']['planned']} units); tables: {out / 'study.md'}")
