"""Noise regeneration: can anyone holding the federation config subtract a site's DP-SGD noise?

Everyone in a federation holds its config: the server and every site.  If a
site's DP noise and Poisson sampling were drawn from a generator seeded by the
config (as in flame-private 0.1.0), any of them could regenerate the noise
exactly and subtract it, leaving the clean, unprotected update: against them
epsilon would be infinite.

The attacker here knows everything public: the config (seed, sigma, clipping
norm, learning rate, batch size, epochs), the code, the round-1 weights and the
site's size (declared public, docs/design.md 1).  They replay the training with
a patient-free twin: the same number of records, every per-sample gradient
zero, the noise and sampling drawn the way a public-seed site would draw them.
With plain SGD the noise enters the weights additively, so

    clean update estimate = (released - initial) - (twin - initial).

The harness, as the site, knows the noise it really drew (it keeps the key of
its own stream, only here) and so the true clean update; the attack succeeds
when the estimate points the same way (cosine >= 0.9).  Positive control: the
site draws from the public seed, as 0.1.0 did; protected: the site draws fresh
secret randomness, as every release now does.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from flame_private.attacks.cohort import PatientSubset, attack_data
from flame_private.attacks.result import AttackArm, AttackResult
from flame_private.config import DPConfig
from flame_private.models.response import ResponseNet
from flame_private.privacy.accounting import epsilon_for
from flame_private.privacy.dp import DPPlan, make_private, plan_dp, set_grad_sample
from flame_private.privacy.randomness import KEY_BYTES, DPRandomness
from flame_private.training import TrainSettings, TupleView, train

log = logging.getLogger(__name__)

SUCCESS_COSINE = 0.9
"""The attacker has the clean update when its estimate points this close to the truth."""


@dataclass(frozen=True)
class ReplaySettings:
    n_patients: int = 24
    grid: int = 16
    channels: tuple[int, ...] = (8, 16, 32, 32)
    epochs: int = 2
    batch_size: int = 4
    learning_rate: float = 0.05
    noise_multiplier: float = 1.5
    max_grad_norm: float = 1.0
    delta: float = 1e-5
    config_seed: int = 2026
    """The federation config's public seed (``seed + round`` seeded the noise in 0.1.0)."""
    round: int = 1


SIZES: dict[str, ReplaySettings] = {
    "ci": ReplaySettings(),
    "full": ReplaySettings(n_patients=64, grid=24, channels=(8, 16, 32, 64), epochs=3),
}


class _Blank(Dataset):
    """The twin's records: right count and shapes, no patient in them (their gradients are zeroed anyway)."""

    def __init__(self, like: tuple[torch.Tensor, ...], n: int) -> None:
        self.like, self.n = like, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        return tuple(torch.zeros_like(t) for t in self.like)


def _flat(model: nn.Module) -> np.ndarray:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).double().numpy()


def noise_only_weights(initial: nn.Module, like: tuple[torch.Tensor, ...], n_records: int, plan: DPPlan,
                       settings: TrainSettings, randomness: DPRandomness) -> np.ndarray:
    """The weights SGD reaches from ``initial`` when every per-sample gradient is zero: pure noise steps."""
    twin = copy.deepcopy(initial)
    private = make_private(twin, torch.optim.SGD(twin.parameters(), lr=settings.learning_rate),
                           _Blank(like, n_records), plan, randomness=randomness)
    params = [p for p in private.model.parameters() if p.requires_grad]
    for _epoch in range(settings.epochs):
        for batch in private.loader:  # draws the Poisson mask, as the site's loader does
            private.optimizer.zero_grad(set_to_none=True)
            for p in params:
                set_grad_sample(p, torch.zeros((batch[0].shape[0], *p.shape), dtype=p.dtype))
            private.optimizer.step()  # draws the noise, as the site's optimiser does
    return _flat(twin)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def replay_arm(data: PatientSubset, settings: ReplaySettings, site_stream: Callable[[], DPRandomness],
               seed: int) -> dict[str, float]:
    """One site training, one attacker replay from the public config; how close the attacker got.

    ``site_stream()`` gives the site's randomness, the same stream each call: once to train, once (the
    site's self-knowledge, never the attacker's) to know the noise it drew.
    """
    torch.manual_seed(seed)
    initial = ResponseNet(settings.channels, 8, dropout=0.0)  # round-1 weights: public, from the seed
    dp = DPConfig(noise_multiplier=settings.noise_multiplier, max_grad_norm=settings.max_grad_norm,
                  delta=settings.delta)
    ts = TrainSettings(epochs=settings.epochs, batch_size=settings.batch_size,
                       learning_rate=settings.learning_rate, seed=seed, optimizer="sgd")
    plan = plan_dp(initial, len(data), settings.batch_size, settings.epochs, dp)
    released = _flat(train(copy.deepcopy(initial), "response", data, ts, plan, randomness=site_stream()).model)
    w0 = _flat(initial)
    like = TupleView(data, "response")[0]
    true_noise = noise_only_weights(initial, like, len(data), plan, ts, site_stream()) - w0
    clean = (released - w0) - true_noise
    # The attacker: the config's seed, as a 0.1.0 site would have used it.
    public = DPRandomness.from_public_seed(settings.config_seed + settings.round)
    estimate = (released - w0) - (noise_only_weights(initial, like, len(data), plan, ts, public) - w0)
    return {
        "cosine_estimate_vs_clean": round(_cosine(estimate, clean), 4),
        "relative_error": round(float(np.linalg.norm(estimate - clean) / np.linalg.norm(clean)), 4),
        "clean_norm": round(float(np.linalg.norm(clean)), 6),
        "noise_norm": round(float(np.linalg.norm(true_noise)), 6),
        "cosine_released_vs_clean": round(_cosine(released - w0, clean), 4),
        "steps": plan.steps, "sample_rate": round(plan.sample_rate, 4),
    }


def run_noise_replay(out_dir: Path, size: str = "ci", seed: int = 0) -> AttackResult:
    settings = SIZES[size]
    t0 = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = attack_data(out_dir / "work", settings.n_patients, settings.grid, seed)
    data = PatientSubset(tensors, np.arange(len(tensors)))
    public_seed = settings.config_seed + settings.round
    secret_key = os.urandom(KEY_BYTES)  # what DPRandomness.secret() does; kept here only to score the attack
    arms, replays = [], []
    for name, stream, control in (
            ("noise from the config's seed (flame-private 0.1.0)",
             lambda: DPRandomness.from_public_seed(public_seed), True),
            ("fresh secret randomness (as deployed)", lambda: DPRandomness(secret_key, replayable=False), False)):
        log.info("noise replay: %s", name)
        m = replay_arm(data, settings, stream, seed)
        replays.append(m)
        won = m["cosine_estimate_vs_clean"] >= SUCCESS_COSINE
        arms.append(AttackArm(
            name=name, protection="broken-dp" if control else "dp", is_control=control, attack_succeeded=won,
            metrics={**m},
            detail=(f"the attacker's clean-update estimate has cosine {m['cosine_estimate_vs_clean']:.3f} with the "
                    f"true clean update (relative error {m['relative_error']:.3g}); the released update alone "
                    f"has cosine {m['cosine_released_vs_clean']:.3f}.")))
    seeded, secret = replays
    eps = epsilon_for([(settings.noise_multiplier, seeded["sample_rate"], int(seeded["steps"]))], settings.delta, "prv")
    summary = (
        f"An attacker holding the federation config replays a site's DP-SGD with a patient-free twin to regenerate "
        f"its noise. When the noise came from the config's seed, the attacker recovered the site's clean update "
        f"(cosine {seeded['cosine_estimate_vs_clean']:.3f}): DP gave no protection against anyone holding "
        f"the config, whatever epsilon the ledger said. With the noise and sampling drawn from fresh secret "
        f"randomness, the same replay gives cosine {secret['cosine_estimate_vs_clean']:.3f}: the "
        f"attacker learns nothing beyond the noisy update, which epsilon {eps:.2f} bounds.")
    return AttackResult(attack="noise-replay", title="Noise regeneration from the public config",
                        summary=summary, seed=seed, size=size, seconds=round(time.perf_counter() - t0, 1),
                        settings={**asdict(settings), "attacker": "config, code, round-1 weights, site size",
                                  "success": f"cosine >= {SUCCESS_COSINE}"},
                        arms=arms, accounted_epsilon=round(eps, 4))
