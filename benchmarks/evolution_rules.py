"""Can what a model sees at baseline beat "no change"?  Learned rules for the evolution task.

``evolution_ceiling.py`` bounds the gain with oracles that know the follow-up.
This script asks the converse question: fitted on the pooled *training*
patients only, with one decision threshold chosen on the validation patients,
do rules that use everything a model sees at baseline beat "no change" on the
test patients?  If the best of them cannot, the gap is in the cohort (what
decides the follow-up is not visible at baseline), not in the network.

Rules, each scored with the project's evolution metrics (per-patient means,
95 % bootstrap intervals on test):

- ``vanish_gate``: no change, except an empty prediction where a logistic
  regression on the observable features of the follow-up (compartment volumes,
  covariates, treatment, interval and their interactions) gives
  P(no tumour left) above the threshold;
- ``level_set_step``: the baseline tumour's signed distance map moved by one of
  seven steps (empty, two rims off, one rim off, none, 1.2, 2.1 or 3 voxels of
  growth); a gradient-boosted regression per step of its Dice gain over no
  change picks the step (none unless a gain exceeds the margin);
- ``voxel_classifier``: gradient-boosted trees on every voxel within 4 voxels of
  the baseline tumour (baseline label, signed distance to the tumour and to its
  enhancing/necrotic core, the 4 MRI intensities raw and smoothed at 1 and 2.5
  voxels, volumes, treatment, interval), thresholded;
- ``oracle_level_set``: the step that the true follow-up favours (knows the
  outcome: an upper bound for ``level_set_step``).

Saves benchmarks/results/evolution_rules.json.

Usage: python benchmarks/evolution_rules.py [--cohort runs/study/cohort] [--config configs/cohort/study.yaml]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np
from _common import ROOT, add_study_args, save, study_splits
from scipy import ndimage

STEPS: tuple[float | None, ...] = (None, -2.1, -1.2, 0.0, 1.2, 2.1, 3.0)
"""Moves of the tumour boundary, in voxels of signed distance (None: no tumour left; 0.0: no change)."""
NO_CHANGE = STEPS.index(0.0)
NEAR = 4.0
"""Voxels farther than this from the baseline tumour are predicted background by the voxel classifier."""


@dataclass
class FollowUp:
    patient: str
    image: np.ndarray
    seg: np.ndarray
    target: np.ndarray
    observables: np.ndarray


def load_part(splits: dict, part: str, fed, voxel_ml: float) -> list[FollowUp]:
    """Every segmented follow-up of ``part``'s patients, with the observable features of its patient."""
    from flame_private.data.datasets import EvolutionDataset, encode_covariates

    out = []
    for sp in splits.values():
        ds = EvolutionDataset(getattr(sp, part), fed.data)
        for i in range(len(ds)):
            r, _ = ds.index[i]
            item, rec = ds[i], ds.records[r]
            seg = item["seg"][0].numpy().astype(np.int8)
            vols = np.log1p([float((seg == lab).sum()) * voxel_ml for lab in (1, 2, 3)] + [(seg > 0).sum() * voxel_ml])
            treat, interval = item["treatment"].numpy(), float(item["interval"])
            cov = encode_covariates(rec.covariates).numpy() if rec.covariates is not None else np.zeros(6)
            obs = np.concatenate([vols, cov, treat, treat * cov[2], [interval, interval**2], treat * interval,
                                  vols * interval])
            out.append(FollowUp(rec.patient_id, item["image"].numpy().astype(np.float32), seg,
                                item["target"][0].numpy().astype(np.int8), obs))
    return out


def signed_distance(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance outside the mask, minus the distance inside (voxels); large where there is none."""
    if not mask.any():
        return np.full(mask.shape, 1e3)
    return ndimage.distance_transform_edt(~mask) - ndimage.distance_transform_edt(mask)


def moved(seg: np.ndarray, step: float | None) -> np.ndarray:
    """The baseline tumour with its boundary moved by ``step``; grown voxels are oedema, kept ones keep their label."""
    if step is None:
        return np.zeros_like(seg)
    inside = signed_distance(seg > 0) < step
    return np.where(inside, np.where(seg > 0, seg, 2), 0).astype(np.int8)


def whole_dice(pred: np.ndarray, target: np.ndarray) -> float:
    p, t = pred > 0, target > 0
    total = p.sum() + t.sum()
    return 1.0 if total == 0 else float(2 * (p & t).sum() / total)


def score(items: list[FollowUp], preds: list[np.ndarray], voxel_ml: float, ci: bool) -> dict:
    from flame_private.evaluation import EvolutionScores

    cases: dict[str, list] = {}
    for it, pred in zip(items, preds, strict=True):
        cases.setdefault(it.patient, []).append((pred, it.target, it.seg))
    return EvolutionScores.from_cases(list(cases.values()), voxel_ml).metrics(ci=ci)


def voxel_features(it: FollowUp) -> tuple[np.ndarray, np.ndarray]:
    """(mask of the voxels near the baseline tumour, their feature rows)."""
    seg, img = it.seg, it.image
    sdf = signed_distance(seg > 0)
    core = (seg == 1) | (seg == 3)
    to_core = np.minimum(ndimage.distance_transform_edt(~core), 20.0) if core.any() else np.full(seg.shape, 20.0)
    near = sdf <= NEAR
    smooth1 = ndimage.gaussian_filter(img, sigma=(0, 1, 1, 1))
    smooth2 = ndimage.gaussian_filter(img, sigma=(0, 2.5, 2.5, 2.5))
    n = int(near.sum())
    cols = [np.eye(4)[seg[near]].T, sdf[near][None], to_core[near][None], img[:, near], smooth1[:, near],
            smooth2[:, near], np.repeat(it.observables[:, None], n, 1)]
    return near, np.concatenate(cols, 0).T


def voxel_probabilities(model, items: list[FollowUp]) -> list[np.ndarray]:
    probs = []
    for it in items:
        near, x = voxel_features(it)
        p = np.zeros(it.seg.shape, np.float32)
        if len(x):
            p[near] = model.predict_proba(x)[:, 1]
        probs.append(p)
    return probs


def from_probabilities(items: list[FollowUp], probs: list[np.ndarray], threshold: float) -> list[np.ndarray]:
    return [np.where(p > threshold, np.where(it.seg > 0, it.seg, 2), 0).astype(np.int8)
            for it, p in zip(items, probs, strict=True)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_study_args(ap)
    ap.add_argument("--voxels-per-follow-up", type=int, default=600,
                    help="training voxels drawn per follow-up for the voxel classifier")
    args = ap.parse_args()

    from sklearn.ensemble import GradientBoostingRegressor, HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from flame_private.config import CohortConfig, DataConfig, FederationConfig, load_config
    from flame_private.metrics import roc_auc

    t0 = time.time()
    cohort_cfg = load_config(args.config, CohortConfig)
    fed = FederationConfig(seed=cohort_cfg.seed, data=DataConfig(grid=cohort_cfg.grid))
    voxel_ml = fed.data.voxel_mm**3 / 1000.0
    splits = study_splits(args.cohort, cohort_cfg, fed.data)
    data = {part: load_part(splits, part, fed, voxel_ml) for part in ("train", "val", "test")}
    print(f"loaded {', '.join(f'{k} {len(v)}' for k, v in data.items())} follow-ups ({time.time() - t0:.0f} s)",
          flush=True)
    obs = {k: np.stack([it.observables for it in v]) for k, v in data.items()}
    preds: dict[str, dict[str, list[np.ndarray]]] = {"val": {}, "test": {}}
    chosen: dict[str, object] = {}

    def pick(rule: str, options: list, decode) -> None:
        """The option that scores best on validation; record both parts' predictions with it."""
        best = max(options, key=lambda o: score(data["val"], decode("val", o), voxel_ml, False)["dice_whole_tumour"])
        chosen[rule] = best
        for part in ("val", "test"):
            preds[part][rule] = decode(part, best)

    for part in ("val", "test"):
        preds[part]["no_change"] = [it.seg for it in data[part]]

    # 1. P(no tumour left) from the observables.
    vanished = {k: np.array([not (it.target > 0).any() for it in v]) for k, v in data.items()}
    gate = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(obs["train"], vanished["train"])
    p_vanish = {k: gate.predict_proba(obs[k])[:, 1] for k in ("val", "test")}
    aucs = {k: roc_auc(p_vanish[k], vanished[k]) for k in ("val", "test")}
    pick("vanish_gate", [0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.01],
         lambda part, t: [np.zeros_like(it.seg) if p > t else it.seg for it, p in zip(data[part], p_vanish[part])])

    # 2. One boundary step per follow-up, chosen by a regression of each step's Dice gain.
    gains = {k: np.array([[whole_dice(moved(it.seg, s), it.target) for s in STEPS] for it in v]) for k, v in
             data.items()}
    regressors = [GradientBoostingRegressor(n_estimators=150, max_depth=3, learning_rate=0.05, random_state=0).fit(
        obs["train"], gains["train"][:, j] - gains["train"][:, NO_CHANGE]) for j in range(len(STEPS))]
    predicted_gain = {k: np.stack([r.predict(obs[k]) for r in regressors], axis=1) for k in ("val", "test")}

    def by_step(part: str, margin: float) -> list[np.ndarray]:
        g = predicted_gain[part].copy()
        g[:, NO_CHANGE] += margin
        return [moved(it.seg, STEPS[j]) for it, j in zip(data[part], g.argmax(1), strict=True)]

    pick("level_set_step", [0.0, 0.02, 0.05, 0.1, 1.0], by_step)
    for part in ("val", "test"):
        preds[part]["oracle_level_set"] = [moved(it.seg, STEPS[int(np.argmax(g))]) for it, g in
                                           zip(data[part], gains[part], strict=True)]

    # 3. A voxel classifier on what the images and the baseline segmentation show.
    rng = np.random.default_rng(0)
    xs, ys = [], []
    for it in data["train"]:
        near, x = voxel_features(it)
        y = (it.target > 0)[near]
        keep = rng.choice(len(y), min(len(y), args.voxels_per_follow_up), replace=False)
        xs.append(x[keep])
        ys.append(y[keep])
    clf = HistGradientBoostingClassifier(max_iter=300, random_state=0).fit(np.concatenate(xs), np.concatenate(ys))
    probs = {k: voxel_probabilities(clf, data[k]) for k in ("val", "test")}
    pick("voxel_classifier", [0.1, 0.2, 0.3, 0.4, 0.5],
         lambda part, t: from_probabilities(data[part], probs[part], t))

    figures: dict[str, object] = {
        "cohort": str(args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT) else args.config),
        "grid": cohort_cfg.grid, "command": "python benchmarks/evolution_rules.py",
        "follow_ups": {k: len(v) for k, v in data.items()},
        "vanish_auc": {k: round(v, 3) for k, v in aucs.items()},
        "chosen_on_validation": chosen,
        "seconds": round(time.time() - t0),
    }
    for part in ("val", "test"):
        rows = {rule: score(data[part], p, voxel_ml, ci=part == "test") for rule, p in preds[part].items()}
        figures[part] = rows
        for rule, m in rows.items():
            print(f"{part} {rule:17s} whole {m['dice_whole_tumour']:.3f}  enhancing {m['dice_enhancing']:.3f}  "
                  f"rano {m['rano_class_agreement']:.3f}", flush=True)
    print(f"saved {save('evolution_rules', figures)}")


if __name__ == "__main__":
    main()
