"""Treatment comparison on the study cohort's test split: the logistic baseline against fixed rules.

The logistic regression on observable features (``baselines.py``) is fitted on
every site's training patients pooled, with the treatment each was given, then
scored on the pooled test patients three times, the treatment switched to
photons, protons and carbon ions.  Its choice (the modality of highest
predicted P(responder)) is scored against the cohort's counterfactual truth
(``truth/counterfactuals.json``) beside "always photons", "always protons",
"always carbon ions" and "always the modality most often best among the
training patients", with 95 % bootstrap
intervals (``evaluation.TreatmentScores``).  A treatment-conditioned network is
scored the same way (``experiments.compare_treatments``).

Usage: python benchmarks/treatment_comparison.py [--cohort runs/study/cohort] [--config configs/cohort/study.yaml]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from _common import add_study_args, cohort_identity, save, study_splits


def main() -> None:
    from torch.utils.data import ConcatDataset

    from flame_private import baselines
    from flame_private.config import MODALITIES, CohortConfig, DataConfig, FederationConfig, load_config
    from flame_private.evaluation import TreatmentScores
    from flame_private.experiments import load_truth, make_dataset, treatment_comparison_with_baselines

    ap = argparse.ArgumentParser(description=__doc__)
    add_study_args(ap)
    args = ap.parse_args()
    cohort_cfg = load_config(args.config, CohortConfig)
    fed = FederationConfig(seed=cohort_cfg.seed, data=DataConfig(grid=cohort_cfg.grid))
    voxel_ml = fed.data.voxel_mm**3 / 1000.0
    splits = study_splits(args.cohort, cohort_cfg, fed.data)
    train = [make_dataset("response", sp.train, fed) for sp in splits.values()]
    test = [make_dataset("response", sp.test, fed) for sp in splits.values()]
    train_ids = [r.patient_id for sp in splits.values() for r in sp.train]
    truth = load_truth(args.cohort / "truth" / "counterfactuals.json")

    scored = treatment_comparison_with_baselines(train, test, truth, voxel_ml)
    train_truth = TreatmentScores.from_truth(np.zeros((len(train_ids), len(MODALITIES))), train_ids, truth)
    best = scored["logistic_observables"].true_best()
    figures = {
        **cohort_identity(args),
        "patients": {"train": len(train_ids), "test": len(best)},
        "test_true_best": {m: int((best == k).sum()) for k, m in enumerate(MODALITIES)},
        "train_true_best": {m: int((train_truth.true_best() == k).sum()) for k, m in enumerate(MODALITIES)},
        "logistic_choice": {m: int((np.argmax(scored["logistic_observables"].probs, 1) == k).sum())
                            for k, m in enumerate(MODALITIES)},
        "response_auc_logistic_observables": baselines.logistic_observables(
            ConcatDataset(train), ConcatDataset(test), voxel_ml).metrics(),
        "treatment_comparison": {k: s.metrics() for k, s in scored.items()},
    }
    print(json.dumps(figures, indent=1))
    print(f"saved {save('treatment_comparison', figures)}")

if __name__ == "__main__":
    main()
