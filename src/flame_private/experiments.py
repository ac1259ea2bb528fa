"""Local (one site, DP) and centralised (pooled, non-private) training runs.

The centralised run is the upper reference a federation is compared with; the
local run is what a site could do alone.  Both use the same loop as the
federation (training.py).  A local DP run checks the site's budget before
training and records the spend in the site's ledger before the model is written.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset

from flame_private import baselines
from flame_private.config import MODALITIES, FederationConfig, SiteConfig, Task
from flame_private.data.checks import LoadedSite, load_site
from flame_private.data.datasets import (
    EvolutionDataset,
    ResponseDataset,
    SegmentationDataset,
    dataset_size,
    encode_covariates,
)
from flame_private.data.records import CaseRecord
from flame_private.data.splits import split_records
from flame_private.evaluation import TreatmentScores, evaluate_with_baselines, treatment_baselines
from flame_private.metrics import EvolutionSums, ResponseSums, sums_kind
from flame_private.models import build_model, count_parameters
from flame_private.models.io import load_initial_weights, save_model
from flame_private.privacy.budget import open_site_budget
from flame_private.training import (
    TrainSettings,
    evaluate,
    plan_training,
    response_under_each_modality,
    start_from_regression,
    train,
)

log = logging.getLogger(__name__)


def make_dataset(task: Task, records: Sequence[CaseRecord],
                 cfg: FederationConfig) -> ResponseDataset | EvolutionDataset | SegmentationDataset:
    """The dataset of ``task`` over ``records``."""
    if task == "response":
        return ResponseDataset(records, cfg.data)
    if task == "segmentation":
        return SegmentationDataset(records, cfg.data)
    return EvolutionDataset(records, cfg.data)


def settings_from(cfg: FederationConfig, epochs: int | None = None) -> TrainSettings:
    """Training in one go (central, local, a study's single-site arms): a schedule spans its steps."""
    return TrainSettings(epochs=cfg.local_epochs if epochs is None else epochs, batch_size=cfg.batch_size,
                         learning_rate=cfg.learning_rate, seed=cfg.seed,
                         positive_weight=cfg.response_positive_weight, trainable=cfg.model.response_trainable,
                         lr_schedule=cfg.lr_schedule)


def initial_model(task: Task, cfg: FederationConfig) -> torch.nn.Module:
    """The same initial weights at every site and in every run with this seed, or the pinned public checkpoint.

    With ``initial_weights`` set for ``task``, the network is built as configured
    and its weights replaced by the checkpoint's, after its SHA-256 is checked
    (``models.io.load_initial_weights``).
    """
    torch.manual_seed(cfg.seed)
    model = build_model(task, cfg.model)
    pinned = cfg.initial_weights.get(task)
    return model if pinned is None else load_initial_weights(model, task, pinned, cfg.model, cfg.data)


def load_truth(path: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """Counterfactual outcomes by patient and modality (evaluation only; never used to train)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    return {p["patient_id"]: p["outcomes"] for p in data["patients"]}


def treatment_scores(model: torch.nn.Module, dataset: ResponseDataset,
                     truth: dict[str, dict[str, dict[str, Any]]]) -> TreatmentScores:
    """P(responder) under each modality for ``dataset``'s patients (those in ``truth``), with their truth."""
    ids, probs = [], []
    for i, rec in enumerate(dataset.records):
        if rec.patient_id not in truth or rec.covariates is None:
            continue
        item = dataset[i]
        p = response_under_each_modality(model, item["image"], item["seg"], encode_covariates(rec.covariates))
        ids.append(rec.patient_id)
        probs.append([p[m] for m in MODALITIES])
    return TreatmentScores.from_truth(np.array(probs, float).reshape(len(ids), len(MODALITIES)), ids, truth)


def compare_treatments(model: torch.nn.Module, dataset: ResponseDataset,
                       truth: dict[str, dict[str, dict[str, Any]]]) -> dict[str, float | list[float]]:
    """Predicted best modality against the simulated truth, on ``dataset``'s patients, with 95 % intervals."""
    return treatment_scores(model, dataset, truth).metrics()


def treatment_comparison_with_baselines(train: Sequence[ResponseDataset], test: Sequence[ResponseDataset],
                                        truth: dict[str, dict[str, dict[str, Any]]], voxel_ml: float,
                                        model: torch.nn.Module | None = None) -> dict[str, TreatmentScores]:
    """Treatment comparison on the pooled ``test`` patients, every contender on the same patients.

    ``model`` (when given, key ``model``), the logistic baseline fitted on the pooled ``train``
    patients with the treatments they were given (``logistic_observables``), and the fixed rules
    (``treatment_baselines``; the majority rule learns its modality from the ``train`` patients' truth).
    A test patient the model cannot be scored on (no counterfactual truth, no covariates) is an error:
    a comparison on fewer patients than the baselines' would not be a comparison.
    """
    train_ids = [r.patient_id for ds in train for r in ds.records]
    test_ids = [r.patient_id for ds in test for r in ds.records]
    lr = baselines.logistic_observables_each_modality(ConcatDataset(list(train)), ConcatDataset(list(test)), voxel_ml)
    scored = {"logistic_observables": TreatmentScores.from_truth(lr, test_ids, truth)}
    train_truth = TreatmentScores.from_truth(np.zeros((len(train_ids), len(MODALITIES))), train_ids, truth)
    scored.update(treatment_baselines(scored["logistic_observables"], train_truth))
    if model is None:
        return scored
    net = TreatmentScores.concatenate([treatment_scores(model, ds, truth) for ds in test])
    if len(net.probs) != len(test_ids):
        raise ValueError(f"the model was scored on {len(net.probs)} of {len(test_ids)} test patients: every test "
                         "patient needs covariates and counterfactual truth")
    return {"model": net, **scored}


def _metrics(task: Task, model: torch.nn.Module, ds: Dataset, cfg: FederationConfig) -> dict[str, float]:
    if dataset_size(ds) == 0:
        return {"n": 0.0}
    sums = evaluate(model, task, ds, cfg.batch_size, cfg.data.voxel_mm**3 / 1000.0)
    return sums.metrics()


def _test_with_baselines(task: Task, model: torch.nn.Module, train_ds: Dataset, test_ds: Dataset,
                         cfg: FederationConfig) -> dict[str, Any]:
    """``test`` (exact metrics, 95 % bootstrap intervals) and ``baselines`` on the same test patients."""
    if dataset_size(test_ds) == 0:
        return {"test": {"n": 0.0}, "baselines": {}}
    scored = evaluate_with_baselines(model, task, train_ds, test_ds, cfg.data.voxel_mm**3 / 1000.0, cfg.batch_size)
    return {"test": scored["model"], "baselines": scored["baselines"]}


def _skipped(loaded: LoadedSite) -> list[dict[str, Any]]:
    return [{"patient_id": s.patient_id, "problems": [str(p) for p in s.problems]} for s in loaded.skipped]


def run_local(site: SiteConfig, task: Task, cfg: FederationConfig, out: Path, dp: bool = True,
              epochs: int | None = None, truth: Path | None = None, run_id: str | None = None,
              on_step: Callable[[int, float], None] | None = None, skip_invalid: bool = False) -> dict[str, Any]:
    """Train one site's model on its own data; with DP the site's budget is checked and spent.

    Invalid cases stop the run (listed in the error) unless ``skip_invalid``; then
    they are left out and listed in the report.
    """
    if epochs is not None and epochs < 1:
        raise ValueError(f"local training needs at least 1 epoch, got {epochs}")
    run_id = run_id or f"local-{task}-{time.strftime('%Y%m%dT%H%M%S')}"
    loaded = load_site(site.data_dir, site.layout, site.site_id, skip_invalid=skip_invalid)
    records = loaded.records
    splits = split_records(records, cfg.data)
    train_ds = make_dataset(task, splits.train, cfg)
    settings = settings_from(cfg, epochs)
    model = initial_model(task, cfg)
    dp_cfg = cfg.dp if dp else cfg.dp.model_copy(update={"enabled": False})
    plan = plan_training(model, task, train_ds, settings, dp_cfg)
    if plan is None:
        result, epsilon = train(model, task, train_ds, settings, None, on_step=on_step), None
    else:  # authorised before any training; recorded (fsync) before the model is written anywhere
        spent = open_site_budget(site).spend(plan.planned_spend(run_id, 1, task),
                                             lambda: train(model, task, train_ds, settings, plan, on_step=on_step))
        result, epsilon = spent.value, spent.entry.epsilon_after
    report: dict[str, Any] = {
        "run_id": run_id, "site_id": site.site_id, "task": task, "dp": plan is not None, "start": cfg.model_start(task),
        "skipped_cases": _skipped(loaded),
        "epsilon_site_total": epsilon, "delta": cfg.dp.delta if plan else None,
        "noise_multiplier": plan.noise_multiplier if plan else None,
        "sample_rate": plan.sample_rate if plan else None, "steps": result.steps,
        "parameters": count_parameters(result.model), "train_seconds": round(result.seconds, 2),
        "patients": {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test)},
        "val": _metrics(task, result.model, make_dataset(task, splits.val, cfg), cfg),
    }
    report.update(_test_with_baselines(task, result.model, train_ds, make_dataset(task, splits.test, cfg), cfg))
    if truth is not None and task == "response" and splits.test:
        report["treatment_comparison"] = compare_treatments(result.model, ResponseDataset(splits.test, cfg.data),
                                                            load_truth(truth))
    save_model(out / f"{task}.pt", task, result.model, cfg.model, cfg.data, card=report)
    return report


def run_central(sites: Sequence[SiteConfig], task: Task, cfg: FederationConfig, out: Path,
                epochs: int | None = None, truth: Path | None = None,
                on_step: Callable[[int, float], None] | None = None, skip_invalid: bool = False,
                regression_start: bool = False) -> dict[str, Any]:
    """Pool every site's training patients (no privacy): the upper reference for the federation.

    ``regression_start`` (response only) first sets the network's linear part to
    the logistic regression of its wide features on the pooled training patients
    (``training.start_from_regression``); with ``epochs=0`` the saved model is
    that regression.  On a public cohort, that is a free starting point for a
    federation that trains only the linear part under DP (``initial_weights``).
    """
    if regression_start and task != "response":
        raise ValueError("a regression start is for the response model's linear part; the task is " + task)
    if epochs is not None and epochs < 0:
        raise ValueError(f"epochs must be 0 or more, got {epochs}")
    per_site, skipped = {}, {}
    for site in sites:
        loaded = load_site(site.data_dir, site.layout, site.site_id, skip_invalid=skip_invalid)
        per_site[site.site_id] = split_records(loaded.records, cfg.data)
        skipped[site.site_id] = _skipped(loaded)
    train_ds: ConcatDataset[dict[str, torch.Tensor]] = ConcatDataset(
        [make_dataset(task, s.train, cfg) for s in per_site.values()])
    settings = settings_from(cfg, epochs)
    model = initial_model(task, cfg)
    if regression_start:
        start_from_regression(model, train_ds)
    result = train(model, task, train_ds, settings, None, on_step=on_step)
    voxel_ml = cfg.data.voxel_mm**3 / 1000.0
    pooled: ResponseSums | EvolutionSums = sums_kind(task)()
    report: dict[str, Any] = {"task": task, "dp": False, "steps": result.steps, "skipped_cases": skipped,
                              "start": cfg.model_start(task), "regression_start": regression_start,
                              "parameters": count_parameters(result.model),
                              "train_seconds": round(result.seconds, 2), "sites": {}}
    for site_id, s in per_site.items():
        test_ds = make_dataset(task, s.test, cfg)
        if dataset_size(test_ds) == 0:
            report["sites"][site_id] = {"n": 0.0}
            continue
        sums = evaluate(result.model, task, test_ds, cfg.batch_size, voxel_ml)
        report["sites"][site_id] = sums.metrics()
        pooled = type(pooled).from_vector(pooled.vector() + sums.vector())
    pooled_test: ConcatDataset[dict[str, torch.Tensor]] = ConcatDataset(
        [make_dataset(task, s.test, cfg) for s in per_site.values()])
    report["test_pooled_sums"] = pooled.metrics()  # the federated-style sums (histogram AUC), for comparison
    report.update(_test_with_baselines(task, result.model, train_ds, pooled_test, cfg))
    if truth is not None and task == "response":  # every site's test patients, scored together
        scored = treatment_comparison_with_baselines(
            [ResponseDataset(s.train, cfg.data) for s in per_site.values()],
            [ResponseDataset(s.test, cfg.data) for s in per_site.values()],
            load_truth(truth), voxel_ml, result.model)
        report["treatment_comparison"] = scored.pop("model").metrics()
        report["treatment_comparison_baselines"] = {k: v.metrics() for k, v in scored.items()}
    save_model(out / f"{task}.pt", task, result.model, cfg.model, cfg.data, card=report)
    return report

