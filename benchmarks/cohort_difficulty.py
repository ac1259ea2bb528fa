"""How hard is the synthetic cohort?  Ceilings for the response and evolution tasks.

Simulates a cohort in memory (no images) and measures:

* response: cross-validated AUC of a logistic regression on what a network can
  read off the baseline (tumour compartment volumes, tumour-to-white-matter
  signal on T1ce/T2/FLAIR, covariates, treatment), and of the same model also
  given the hidden biology (the oracle);
* evolution: whole-tumour and enhancing Dice between each patient's follow-up at
  the first evaluation and a re-simulation of the same patient with fresh hidden
  biology (what a predictor that knows every observable could hope for), and of
  the "nothing changes" prediction (baseline segmentation);
* treatment effect: how often the responder label depends on the modality.

Usage: python benchmarks/cohort_difficulty.py [--config configs/cohort/demo.yaml] [--patients-per-site N]
                                            [--out cohort_difficulty]
"""

from __future__ import annotations

import argparse
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from _common import save, simulate_patient

from flame_private.cohort.anatomy import load_anatomy
from flame_private.cohort.imaging import apply_scanner, bias_field, proliferation_index, synthesise
from flame_private.cohort.patient import choose_treatment, redraw_hidden
from flame_private.cohort.simulate import simulate_course
from flame_private.config import MODALITIES, CohortConfig, load_config

ROOT = Path(__file__).resolve().parent.parent


def dice(a: np.ndarray, b: np.ndarray) -> float:
    s = a.sum() + b.sum()
    return 1.0 if s == 0 else float(2 * (a & b).sum() / s)


def one_patient(args: tuple[CohortConfig, int, int]) -> dict:
    cfg, si, pi = args
    site = cfg.sites[si]
    p, res, course, anat = simulate_patient(cfg, si, pi)
    v = anat.voxel_ml
    seg0 = course.baseline.seg
    vols = {lab: float((seg0 == k).sum() * v) for k, lab in ((1, "nec"), (2, "oed"), (3, "enh"))}
    treatment = choose_treatment(p, site, vols["nec"], vols["enh"])
    given = course.outcomes[treatment]
    twin = redraw_hidden(p, np.random.default_rng([cfg.seed, si, pi, 7]), cfg)
    twin_course = simulate_course(twin, res, anat, cfg, modalities=(treatment,))
    ev, ev_twin = given.scans[1].seg, twin_course.outcomes[treatment].scans[1].seg
    # Tumour-to-white-matter signal ratios on the noisy scanner images, as a network would see them.
    aggression = proliferation_index(p.rho, cfg.tumour.rho_range)
    img_rng = np.random.default_rng([cfg.seed, si, pi, 1])
    bias = bias_field(anat.shape, site.scanner.bias_field, img_rng)
    region = seg0 == 3 if (seg0 == 3).sum() >= 3 else seg0 == 2
    white = (anat.wm > 0.9) & (seg0 == 0)
    ratios = []
    for seq in ("t1ce", "t2", "flair"):
        clean = synthesise(seq, anat.gm, anat.wm, anat.csf, anat.brain, anat.t1, course.baseline.compartments,
                           aggression)
        img = apply_scanner(clean, anat.brain, site.scanner, bias, img_rng)
        ratios.append(float(np.median(img[region]) / np.median(img[white])) if region.any() else 1.0)
    return {
        "features": [np.log1p(vols["enh"]), np.log1p(vols["nec"]), np.log1p(vols["oed"]), *ratios,
                     (p.age - 60) / 10, p.sex == "F", p.mgmt_methylated,
                     res == "gross_total", res == "subtotal",
                     *(treatment == m for m in MODALITIES)],
        "hidden": [np.log(p.alpha), np.log(p.rho_post_factor), np.log(p.rho), p.pseudo_u, p.hypoxia_shift,
                   p.lymphopenia_u],
        "responder": given.responder,
        "differs": len({o.responder for o in course.outcomes.values()}) > 1,
        "dice_wt_twin": dice(ev > 0, ev_twin > 0),
        "dice_enh_twin": dice(ev == 3, ev_twin == 3),
        "dice_wt_persist": dice(ev > 0, seg0 > 0),
        "pd": given.rano == "PD",
        "pseudo": given.pseudoprogression,
    }


def cv_auc(x: np.ndarray, y: np.ndarray, seed: int = 0) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    prob = cross_val_predict(model, x, y, cv=folds, method="predict_proba")[:, 1]
    return float(roc_auc_score(y, prob))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--config", type=Path, default=ROOT / "configs/cohort/demo.yaml")
    ap.add_argument("--patients-per-site", type=int, default=None)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", default="cohort_difficulty", help="result name: benchmarks/results/<out>.json")
    args = ap.parse_args()
    cfg = load_config(args.config, CohortConfig)
    jobs = [(cfg, si, pi) for si, s in enumerate(cfg.sites) for pi in range(args.patients_per_site or s.n_patients)]
    load_anatomy(cfg.grid)
    with ProcessPoolExecutor(args.workers) as pool:
        rows = list(pool.map(one_patient, jobs, chunksize=2))
    x = np.array([r["features"] for r in rows], dtype=float)
    h = np.array([r["hidden"] for r in rows], dtype=float)
    y = np.array([r["responder"] for r in rows], dtype=int)
    figures = {
        "config": str(args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT) else args.config),
        "grid": cfg.grid,
        "patients": len(rows),
        "responder_rate": round(float(y.mean()), 3),
        "progression_rate": round(float(np.mean([r["pd"] for r in rows])), 3),
        "pseudoprogression_rate": round(float(np.mean([r["pseudo"] for r in rows])), 3),
        "auc_observable_features": round(cv_auc(x, y), 3),
        "auc_with_hidden_biology": round(cv_auc(np.hstack([x, h]), y), 3),
        "dice_whole_tumour_twin": round(float(np.mean([r["dice_wt_twin"] for r in rows])), 3),
        "dice_enhancing_twin": round(float(np.mean([r["dice_enh_twin"] for r in rows])), 3),
        "dice_whole_tumour_persistence": round(float(np.mean([r["dice_wt_persist"] for r in rows])), 3),
        "responder_depends_on_modality": round(float(np.mean([r["differs"] for r in rows])), 3),
    }
    for k, v in figures.items():
        print(f"{k:>32}: {v}")
    print(f"saved {save(args.out, figures)}")


if __name__ == "__main__":
    main()
