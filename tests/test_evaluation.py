"""Local evaluation: exact metrics with bootstrap intervals, and the baselines every figure is reported beside."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flame_private import baselines
from flame_private.evaluation import EvolutionScores, ResponseScores
from flame_private.metrics import roc_auc


class Items(torch.utils.data.Dataset):
    """Response items whose label follows MGMT status and the enhancing volume (observable), with noise."""

    def __init__(self, n: int, seed: int) -> None:
        g = np.random.default_rng(seed)
        self.items = []
        for _ in range(n):
            mgmt = float(g.random() < 0.5)
            seg = torch.zeros(1, 8, 8, 8, dtype=torch.long)
            k = int(g.integers(1, 6))
            seg[0, :k, :4, :4] = 3
            logit = 2.5 * mgmt - 0.6 * k + 1.0 + g.normal(0, 0.5)
            self.items.append({"seg": seg, "covariates": torch.tensor([0.0, 1.0, mgmt, 1.0, 0.0, 0.0]),
                               "treatment": torch.eye(3)[int(g.integers(0, 3))],
                               "label": torch.tensor(float(logit > 0))})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def test_response_metrics_are_exact_with_an_interval_around_them() -> None:
    rng = np.random.default_rng(0)
    labels = (rng.random(80) < 0.6).astype(float)
    probs = np.clip(0.5 + 0.2 * (labels - 0.5) + rng.normal(0, 0.2, 80), 0, 1)
    m = ResponseScores(probs, labels).metrics()
    assert m["auc"] == pytest.approx(roc_auc(probs, labels))  # exact, not from a histogram
    for key in ("auc", "balanced_accuracy", "brier"):
        lo, hi = m[f"{key}_ci95"]
        assert lo <= m[key] <= hi and hi - lo > 0.01


def test_the_interval_narrows_as_the_test_set_grows() -> None:
    rng = np.random.default_rng(1)

    def width(n: int) -> float:
        labels = (rng.random(n) < 0.5).astype(float)
        probs = np.clip(0.5 + 0.3 * (labels - 0.5) + rng.normal(0, 0.25, n), 0, 1)
        lo, hi = ResponseScores(probs, labels).metrics()["auc_ci95"]
        return hi - lo

    assert width(400) < 0.5 * width(20)


def test_logistic_regression_on_observables_learns_what_they_carry_and_prevalence_does_not() -> None:
    train, test = Items(300, 0), Items(200, 1)
    lr = baselines.logistic_observables(train, test, voxel_ml=1.0).metrics()
    prevalence = baselines.prevalence(train, test).metrics()
    assert prevalence["auc"] == 0.5 and prevalence["balanced_accuracy"] == 0.5
    assert lr["auc"] > 0.85 and lr["balanced_accuracy"] > 0.75  # the signal is in the features
    assert lr["auc_ci95"][0] > prevalence["auc"]


def test_observable_features_are_the_sixteen_named_ones() -> None:
    item = Items(1, 2)[0]
    x = baselines.observable_features(item, voxel_ml=0.5)
    assert x.shape == (len(baselines.FEATURES),) == (16,)
    enhancing = float((item["seg"] == 3).sum()) * 0.5
    assert x[baselines.FEATURES.index("enhancing_ml")] == pytest.approx(np.log1p(enhancing))


def test_no_change_is_perfect_when_nothing_changed_and_scored_like_a_model() -> None:
    seg = torch.zeros(1, 6, 6, 6, dtype=torch.long)
    seg[0, 1:4, 1:4, 1:4] = 2
    seg[0, 2, 2, 2] = 3
    same = [{"seg": seg, "target": seg.clone()} for _ in range(3)]
    m = baselines.no_change(same, voxel_ml=1.0).metrics()
    assert m["dice_whole_tumour"] == 1.0 and m["rano_class_agreement"] == 1.0 and m["n"] == 3
    grown = [{"seg": seg, "target": torch.where(seg > 0, seg, 2) if k == 0 else seg.clone()} for k in range(3)]
    assert baselines.no_change(grown, voxel_ml=1.0).metrics()["dice_whole_tumour"] < 1.0
    assert set(m) == set(EvolutionScores(np.zeros((0, 11))).metrics())
