"""The statistics that turn attack scores into privacy figures.  Pure functions of arrays.

- ROC figures of a membership test: AUC, TPR at a fixed low FPR.
- Empirical epsilon lower bound from one test (Jagielski et al. 2020): any
  (eps, delta)-DP mechanism satisfies TPR <= e^eps FPR + delta (and the same for
  the complementary test), so a test whose TPR is confidently high at a
  confidently low FPR proves eps >= ln((TPR - delta) / FPR).  Confidence comes
  from Clopper-Pearson intervals over independent trials; membership decisions
  pooled over models that share patients are not fully independent, so on such
  data the bound is a heuristic, not a certificate.
- One-run audit (Steinke, Nasr, Jagielski 2023): m canaries each included with
  probability 1/2; the auditor guesses r of them and gets v right.  Under
  (eps, delta)-DP the number right is dominated by Binomial(r, e^eps/(1+e^eps))
  plus a delta term; the largest eps rejected at level p is the lower bound.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from flame_private.metrics import roc_auc

__all__ = [
    "clopper_pearson",
    "empirical_epsilon",
    "one_run_epsilon",
    "one_run_guesses",
    "one_run_p_value",
    "roc_auc",
    "tpr_at_fpr",
]


def clopper_pearson(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact two-sided binomial confidence interval for a proportion."""
    if trials <= 0:
        return 0.0, 1.0
    alpha = 1.0 - confidence
    lo = 0.0 if successes == 0 else float(stats.beta.ppf(alpha / 2, successes, trials - successes + 1))
    hi = 1.0 if successes == trials else float(stats.beta.ppf(1 - alpha / 2, successes + 1, trials - successes))
    return lo, hi


def tpr_at_fpr(scores: np.ndarray, members: np.ndarray, fpr: float) -> float:
    """Largest TPR among thresholds whose FPR is at most ``fpr`` (higher score = 'member')."""
    scores, members = np.asarray(scores, float), np.asarray(members, bool)
    neg = np.sort(scores[~members])[::-1]
    allowed = math.floor(fpr * neg.size)  # false positives we may have
    threshold = neg[allowed] if allowed < neg.size else -np.inf  # strictly above this
    return float((scores[members] > threshold).mean())


def _test_bounds(scores: np.ndarray, members: np.ndarray, t: float, delta: float,
                 confidence: float) -> tuple[float, float, float, float]:
    """For 'member if score > t': (bound, complementary bound, TPR, FPR).

    DP gives TPR <= e^eps FPR + delta and, for the complementary test,
    TNR <= e^eps FNR + delta; each proves eps >= ln((rate_lo - delta) / other_hi).
    """
    said = scores > t
    tp, fp = int((said & members).sum()), int((said & ~members).sum())
    n_pos, n_neg = int(members.sum()), int((~members).sum())
    tpr_lo = clopper_pearson(tp, n_pos, confidence)[0]
    fpr_hi = clopper_pearson(fp, n_neg, confidence)[1]
    tnr_lo, fnr_hi = 1.0 - fpr_hi, 1.0 - tpr_lo

    def ln_ratio(num: float, den: float) -> float:
        return max(0.0, math.log((num - delta) / den)) if num > delta and den > 0 else 0.0

    return ln_ratio(tpr_lo, fpr_hi), ln_ratio(tnr_lo, fnr_hi), tp / max(n_pos, 1), fp / max(n_neg, 1)


def empirical_epsilon(scores: np.ndarray, members: np.ndarray, delta: float, confidence: float = 0.95,
                      select: np.ndarray | None = None) -> dict[str, float | None]:
    """Lower bound on epsilon from a threshold test on ``scores`` ('member' above it), Clopper-Pearson.

    The threshold, and which of the test and its complement to use, are chosen on
    the entries where ``select`` is True and the bound is computed on the others,
    so that choosing the best threshold does not inflate it.  Without ``select``
    every threshold is tried on all entries (optimistic; for exploration).
    """
    scores, members = np.asarray(scores, float), np.asarray(members, bool)
    if select is None:
        pick, judge = np.ones_like(members), np.ones_like(members)
    else:
        pick, judge = np.asarray(select, bool), ~np.asarray(select, bool)
    best: tuple[float, float | None, int] = (0.0, None, 0)
    for t in np.unique(scores[pick]):
        bounds = _test_bounds(scores[pick], members[pick], float(t), delta, confidence)
        for which in (0, 1):
            if bounds[which] > best[0]:
                best = (bounds[which], float(t), which)
    if best[1] is None:
        return {"epsilon_lower_bound": 0.0, "threshold": None, "tpr": None, "fpr": None}
    judged = _test_bounds(scores[judge], members[judge], best[1], delta, confidence)
    return {"epsilon_lower_bound": judged[best[2]], "threshold": best[1], "tpr": judged[2], "fpr": judged[3]}


def epsilon_ceiling(members: np.ndarray, delta: float, confidence: float = 0.95) -> float:
    """The largest bound ``empirical_epsilon`` could prove on these entries: a perfect test's.

    With few non-members even a flawless attack proves little; a bound below the
    accountant's epsilon only means something when this ceiling is above it.
    """
    members = np.asarray(members, bool)
    return _test_bounds(members.astype(float), members, 0.5, delta, confidence)[0]


def one_run_p_value(m: int, r: int, v: int, eps: float, delta: float) -> float:
    """P[at least v of r guesses right] for an (eps, delta)-DP mechanism (Steinke et al. 2023, Thm 7)."""
    if not 0 <= v <= r <= m:
        raise ValueError(f"need 0 <= v <= r <= m, got m={m}, r={r}, v={v}")
    q = 1.0 / (1.0 + math.exp(-eps))  # accuracy of eps-DP randomised response
    beta = float(stats.binom.sf(v - 1, r, q))
    alpha, cumulative = 0.0, 0.0
    for i in range(1, v + 1):
        cumulative += float(stats.binom.pmf(v - i, r, q))
        alpha = max(alpha, cumulative / i)
    return min(1.0, beta + alpha * delta * 2 * m)


def one_run_epsilon(m: int, r: int, v: int, delta: float, p: float = 0.05) -> float:
    """Largest eps whose p-value is below ``p``: eps is a lower bound with confidence 1 - p."""
    if one_run_p_value(m, r, v, 0.0, delta) >= p:
        return 0.0
    lo, hi = 0.0, 1.0
    while one_run_p_value(m, r, v, hi, delta) < p:
        lo, hi = hi, hi * 2
        if hi > 200:
            return lo
    for _ in range(40):
        mid = (lo + hi) / 2
        if one_run_p_value(m, r, v, mid, delta) < p:
            lo = mid
        else:
            hi = mid
    return lo


def one_run_guesses(scores: np.ndarray, included: np.ndarray, k_pos: int, k_neg: int) -> tuple[int, int]:
    """Guess 'in' for the k_pos highest scores and 'out' for the k_neg lowest; (guesses, correct)."""
    scores, included = np.asarray(scores, float), np.asarray(included, bool)
    order = np.argsort(scores, kind="stable")
    out_idx, in_idx = order[:k_neg], order[scores.size - k_pos:] if k_pos else order[:0]
    correct = int(included[in_idx].sum()) + int((~included[out_idx]).sum())
    return k_pos + k_neg, correct
