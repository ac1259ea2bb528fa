"""Scoring a model (or a baseline) on patients held at one place: exact metrics with bootstrap intervals.

Local evaluation needs no DP and no encryption, so it uses the exact AUC
(Mann-Whitney) on the raw probabilities, not the histogram AUC of federated
sums, and carries a 95 % bootstrap interval (patients resampled) on every
headline figure: 17 test patients cannot tell two models apart, and the
interval says so.  Baselines (``baselines.py``) are scored by the same code on
the same patients.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from flame_private.metrics import EvolutionSums, roc_auc

N_BOOTSTRAP = 1000
CI_LEVEL = 0.95
RESPONSE_HEADLINES = ("auc", "balanced_accuracy", "brier")
EVOLUTION_HEADLINES = ("dice_whole_tumour", "dice_enhancing", "rano_class_agreement")


def _response_metrics(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    pos, neg = labels > 0.5, labels <= 0.5
    sens = float(((probs >= 0.5) & pos).sum() / pos.sum()) if pos.any() else float("nan")
    spec = float(((probs < 0.5) & neg).sum() / neg.sum()) if neg.any() else float("nan")
    n = len(labels)
    return {"n": float(n), "auc": roc_auc(probs, labels),
            "balanced_accuracy": float(np.nanmean([sens, spec])) if n and pos.any() | neg.any() else float("nan"),
            "brier": float(np.mean((probs - labels) ** 2)) if n else float("nan")}


def bootstrap_ci(n: int, statistic: Callable[[np.ndarray], dict[str, float]], keys: tuple[str, ...],
                 n_boot: int = N_BOOTSTRAP, seed: int = 0) -> dict[str, list[float]]:
    """Percentile interval of each ``keys`` statistic over ``n_boot`` resamples of the n patients."""
    if n < 2:
        return {f"{k}_ci95": [float("nan"), float("nan")] for k in keys}
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {k: [] for k in keys}
    for _ in range(n_boot):
        stats = statistic(rng.integers(0, n, n))
        for k in keys:
            draws[k].append(stats[k])
    tail = 100 * (1 - CI_LEVEL) / 2
    out = {}
    for k, values in draws.items():
        v = np.asarray(values, float)
        v = v[np.isfinite(v)]
        out[f"{k}_ci95"] = ([float(np.percentile(v, tail)), float(np.percentile(v, 100 - tail))] if len(v)
                            else [float("nan"), float("nan")])
    return out


@dataclass
class ResponseScores:
    """P(responder) and the truth for each patient."""

    probs: np.ndarray
    labels: np.ndarray

    def metrics(self, ci: bool = True) -> dict[str, float | list[float]]:
        probs, labels = np.asarray(self.probs, float), np.asarray(self.labels, float)
        out: dict[str, float | list[float]] = dict(_response_metrics(probs, labels))
        if ci:
            out.update(bootstrap_ci(len(labels), lambda i: _response_metrics(probs[i], labels[i]),
                                    RESPONSE_HEADLINES))
        return out


@dataclass
class EvolutionScores:
    """One metric-sum vector per patient (``EvolutionSums`` of that patient alone)."""

    vectors: np.ndarray

    @classmethod
    def from_cases(cls, patients: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]],
                   voxel_ml: float) -> EvolutionScores:
        """``patients``: for each patient, its (prediction, truth, baseline) label maps."""
        vectors = []
        for cases in patients:
            one = EvolutionSums()
            one.add_patient(cases, voxel_ml)
            vectors.append(one.vector())
        return cls(np.array(vectors) if vectors else np.zeros((0, len(EvolutionSums().vector()))))

    def metrics(self, ci: bool = True) -> dict[str, float | list[float]]:
        v = self.vectors
        out: dict[str, float | list[float]] = dict(EvolutionSums.from_vector(v.sum(0)).metrics() if len(v)
                                                   else EvolutionSums().metrics())
        if ci:
            out.update(bootstrap_ci(len(v), lambda i: EvolutionSums.from_vector(v[i].sum(0)).metrics(),
                                    EVOLUTION_HEADLINES))
        return out


def patient_of_each_item(dataset: Dataset) -> list[tuple[int, int]]:
    """(part, patient) of every item: follow-ups of one patient are one patient, also across a ConcatDataset."""
    from torch.utils.data import ConcatDataset

    from flame_private.data.datasets import EvolutionDataset, dataset_size

    parts = dataset.datasets if isinstance(dataset, ConcatDataset) else [dataset]
    out: list[tuple[int, int]] = []
    for k, part in enumerate(parts):
        if isinstance(part, EvolutionDataset):
            out += [(k, r) for r, _ in part.index]
        else:
            out += [(k, i) for i in range(dataset_size(part))]
    return out


@torch.no_grad()
def score_response(model: torch.nn.Module, dataset: Dataset, batch_size: int = 4) -> ResponseScores:
    model.eval()
    probs, labels = [], []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        logits = model(batch["image"], batch["seg"], batch["treatment"], batch["covariates"])
        probs.append(torch.sigmoid(logits).reshape(-1).numpy())
        labels.append(batch["label"].reshape(-1).numpy())
    return ResponseScores(np.concatenate(probs) if probs else np.zeros(0),
                          np.concatenate(labels) if labels else np.zeros(0))


@torch.no_grad()
def score_evolution(model: torch.nn.Module, dataset: Dataset, voxel_ml: float, batch_size: int = 4
                    ) -> EvolutionScores:
    model.eval()
    owners = patient_of_each_item(dataset)
    cases: dict[tuple[int, int], list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
    i = 0
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        pred = model(batch["image"], batch["seg"], batch["treatment"], batch["interval"]).argmax(dim=1).numpy()
        for b in range(pred.shape[0]):
            cases.setdefault(owners[i], []).append((pred[b], batch["target"][b, 0].numpy(),
                                                    batch["seg"][b, 0].numpy()))
            i += 1
    return EvolutionScores.from_cases(list(cases.values()), voxel_ml)


def evaluate_with_baselines(model: torch.nn.Module, task: str, train: Dataset, test: Dataset, voxel_ml: float,
                            batch_size: int = 4) -> dict[str, dict]:
    """The model and its baselines on the same ``test`` patients, same metric keys, with 95 % intervals.

    ``{"model": {...}, "baselines": {"no_change": {...}}}`` for evolution;
    ``{"baselines": {"prevalence": ..., "logistic_observables": ...}}`` for response.
    """
    from flame_private import baselines

    if task == "response":
        return {"model": score_response(model, test, batch_size).metrics(),
                "baselines": {"prevalence": baselines.prevalence(train, test).metrics(),
                              "logistic_observables": baselines.logistic_observables(train, test,
                                                                                     voxel_ml).metrics()}}
    return {"model": score_evolution(model, test, voxel_ml, batch_size).metrics(),
            "baselines": {"no_change": baselines.no_change(test, voxel_ml).metrics()}}
