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
from scipy.optimize import isotonic_regression
from scipy.stats import rankdata

from flame_private.privacy.randomness import DPRandomness
from flame_private.rano import classify

N_BINS = 100
"""Score histogram resolution. The histogram AUC counts pairs within one bin as ties, so it differs from the
exact AUC by at most half the share of (responder, non-responder) pairs that share a bin; at bins 0.01 wide that
is within 0.01 of the exact AUC for the score spreads models produce (tested).  The DP noise every bin carries
in a federated release is handled by ``consistent_histogram``, not by coarser bins."""
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


def consistent_histogram(hist: np.ndarray) -> np.ndarray:
    """The non-negative histogram whose cumulative counts are closest (least squares) to ``hist``'s.

    Constrained inference for DP histograms (Hay et al., PVLDB 2010): a class's
    cumulative counts must be non-decreasing, so the noisy ones are projected onto
    non-decreasing sequences (isotonic regression, then at least zero).  Pure
    post-processing of released sums, at no privacy cost; it leaves an exact
    histogram unchanged.  Clipping each noisy bin at zero instead adds the positive
    half of the noise of every empty bin as spurious patients spread over all
    scores, which pulls the AUC towards 0.5 (by 0.1-0.2 at a hundred patients
    and the default metric noise).
    """
    hist = np.asarray(hist, float)
    if hist.size == 0:
        return hist.copy()
    cumulative = np.clip(isotonic_regression(np.cumsum(hist)).x, 0.0, None)
    return np.diff(cumulative, prepend=0.0)


@dataclass
class ResponseSums:
    """Sufficient statistics of the response metrics.

    The class counts are kept in their own slots, not read off the histograms:
    in a DP release each of the ``2 * N_BINS`` bins carries its own noise, so a
    total over the bins is ``sqrt(2 * N_BINS)`` times noisier than one count slot.
    The histograms serve the AUC only, which needs each class's score distribution,
    not its size.
    """

    pos_hist: np.ndarray = field(default_factory=lambda: np.zeros(N_BINS))
    neg_hist: np.ndarray = field(default_factory=lambda: np.zeros(N_BINS))
    n_pos: float = 0.0
    n_neg: float = 0.0
    true_pos: float = 0.0
    true_neg: float = 0.0
    brier: float = 0.0

    def add(self, prob: np.ndarray, label: np.ndarray) -> None:
        prob, label = np.asarray(prob, float).ravel(), np.asarray(label, float).ravel() > 0.5
        bins = np.clip((prob * N_BINS).astype(int), 0, N_BINS - 1)
        self.pos_hist += np.bincount(bins[label], minlength=N_BINS)
        self.neg_hist += np.bincount(bins[~label], minlength=N_BINS)
        self.n_pos += float(label.sum())
        self.n_neg += float((~label).sum())
        self.true_pos += float(((prob >= 0.5) & label).sum())
        self.true_neg += float(((prob < 0.5) & ~label).sum())
        self.brier += float(((prob - label) ** 2).sum())

    def vector(self) -> np.ndarray:
        return np.concatenate([self.pos_hist, self.neg_hist,
                               [self.n_pos, self.n_neg, self.true_pos, self.true_neg, self.brier]])

    @classmethod
    def from_vector(cls, v: np.ndarray) -> ResponseSums:
        v = np.asarray(v, float)
        if v.shape != (2 * N_BINS + 5,):
            raise ValueError(f"a response metric vector has {2 * N_BINS + 5} entries, not {v.shape}")
        return cls(v[:N_BINS].copy(), v[N_BINS:2 * N_BINS].copy(), *(float(x) for x in v[2 * N_BINS:]))

    @staticmethod
    def integral() -> np.ndarray:
        """Which entries of the vector are counts (exact integers before encryption noise)."""
        return np.concatenate([np.ones(2 * N_BINS, bool), [True, True, True, True, False]])

    @staticmethod
    def count_slots() -> np.ndarray:
        """The entries whose sum is the number of patients."""
        return np.array([2 * N_BINS, 2 * N_BINS + 1])

    def metrics(self) -> dict[str, float]:
        self.pos_hist, self.neg_hist = consistent_histogram(self.pos_hist), consistent_histogram(self.neg_hist)
        n_pos, n_neg = max(self.n_pos, 0.0), max(self.n_neg, 0.0)
        n = n_pos + n_neg
        sens = self.true_pos / n_pos if n_pos else float("nan")
        spec = self.true_neg / n_neg if n_neg else float("nan")
        return {
            "n": n,
            "auc": auc_from_histograms(self.pos_hist, self.neg_hist) if n_pos and n_neg else float("nan"),
            "balanced_accuracy": float(np.nanmean([sens, spec])) if n else float("nan"),
            "brier": max(0.0, self.brier / n) if n else float("nan"),
        }


ENH_ERROR_CLIP_ML = 50.0
"""Enhancing-volume errors are clipped here so that one patient's contribution is bounded."""


def _case_stats(pred: np.ndarray, target: np.ndarray, baseline: np.ndarray, voxel_ml: float) -> np.ndarray:
    """Per-case [dice x4, defined x4, clipped |enhancing error| / clip, RANO agreement], all in [0, 1]."""
    out = np.zeros(10)
    for i, (a, c) in enumerate([(pred == lab, target == lab) for lab in LABELS] + [(pred > 0, target > 0)]):
        den = float(a.sum() + c.sum())
        if den > 0:
            out[i] = 2.0 * float((a & c).sum()) / den
            out[4 + i] = 1.0
    v_pred, v_true = float((pred == 3).sum()) * voxel_ml, float((target == 3).sum()) * voxel_ml
    v_base = float((baseline == 3).sum()) * voxel_ml
    out[8] = min(abs(v_pred - v_true), ENH_ERROR_CLIP_ML) / ENH_ERROR_CLIP_ML
    out[9] = float(classify(v_base, v_pred) == classify(v_base, v_true))
    return out


@dataclass
class EvolutionSums:
    """Sufficient statistics of the evolution metrics, one bounded contribution per patient.

    Each patient contributes the mean over its follow-ups of: Dice per label and
    for the whole tumour (where the label is present in prediction or truth),
    the enhancing-volume error (clipped at 50 mL) and RANO-class agreement; every
    entry is in [0, 1], so one patient moves the vector by at most sqrt(11) (what
    the DP release of federated metrics relies on).  Metrics are means over patients.
    """

    dice: np.ndarray = field(default_factory=lambda: np.zeros(4))
    defined: np.ndarray = field(default_factory=lambda: np.zeros(4))
    enh_error: float = 0.0
    rano_agree: float = 0.0
    n: float = 0.0

    def add_patient(self, cases: list[tuple[np.ndarray, np.ndarray, np.ndarray]], voxel_ml: float) -> None:
        """Add one patient's follow-ups: (prediction, truth, baseline) label maps each."""
        if not cases:
            return
        stats = np.array([_case_stats(p, t, b, voxel_ml) for p, t, b in cases])
        defined = stats[:, 4:8]
        with np.errstate(invalid="ignore", divide="ignore"):
            dice = np.where(defined.sum(0) > 0, (stats[:, :4] * defined).sum(0) / defined.sum(0), 0.0)
        has = (defined.sum(0) > 0).astype(float)
        self.dice += dice * has
        self.defined += has
        self.enh_error += float(stats[:, 8].mean())
        self.rano_agree += float(stats[:, 9].mean())
        self.n += 1

    def add(self, pred: np.ndarray, target: np.ndarray, baseline: np.ndarray, voxel_ml: float) -> None:
        """Add a batch [B, ...] of single-follow-up patients."""
        for b in range(np.asarray(pred).shape[0]):
            self.add_patient([(np.asarray(pred)[b], np.asarray(target)[b], np.asarray(baseline)[b])], voxel_ml)

    def vector(self) -> np.ndarray:
        return np.concatenate([self.dice, self.defined, [self.enh_error, self.rano_agree, self.n]])

    @classmethod
    def from_vector(cls, v: np.ndarray) -> EvolutionSums:
        v = np.asarray(v, float)
        return cls(v[:4].copy(), v[4:8].copy(), float(v[8]), float(v[9]), float(v[10]))

    @staticmethod
    def integral() -> np.ndarray:
        """Which entries are counts (exact integers before encryption noise)."""
        return np.array([False] * 4 + [True] * 4 + [False, False, True])

    @staticmethod
    def count_slots() -> np.ndarray:
        """The entry that counts the patients."""
        return np.array([10])

    def metrics(self) -> dict[str, float]:
        with np.errstate(invalid="ignore", divide="ignore"):
            dice = np.where(self.defined > 0.5, np.clip(self.dice / np.maximum(self.defined, 1e-12), 0, 1), np.nan)
        out = {f"dice_{LABEL_NAMES[lab]}": float(dice[i]) for i, lab in enumerate(LABELS)}
        out["dice_whole_tumour"] = float(dice[3])
        out["n"] = self.n
        n = max(self.n, 1e-12)
        out["enhancing_volume_error_ml"] = (float(np.clip(self.enh_error / n, 0, 1)) * ENH_ERROR_CLIP_ML
                                            if self.n >= 0.5 else float("nan"))
        out["rano_class_agreement"] = float(np.clip(self.rano_agree / n, 0, 1)) if self.n >= 0.5 else float("nan")
        return out


PATIENT_SENSITIVITY = {"response": 2.0, "evolution": float(np.sqrt(11.0)), "segmentation": float(np.sqrt(11.0))}
"""Largest L2 change of a site's metric-sum vector when one patient is added or removed."""


def sums_kind(task: str) -> type[ResponseSums] | type[EvolutionSums]:
    """The metric sums of ``task``.

    The segmentation model is scored with the evolution model's sums: both draw a
    label map, and Dice is Dice.  Its "baseline" is the reference segmentation
    itself, so its RANO class agreement is the share of patients whose drawn
    enhancing volume a RANO reading would call stable against the reference one
    (within -65 % and +40 %): whether the volumes the clinical models see could change a reading.
    """
    if task not in PATIENT_SENSITIVITY:
        raise ValueError(f"unknown task {task!r}")
    return ResponseSums if task == "response" else EvolutionSums

VALID_RANGE: dict[str, tuple[float, float]] = {
    "auc": (0.0, 1.0), "balanced_accuracy": (0.0, 1.0), "brier": (0.0, 1.0),
    "dice_necrotic_core": (0.0, 1.0), "dice_oedema": (0.0, 1.0), "dice_enhancing": (0.0, 1.0),
    "dice_whole_tumour": (0.0, 1.0), "rano_class_agreement": (0.0, 1.0),
    "enhancing_volume_error_ml": (0.0, ENH_ERROR_CLIP_ML), "n": (0.0, float("inf")),
}
TOO_NOISY_SD = 0.1
"""A released rate (AUC, Dice, agreement...) whose DP noise alone moves it by more than this is not reported."""
TOO_NOISY = "too noisy to report"


def released_metrics(kind: type[ResponseSums] | type[EvolutionSums], noisy_sums: np.ndarray, noise_sd: float,
                     draws: int = 200, seed: int = 0) -> dict[str, float | str | None]:
    """Metrics of DP-noised sums, clamped to their valid range, each with the spread its noise causes.

    The spread is a parametric bootstrap: fresh noise of the release's standard
    deviation is added to the released sums ``draws`` times (post-processing of
    released values: no privacy cost).  ``<metric>_dp_sd`` is that spread; a
    metric whose spread exceeds ``TOO_NOISY_SD`` (or, for ``n``, half of ``n``)
    is given as None with ``<metric>_status = "too noisy to report"``: a number
    the noise dominates would mislead.
    """
    def clamped(vector: np.ndarray) -> dict[str, float]:
        out = {}
        for key, value in kind.from_vector(vector).metrics().items():
            lo, hi = VALID_RANGE.get(key, (-np.inf, np.inf))
            out[key] = float(np.clip(value, lo, hi)) if np.isfinite(value) else float("nan")
        return out

    point = clamped(noisy_sums)
    # The patient count, unclamped, against its noise: if it cannot be told from zero, every rate (all are
    # normalised by it) is noise too.  Clamping the bins at zero would hide this behind an upward bias.
    slots = kind.count_slots()
    n_raw, n_sd = float(noisy_sums[slots].sum()), noise_sd * float(np.sqrt(len(slots)))
    if n_raw < 2.0 * n_sd:
        out_all: dict[str, float | str | None] = {}
        for key in point:
            out_all[key], out_all[f"{key}_status"] = None, TOO_NOISY
        out_all["n_dp_sd"] = n_sd
        return out_all
    rng = np.random.default_rng(seed)
    samples = [clamped(noisy_sums + rng.normal(0.0, noise_sd, size=noisy_sums.shape)) for _ in range(draws)]
    out: dict[str, float | str | None] = {}
    for key, value in point.items():
        values = np.array([s[key] for s in samples])
        values = values[np.isfinite(values)]
        sd = float(values.std()) if len(values) > 1 else float("nan")
        limit = 0.5 * max(value, 1.0) if key == "n" else (
            TOO_NOISY_SD * VALID_RANGE[key][1] if key == "enhancing_volume_error_ml" else TOO_NOISY_SD)
        out[f"{key}_dp_sd"] = sd if np.isfinite(sd) else None
        if not np.isfinite(value) or not np.isfinite(sd) or sd > limit:
            out[key], out[f"{key}_status"] = None, TOO_NOISY if np.isfinite(value) else "undefined"
        else:
            out[key] = value
    return out


def dp_release(patient_vectors: list[np.ndarray], length: int, sensitivity: float, noise_multiplier: float,
               randomness: DPRandomness | None = None) -> np.ndarray:
    """Sum of per-patient vectors, each clipped to ``sensitivity`` in L2, plus N(0, (sigma * sensitivity)^2).

    The Gaussian mechanism: what a site releases about its validation patients
    is (epsilon, delta)-DP like its model updates, and is accounted the same way
    (one step at sampling rate 1 with this noise multiplier).  The noise is
    fresh and secret (``DPRandomness.secret()``) unless a test passes its own.
    """
    randomness = randomness or DPRandomness.secret()
    total = np.zeros(length)
    for v in patient_vectors:
        norm = float(np.linalg.norm(v))
        total += v * min(1.0, sensitivity / norm) if norm > 0 else v
    return total + randomness.standard_normal(length) * (noise_multiplier * sensitivity)


def treatment_metrics(probs: np.ndarray, responder: np.ndarray, burden_ml: np.ndarray) -> dict[str, float]:
    """Score predicted best modalities against the counterfactual truth, one row per patient.

    Columns are modalities (the same order in all three arrays). ``probs`` is the
    predicted P(responder) under each; ``responder`` and ``burden_ml`` the simulated
    outcome under each. The true best modality is the one with a response and,
    among those, the least viable tumour; the choice is the column of highest
    predicted probability (ties go to the first column, so a constant prediction
    always chooses the first modality). Regret: how much more viable tumour (mL)
    the choice leaves than the true best, and how often it loses a response the
    best would have given. ``best_modality_accuracy_dependent`` is the accuracy
    on the patients whose response depends on the modality (NaN if none).
    """
    probs, burden = np.asarray(probs, float), np.asarray(burden_ml, float)
    resp = np.asarray(responder, bool)
    n = len(probs)
    if n == 0:
        nan = float("nan")
        return {"n": 0.0, "best_modality_accuracy": nan, "regret_viable_burden_ml": nan, "lost_response_rate": nan,
                "modality_dependent_rate": nan, "best_modality_accuracy_dependent": nan}
    rows = np.arange(n)
    best = best_modality_index(resp, burden)
    chosen = np.argmax(probs, axis=1)
    hits = chosen == best
    dependent = resp.any(axis=1) & ~resp.all(axis=1)
    return {
        "n": float(n),
        "best_modality_accuracy": float(hits.mean()),
        "regret_viable_burden_ml": float((burden[rows, chosen] - burden[rows, best]).mean()),
        "lost_response_rate": float((resp[rows, best] & ~resp[rows, chosen]).mean()),
        "modality_dependent_rate": float(dependent.mean()),
        "best_modality_accuracy_dependent": float(hits[dependent].mean()) if dependent.any() else float("nan"),
    }


def best_modality_index(responder: np.ndarray, burden_ml: np.ndarray) -> np.ndarray:
    """Column of the true best modality per row: a response, then the least viable tumour (first on ties)."""
    resp = np.asarray(responder, bool)
    eligible = np.where(resp.any(axis=1, keepdims=True), resp, True)
    return np.argmin(np.where(eligible, np.asarray(burden_ml, float), np.inf), axis=1)


def treatment_comparison(predicted: dict[str, dict[str, float]], truth: dict[str, dict[str, dict]]) -> dict[str, float]:
    """``treatment_metrics`` on dictionaries: ``predicted[patient][modality]`` is P(responder),
    ``truth[patient][modality]`` the simulated outcome (``responder`` and ``viable_burden_ml``);
    the modalities of ``predicted``, in its order.
    """
    rows = [(pid, [m for m in p if m in truth[pid]]) for pid, p in predicted.items()]
    probs = [[predicted[pid][m] for m in mods] for pid, mods in rows]
    resp = [[bool(truth[pid][m]["responder"]) for m in mods] for pid, mods in rows]
    burden = [[float(truth[pid][m]["viable_burden_ml"]) for m in mods] for pid, mods in rows]
    return treatment_metrics(np.array(probs, float), np.array(resp, bool), np.array(burden, float))
