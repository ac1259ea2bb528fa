"""Local evaluation: exact metrics with bootstrap intervals, and the baselines every figure is reported beside."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flame_private import baselines
from flame_private.config import MODALITIES
from flame_private.evaluation import (
    EvolutionScores,
    ResponseScores,
    TreatmentScores,
    majority_best,
    treatment_baselines,
)
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


class ContrastItems(Items):
    """Response items whose label follows how bright the enhancing tumour is on T1ce: no volume or covariate
    carries it, only the images do (as a tumour's cellularity shows in its contrast uptake)."""

    def __init__(self, n: int, seed: int) -> None:
        super().__init__(n, seed)
        g = np.random.default_rng(seed + 100)
        for item in self.items:
            brightness = float(g.normal(0.0, 1.0))
            image = torch.ones(4, 8, 8, 8) + 0.05 * torch.from_numpy(g.normal(0, 1, (4, 8, 8, 8))).float()
            image[1][item["seg"][0] == 3] += 1.0 + brightness
            item["image"] = image
            item["label"] = torch.tensor(float(brightness + 0.3 * g.normal() > 0))


def test_the_first_order_regression_reads_what_only_the_images_show() -> None:
    train, test = ContrastItems(300, 4), ContrastItems(200, 5)
    observables = baselines.logistic_observables(train, test, voxel_ml=1.0).metrics()
    first_order = baselines.logistic_first_order(train, test, voxel_ml=1.0).metrics()
    assert observables["auc"] < 0.65  # control: the signal is in no observable feature
    assert first_order["auc"] > 0.9 and first_order["auc_ci95"][0] > observables["auc_ci95"][1]
    assert set(first_order) == set(observables)


def test_a_network_started_from_the_regression_scores_as_the_regression_does() -> None:
    """``start_from_regression``: an untrained network's linear part becomes the fitted regression of its
    wide features, so its probabilities are the regression's."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from flame_private.models.response import ResponseNet, wide_features
    from flame_private.training import start_from_regression

    train, test = ContrastItems(120, 6), ContrastItems(40, 7)
    model = ResponseNet(channels=(4, 8), groups=2).eval()
    start_from_regression(model, train)

    def features(items: Items) -> np.ndarray:
        return np.concatenate([wide_features(it["image"][None], it["seg"][None], it["treatment"][None],
                                             it["covariates"][None]).numpy() for it in items.items])

    x = features(train)
    scaler = StandardScaler().fit(x)
    y = [float(it["label"]) for it in train.items]
    want = LogisticRegression(C=1.0, class_weight="balanced", max_iter=5000).fit(scaler.transform(x), y)
    with torch.no_grad():
        got = torch.sigmoid(torch.cat([model(it["image"][None], it["seg"][None], it["treatment"][None],
                                             it["covariates"][None]) for it in test.items])).numpy()
    np.testing.assert_allclose(got, want.predict_proba(scaler.transform(features(test)))[:, 1], atol=1e-4)
    assert roc_auc(got, np.array([float(it["label"]) for it in test.items])) > 0.9


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


# --------------------------------------------------------------------------- treatment comparison

def _truth(n: int = 60, seed: int = 3) -> TreatmentScores:
    """Counterfactual outcomes: columns photon, proton, carbon; the best varies by patient."""
    g = np.random.default_rng(seed)
    responder = g.random((n, 3)) < 0.6
    burden = g.uniform(0.5, 20.0, (n, 3)) + 10.0 * ~responder
    return TreatmentScores(np.zeros((n, 3)), responder, burden)


def test_a_predictor_that_ranks_the_modalities_as_the_truth_does_is_perfect() -> None:
    truth = _truth()
    perfect = truth.with_choice(truth.true_best())
    m = perfect.metrics()
    assert m["best_modality_accuracy"] == 1.0
    assert m["regret_viable_burden_ml"] == 0.0 and m["lost_response_rate"] == 0.0
    assert m["best_modality_accuracy_ci95"] == [1.0, 1.0]


def test_a_constant_prediction_is_scored_as_always_photon() -> None:
    truth = _truth()
    constant = TreatmentScores(np.full((60, 3), 0.7), truth.responder, truth.burden_ml)
    rule = treatment_baselines(truth)["always_photon"]
    assert constant.metrics(ci=False) == rule.metrics(ci=False)
    photon_best = float(np.mean(truth.true_best() == 0))
    assert rule.metrics(ci=False)["best_modality_accuracy"] == pytest.approx(photon_best)


def test_hand_built_patients_give_the_accuracy_and_regrets_worked_out_by_hand() -> None:
    responder = np.array([[False, False, True],    # only carbon responds: best carbon
                          [True, True, True],      # all respond: least viable tumour (photon, 1 mL) is best
                          [True, False, False]])   # only photon responds
    burden = np.array([[9.0, 8.0, 3.0], [1.0, 2.0, 1.5], [4.0, 6.0, 7.0]])
    probs = np.array([[0.2, 0.3, 0.8],    # carbon: right
                      [0.5, 0.9, 0.4],    # proton: wrong, 1 mL more, no response lost
                      [0.1, 0.6, 0.2]])   # proton: wrong, 2 mL more, the response lost
    m = TreatmentScores(probs, responder, burden).metrics(ci=False)
    assert m["best_modality_accuracy"] == pytest.approx(1 / 3)
    assert m["regret_viable_burden_ml"] == pytest.approx((0.0 + 1.0 + 2.0) / 3)
    assert m["lost_response_rate"] == pytest.approx(1 / 3)
    assert m["modality_dependent_rate"] == pytest.approx(2 / 3)
    assert m["best_modality_accuracy_dependent"] == pytest.approx(1 / 2)
    assert (m["chosen_photon"], m["chosen_proton"], m["chosen_carbon"]) == pytest.approx((0, 2 / 3, 1 / 3))


def test_the_majority_rule_uses_the_training_patients_best_modality() -> None:
    train = TreatmentScores(np.zeros((3, 3)), np.ones((3, 3), bool),
                            np.array([[3.0, 2.0, 1.0], [3.0, 2.0, 1.0], [1.0, 2.0, 3.0]]))
    assert majority_best(train) == 2
    test = _truth(10)
    rules = treatment_baselines(test, train)
    assert np.all(np.argmax(rules["always_majority_best"].probs, axis=1) == 2)
    assert set(rules) == {"always_photon", "always_proton", "always_carbon", "always_majority_best"}
    assert rules["always_proton"].metrics(ci=False)["chosen_proton"] == 1.0


def test_truth_rows_follow_the_patient_ids_and_a_missing_patient_is_named() -> None:
    truth = {pid: {m: {"responder": m == best, "viable_burden_ml": 1.0} for m in MODALITIES}
             for pid, best in (("a", "proton"), ("b", "carbon"))}
    scores = TreatmentScores.from_truth(np.eye(3)[[2, 1]], ["b", "a"], truth)
    assert list(scores.true_best()) == [2, 1]
    assert scores.metrics(ci=False)["best_modality_accuracy"] == 1.0
    with pytest.raises(ValueError, match="c"):
        TreatmentScores.from_truth(np.zeros((1, 3)), ["c"], truth)


def test_the_logistic_baseline_is_scored_once_per_modality_with_the_treatment_switched() -> None:
    """A treatment that helps only with MGMT methylation: the baseline prefers it for methylated patients."""
    g = np.random.default_rng(1)
    n = 400
    x = np.zeros((n, len(baselines.FEATURES)))
    mgmt = g.random(n) < 0.5
    given = g.integers(0, 3, n)
    x[:, baselines.FEATURES.index("mgmt_methylated")] = mgmt
    x = baselines.with_treatment(x, "photon")
    for k, m in enumerate(MODALITIES):
        x[given == k] = baselines.with_treatment(x[given == k], m)
    y = (g.random(n) < np.where(mgmt & (given == 2), 0.9, 0.4)).astype(float)
    probs = baselines.logistic_each_modality(x, y, x)
    assert probs.shape == (n, 3)
    assert np.all(np.argmax(probs[mgmt], axis=1) == 2)


def test_sites_scored_together_are_their_patients_concatenated() -> None:
    truth = _truth(40)
    parts = [TreatmentScores(truth.probs[:15], truth.responder[:15], truth.burden_ml[:15]),
             TreatmentScores(truth.probs[15:], truth.responder[15:], truth.burden_ml[15:])]
    assert TreatmentScores.concatenate(parts).metrics(ci=False) == truth.metrics(ci=False)
    assert TreatmentScores.concatenate([]).metrics(ci=False)["n"] == 0.0
