"""The one training and evaluation loop, shared by local, centralised and federated runs.

A task (response, evolution or segmentation) is a dataset layout, a forward call and a loss;
everything else (optimiser, DP wrapping, epochs, evaluation sums) is the same
code whoever calls it.  Privacy spend is not recorded here: callers check the
budget with the plan from ``plan_training`` before training and record it
before anything leaves the site.

``TrainSettings.seed`` is public (it comes from the run config): it fixes what
may be reproducible (non-private shuffling, dropout, which follow-up stands for a
patient).  DP-SGD's noise and Poisson sampling never depend on it: they come
from fresh secret randomness (``privacy.randomness``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from monai.losses import DiceCELoss
from torch import nn
from torch.utils.data import DataLoader, Dataset

from flame_private.config import MODALITIES, DPConfig, Task
from flame_private.data.datasets import EvolutionDataset, OneFollowUpPerPatient, dataset_size
from flame_private.data.errors import DataError
from flame_private.metrics import EvolutionSums, ResponseSums, sums_kind
from flame_private.privacy.dp import DPPlan, make_private, plan_dp, set_grad_sample, unwrap
from flame_private.privacy.randomness import DPRandomness

log = logging.getLogger(__name__)

KEYS: dict[str, tuple[str, ...]] = {
    "response": ("image", "seg", "treatment", "covariates", "label"),
    "evolution": ("image", "seg", "treatment", "interval", "target"),
    "segmentation": ("image", "target"),
}
"""Tensor order of a batch: Opacus's Poisson loader needs tuples, not dicts."""


class TupleView(Dataset):
    """A dict-returning dataset seen as tuples in ``KEYS[task]`` order."""

    def __init__(self, dataset: Dataset, task: Task) -> None:
        self.dataset, self.keys = dataset, KEYS[task]

    def __len__(self) -> int:
        return dataset_size(self.dataset)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        item = self.dataset[i]
        return tuple(item[k] for k in self.keys)


@dataclass(frozen=True)
class TrainSettings:
    epochs: int = 1
    batch_size: int = 4
    learning_rate: float = 1e-3
    seed: int = 0
    """Public: reproducible shuffling and dropout; never DP noise or sampling."""
    optimizer: Literal["adam", "sgd"] = "adam"
    positive_weight: float = 1.0
    """Weight of responders in the response loss (BCE ``pos_weight``); a public setting, never a site's label rate."""
    trainable: Literal["all", "wide"] = "all"
    """Response only: train every parameter, or only the linear part (``ModelConfig.response_trainable``)."""
    lr_schedule: Literal["constant", "cosine"] = "constant"
    """``cosine``: the learning rate falls from ``learning_rate`` to 0 along a half cosine over the training's
    steps, so the last epoch's model is a settled one, not one caught mid-oscillation at a high rate."""


@dataclass
class TrainResult:
    model: nn.Module
    plan: DPPlan | None
    losses: list[float] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0


def make_loss(task: Task, positive_weight: float = 1.0) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Mean of per-patient losses (what per-sample clipping assumes).

    ``positive_weight`` < 1 down-weights responders where most patients respond, so that a 0.5
    threshold separates the classes (balanced accuracy) rather than predicting "responder" for all.
    """
    if task == "response":
        bce = nn.BCEWithLogitsLoss(reduction="mean", pos_weight=torch.tensor(float(positive_weight)))
        return lambda logits, target: bce(logits, target.float())
    dice_ce = DiceCELoss(to_onehot_y=True, softmax=True, batch=False, reduction="mean")
    return lambda logits, target: dice_ce(logits, target)


def gradient(p: torch.Tensor) -> torch.Tensor:
    """``p``'s gradient after a backward pass or optimiser step; a missing one is an error, never zeros."""
    if p.grad is None:
        raise RuntimeError(f"parameter of shape {tuple(p.shape)} has no gradient")
    return p.grad


def forward(model: nn.Module, batch: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Model output and target for a batch in ``KEYS`` order."""
    *inputs, target = batch
    return model(*inputs), target


def training_size(task: Task, dataset: Dataset) -> int:
    """Number of records DP-SGD samples from: patients, whatever the task."""
    if task == "evolution" and isinstance(dataset, EvolutionDataset):
        return len(OneFollowUpPerPatient(dataset))
    return dataset_size(dataset)


def plan_training(model: nn.Module, task: Task, dataset: Dataset, settings: TrainSettings,
                  dp: DPConfig | None) -> DPPlan | None:
    """The DP mechanism this training will run, known before it runs (for the budget check)."""
    _require_patients(task, dataset)
    if dp is None or not dp.enabled:
        return None
    return plan_dp(model, training_size(task, dataset), settings.batch_size, settings.epochs, dp)


def _require_patients(task: Task, dataset: Dataset) -> None:
    """Training on no patient would return the untrained model as if trained: refused, before any spend."""
    if training_size(task, dataset) == 0:
        raise DataError(f"no patient to train the {task} model on (a segmentation drawn by a model is no target)"
                        if task == "segmentation" else f"no patient to train the {task} model on")


def make_optimizer(model: nn.Module, settings: TrainSettings) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if settings.optimizer == "sgd":
        return torch.optim.SGD(params, lr=settings.learning_rate)
    return torch.optim.Adam(params, lr=settings.learning_rate)


WIDE_PREFIX = "clinical."
"""Parameter names of the response network's linear part."""


def frozen_state_keys(task: Task, trainable: Literal["all", "wide"], names: Iterable[str]) -> list[str]:
    """The state-dict entries that training leaves at their initial values (``TrainSettings.trainable``).

    They are public (the seed or the pinned checkpoint every site builds the same way) and never change, so a
    federation does not send them: they stay at every site, and only the trained entries are encrypted.
    """
    if task == "response" and trainable == "wide":
        return [k for k in names if not k.startswith(WIDE_PREFIX)]
    return []


def set_trainable(model: nn.Module, task: Task, trainable: Literal["all", "wide"]) -> int:
    """Mark which parameters train (``TrainSettings.trainable``); returns how many values train.

    Sets every parameter's flag, "all" included (unfreezes a model that was frozen).
    """
    if trainable == "wide" and task != "response":
        raise ValueError(f"trainable='wide' is the response network's linear part; the {task} model has none")
    for name, p in model.named_parameters():
        p.requires_grad_(trainable == "all" or name.startswith(WIDE_PREFIX))
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def train(model: nn.Module, task: Task, dataset: Dataset, settings: TrainSettings, plan: DPPlan | None,
          on_step: Callable[[int, float], None] | None = None,
          randomness: DPRandomness | None = None,
          on_epoch: Callable[[int, nn.Module], None] | None = None) -> TrainResult:
    """Train ``model`` in place; DP-SGD when ``plan`` is given, plain Adam (or SGD) otherwise.

    Under DP the noise and sampling come from ``randomness``: fresh secret
    randomness when None (every real training); a replayable one only in the
    attack suite's positive control and in tests.  ``on_epoch(epoch, model)`` is called after each
    epoch with the plain model in eval mode (learning curves); training resumes in train mode.
    """
    _require_patients(task, dataset)
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    if task == "evolution" and isinstance(dataset, EvolutionDataset):
        dataset = OneFollowUpPerPatient(dataset, seed=settings.seed)  # the unit of privacy is the patient
    data = TupleView(dataset, task)
    model.train()  # a model that was evaluated (or received) comes in eval mode; Opacus needs train mode
    if task == "response" and settings.trainable == "wide":
        set_trainable(model, task, "wide")  # "all" leaves a caller's own freezing (e.g. a frozen encoder) alone
    optimizer = make_optimizer(model, settings)
    if plan is not None:
        private = make_private(model, optimizer, data, plan, randomness=randomness or DPRandomness.secret())
        net, optimizer, loader = private.model, private.optimizer, private.loader
    else:
        net = model
        loader = DataLoader(data, batch_size=settings.batch_size, shuffle=True, generator=generator)
    loss_fn = make_loss(task, settings.positive_weight)
    schedule = None
    if settings.lr_schedule == "cosine":
        total = plan.steps if plan is not None else settings.epochs * len(loader)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total, 1))
    result = TrainResult(model=model, plan=plan)
    t0 = time.perf_counter()
    net.train()
    for _epoch in range(settings.epochs):
        for batch in loader:
            optimizer.zero_grad(set_to_none=True)
            if batch[0].shape[0] == 0:
                # An empty Poisson batch is still a step: no patient's gradient, only the noise, and the
                # accountant counts it.  Opacus needs zero-length per-sample gradients to take it.
                if plan is not None:
                    for p in net.parameters():
                        if p.requires_grad:
                            set_grad_sample(p, torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device))
                    optimizer.step()
                result.steps += 1
                if schedule is not None:
                    schedule.step()
                continue
            out, target = forward(net, batch)
            loss = loss_fn(out, target)
            loss.backward()
            optimizer.step()
            result.steps += 1
            if schedule is not None:
                schedule.step()
            result.losses.append(float(loss.detach()))
            if on_step:
                on_step(result.steps, result.losses[-1])
        if on_epoch is not None:
            net.eval()
            on_epoch(_epoch + 1, unwrap(net))
            net.train()
    result.seconds = time.perf_counter() - t0
    if plan is not None and result.steps != plan.steps:
        raise RuntimeError(f"ran {result.steps} DP steps but planned {plan.steps}: the ledger would be wrong")
    result.model = unwrap(net)
    result.model.eval()
    return result


@torch.no_grad()
def start_from_regression(model: nn.Module, dataset: Dataset, batch_size: int = 16) -> None:
    """Set a response network's linear ("wide") part to the logistic regression of its wide features.

    Class-balanced and L2-regularised like the logistic baselines, fitted on
    ``dataset`` (non-private: centralised training only), with the feature
    scaling folded into the weights.  Why: joint training leaves the linear part
    far from the regression's optimum for many epochs (on the study cohort its
    validation AUC crawled from 0.69 to 0.74 in 12 epochs while the regression
    of the same features scores 0.82), so the image path would be judged
    against an under-fitted start rather than against what the features give.
    """
    from flame_private.baselines import fit_logistic
    from flame_private.data.errors import DataError
    from flame_private.models.response import ResponseNet, wide_features

    if not isinstance(model, ResponseNet):
        raise TypeError(f"start_from_regression needs a ResponseNet, got {type(model).__name__}")
    rows, labels = [], []
    for image, seg, treatment, covariates, label in DataLoader(TupleView(dataset, "response"), batch_size=batch_size):
        rows.append(wide_features(image, seg, treatment, covariates).numpy())
        labels.append(label.numpy())
    if not rows:
        raise DataError("a regression start needs training patients; there are none")
    x, y = np.concatenate(rows).astype(np.float64), np.concatenate(labels)
    fit = fit_logistic(x, y)  # the logistic baselines' pipeline: scaler, then class-balanced L2 regression
    if isinstance(fit, float):
        raise DataError(f"a regression start needs responders and non-responders among the training patients; all "
                        f"{len(y)} are {'responders' if y[0] else 'non-responders'}")
    scaler, regression = fit[0], fit[-1]
    weight = regression.coef_[0] / scaler.scale_
    bias = float(regression.intercept_[0]) - float((weight * scaler.mean_).sum())
    model.clinical.weight.copy_(torch.as_tensor(weight[None], dtype=model.clinical.weight.dtype))
    model.clinical.bias.fill_(bias)


@torch.no_grad()
def patient_contributions(model: nn.Module, task: Task, dataset: Dataset, batch_size: int = 4,
                          voxel_ml: float = 0.001) -> list[np.ndarray]:
    """Each patient's metric-sum vector (see metrics.py): the unit a DP release bounds."""
    model.eval()
    loader = DataLoader(TupleView(dataset, task), batch_size=batch_size, shuffle=False)
    if task == "response":
        out: list[np.ndarray] = []
        for batch in loader:
            probs = torch.sigmoid(forward(model, batch)[0]).numpy()
            for p, y in zip(probs, batch[-1].numpy(), strict=True):
                one = ResponseSums()
                one.add(np.array([p]), np.array([y]))
                out.append(one.vector())
        return out
    from flame_private.evaluation import score_evolution, score_segmentation  # per-patient vectors

    score = score_segmentation if task == "segmentation" else score_evolution
    return list(score(model, dataset, voxel_ml, batch_size).vectors)


def evaluate(model: nn.Module, task: Task, dataset: Dataset, batch_size: int = 4,
             voxel_ml: float = 0.001) -> ResponseSums | EvolutionSums:
    """Evaluation sums over ``dataset`` (see metrics.py); ``voxel_ml`` is the model grid's voxel volume."""
    kind = sums_kind(task)
    vectors = patient_contributions(model, task, dataset, batch_size, voxel_ml)
    return kind.from_vector(np.sum(vectors, axis=0)) if vectors else kind()


@torch.no_grad()
def response_under_each_modality(model: nn.Module, image: torch.Tensor, seg: torch.Tensor,
                                 covariates: torch.Tensor) -> dict[str, float]:
    """P(responder) for one patient (unbatched tensors) under photons, protons and carbon ions."""
    model.eval()
    eye = torch.eye(len(MODALITIES))
    n = len(MODALITIES)
    logits = model(image.expand(n, *image.shape), seg.expand(n, *seg.shape), eye, covariates.expand(n, -1))
    return {m: float(p) for m, p in zip(MODALITIES, torch.sigmoid(logits).tolist(), strict=True)}


@torch.no_grad()
def evolution_under_each_modality(model: nn.Module, image: torch.Tensor, seg: torch.Tensor,
                                  interval_years: float) -> dict[str, np.ndarray]:
    """Predicted follow-up label map for one patient under each modality."""
    model.eval()
    n = len(MODALITIES)
    interval = torch.full((n, 1), float(interval_years))
    logits = model(image.expand(n, *image.shape), seg.expand(n, *seg.shape), torch.eye(n), interval)
    labels = logits.argmax(dim=1).numpy().astype(np.uint8)
    return {m: labels[i] for i, m in enumerate(MODALITIES)}
