"""One-run DP audit of a site's DP-SGD (Steinke, Nasr, Jagielski 2023): does the training leak more than it claims?

m canary patients are each added to the site's data with probability 1/2.  A
canary's gradient is a Dirac spike: all its weight on one parameter coordinate
of its own, larger than the clipping norm (an outlier patient).  Training runs
through the site's own Opacus wrapping (``privacy.dp.make_private``); canaries
are Poisson-sampled at the same rate as patients and join the per-sample
gradients before clipping and noise.  The auditor sees every noisy step (white
box, the strongest position) and scores a canary by the sum of its coordinate
over the steps, guesses 'in' for the top k (abstaining on the rest), and turns
the number of right guesses into an epsilon lower bound at 95 % confidence.

A correct mechanism must give a lower bound below the accountant's epsilon.  Two
deliberately broken mechanisms, while the accountant still claims the same
epsilon, must be caught (lower bound above the claim): noise scaled down, and
clipping switched off with the noise left as it was.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from opacus.optimizers import DPOptimizer

from flame_private.attacks.cohort import PatientSubset, ResponseTensors, attack_data
from flame_private.attacks.result import AttackArm, AttackResult
from flame_private.attacks.stats import one_run_epsilon, one_run_guesses
from flame_private.config import DPConfig
from flame_private.models.response import ResponseNet
from flame_private.privacy.accounting import epsilon_for
from flame_private.privacy.dp import DPPlan, grad_sample, make_private, plan_dp, set_grad_sample
from flame_private.training import TupleView, forward, gradient, make_loss

log = logging.getLogger(__name__)

Fault = Literal["none", "noise-scaled-down", "clipping-off"]


@dataclass(frozen=True)
class AuditSettings:
    n_patients: int = 48
    grid: int = 16
    channels: tuple[int, ...] = (8, 16, 32, 32)
    canaries: int = 1000
    guesses: int = 100
    """The auditor says 'in' for the ``guesses`` highest scores and abstains on the rest, a number fixed in
    advance (choosing it after looking would inflate the bound).  No 'out' guesses: under Poisson sampling an
    included canary may never be sampled, and would look exactly like an excluded one."""
    canary_norm: float = 10.0
    """Canary gradient norm in units of the clipping norm: an outlier, which clipping must tame."""
    epochs: int = 4
    batch_size: int = 8
    learning_rate: float = 1e-3
    claimed_epsilon: float = 2.0
    delta: float = 1e-5
    max_grad_norm: float = 1.0
    noise_scale_fault: float = 0.1
    confidence: float = 0.95


SIZES: dict[str, AuditSettings] = {
    "ci": AuditSettings(),
    "full": AuditSettings(n_patients=96, grid=24, channels=(8, 16, 32, 64), canaries=2000, guesses=200, epochs=6),
}


def _inject_canaries(params: list[torch.nn.Parameter], coords: np.ndarray, norm: float) -> None:
    """Append one per-sample gradient row per sampled canary: ``norm`` at the canary's own coordinate."""
    n = len(coords)
    offset = 0
    for p in params:
        gs = grad_sample(p)
        rows = torch.zeros((n, p.numel()), dtype=p.dtype)
        mine = (coords >= offset) & (coords < offset + p.numel())
        if mine.any():
            rows[np.flatnonzero(mine), coords[mine] - offset] = norm
        set_grad_sample(p, torch.cat([gs, rows.view(n, *p.shape)], dim=0))
        offset += p.numel()


def _break(optimizer: DPOptimizer, plan: DPPlan, fault: Fault, settings: AuditSettings) -> None:
    """Introduce the fault into the running mechanism; the plan (what the ledger would record) is unchanged."""
    if fault == "noise-scaled-down":
        optimizer.noise_multiplier = plan.noise_multiplier * settings.noise_scale_fault
    elif fault == "clipping-off":
        huge = 1e6
        optimizer.max_grad_norm = huge
        optimizer.noise_multiplier = plan.noise_multiplier * plan.max_grad_norm / huge


def audited_training(data: ResponseTensors, settings: AuditSettings, fault: Fault, seed: int
                     ) -> tuple[np.ndarray, np.ndarray, DPPlan]:
    """Train with canaries; returns (scores, included, plan) for the m canaries."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = ResponseNet(settings.channels, 8, dropout=0.0)
    params = [p for p in model.parameters() if p.requires_grad]
    d = sum(p.numel() for p in params)
    if settings.canaries > d:
        raise ValueError(f"{settings.canaries} canaries need as many coordinates; the model has {d}")
    coords = rng.choice(d, size=settings.canaries, replace=False)
    included = rng.random(settings.canaries) < 0.5
    dp = DPConfig(target_epsilon=settings.claimed_epsilon, delta=settings.delta, max_grad_norm=settings.max_grad_norm)
    dataset = TupleView(PatientSubset(data, np.arange(len(data))), "response")
    plan = plan_dp(model, len(data), settings.batch_size, settings.epochs, dp)
    # The mechanism's own noise and sampling are secret, as at a site; the seed fixes canaries and model only.
    private = make_private(model, torch.optim.SGD(model.parameters(), lr=settings.learning_rate), dataset, plan)
    _break(private.optimizer, plan, fault, settings)
    loss_fn = make_loss("response")
    scores = np.zeros(settings.canaries)
    canary_norm = settings.canary_norm * settings.max_grad_norm
    wrapped = [p for p in private.model.parameters() if p.requires_grad]
    steps = 0
    for _epoch in range(settings.epochs):
        for batch in private.loader:
            private.optimizer.zero_grad(set_to_none=True)
            if batch[0].shape[0] == 0:
                for p in wrapped:
                    set_grad_sample(p, torch.zeros((0, *p.shape), dtype=p.dtype))
            else:
                out, target = forward(private.model, batch)
                loss_fn(out, target).backward()
            sampled = included & (rng.random(settings.canaries) < plan.sample_rate)
            _inject_canaries(wrapped, coords[sampled], canary_norm)
            private.optimizer.step()
            grad = torch.cat([gradient(p).reshape(-1) for p in wrapped]).numpy()
            scores += grad[coords]
            steps += 1
    if steps != plan.steps:
        raise RuntimeError(f"ran {steps} steps, planned {plan.steps}")
    return scores, included, plan


def audit_once(data: ResponseTensors, settings: AuditSettings, fault: Fault, seed: int) -> dict[str, float | int]:
    scores, included, plan = audited_training(data, settings, fault, seed)
    r, v = one_run_guesses(scores, included, settings.guesses, 0)
    lower = one_run_epsilon(settings.canaries, r, v, settings.delta, 1.0 - settings.confidence)
    claimed = epsilon_for([(plan.noise_multiplier, plan.sample_rate, plan.steps)], plan.delta, plan.accountant)
    return {"epsilon_lower_bound": round(lower, 4), "claimed_epsilon": round(claimed, 4), "guesses": r,
            "correct": v, "accuracy": round(v / r, 4), "noise_multiplier_claimed": round(plan.noise_multiplier, 4),
            "sample_rate": round(plan.sample_rate, 4), "steps": plan.steps}


def run_dp_audit(out_dir: Path, size: str = "ci", seed: int = 0, canaries: int | None = None) -> AttackResult:
    settings = SIZES[size] if canaries is None else replace(SIZES[size], canaries=canaries,
                                                           guesses=min(SIZES[size].guesses, canaries))
    t0 = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    data = attack_data(out_dir / "work", settings.n_patients, settings.grid, seed)
    arms = []
    claimed = math.nan
    faults: tuple[tuple[Fault, str], ...] = (
        ("none", "DP-SGD as configured"),
        ("noise-scaled-down", f"broken: noise x{settings.noise_scale_fault}, same claim"),
        ("clipping-off", "broken: clipping off, same claim"))
    for fault, name in faults:
        log.info("DP audit: %s", name)
        m = audit_once(data, settings, fault, seed)
        claimed = float(m["claimed_epsilon"])
        caught = float(m["epsilon_lower_bound"]) > claimed
        arms.append(AttackArm(
            name=name, protection="dp" if fault == "none" else "broken-dp", is_control=fault != "none",
            attack_succeeded=caught, metrics={**m, "fault": fault},
            detail=f"{m['correct']} of {m['guesses']} guesses right: epsilon >= {m['epsilon_lower_bound']:.2f} "
                   f"({'above' if caught else 'not above'} the claimed {claimed:.2f})."))
    ok, broken = arms[0], arms[1:]
    summary = (
        f"{settings.canaries} canary patients, each added with probability 1/2, trained through the site's DP-SGD. "
        f"The auditor, who sees every noisy step, proved epsilon >= {ok.metrics['epsilon_lower_bound']:.2f} for the "
        f"correct configuration, "
        + ("below" if not ok.attack_succeeded else "ABOVE")
        + f" the {claimed:.2f} the accountant claims. The same audit caught "
        + ", ".join(f"{a.name.removeprefix('broken: ').split(',')[0]} "
                    f"(epsilon >= {a.metrics['epsilon_lower_bound']:.2f})"
                    for a in broken if a.attack_succeeded)
        + (", so it would notice a DP bug of that size." if all(a.attack_succeeded for a in broken)
           else "; some broken configurations were NOT caught."))
    return AttackResult(attack="dp-audit", title="One-run DP audit (Steinke, Nasr, Jagielski 2023)",
                        summary=summary, seed=seed, size=size, seconds=round(time.perf_counter() - t0, 1),
                        settings={**asdict(settings), "canary": "Dirac gradient on a coordinate of its own",
                                  "auditor": "white box: every noisy step"},
                        arms=arms, accounted_epsilon=claimed)
