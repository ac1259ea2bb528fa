"""The site's learning task, in the shape of Flower's app templates: model, data, train and evaluate factories.

Flower's templates split a ClientApp in two: thin ``client_app.py`` handlers that
unpack a message and pack the reply, over a ``task.py`` of plain factories (the
model, the data, ``train`` and ``test``).  Here ``site.py`` sits between the two:
the protocol steps and the site's privacy rule (authorise, train, record, then
encrypt and log), which runs ``train_fn`` and ``evaluate_fn`` only inside the
budget guard's ``spend``.  Nothing here checks a budget, records, encrypts or sends.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from flame_private.config import DPConfig, FederationConfig, Task
from flame_private.data.records import CaseRecord
from flame_private.experiments import initial_model, make_dataset
from flame_private.metrics import PATIENT_SENSITIVITY, dp_release, sums_kind
from flame_private.privacy import PlannedSpend
from flame_private.privacy.dp import DPPlan, noise_for_run, poisson_sampling
from flame_private.training import TrainSettings, patient_contributions, plan_training, train


def load_model(task: Task, fed: FederationConfig) -> nn.Module:
    """The initial model, seeded or the pinned public checkpoint: the same weights at every site (round 1)."""
    return initial_model(task, fed)


def load_data(task: Task, records: Sequence[CaseRecord], fed: FederationConfig) -> Dataset:
    """The dataset of ``task`` over ``records`` (one split of the site's patients)."""
    return make_dataset(task, records, fed)


def train_settings(fed: FederationConfig, round_: int) -> TrainSettings:
    """Local training of round ``round_``: the run's settings, seeded per round."""
    return TrainSettings(epochs=fed.local_epochs, batch_size=fed.batch_size,
                         learning_rate=fed.round_learning_rate(round_),
                         seed=fed.seed + round_, positive_weight=fed.response_positive_weight,
                         trainable=fed.model.response_trainable)


def run_dp(fed: FederationConfig, train_sizes: Mapping[Task, int]) -> DPConfig:
    """The run's DP settings at this site: with ``dp.run_epsilon``, the site's own noise multiplier for the run.

    ``train_sizes``: the patients DP-SGD samples from, per task.  The run is every round of
    every task (``local_epochs`` each) and the evaluations of the final models (of every
    round with ``evaluation.every_round``), all composed by the accountant.
    """
    dp = fed.dp
    if not dp.enabled or dp.run_epsilon is None:
        return dp
    trainings = []
    for task in fed.tasks:
        if train_sizes[task] == 0:  # a task this site cannot train (it declines it): no training to account
            continue
        sample_rate, steps = poisson_sampling(train_sizes[task], fed.batch_size, fed.local_epochs)
        trainings.append((sample_rate, steps * fed.rounds))
    evaluations = (fed.rounds if fed.evaluation.every_round else 1) * len(fed.tasks)
    sigma = noise_for_run(dp.run_epsilon, dp.delta, tuple(trainings),
                          ((fed.evaluation.noise_multiplier, evaluations),), dp.accountant)
    return dp.model_copy(update={"noise_multiplier": sigma, "run_epsilon": None})


def train_plan(model: nn.Module, task: Task, dataset: Dataset, settings: TrainSettings,
               dp: DPConfig) -> DPPlan | None:
    """The DP-SGD mechanism of this training, known before it runs; None when the run config disables DP."""
    return plan_training(model, task, dataset, settings, dp)


def train_fn(model: nn.Module, task: Task, dataset: Dataset, settings: TrainSettings,
             plan: DPPlan) -> dict[str, torch.Tensor]:
    """DP-SGD training of ``model`` under ``plan``: the trained weights (the update before encryption)."""
    return train(model, task, dataset, settings, plan).model.state_dict()


def evaluation_spend(run_id: str, round_: int, task: Task, fed: FederationConfig) -> PlannedSpend:
    """Scoring the validation patients as one release of the Gaussian mechanism on their bounded contributions."""
    return PlannedSpend(run_id=run_id, round=round_, task=task, noise_multiplier=fed.evaluation.noise_multiplier,
                        sample_rate=1.0, steps=1, max_grad_norm=PATIENT_SENSITIVITY[task])


def evaluate_fn(model: nn.Module, task: Task, dataset: Dataset, fed: FederationConfig) -> np.ndarray:
    """The DP-noised metric sums of ``model`` on ``dataset`` (fresh secret noise at each call)."""
    size = len(sums_kind(task)().vector())
    vectors = (patient_contributions(model, task, dataset, fed.batch_size, fed.data.voxel_mm**3 / 1000.0)
               if len(dataset) else [])  # type: ignore[arg-type]
    return dp_release(vectors, size, PATIENT_SENSITIVITY[task], fed.evaluation.noise_multiplier)
