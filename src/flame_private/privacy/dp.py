"""DP-SGD with Opacus: the one place where a model, optimiser and loader become private.

Poisson sampling (so the sampling rate q is what the accountant assumes),
per-sample clipping at ``max_grad_norm`` and Gaussian noise of
``noise_multiplier * max_grad_norm``.  The grad-sample mode defaults to
expanded weights ("ew"), the fastest mode that is exact for our models
(tests compare its per-sample gradients with a per-example loop).

Opacus computes the per-sample gradients and clips them; the sampling masks and
the noise come from ``randomness.DPRandomness``, fresh and secret for every
training, never from torch's global generator that the run's public seed sets.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sized
from dataclasses import dataclass
from functools import lru_cache
from typing import cast

import torch
from opacus import PrivacyEngine
from opacus.accountants.utils import get_noise_multiplier
from opacus.data_loader import dtype_safe, shape_safe, wrap_collate_with_empty
from opacus.optimizers import DPOptimizer
from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed
from torch import nn
from torch.utils.data import DataLoader, Dataset, default_collate

from flame_private.config import DPConfig, GradSampleMode, Task
from flame_private.privacy.accounting import Accountant
from flame_private.privacy.ledger import PlannedSpend
from flame_private.privacy.randomness import DPRandomness, SecretPoissonSampler

log = logging.getLogger(__name__)

EW_SUPPORTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.GroupNorm, nn.LayerNorm, nn.InstanceNorm1d,
                nn.InstanceNorm2d, nn.InstanceNorm3d, nn.Embedding)
"""Layers with trainable parameters that Opacus's expanded-weights mode computes exactly."""


@dataclass(frozen=True)
class DPPlan:
    """The mechanism of one local training: what the budget check and the ledger need, before training."""

    noise_multiplier: float
    max_grad_norm: float
    sample_rate: float
    steps: int
    delta: float
    accountant: Accountant
    grad_sample_mode: GradSampleMode
    expected_batch_size: int

    def planned_spend(self, run_id: str, round_: int, task: Task) -> PlannedSpend:
        """This training as the release the budget guard authorises and the ledger records."""
        return PlannedSpend(run_id=run_id, round=round_, task=task, noise_multiplier=self.noise_multiplier,
                            sample_rate=self.sample_rate, steps=self.steps, max_grad_norm=self.max_grad_norm)


@dataclass
class PrivateTraining:
    """The Opacus-wrapped model, optimiser and Poisson loader for a plan."""

    model: nn.Module
    optimizer: DPOptimizer
    loader: DataLoader
    engine: PrivacyEngine
    plan: DPPlan


def default_grad_sample_mode(model: nn.Module) -> GradSampleMode:
    """'ew' when every trainable layer is one expanded weights supports, else 'hooks'."""
    for module in model.modules():
        own = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if own and not isinstance(module, EW_SUPPORTED):
            log.info("grad-sample mode 'hooks': %s is not supported by expanded weights", type(module).__name__)
            return "hooks"
    return "ew"


@lru_cache(maxsize=256)
def noise_for(target_epsilon: float, delta: float, sample_rate: float, steps: int, accountant: str) -> float:
    """The noise multiplier at which ``steps`` steps at ``sample_rate`` spend ``target_epsilon``.

    Cached: the search takes seconds, and every site and round of a federation (every shadow model of an
    attack) with the same sampling asks for the same number.
    """
    return float(get_noise_multiplier(target_epsilon=target_epsilon, target_delta=delta, sample_rate=sample_rate,
                                      steps=steps, accountant=accountant))


def poisson_sampling(n_samples: int, batch_size: int, epochs: int) -> tuple[float, int]:
    """(sample rate, steps) of ``epochs`` epochs of Poisson sampling at expected batch ``batch_size``.

    Each step takes every record with probability q = batch / n; an epoch is n / batch steps.
    """
    if n_samples <= 0:
        raise ValueError("cannot train on an empty dataset")
    batch = min(batch_size, n_samples)
    steps_per_epoch = -(-n_samples // batch)
    return 1.0 / steps_per_epoch, epochs * steps_per_epoch


@lru_cache(maxsize=64)
def noise_for_run(run_epsilon: float, delta: float, trainings: tuple[tuple[float, int], ...],
                  releases: tuple[tuple[float, int], ...], accountant: Accountant) -> float:
    """The noise multiplier at which a whole run at one site spends at most ``run_epsilon``.

    ``trainings``: ``(sample_rate, steps)`` of each DP-SGD mechanism of the run (one per task, every
    round's steps together), all at the noise sought; ``releases``: ``(noise_multiplier, count)`` of the
    run's fixed-noise releases on all the site's patients (the evaluations, sample rate 1).  Solved by
    bisection on Opacus's accountant over the composed history, to 0.5 %, rounding the noise up:
    the run never spends more than ``run_epsilon``.
    """
    from flame_private.privacy.accounting import epsilon_for

    fixed = [(sigma, 1.0, count) for sigma, count in releases if count > 0]
    if fixed and (floor := epsilon_for(fixed, delta, accountant)) >= run_epsilon:
        raise ValueError(f"the run's evaluation releases alone spend epsilon {floor:.3f} >= run_epsilon "
                         f"{run_epsilon}: raise evaluation.noise_multiplier or run_epsilon")

    def spent(sigma: float) -> float:
        return epsilon_for([(sigma, q, steps) for q, steps in trainings] + fixed, delta, accountant)

    lo, hi = 0.05, 1.0
    while spent(hi) > run_epsilon:
        lo, hi = hi, hi * 2.0
        if hi > 100.0:
            raise ValueError(f"no noise multiplier up to 100 keeps the run within epsilon {run_epsilon}")
    while hi / lo > 1.005:
        mid = (lo * hi) ** 0.5
        lo, hi = (lo, mid) if spent(mid) <= run_epsilon else (mid, hi)
    return hi


def plan_dp(model: nn.Module, n_samples: int, batch_size: int, epochs: int, dp: DPConfig) -> DPPlan:
    """Sampling rate, steps and noise for training on ``n_samples`` patients-records.

    With Poisson sampling each step takes every record with probability
    q = batch / n; an epoch is n / batch steps.  With ``dp.target_epsilon`` (or
    ``dp.run_epsilon``: a run of this one training) the noise is chosen so that
    this training alone spends that epsilon.  A federated site resolves
    ``run_epsilon`` over its whole run first (``noise_for_run``).
    """
    if not dp.enabled:
        raise ValueError("plan_dp called with DP disabled")
    sample_rate, steps = poisson_sampling(n_samples, batch_size, epochs)
    target = dp.target_epsilon if dp.target_epsilon is not None else dp.run_epsilon
    if target is not None:
        sigma = noise_for(target, dp.delta, sample_rate, steps, dp.accountant)
    else:
        assert dp.noise_multiplier is not None
        sigma = float(dp.noise_multiplier)
    return DPPlan(noise_multiplier=sigma, max_grad_norm=dp.max_grad_norm, sample_rate=sample_rate, steps=steps,
                  delta=dp.delta, accountant=dp.accountant,
                  grad_sample_mode=dp.grad_sample_mode or default_grad_sample_mode(model),
                  expected_batch_size=min(batch_size, n_samples))


def set_grad_sample(p: nn.Parameter, per_sample: torch.Tensor) -> None:
    """Hand Opacus's optimiser ``p``'s per-sample gradients, where it looks for them."""
    p.grad_sample = per_sample  # type: ignore[attr-defined]  # Opacus stores per-sample gradients on parameters


def grad_sample(p: nn.Parameter) -> torch.Tensor:
    """``p``'s per-sample gradients as one tensor (Opacus may keep a list of them)."""
    gs = p.grad_sample  # type: ignore[attr-defined]  # Opacus stores per-sample gradients on parameters
    return torch.cat(gs, dim=0) if isinstance(gs, list) else gs


class SecretNoiseDPOptimizer(DPOptimizer):
    """Opacus's DP optimiser (clip, sum, scale) with its Gaussian noise drawn from ``DPRandomness``."""

    def __init__(self, optimizer: torch.optim.Optimizer, *, randomness: DPRandomness, **kwargs: object) -> None:
        super().__init__(optimizer, **kwargs)
        self.randomness = randomness

    def add_noise(self) -> None:
        sums = [p.summed_grad for p in self.params]
        for s in sums:
            _check_processed_flag(s)
        noises = self.randomness.normal_like(sums, self.noise_multiplier * self.max_grad_norm)
        for p, s, noise in zip(self.params, sums, noises, strict=True):
            p.grad = (s + noise).view_as(p)
            _mark_as_processed(s)


def _size(dataset: Dataset) -> int:
    # Every dataset trained on has a length; torch's Dataset type does not declare it.
    return len(cast(Sized, dataset))


def poisson_loader(dataset: Dataset, plan: DPPlan, randomness: DPRandomness) -> DataLoader:
    """Batches drawn by Poisson sampling at ``plan.sample_rate``; empty batches keep their structure."""
    first = dataset[0]
    steps_per_epoch = round(1.0 / plan.sample_rate)
    sampler = SecretPoissonSampler(_size(dataset), plan.sample_rate, steps_per_epoch, randomness)
    collate = wrap_collate_with_empty(collate_fn=default_collate,
                                      sample_empty_shapes=[(0, *shape_safe(x)) for x in first],
                                      dtypes=[dtype_safe(x) for x in first])
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=collate)


def make_private(model: nn.Module, optimizer: torch.optim.Optimizer, dataset: Dataset, plan: DPPlan,
                 randomness: DPRandomness | None = None) -> PrivateTraining:
    """Wrap for DP-SGD exactly as ``plan`` says (Poisson sampling at ``plan.sample_rate``).

    ``randomness`` defaults to fresh secret randomness; only the attack suite's
    positive control and tests pass a replayable one.
    """
    randomness = randomness or DPRandomness.secret()
    loader = poisson_loader(dataset, plan, randomness)
    if abs(1.0 / len(loader) - plan.sample_rate) > 1e-12:  # what we will record must be what runs
        raise RuntimeError(f"Poisson sampler rate {1.0 / len(loader)} differs from the plan's {plan.sample_rate}")
    with warnings.catch_warnings():  # "secure RNG turned off": Opacus's generator is not used for noise here
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        engine = PrivacyEngine(accountant=plan.accountant, secure_mode=False)
    pmodel, _, ploader = engine.make_private(
        module=model, optimizer=optimizer, data_loader=loader, noise_multiplier=plan.noise_multiplier,
        max_grad_norm=plan.max_grad_norm, poisson_sampling=False, grad_sample_mode=plan.grad_sample_mode,
    )
    pmodel.forbid_grad_accumulation()
    # Opacus's own optimiser would draw noise from torch's generator; ours draws it from ``randomness``.
    popt = SecretNoiseDPOptimizer(optimizer, randomness=randomness, noise_multiplier=plan.noise_multiplier,
                                  max_grad_norm=plan.max_grad_norm,
                                  expected_batch_size=int(_size(dataset) * plan.sample_rate),
                                  loss_reduction="mean")
    return PrivateTraining(model=pmodel, optimizer=popt, loader=ploader, engine=engine, plan=plan)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside an Opacus GradSampleModule (for saving and encrypting)."""
    return getattr(model, "_module", model)
