"""The data an attack runs on: one synthetic site, simulated once and held in memory.

Attacks train many models (shadow models, canary runs), so the site's response
tensors are loaded once as stacked arrays rather than through a DataLoader per
model.  The cohort is synthetic by construction: no attack in this package ever
reads a real site's scans.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from flame_private.config import (
    CohortConfig,
    DataConfig,
    SiteCohortConfig,
    parse_config,
)

log = logging.getLogger(__name__)

SITE_ID = "attack-site"


@dataclass(frozen=True)
class ResponseTensors:
    """Every patient of the attacked site, in ``training.KEYS['response']`` order."""

    patient_ids: list[str]
    image: torch.Tensor       # [N, 4, g, g, g]
    seg: torch.Tensor         # [N, 1, g, g, g]
    treatment: torch.Tensor   # [N, 3]
    covariates: torch.Tensor  # [N, 6]
    label: torch.Tensor       # [N] float 0/1

    def __len__(self) -> int:
        return len(self.patient_ids)

    def batch(self, index: torch.Tensor | list[int]) -> tuple[torch.Tensor, ...]:
        idx = torch.as_tensor(index, dtype=torch.long)
        return (self.image[idx], self.seg[idx], self.treatment[idx], self.covariates[idx], self.label[idx])


class PatientSubset(Dataset):
    """Some of the site's patients as the dicts ``ResponseDataset`` yields, for ``training.train``."""

    def __init__(self, data: ResponseTensors, index: np.ndarray | list[int]) -> None:
        self.data, self.index = data, [int(i) for i in index]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        j, d = self.index[i], self.data
        return {"image": d.image[j], "seg": d.seg[j], "treatment": d.treatment[j], "covariates": d.covariates[j],
                "label": d.label[j]}


def cohort_config(n_patients: int, grid: int, seed: int) -> CohortConfig:
    """A one-site cohort offering all three modalities, so the conditioning is exercised."""
    site = SiteCohortConfig(site_id=SITE_ID, n_patients=n_patients,
                            treatment_mix={"photon": 0.5, "proton": 0.3, "carbon": 0.2})
    return parse_config({"name": f"attack-{n_patients}x{grid}-s{seed}", "seed": seed, "grid": grid,
                         "sites": [site.model_dump(mode="json")]}, CohortConfig, "<attack cohort>")


def synthesise(work: Path, n_patients: int, grid: int, seed: int, workers: int = 1) -> Path:
    """Simulate the cohort under ``work`` (reused when an identical one is already there)."""
    from flame_private.cohort.writer import synthesise_cohort

    cfg = cohort_config(n_patients, grid, seed)
    key = hashlib.sha256(cfg.model_dump_json().encode()).hexdigest()[:12]
    out = work / f"cohort-{key}"
    if (out / "cohort.json").is_file():
        return out
    log.info("synthesising the attack cohort: %d patients at %d^3", n_patients, grid)
    synthesise_cohort(cfg, out, workers=workers, overwrite=True)
    return out


def load_response_tensors(cohort: Path, grid: int) -> ResponseTensors:
    """The attacked site's patients through the same pipeline a real site uses."""
    from flame_private.data.checks import load_site
    from flame_private.data.datasets import ResponseDataset

    loaded = load_site(cohort / SITE_ID, "flame", SITE_ID)
    ds = ResponseDataset(loaded.records, DataConfig(grid=grid))
    items = [ds[i] for i in range(len(ds))]
    stack = {k: torch.stack([it[k] for it in items]) for k in ("image", "seg", "treatment", "covariates", "label")}
    return ResponseTensors(patient_ids=[r.patient_id for r in loaded.records], **stack)


def attack_data(work: Path, n_patients: int, grid: int, seed: int, workers: int = 1) -> ResponseTensors:
    return load_response_tensors(synthesise(work, n_patients, grid, seed, workers), grid)


def balanced(data: ResponseTensors, seed: int, per_class: int | None = None) -> ResponseTensors:
    """As many responders as non-responders (all of the rarer class, at most ``per_class``), in a seeded order.

    A membership attack on an imbalanced site mostly learns the majority label; a
    case-control selection makes the model rely on each patient's own features,
    which is where memorisation, and so membership leakage, shows.  ``per_class``
    fixes the attacked site's size whatever the cohort's responder rate.
    """
    pos = torch.nonzero(data.label > 0.5).flatten()
    neg = torch.nonzero(data.label <= 0.5).flatten()
    k = min(len(pos), len(neg), len(data) if per_class is None else per_class)
    g = torch.Generator().manual_seed(seed)
    keep = torch.cat([pos[torch.randperm(len(pos), generator=g)[:k]], neg[torch.randperm(len(neg), generator=g)[:k]]])
    keep = keep[torch.randperm(len(keep), generator=g)]
    image, seg, treatment, covariates, label = data.batch(keep)
    return ResponseTensors([data.patient_ids[i] for i in keep.tolist()], image, seg, treatment, covariates, label)
