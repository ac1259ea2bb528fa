"""How much better than "no change" can any evolution model be on the study cohort? Rules and oracles.

Scores, with the project's evolution metrics (per-patient means, 95 % bootstrap
intervals), simple rules and oracles on the pooled validation and test patients:

- ``no_change``: the baseline (the follow-up is the baseline segmentation);
- ``erode_1`` / ``dilate_1``: the whole tumour shrunk / grown by one voxel (a
  constant rule: what a model that learns one average change would do);
- ``oracle_direction``: erode, dilate or empty, whichever way the true follow-up
  went (knows the outcome; an upper bound for models of the change's direction);
- ``oracle_vanish``: no change, but empty where the true follow-up has no tumour
  left (knows which tumours disappear).

The oracles cheat on purpose: they bound what predicting the change could gain
at this grid, and so say whether a target such as "+0.05 whole-tumour Dice over no
change" is reachable on this cohort at all.

Saves benchmarks/results/evolution_ceiling.json.

Usage: python benchmarks/evolution_ceiling.py [--cohort runs/study/cohort] [--config configs/cohort/study.yaml]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np
from _common import ROOT, add_study_args, save, study_splits
from scipy import ndimage

Rule = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _erode(base: np.ndarray, target: np.ndarray) -> np.ndarray:
    keep = ndimage.binary_erosion(base > 0)
    return np.where(keep, base, 0).astype(base.dtype)


def _dilate(base: np.ndarray, target: np.ndarray) -> np.ndarray:
    grown = ndimage.binary_dilation(base > 0) & (base == 0)
    return np.where(grown, 2, base).astype(base.dtype)  # new tumour is oedema first


def _oracle_direction(base: np.ndarray, target: np.ndarray) -> np.ndarray:
    if not (target > 0).any():
        return np.zeros_like(base)
    return _erode(base, target) if (target > 0).sum() < (base > 0).sum() else _dilate(base, target)


def _oracle_vanish(base: np.ndarray, target: np.ndarray) -> np.ndarray:
    return base if (target > 0).any() else np.zeros_like(base)


RULES: dict[str, Rule] = {
    "no_change": lambda base, target: base,
    "erode_1": _erode,
    "dilate_1": _dilate,
    "oracle_direction": _oracle_direction,
    "oracle_vanish": _oracle_vanish,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_study_args(ap)
    args = ap.parse_args()

    from torch.utils.data import ConcatDataset

    from flame_private.config import CohortConfig, DataConfig, FederationConfig, load_config
    from flame_private.evaluation import EvolutionScores, patient_of_each_item
    from flame_private.experiments import make_dataset

    cohort_cfg = load_config(args.config, CohortConfig)
    fed = FederationConfig(seed=cohort_cfg.seed, data=DataConfig(grid=cohort_cfg.grid))
    voxel_ml = fed.data.voxel_mm**3 / 1000.0
    figures: dict[str, object] = {"cohort": str(args.config.relative_to(ROOT)), "grid": cohort_cfg.grid,
                                  "command": "python benchmarks/evolution_ceiling.py"}
    splits = study_splits(args.cohort, cohort_cfg, fed.data)
    for part in ("val", "test"):
        dataset = ConcatDataset([make_dataset("evolution", getattr(sp, part), fed) for sp in splits.values()])
        owners = patient_of_each_item(dataset)
        items = [dataset[i] for i in range(len(dataset))]
        rows = {}
        for name, rule in RULES.items():
            cases: dict[tuple[int, int], list] = {}
            for owner, item in zip(owners, items, strict=True):
                base, target = item["seg"][0].numpy(), item["target"][0].numpy()
                cases.setdefault(owner, []).append((rule(base, target), target, base))
            rows[name] = EvolutionScores.from_cases(list(cases.values()), voxel_ml).metrics()
        vanished = float(np.mean([not (it["target"] > 0).any() for it in items]))
        figures[part] = {"patients": len(set(owners)), "follow_ups": len(items),
                         "follow_ups_with_no_tumour_left": round(vanished, 3), "rules": rows}
        for name, m in rows.items():
            print(f"{part} {name:17s} whole {m['dice_whole_tumour']:.3f} {m['dice_whole_tumour_ci95']}  "
                  f"enhancing {m['dice_enhancing']:.3f}  rano {m['rano_class_agreement']:.3f}", flush=True)
    print(f"saved {save('evolution_ceiling', figures)}")


if __name__ == "__main__":
    main()
