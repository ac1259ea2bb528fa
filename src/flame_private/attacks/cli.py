"""``flame attack NAME``: run one simulated attack and write its JSON result (and figures).  Thin.

Exit status: 0 when the positive control succeeded and the protection held, 1
when either did not (the evidence does not support the claim: read the JSON),
2 on bad arguments (docs/cli.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from flame_private.attacks.result import AttackResult
from flame_private.cli_common import SizeChoice

attack_app = typer.Typer(help="Simulated privacy attacks with positive controls (synthetic data only).",
                         no_args_is_help=True)
log = logging.getLogger(__name__)

OutOption = Annotated[Path, typer.Option("--out", "-o", help="Folder for the JSON result, figures and working files.")]
SizeOption = Annotated[SizeChoice, typer.Option(
    "--size", help="ci (minutes on a laptop) or full (the benchmark size).")]
CI = SizeChoice("ci")
SeedOption = Annotated[int, typer.Option("--seed", help="Seed of the cohort, models and noise.")]


def _finish(result: AttackResult, out: Path) -> None:
    path = result.write(out / f"{result.attack}.json")
    console = Console(highlight=False)
    table = Table(title=result.title)
    for col in ("arm", "protection", "attack succeeded", "detail"):
        table.add_column(col, overflow="fold")
    for arm in result.arms:
        expected = arm.attack_succeeded == arm.is_control
        mark = "[green]" if expected else "[bold red]"
        table.add_row(arm.name, arm.protection + (" (control)" if arm.is_control else ""),
                      f"{mark}{'yes' if arm.attack_succeeded else 'no'}[/]", arm.detail)
    console.print(table)
    console.print(result.summary)
    console.print(f"result: {path}" + "".join(f"\nfigure: {out / f}" for f in result.figures))
    if not result.passed:
        what = "the positive control failed (the attack is too weak to prove anything)" \
            if not result.positive_control_ok else "the protection did NOT hold"
        console.print(f"[bold red]FAILED[/]: {what}.")
        raise typer.Exit(1)
    console.print(f"[green]passed[/]: control broken, protection held ({result.seconds:.0f} s).")


def _run(fn: Callable[..., AttackResult], out: Path, size: SizeChoice, seed: int,
         **extra: object) -> None:
    _finish(fn(out, size.value, seed, **{k: v for k, v in extra.items() if v is not None}), out)


@attack_app.command("curious-server")
def curious_server(out: OutOption = Path("runs/attacks"), size: SizeOption = CI, seed: SeedOption = 0) -> None:
    """Record all the server receives in a simulated federation; look for weights, keys and site identity."""
    from flame_private.attacks.curious_server import run_curious_server

    _run(run_curious_server, out, size, seed)


@attack_app.command("gradient-inversion")
def gradient_inversion(
    out: OutOption = Path("runs/attacks"), size: SizeOption = CI, seed: SeedOption = 0,
    batch_size: Annotated[int | None, typer.Option("--batch-size", min=1, max=4,
                                                      help="Patients in the attacked step (1-4).")] = None,
) -> None:
    """Rebuild a patient's MRI from one site's update: plaintext, with DP-SGD, and under CKKS."""
    from flame_private.attacks.gradient_inversion import run_gradient_inversion

    _run(run_gradient_inversion, out, size, seed, batch_size=batch_size)


@attack_app.command("membership-inference")
def membership_inference(
    out: OutOption = Path("runs/attacks"), size: SizeOption = CI, seed: SeedOption = 0,
    models: Annotated[int | None, typer.Option("--models", min=4,
                                                  help="Shadow/target models per arm (even).")] = None,
) -> None:
    """LOSS and LiRA membership inference against a site's model, without and with DP-SGD."""
    from flame_private.attacks.membership import run_membership_inference

    _run(run_membership_inference, out, size, seed, n_models=models)


@attack_app.command("dp-audit")
def dp_audit(
    out: OutOption = Path("runs/attacks"), size: SizeOption = CI, seed: SeedOption = 0,
    canaries: Annotated[int | None, typer.Option("--canaries", min=10, help="Canary patients.")] = None,
) -> None:
    """One-run canary audit of the site's DP-SGD; deliberately broken mechanisms must be caught."""
    from flame_private.attacks.dp_audit import run_dp_audit

    _run(run_dp_audit, out, size, seed, canaries=canaries)


@attack_app.command("noise-replay")
def noise_replay(out: OutOption = Path("runs/attacks"), size: SizeOption = CI, seed: SeedOption = 0) -> None:
    """Regenerate a site's DP noise from the public config and subtract it; must fail with secret noise."""
    from flame_private.attacks.noise_replay import run_noise_replay

    _run(run_noise_replay, out, size, seed)
