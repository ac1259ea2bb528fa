"""A study model and its baselines, scored on every patient of a site it never saw.

The baselines are fitted on the training patients of the sites the model could
have learnt from (every site but the held-out one), so that every arm of one
held-out site is compared with the same baselines on the same patients.
"""

from __future__ import annotations

from typing import Any, cast

import torch

from flame_private.config import Task
from flame_private.data.datasets import ResponseDataset
from flame_private.evaluation import (
    baseline_metrics,
    calibration_bins,
    score_evolution,
    score_response,
    score_segmentation,
)
from flame_private.experiments import treatment_comparison_with_baselines
from flame_private.study.data import StudyData


class Scorer:
    """Scores models on held-out sites; the baselines of each (task, held-out site) are computed once."""

    def __init__(self, data: StudyData) -> None:
        self.data = data
        self._baselines: dict[tuple[Task, str], dict[str, Any]] = {}

    def training_sites(self, held_out: str) -> list[str]:
        return [s for s in self.data.sites if s != held_out]

    def baselines(self, task: Task, held_out: str) -> dict[str, Any]:
        key = (task, held_out)
        if key not in self._baselines:
            pool = self.data.training_pool(task, self.training_sites(held_out))
            out: dict[str, Any] = baseline_metrics(task, pool, self.data.dataset(task, held_out, "all"),
                                                   self.data.voxel_ml)
            self._baselines[key] = out
        return self._baselines[key]

    def score(self, model: torch.nn.Module, task: Task, held_out: str) -> dict[str, Any]:
        """The model card's metric keys (with ``*_ci95``) at the top level, then ``baselines`` and, for response,
        ``calibration`` and the treatment comparison (when the cohort has its counterfactual truth)."""
        test = self.data.dataset(task, held_out, "all")
        batch = self.data.fed.batch_size
        out: dict[str, Any]
        if task == "response":
            scores = score_response(model, test, batch)
            out = dict(scores.metrics())
            out["calibration"] = calibration_bins(scores)
        elif task == "segmentation":
            out = dict(score_segmentation(model, test, self.data.voxel_ml, batch).metrics())
        else:
            out = dict(score_evolution(model, test, self.data.voxel_ml, batch).metrics())
        out["baselines"] = self.baselines(task, held_out)
        if task == "response":
            out.update(self.treatment(model, held_out))
        return out

    def treatment(self, model: torch.nn.Module, held_out: str) -> dict[str, Any]:
        if self.data.truth is None:
            return {"treatment_comparison": None,
                    "treatment_comparison_note": "the cohort has no counterfactual truth (truth/counterfactuals.json)"}
        train = [cast(ResponseDataset, self.data.dataset("response", site, "train"))
                 for site in self.training_sites(held_out)]
        test = cast(ResponseDataset, self.data.dataset("response", held_out, "all"))
        scored = treatment_comparison_with_baselines(train, [test],
                                                     self.data.truth, self.data.voxel_ml, model)
        return {"treatment_comparison": scored.pop("model").metrics(),
                "treatment_comparison_baselines": {k: v.metrics() for k, v in scored.items()}}
