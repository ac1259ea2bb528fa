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
from typing import ClassVar, Self

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from flame_private.config import MODALITIES
from flame_private.metrics import EvolutionSums, best_modality_index, roc_auc, treatment_metrics

N_BOOTSTRAP = 1000
CI_LEVEL = 0.95
RESPONSE_HEADLINES = ("auc", "balanced_accuracy", "brier")
EVOLUTION_HEADLINES = ("dice_whole_tumour", "dice_enhancing", "rano_class_agreement")
SEGMENTATION_HEADLINES = ("dice_whole_tumour", "dice_enhancing", "dice_necrotic_core", "dice_oedema",
                          "rano_class_agreement")
TREATMENT_HEADLINES = ("best_modality_accuracy", "regret_viable_burden_ml", "lost_response_rate")


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
    headlines: ClassVar[tuple[str, ...]] = EVOLUTION_HEADLINES
    """The metrics given a bootstrap interval."""

    @classmethod
    def from_cases(cls, patients: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]],
                   voxel_ml: float) -> Self:
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
                                    self.headlines))
        return out


class SegmentationScores(EvolutionScores):
    """A baseline segmentation per patient against the reference one: every label's Dice gets an interval."""

    headlines: ClassVar[tuple[str, ...]] = SEGMENTATION_HEADLINES


@dataclass
class TreatmentScores:
    """Treatment comparison: P(responder) predicted under each modality, and the counterfactual truth.

    One row per patient, one column per modality in ``MODALITIES`` order. A
    treatment-conditioned model (or the logistic baseline, which takes the
    treatment as a feature) is scored three times with the treatment switched;
    the truth is the simulator's outcome under each (``truth/counterfactuals.json``).
    """

    probs: np.ndarray
    responder: np.ndarray
    burden_ml: np.ndarray
    """Viable tumour at the first evaluation (mL): ranks modalities that all give a response."""

    @classmethod
    def from_truth(cls, probs: np.ndarray, patient_ids: list[str],
                   truth: dict[str, dict[str, dict]]) -> TreatmentScores:
        """Rows of ``probs`` for ``patient_ids``, against ``truth[patient][modality]`` (``load_truth``)."""
        missing = [p for p in patient_ids if p not in truth or any(m not in truth[p] for m in MODALITIES)]
        if missing:
            raise ValueError(f"counterfactual truth lacks patient(s) or modalities: {', '.join(missing[:5])}")
        resp = np.array([[bool(truth[p][m]["responder"]) for m in MODALITIES] for p in patient_ids], bool)
        burden = np.array([[float(truth[p][m]["viable_burden_ml"]) for m in MODALITIES] for p in patient_ids])
        return cls(np.asarray(probs, float).reshape(len(patient_ids), len(MODALITIES)),
                   resp.reshape(-1, len(MODALITIES)), burden.reshape(-1, len(MODALITIES)))

    @classmethod
    def concatenate(cls, parts: list[TreatmentScores]) -> TreatmentScores:
        """The patients of several parts (e.g. each site's test patients), scored together."""
        empty = np.zeros((0, len(MODALITIES)))
        return cls(*(np.concatenate([np.asarray(getattr(p, k)) for p in parts] or [empty])
                     for k in ("probs", "responder", "burden_ml")))

    def with_choice(self, modality_index: np.ndarray | int) -> TreatmentScores:
        """The same patients with a fixed choice per patient (or for all): how a rule is scored."""
        idx = np.broadcast_to(np.asarray(modality_index), (len(self.probs),))
        return TreatmentScores(np.eye(len(MODALITIES))[idx], self.responder, self.burden_ml)

    def true_best(self) -> np.ndarray:
        """Index of each patient's true best modality."""
        return best_modality_index(self.responder, self.burden_ml)

    def metrics(self, ci: bool = True) -> dict[str, float | list[float]]:
        """The treatment metrics, and ``chosen_<modality>``: the share of patients given each modality (a
        model that gives everyone the same one is a fixed rule, whatever its other figures)."""
        probs, resp, burden = (np.asarray(a) for a in (self.probs, self.responder, self.burden_ml))
        out: dict[str, float | list[float]] = dict(treatment_metrics(probs, resp, burden))
        chosen = np.bincount(np.argmax(probs, axis=1), minlength=len(MODALITIES)) if len(probs) else None
        for k, m in enumerate(MODALITIES):
            out[f"chosen_{m}"] = float(chosen[k] / len(probs)) if chosen is not None else float("nan")
        if ci:
            out.update(bootstrap_ci(len(probs), lambda i: treatment_metrics(probs[i], resp[i], burden[i]),
                                    TREATMENT_HEADLINES))
        return out


def majority_best(truth: TreatmentScores) -> int:
    """The modality most often best among ``truth``'s patients (first on ties): a one-size-fits-all rule."""
    counts = np.bincount(truth.true_best(), minlength=len(MODALITIES))
    return int(np.argmax(counts))


def treatment_baselines(test: TreatmentScores, train: TreatmentScores | None = None) -> dict[str, TreatmentScores]:
    """Fixed rules on ``test``'s patients: always the same modality (photons: the standard of care), and always
    the modality most often best among the ``train`` patients (when given)."""
    out = {f"always_{m}": test.with_choice(k) for k, m in enumerate(MODALITIES)}
    if train is not None and len(train.probs):
        out["always_majority_best"] = test.with_choice(majority_best(train))
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


@torch.no_grad()
def score_segmentation(model: torch.nn.Module, dataset: Dataset, voxel_ml: float, batch_size: int = 4
                       ) -> SegmentationScores:
    """The drawn baseline segmentation of each patient against its reference (which also stands as RANO's
    reference volume: ``metrics.sums_kind``)."""
    model.eval()
    cases = []
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        pred = model(batch["image"]).argmax(dim=1).numpy()
        for b in range(pred.shape[0]):
            truth = batch["target"][b, 0].numpy()
            cases.append([(pred[b], truth, truth)])
    return SegmentationScores.from_cases(cases, voxel_ml)


def baseline_metrics(task: str, train: Dataset, test: Dataset, voxel_ml: float) -> dict[str, dict]:
    """Each baseline of ``task``, fitted on ``train`` where it learns anything, scored on the ``test`` patients.

    ``no_change`` for evolution; ``prevalence``, ``logistic_observables`` and ``logistic_first_order`` for response;
    ``intensity_thresholds`` for segmentation.
    """
    from flame_private import baselines

    if task == "segmentation":
        return {"intensity_thresholds": baselines.intensity_thresholds(train, test, voxel_ml).metrics()}
    if task == "response":
        return {"prevalence": baselines.prevalence(train, test).metrics(),
                "logistic_observables": baselines.logistic_observables(train, test, voxel_ml).metrics(),
                "logistic_first_order": baselines.logistic_first_order(train, test, voxel_ml).metrics()}
    return {"no_change": baselines.no_change(test, voxel_ml).metrics()}


def evaluate_with_baselines(model: torch.nn.Module, task: str, train: Dataset, test: Dataset, voxel_ml: float,
                            batch_size: int = 4) -> dict[str, dict]:
    """The model and its baselines on the same ``test`` patients, same metric keys, with 95 % intervals.

    ``{"model": {...}, "baselines": {"no_change": {...}}}`` for evolution;
    ``{"baselines": {"prevalence": ..., "logistic_observables": ..., "logistic_first_order": ...}}`` for response.
    """
    scored: ResponseScores | EvolutionScores
    if task == "response":
        scored = score_response(model, test, batch_size)
    elif task == "segmentation":
        scored = score_segmentation(model, test, voxel_ml, batch_size)
    else:
        scored = score_evolution(model, test, voxel_ml, batch_size)
    return {"model": scored.metrics(), "baselines": baseline_metrics(task, train, test, voxel_ml)}


def calibration_bins(scores: ResponseScores, bins: int = 10) -> list[dict[str, float]]:
    """Reliability diagram data: per equal-width bin of P(responder), the mean prediction, the observed rate, n."""
    probs, labels = np.asarray(scores.probs, float), np.asarray(scores.labels, float)
    which = np.minimum((probs * bins).astype(int), bins - 1)
    return [{"predicted": float(probs[which == b].mean()), "observed": float(labels[which == b].mean()),
             "n": float((which == b).sum())} for b in range(bins) if (which == b).any()]
