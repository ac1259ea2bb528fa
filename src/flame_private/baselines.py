"""The simple baselines every model figure is reported beside, on the same patients (docs/design.md 6).

A model that does not beat these has learnt nothing, whatever its loss did:

- evolution: **no change**: the follow-up segmentation predicted to be the
  baseline segmentation;
- segmentation: **intensity thresholds**: tumour where T2 and FLAIR are
  bright, enhancing where T1ce is bright inside it, necrotic core where T1 is
  dark among the rest, each threshold fitted on the training patients (what a
  hand-tuned rule of a radiologist's reading gives);
- response: **prevalence**: every patient given the training responder rate
  (AUC 0.5 by construction; its Brier score is the one to beat), and a
  **logistic regression on observable features**: baseline tumour volumes,
  the clinical covariates, the treatment and treatment x MGMT, 16 in all,
  fitted on the same training patients as the model (scikit-learn); and the
  same regression with the tumour's **first-order intensities** added (each
  sequence's mean in oedema and in enhancing tumour against healthy brain, as a
  radiomics model reads them): the reference a network must beat before its
  3-D encoder can be said to see more than a radiologist's summary.

Each baseline returns per-patient scores in the shape ``evaluation`` scores a
model, so baselines and model share the same metrics and bootstrap intervals.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from torch.utils.data import Dataset

from flame_private.config import MODALITIES, MRI_SEQUENCES
from flame_private.data.datasets import dataset_size
from flame_private.evaluation import EvolutionScores, ResponseScores, SegmentationScores, patient_of_each_item

FEATURES = ("necrotic_ml", "oedema_ml", "enhancing_ml", "whole_tumour_ml", "age", "female", "mgmt_methylated",
            "gross_total", "subtotal", "biopsy", "photon", "proton", "carbon", "photon_x_mgmt", "proton_x_mgmt",
            "carbon_x_mgmt")
"""The observable features, in column order: what a clinician knows before treatment."""
FIRST_ORDER_FEATURES = tuple(f"{c}_{s}" for c in ("oedema", "enhancing") for s in MRI_SEQUENCES) + (
    "has_oedema", "has_enhancing")
"""``models.blocks.first_order_intensities``, in column order."""


def observable_features(item: dict, voxel_ml: float) -> np.ndarray:
    """The 16 features of one response item (``ResponseDataset``): volumes in log(1 + mL)."""
    seg = item["seg"].numpy()
    volumes = [float((seg == lab).sum()) * voxel_ml for lab in (1, 2, 3)]
    volumes.append(float((seg > 0).sum()) * voxel_ml)
    covariates = item["covariates"].numpy().astype(float)
    treatment = item["treatment"].numpy().astype(float)
    return np.concatenate([np.log1p(volumes), covariates, treatment, treatment * covariates[2]])


def first_order_features(item: dict) -> np.ndarray:
    """The 10 ``FIRST_ORDER_FEATURES`` of one response item, as the response network's wide part reads them."""
    from flame_private.models.blocks import first_order_intensities

    return first_order_intensities(item["image"][None], item["seg"][None])[0].numpy().astype(float)


def _matrix(dataset: Dataset, voxel_ml: float, first_order: bool = False) -> tuple[np.ndarray, np.ndarray]:
    items = [dataset[i] for i in range(dataset_size(dataset))]
    width = len(FEATURES) + (len(FIRST_ORDER_FEATURES) if first_order else 0)

    def row(it: dict) -> np.ndarray:
        x = observable_features(it, voxel_ml)
        return np.concatenate([x, first_order_features(it)]) if first_order else x

    x = np.stack([row(it) for it in items]) if items else np.zeros((0, width))
    y = np.array([float(it["label"]) for it in items])
    return x, y


def prevalence(train: Dataset, test: Dataset) -> ResponseScores:
    """Every test patient given the training patients' responder rate."""
    _, y_train = _matrix(train, 1.0)
    _, y_test = _matrix(test, 1.0)
    rate = float(y_train.mean()) if len(y_train) else 0.5
    return ResponseScores(probs=np.full(len(y_test), rate), labels=y_test)


def fit_logistic(x_train: np.ndarray, y_train: np.ndarray) -> Pipeline | float:
    """The fitted pipeline, or the training responder rate when one class is missing."""
    if len(np.unique(y_train)) < 2:
        return float(y_train.mean()) if len(y_train) else 0.5
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000))
    return model.fit(x_train, y_train)


def _predict(model: Pipeline | float, x: np.ndarray) -> np.ndarray:
    if isinstance(model, float):
        return np.full(len(x), model)
    return model.predict_proba(x)[:, 1] if len(x) else np.zeros(0)


def logistic_observables(train: Dataset, test: Dataset, voxel_ml: float) -> ResponseScores:
    """L2-regularised, class-balanced logistic regression on ``FEATURES``, fitted on ``train``.

    Class-balanced so that a 0.5 threshold (balanced accuracy) is meaningful on a
    site where most patients respond, as the models' loss is not.
    """
    x_train, y_train = _matrix(train, voxel_ml)
    x_test, y_test = _matrix(test, voxel_ml)
    return ResponseScores(probs=_predict(fit_logistic(x_train, y_train), x_test), labels=y_test)


def logistic_first_order(train: Dataset, test: Dataset, voxel_ml: float) -> ResponseScores:
    """``logistic_observables`` with the tumour's first-order intensities added (``FIRST_ORDER_FEATURES``)."""
    x_train, y_train = _matrix(train, voxel_ml, first_order=True)
    x_test, y_test = _matrix(test, voxel_ml, first_order=True)
    return ResponseScores(probs=_predict(fit_logistic(x_train, y_train), x_test), labels=y_test)


def with_treatment(x: np.ndarray, modality: str) -> np.ndarray:
    """``FEATURES`` rows with the treatment (and treatment x MGMT) switched to ``modality``."""
    out = np.array(x, dtype=float, copy=True)
    mgmt = out[:, FEATURES.index("mgmt_methylated")]
    for m in MODALITIES:
        on = float(m == modality)
        out[:, FEATURES.index(m)] = on
        out[:, FEATURES.index(f"{m}_x_mgmt")] = on * mgmt
    return out


def logistic_each_modality(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray) -> np.ndarray:
    """P(responder) of the logistic baseline for each test row under each modality, columns in
    ``MODALITIES`` order: fitted on the treatments given, scored with the treatment switched."""
    model = fit_logistic(x_train, y_train)
    return np.stack([_predict(model, with_treatment(x_test, m)) for m in MODALITIES], axis=1).reshape(
        len(x_test), len(MODALITIES))


def logistic_observables_each_modality(train: Dataset, test: Dataset, voxel_ml: float) -> np.ndarray:
    """``logistic_each_modality`` on response datasets (``TreatmentScores.from_truth`` takes the result)."""
    x_train, y_train = _matrix(train, voxel_ml)
    x_test, _ = _matrix(test, voxel_ml)
    return logistic_each_modality(x_train, y_train, x_test)


def no_change(dataset: Dataset, voxel_ml: float) -> EvolutionScores:
    """The follow-up predicted to be the baseline segmentation, scored like a model."""
    owners = patient_of_each_item(dataset)
    cases: dict[tuple[int, int], list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
    for i in range(dataset_size(dataset)):
        item = dataset[i]
        base, target = item["seg"][0].numpy(), item["target"][0].numpy()
        cases.setdefault(owners[i], []).append((base, target, base))
    return EvolutionScores.from_cases(list(cases.values()), voxel_ml)


THRESHOLD_GRID = np.concatenate([[-np.inf], np.round(np.arange(-1.0, 3.01, 0.1), 2), [np.inf]])
"""Candidate thresholds, in the brain-z-scored units of the preprocessed images; the infinite ends draw a label
everywhere or nowhere (a label no training patient has)."""
T1, T1CE, T2, FLAIR = range(4)


def _dice(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Dice of each row's candidate masks [k, n] against ``truth`` [n]; NaN where both are empty."""
    den = pred.sum(axis=-1) + truth.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, 2.0 * (pred & truth).sum(axis=-1) / den, np.nan)


@dataclass(frozen=True)
class ThresholdSegmenter:
    """Three thresholds on the z-scored sequences, applied in the order a reader looks."""

    tumour: float
    """(T2 + FLAIR) / 2 above this: oedema or tumour."""
    enhancing: float
    """T1ce above this inside the tumour: enhancing."""
    necrotic: float
    """T1 below this inside the tumour, where it does not enhance: necrotic core."""

    def predict(self, image: np.ndarray) -> np.ndarray:
        """Label map of one image [4, ...] (zero outside the brain)."""
        brain = (image != 0).any(axis=0)
        tumour = brain & ((image[T2] + image[FLAIR]) / 2 > self.tumour)
        enhancing = tumour & (image[T1CE] > self.enhancing)
        necrotic = tumour & ~enhancing & (image[T1] < self.necrotic)
        out = np.zeros(image.shape[1:], np.uint8)
        out[tumour] = 2
        out[necrotic] = 1
        out[enhancing] = 3
        return out

    @classmethod
    def fit(cls, dataset: Dataset) -> ThresholdSegmenter:
        """Each threshold in turn maximises its label's mean Dice over ``dataset``'s patients (grid search)."""
        cases = []
        for i in range(dataset_size(dataset)):
            item = dataset[i]
            image, seg = item["image"].numpy(), item["target"][0].numpy()
            brain = (image != 0).any(axis=0)
            cases.append((image[:, brain], seg[brain]))
        if not cases:  # fitted on nobody, a rule can only draw nothing
            return cls(tumour=float("inf"), enhancing=float("inf"), necrotic=float("-inf"))
        grid = THRESHOLD_GRID[:, None]

        def best(score: list[np.ndarray]) -> float:
            """The threshold of the highest mean Dice over the patients where the label is drawn or present (NaN
            elsewhere), as the evaluation averages it; where that is no patient (a label no training patient
            has, and nothing drawn), it scores 1, so such a label gets a threshold that draws none of it."""
            s = np.array(score).reshape(-1, len(THRESHOLD_GRID))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN column: handled on the next line
                mean = np.nanmean(s, axis=0)
            return float(THRESHOLD_GRID[int(np.argmax(np.nan_to_num(mean, nan=1.0)))])

        tumour = best([_dice((x[T2] + x[FLAIR])[None] / 2 > grid, y[None] > 0) for x, y in cases])
        inside = [(x[:, (x[T2] + x[FLAIR]) / 2 > tumour], y[(x[T2] + x[FLAIR]) / 2 > tumour], y) for x, y in cases]
        enh_scores = []
        for x, y_in, y in inside:
            hit = x[T1CE][None] > grid
            n_missed = int((y == 3).sum() - (y_in == 3).sum())  # enhancing voxels outside the tumour mask
            den = hit.sum(-1) + (y_in == 3).sum() + n_missed
            with np.errstate(invalid="ignore", divide="ignore"):
                enh_scores.append(np.where(den > 0, 2.0 * (hit & (y_in == 3)).sum(-1) / den, np.nan))
        enhancing = best(enh_scores)
        nec_scores = []
        for x, y_in, y in inside:
            hit = ~(x[T1CE] > enhancing)[None] & (x[T1][None] < grid)
            n_missed = int((y == 1).sum() - (y_in == 1).sum())
            den = hit.sum(-1) + (y_in == 1).sum() + n_missed
            with np.errstate(invalid="ignore", divide="ignore"):
                nec_scores.append(np.where(den > 0, 2.0 * (hit & (y_in == 1)).sum(-1) / den, np.nan))
        return cls(tumour=tumour, enhancing=enhancing, necrotic=best(nec_scores))


def intensity_thresholds(train: Dataset, test: Dataset, voxel_ml: float) -> SegmentationScores:
    """``ThresholdSegmenter`` fitted on ``train``'s patients, scored on ``test``'s like the segmentation model."""
    rule = ThresholdSegmenter.fit(train)
    cases = []
    for i in range(dataset_size(test)):
        item = test[i]
        truth = item["target"][0].numpy()
        cases.append([(rule.predict(item["image"].numpy()), truth, truth)])
    return SegmentationScores.from_cases(cases, voxel_ml)
