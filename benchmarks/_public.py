"""Pretraining on the public cohort (configs/cohort/public.yaml): free of privacy cost for every site."""

from __future__ import annotations

import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PUBLIC_CONFIG = ROOT / "configs" / "cohort" / "public.yaml"


def public_dataset(task: str, fed, public_dir: Path):  # noqa: ANN001, ANN201
    """Every public patient as a dataset of ``task``; synthesises the public cohort if missing."""
    from torch.utils.data import ConcatDataset

    from flame_private.config import CohortConfig, load_config
    from flame_private.data.checks import load_site
    from flame_private.experiments import make_dataset

    public = load_config(PUBLIC_CONFIG, CohortConfig)
    if not (public_dir / "cohort.json").is_file():
        from flame_private.cohort.writer import synthesise_cohort

        synthesise_cohort(public, public_dir, workers=2, overwrite=True)
    return ConcatDataset([make_dataset(task, load_site(public_dir / s.site_id, public.layout, s.site_id).records,
                                       fed) for s in public.sites])


def pretrain_on_public(task: str, fed, public_dir: Path, epochs: int, learning_rate: float,  # noqa: ANN001
                       positive_weight: float = 1.0, batch_size: int = 8) -> tuple[object, dict]:
    """The model of ``task`` trained without DP on every public patient."""
    from flame_private.experiments import initial_model
    from flame_private.training import TrainSettings, train

    t0 = time.perf_counter()
    dataset = public_dataset(task, fed, public_dir)
    model = train(initial_model(task, fed), task, dataset, TrainSettings(
        epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, seed=fed.seed,
        positive_weight=positive_weight), None).model
    return model, {"patients": len(dataset), "epochs": epochs, "seconds": round(time.perf_counter() - t0, 1)}
