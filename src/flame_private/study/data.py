"""The study's view of the cohort: each site's patients and splits, the datasets built from them, the truth."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch.utils.data import ConcatDataset, Dataset

from flame_private.config import CohortConfig, FederationConfig, Task
from flame_private.data.checks import load_site
from flame_private.data.splits import Splits, split_records
from flame_private.experiments import load_truth, make_dataset
from flame_private.study.config import StudyError

log = logging.getLogger(__name__)


def prepare_cohort(cohort: CohortConfig, cohort_dir: Path, workers: int) -> Path:
    """The cohort on disk: synthesised into ``cohort_dir`` unless it already holds this very config's cohort."""
    from flame_private.cohort.writer import synthesise_cohort

    index = cohort_dir / "cohort.json"
    if index.is_file():
        written = json.loads(index.read_text(encoding="utf-8")).get("config")
        if written != cohort.model_dump(mode="json", exclude={"layout"} if cohort.layout == "flame" else None):
            raise StudyError(f"{cohort_dir} holds another cohort than the study's {cohort.name!r} config "
                             "(cohort.json's config differs): point cohort_dir elsewhere or remove it")
        return cohort_dir
    log.info("synthesising the %s cohort into %s", cohort.name, cohort_dir)
    synthesise_cohort(cohort, cohort_dir, workers=workers, overwrite=False)
    return cohort_dir


@dataclass
class StudyData:
    """Sites in cohort order; for each, its patients split as the federation config splits them."""

    cohort_dir: Path
    fed: FederationConfig
    splits: dict[str, Splits]
    truth: dict[str, dict[str, dict[str, Any]]] | None
    _cache: dict[tuple[str, str, str], Dataset] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, cohort_dir: Path, fed: FederationConfig, layout: str = "flame") -> StudyData:
        sites = json.loads((cohort_dir / "cohort.json").read_text(encoding="utf-8"))["sites"]
        splits = {}
        for entry in sites:
            sid = entry["site_id"]
            records = load_site(cohort_dir / sid, layout, sid).records  # type: ignore[arg-type]
            splits[sid] = split_records(records, fed.data)
        truth_path = cohort_dir / "truth" / "counterfactuals.json"
        return cls(cohort_dir=cohort_dir, fed=fed, splits=splits,
                   truth=load_truth(truth_path) if truth_path.is_file() else None)

    @property
    def sites(self) -> list[str]:
        return list(self.splits)

    @property
    def voxel_ml(self) -> float:
        return self.fed.data.voxel_mm**3 / 1000.0

    def dataset(self, task: Task, site: str, part: str) -> Dataset:
        """``part``: a split (train, val, test) or ``all`` (every patient: a held-out site's)."""
        key = (task, site, part)
        if key not in self._cache:
            s = self.splits[site]
            records = s.train + s.val + s.test if part == "all" else getattr(s, part)
            self._cache[key] = make_dataset(task, records, self.fed)
        return self._cache[key]

    def training_pool(self, task: Task, sites: list[str]) -> Dataset:
        return ConcatDataset([self.dataset(task, s, "train") for s in sites])

    def patients(self, site: str, part: str = "all") -> int:
        s = self.splits[site]
        return len({r.patient_id for r in (s.train + s.val + s.test if part == "all" else getattr(s, part))})
