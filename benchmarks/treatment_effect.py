"""Does the treatment matter?  How often, for which modality, and can it be predicted?

Simulates a sample of a cohort config's patients in memory (no images written),
every one under all three modalities from the same hidden draws, and measures:

* how often the responder status depends on the modality;
* the true best modality (a response, then the least viable tumour) and its
  distribution, and the best by viable tumour alone;
* how predictable the best modality is from what a clinician knows before
  treatment: a multinomial logistic regression on the baseline volumes and the
  six covariates (5-fold cross-validated accuracy, against always choosing the
  most frequent best), and the logistic response baseline of ``baselines.py``
  (its 16 features, treatment included) fitted on the treatment actually given
  and scored three times with the treatment switched, with its best-modality
  accuracy and regret next to "always photon" and "always the majority best".

Patients are the first ones of each site in the config's proportions, with the
same random streams as ``flame cohort synth``, so the figures describe that cohort.

Usage: python benchmarks/treatment_effect.py [--config configs/cohort/study.yaml] [--patients 120]
       [--tag after]   (figures saved under that key in results/treatment_effect.json)
"""

from __future__ import annotations

import argparse
import json
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from _common import RESULTS, save, simulate_patient

from flame_private.baselines import logistic_each_modality
from flame_private.cohort import radiobiology as rb
from flame_private.cohort.anatomy import load_anatomy
from flame_private.cohort.patient import choose_treatment
from flame_private.cohort.simulate import grow_to_diagnosis, resect
from flame_private.config import MODALITIES, CohortConfig, load_config
from flame_private.evaluation import TreatmentScores, treatment_baselines

ROOT = Path(__file__).resolve().parent.parent
RESECTIONS = ("gross_total", "subtotal", "biopsy")


def sample_jobs(cfg: CohortConfig, n: int) -> list[tuple[int, int]]:
    """The first patients of each site, in proportion to the site sizes (at least one each)."""
    total = sum(s.n_patients for s in cfg.sites)
    counts = [max(1, round(n * s.n_patients / total)) for s in cfg.sites]
    return [(si, pi) for si, k in enumerate(counts) for pi in range(min(k, cfg.sites[si].n_patients))]


def one_patient(args: tuple[CohortConfig, int, int]) -> dict:
    cfg, si, pi = args
    site = cfg.sites[si]
    p, res, course, anat = simulate_patient(cfg, si, pi)
    seg = course.baseline.seg
    v = anat.voxel_ml
    vols = [float((seg == k).sum() * v) for k in (1, 2, 3)] + [float((seg > 0).sum() * v)]
    treatment = choose_treatment(p, site, vols[0], vols[2])
    # Diagnostic: the radiobiologically hypoxic share of viable tumour at the start of radiotherapy.
    post = resect(grow_to_diagnosis(p, anat, cfg)[0], res, p, anat, cfg)
    h = rb.hypoxia(post.cellularity, post.necrosis, anat.spacing, threshold=rb.HYPOXIA_THRESHOLD + p.hypoxia_shift)
    hyp_share = float((h * post.c).sum() / max(post.c.sum(), 1e-9))
    covariates = [(p.age - 60.0) / 10.0, float(p.sex == "F"), float(p.mgmt_methylated),
                  *(float(res == r) for r in RESECTIONS)]
    onehot = [float(treatment == m) for m in MODALITIES]
    return {
        "features": [*np.log1p(vols), *covariates, *onehot, *(t * float(p.mgmt_methylated) for t in onehot)],
        "responder": [course.outcomes[m].responder for m in MODALITIES],
        "burden": [course.outcomes[m].viable_burden_ml for m in MODALITIES],
        "rano": [course.outcomes[m].rano for m in MODALITIES],
        "radionecrosis": [course.outcomes[m].radionecrosis for m in MODALITIES],
        "lymphopenia": [course.outcomes[m].lymphopenia for m in MODALITIES],
        "brain_dose": [course.outcomes[m].mean_brain_dose_gy for m in MODALITIES],
        "given": MODALITIES.index(treatment),
        "hypoxic_share": hyp_share,
    }


def cv_best_modality(x: np.ndarray, best: np.ndarray, seed: int = 0) -> float:
    """5-fold CV accuracy of a multinomial logistic regression predicting the best modality."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    classes, counts = np.unique(best, return_counts=True)
    if len(classes) < 2:
        return 1.0
    folds = StratifiedKFold(n_splits=min(5, int(counts.min())) if counts.min() >= 2 else 2, shuffle=True,
                            random_state=seed)
    keep = np.isin(best, classes[counts >= folds.n_splits])
    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    pred = cross_val_predict(model, x[keep], best[keep], cv=folds)
    return float(np.mean(pred == best[keep]) * keep.mean())


def cv_treatment_scores(x: np.ndarray, y: np.ndarray, truth: TreatmentScores, seed: int = 0
                        ) -> dict[str, dict]:
    """Logistic baseline fitted on the treatments given, scored under each modality, 5-fold CV; rules beside it."""
    from sklearn.model_selection import KFold

    probs = np.zeros(truth.probs.shape)
    majority = np.zeros(len(y), int)
    for train, test in KFold(5, shuffle=True, random_state=seed).split(x):
        probs[test] = logistic_each_modality(x[train], y[train], x[test])
        rules = treatment_baselines(_rows(truth, test), _rows(truth, train))
        majority[test] = np.argmax(rules["always_majority_best"].probs, axis=1)
    scored = {"logistic_observables": TreatmentScores(probs, truth.responder, truth.burden_ml)}
    scored.update(treatment_baselines(truth))
    scored["always_majority_best"] = truth.with_choice(majority)
    return {k: _rounded(s.metrics()) for k, s in scored.items()}


def _rows(s: TreatmentScores, idx: np.ndarray) -> TreatmentScores:
    return TreatmentScores(s.probs[idx], s.responder[idx], s.burden_ml[idx])


def _rounded(m: dict) -> dict:
    return {k: ([round(float(a), 3) for a in v] if isinstance(v, list) else round(float(v), 3)) for k, v in m.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--config", type=Path, default=ROOT / "configs/cohort/study.yaml")
    ap.add_argument("--patients", type=int, default=120)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--tag", default="current")
    args = ap.parse_args()
    cfg = load_config(args.config, CohortConfig)
    jobs = [(cfg, si, pi) for si, pi in sample_jobs(cfg, args.patients)]
    load_anatomy(cfg.grid)
    with ProcessPoolExecutor(args.workers) as pool:
        rows = list(pool.map(one_patient, jobs, chunksize=2))
    x = np.array([r["features"] for r in rows], float)
    resp = np.array([r["responder"] for r in rows], bool)
    burden = np.array([r["burden"] for r in rows], float)
    given = np.array([r["given"] for r in rows])
    y = resp[np.arange(len(rows)), given].astype(int)
    truth = TreatmentScores(np.zeros(resp.shape), resp, burden)
    best = truth.true_best()
    best_burden = np.argmin(burden, axis=1)
    pre_treatment = x[:, :10]
    dependent = resp.any(1) & ~resp.all(1)
    hyp = np.array([r["hypoxic_share"] for r in rows])
    figures = {
        "config": str(args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT) else args.config),
        "grid": cfg.grid,
        "patients": len(rows),
        "responder_rate_given": round(float(y.mean()), 3),
        "responder_rate_by_modality": {m: round(float(resp[:, k].mean()), 3) for k, m in enumerate(MODALITIES)},
        "responder_depends_on_modality": round(float(dependent.mean()), 3),
        "best_modality": {m: int((best == k).sum()) for k, m in enumerate(MODALITIES)},
        "best_modality_among_dependent": {m: int((best[dependent] == k).sum()) for k, m in enumerate(MODALITIES)},
        "best_by_viable_burden": {m: int((best_burden == k).sum()) for k, m in enumerate(MODALITIES)},
        "radionecrosis_rate_by_modality": {m: round(float(np.mean([r["radionecrosis"][k] for r in rows])), 3)
                                          for k, m in enumerate(MODALITIES)},
        "lymphopenia_rate_by_modality": {m: round(float(np.mean([r["lymphopenia"][k] for r in rows])), 3)
                                        for k, m in enumerate(MODALITIES)},
        "mean_brain_dose_gy": {m: round(float(np.mean([r["brain_dose"][k] for r in rows])), 1)
                               for k, m in enumerate(MODALITIES)},
        "hypoxic_share_of_viable_tumour": {"p10": round(float(np.percentile(hyp, 10)), 3),
                                           "median": round(float(np.median(hyp)), 3),
                                           "p90": round(float(np.percentile(hyp, 90)), 3)},
        "best_modality_cv_accuracy_pre_treatment_features": round(cv_best_modality(pre_treatment, best), 3),
        "best_modality_majority_share": round(float(np.bincount(best).max() / len(best)), 3),
        "treatment_comparison_cv": cv_treatment_scores(x, y, truth),
    }
    print(json.dumps(figures, indent=1))
    previous = RESULTS / "treatment_effect.json"
    runs = json.loads(previous.read_text())["figures"] if previous.is_file() else {}
    runs[args.tag] = figures
    print(f"saved {save('treatment_effect', runs)}")


if __name__ == "__main__":
    main()
