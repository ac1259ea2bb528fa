"""Evaluation metrics, computed from sums so that sites can add them under encryption.

Every metric here is a function of a fixed-length vector of sums (counts, score
histograms, Dice numerators and denominators...).  A site computes its vector;
in a federation the vectors are encrypted and added by the server; any site
decrypts the total and calls the same ``from_sums``.  Local evaluation is the
one-site case of the same code, so federated and local numbers mean the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.stats import rankdata

from flame_private.cohort.rano import classify

N_BINS = 100
"""Score histogram resolution: AUC from histograms differs from the exact AUC by < 1/N_BINS."""
LABELS = (1, 2, 3)
LABEL_NAMES = {1: "necrotic_core", 2: "oedema", 3: "enhancing"}


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Exact ROC AUC (Mann-Whitney U, ties counted half); NaN if one class is absent."""
    scores, labels = np.asarray(scores, float), np.asarray(labels, bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auc_from_histograms(pos_hist: np.ndarray, neg_hist: np.ndarray) -> float:
    """AUC from per-class score histograms over equal bins (ties within a bin count half)."""
    pos_hist, neg_hist = np.asarray(pos_hist, float), np.asarray(neg_hist, float)
    n_pos, n_neg = pos_hist.sum(), neg_hist.sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    neg_below = np.concatenate([[0.0], np.cumsum(neg_hist)[:-1]])
    return float((pos_hist * (neg_below + 0.5 * neg_hist)).sum() / (n_pos * n_neg))


@dataclass
class ResponseSums:
    """Sufficient statistics of the response metrics."""

    pos_hist: np.ndarray = field(default_factory=lambda: np.zeros(N_BINS))
    neg_hist: np.ndarray = field(default_factory=lambda: np.zeros(N_BINS))
    true_pos: float = 0.0
    true_neg: float = 0.0
    brier: float = 0.0

    def add(self, prob: np.ndarray, label: np.ndarray) -> None:
        prob, label = np.asarray(prob, float).ravel(), np.asarray(label, float).ravel() > 0.5
        bins = np.clip((prob * N_BINS).astype(int), 0, N_BINS - 1)
        self.pos_hist += np.bincount(bins[label], minlength=N_BINS)
        self.neg_hist += np.bincount(bins[~label], minlength=N_BINS)
        self.true_pos += float(((prob >= 0.5) & label).sum())
        self.true_neg += float(((prob < 0.5) & ~label).sum())
        self.brier += float(((prob - label) ** 2).sum())

    def vector(self) -> np.ndarray:
        return np.concatenate([self.pos_hist, self.neg_hist, [self.true_pos, self.true_neg, self.brier]])

    @classmethod
    def from_vector(cls, v: np.ndarray) -> ResponseSums:
        v = np.asarray(v, float)
        return cls(v[:N_BINS].copy(), v[N_BINS:2 * N_BINS].copy(), float(v[-3]), float(v[-2]), float(v[-1]))

    @staticmethod
    def integral() -> np.ndarray:
        """Which entries of the vector are counts (exact integers before encryption noise)."""
        return np.concatenate([np.ones(2 * N_BINS, bool), [True, True, False]])

    def metrics(self) -> dict[str, float]:
        n_pos, n_neg = float(self.pos_hist.sum()), float(self.neg_hist.sum())
        n = n_pos + n_neg
        sens = self.true_pos / n_pos if n_pos else float("nan")
        spec = self.true_neg / n_neg if n_neg else float("nan")
        return {
            "n": n,
            "auc": auc_from_histograms(self.pos_hist, self.neg_hist),
            "balanced_accuracy": float(np.nanmean([sens, spec])) if n else float("nan"),
            "brier": max(0.0, self.brier / n) if n else float("nan"),
        }


@dataclass
class EvolutionSums:
    """Sufficient statistics of the evolution metrics.

    Dice per label and for the whole tumour (numerator 2|A&B|, denominator
    |A|+|B|, summed over cases: a volume-weighted Dice), absolute error of the
    enhancing volume, and agreement of the volumetric RANO class.
    """

    dice_num: np.ndarray = field(default_factory=lambda: np.zeros(4))
    dice_den: np.ndarray = field(default_factory=lambda: np.zeros(4))
    enh_abs_error_ml: float = 0.0
    rano_agree: float = 0.0
    n: float = 0.0

    def add(self, pred: np.ndarray, target: np.ndarray, baseline: np.ndarray, voxel_ml: float) -> None:
        """Add a batch of label maps [B, ...] (prediction, truth, baseline segmentation)."""
        pred, target, baseline = np.asarray(pred), np.asarray(target), np.asarray(baseline)
        for b in range(pred.shape[0]):
            p, t = pred[b], target[b]
            for i, lab in enumerate(LABELS):
                a, c = p == lab, t == lab
                self.dice_num[i] += 2.0 * float((a & c).sum())
                self.dice_den[i] += float(a.sum() + c.sum())
            a, c = p > 0, t > 0
            self.dice_num[3] += 2.0 * float((a & c).sum())
            self.dice_den[3] += float(a.sum() + c.sum())
            v_pred = float((p == 3).sum()) * voxel_ml
            v_true = float((t == 3).sum()) * voxel_ml
            v_base = float((baseline[b] == 3).sum()) * voxel_ml
            self.enh_abs_error_ml += abs(v_pred - v_true)
            self.rano_agree += float(classify(v_base, v_pred) == classify(v_base, v_true))
            self.n += 1

    def vector(self) -> np.ndarray:
        return np.concatenate([self.dice_num, self.dice_den, [self.enh_abs_error_ml, self.rano_agree, self.n]])

    @classmethod
    def from_vector(cls, v: np.ndarray) -> EvolutionSums:
        v = np.asarray(v, float)
        return cls(v[:4].copy(), v[4:8].copy(), float(v[8]), float(v[9]), float(v[10]))

    @staticmethod
    def integral() -> np.ndarray:
        """Which entries of the vector are counts (exact integers before encryption noise)."""
        return np.array([True] * 8 + [False, True, True])

    def metrics(self) -> dict[str, float]:
        with np.errstate(invalid="ignore", divide="ignore"):
            dice = np.where(self.dice_den > 0, np.abs(self.dice_num) / np.maximum(self.dice_den, 1e-12), np.nan)
        out = {f"dice_{LABEL_NAMES[lab]}": float(dice[i]) for i, lab in enumerate(LABELS)}
        out["dice_whole_tumour"] = float(dice[3])
        out["n"] = self.n
        out["enhancing_volume_mae_ml"] = max(0.0, self.enh_abs_error_ml / self.n) if self.n else float("nan")
        out["rano_class_agreement"] = self.rano_agree / self.n if self.n else float("nan")
        return out


def treatment_comparison(predicted: dict[str, dict[str, float]], truth: dict[str, dict[str, dict]]) -> dict[str, float]:
    """Score predicted best modalities against the cohort's counterfactual truth.

    ``predicted[patient][modality]`` is P(responder); ``truth[patient][modality]``
    the simulated outcome (``responder`` and ``viable_burden_ml``).  The true best
    modality is the one with a response and, among those, the least viable tumour.
    Regret: how much more viable tumour (mL) the predicted choice leaves than the
    true best, and how often it loses a response the best would have given.
    """
    hits, regret_ml, lost = [], [], []
    for pid, probs in predicted.items():
        outcomes = truth[pid]
        mods = [m for m in probs if m in outcomes]
        best_true = min(mods, key=lambda m: (not outcomes[m]["responder"], outcomes[m]["viable_burden_ml"]))
        best_pred = max(mods, key=lambda m: probs[m])
        hits.append(best_pred == best_true)
        regret_ml.append(outcomes[best_pred]["viable_burden_ml"] - outcomes[best_true]["viable_burden_ml"])
        lost.append(float(outcomes[best_true]["responder"] and not outcomes[best_pred]["responder"]))
    n = len(hits)
    return {
        "n": float(n),
        "best_modality_accuracy": float(np.mean(hits)) if n else float("nan"),
        "regret_viable_burden_ml": float(np.mean(regret_ml)) if n else float("nan"),
        "lost_response_rate": float(np.mean(lost)) if n else float("nan"),
    }
