"""Torch datasets for the three tasks, built from validated case records.

Preprocessing (resampling, cropping, normalising) is the slow part of an epoch,
so each case is preprocessed on first access and kept in memory: later epochs of
local training, and later federated rounds, reuse the tensors.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence, Sized
from typing import ClassVar

import torch
from torch.utils.data import Dataset

from flame_private.config import MODALITIES, DataConfig
from flame_private.data.errors import DataError
from flame_private.data.records import RESECTIONS, CaseRecord, Covariates, TimepointRecord
from flame_private.data.transforms import IMAGE_KEY, SEG_KEY, preprocess

log = logging.getLogger(__name__)

COVARIATE_NAMES: tuple[str, ...] = ("age_decades_from_60", "female", "mgmt_methylated", *RESECTIONS)
"""Meaning of each entry of ``encode_covariates``."""


def encode_treatment(treatment: str) -> torch.Tensor:
    """One-hot float32 [3] in ``MODALITIES`` order."""
    if treatment not in MODALITIES:
        raise DataError(f"unknown treatment {treatment!r} (expected one of {', '.join(MODALITIES)})")
    out = torch.zeros(len(MODALITIES), dtype=torch.float32)
    out[MODALITIES.index(treatment)] = 1.0
    return out


def encode_covariates(covariates: Covariates) -> torch.Tensor:
    """float32 [6]: (age-60)/10, female, MGMT methylated, one-hot gross-total/subtotal/biopsy."""
    resection = [1.0 if covariates.resection == r else 0.0 for r in RESECTIONS]
    values = [
        (covariates.age - 60.0) / 10.0,
        1.0 if covariates.sex == "F" else 0.0,
        1.0 if covariates.mgmt_methylated else 0.0,
        *resection,
    ]
    return torch.tensor(values, dtype=torch.float32)


def _require(records: Sequence[CaseRecord], task: str, needs: dict[str, str]) -> None:
    """Raise one DataError naming every patient that lacks a field the task needs."""
    missing = []
    for rec in records:
        lacking = [label for attr, label in needs.items() if _get(rec, attr) is None]
        if lacking:
            missing.append(f"  - {rec.patient_id} (site {rec.site_id}): no {', '.join(lacking)}")
    if missing:
        raise DataError(f"{len(missing)} case(s) cannot be used for the {task} task:\n" + "\n".join(missing))


def _get(rec: CaseRecord, attr: str) -> object:
    if attr == "baseline_seg":
        return rec.baseline.files.seg
    return getattr(rec, attr)


def dataset_size(dataset: Dataset) -> int:
    """Number of items: every dataset here has one, though torch's ``Dataset`` type does not promise it."""
    if not isinstance(dataset, Sized):
        raise TypeError(f"{type(dataset).__name__} has no length")
    return len(dataset)


class _OnePerPatient(Dataset[dict[str, torch.Tensor]], ABC):
    """One item per patient, made from its baseline on first access and kept (``_item``)."""

    task: ClassVar[str] = ""
    needs: ClassVar[dict[str, str]] = {}
    """Record fields the task needs -> how an error names them."""

    def __init__(self, records: Sequence[CaseRecord], data_config: DataConfig) -> None:
        _require(records, self.task, self.needs)
        self.records = list(records)
        self.data_config = data_config
        self._cache: dict[int, dict[str, torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if index not in self._cache:
            self._cache[index] = self._item(self.records[index])
        return dict(self._cache[index])

    @abstractmethod
    def _item(self, rec: CaseRecord) -> dict[str, torch.Tensor]:
        """The tensors of one patient (preprocessed once, then cached)."""


class ResponseDataset(_OnePerPatient):
    """One item per patient: baseline images and seg, treatment, covariates, responder label."""

    task = "response"
    needs = {"treatment": "treatment", "covariates": "covariates", "responder": "responder label",
             "baseline_seg": "baseline segmentation"}

    def _item(self, rec: CaseRecord) -> dict[str, torch.Tensor]:
        out = preprocess(rec, self.data_config)
        assert rec.treatment is not None and rec.covariates is not None and rec.responder is not None
        return {
            "image": out[IMAGE_KEY],
            "seg": out[SEG_KEY],
            "treatment": encode_treatment(rec.treatment),
            "covariates": encode_covariates(rec.covariates),
            "label": torch.tensor(float(rec.responder), dtype=torch.float32),
        }


class SegmentationDataset(_OnePerPatient):
    """One item per patient: the baseline MRI, and its tumour segmentation as the target.

    Only the baseline: it is the scan the clinical models read, and one item per
    patient keeps the unit of privacy the patient under DP-SGD.
    """

    task = "segmentation"
    needs = {"baseline_seg": "baseline segmentation"}

    def __init__(self, records: Sequence[CaseRecord], data_config: DataConfig) -> None:
        # A segmentation the model drew is not a reference: learning from it, or scoring against it, would
        # only teach the model its own mistakes. Those patients are left out, named in the log.
        drawn = [r for r in records if r.baseline.seg_source is not None]
        if drawn:
            log.warning("%d patient(s) left out of the segmentation task: their baseline segmentation was drawn "
                        "by a segmentation model, not a reference: %s", len(drawn),
                        ", ".join(f"{r.patient_id} (site {r.site_id})" for r in drawn))
        # A split may be left empty (it scores n = 0); training on no patient is refused where training starts.
        super().__init__([r for r in records if r.baseline.seg_source is None], data_config)
        self.left_out = [r.patient_id for r in drawn]
        """Patients whose baseline segmentation was drawn by a model (not targets)."""

    def _item(self, rec: CaseRecord) -> dict[str, torch.Tensor]:
        out = preprocess(rec, self.data_config)
        return {"image": out[IMAGE_KEY], "target": out[SEG_KEY]}


class EvolutionDataset(Dataset[dict[str, torch.Tensor]]):
    """One item per (patient, follow-up with a segmentation): predict the follow-up seg.

    All of a patient's follow-ups are preprocessed in one pass together with the
    baseline, so the targets share the baseline's crop and grid.
    """

    def __init__(self, records: Sequence[CaseRecord], data_config: DataConfig) -> None:
        _require(records, "evolution", {"treatment": "treatment", "baseline_seg": "baseline segmentation"})
        self.records = list(records)
        self.data_config = data_config
        self.index: list[tuple[int, int]] = []
        """(record index, follow-up position among the record's targets)."""
        self._targets: list[list[TimepointRecord]] = []
        undated = []
        for r, rec in enumerate(self.records):
            targets = [tp for tp in rec.followups if tp.files.seg is not None]
            undated += [f"  - {rec.patient_id} {tp.name}" for tp in targets if tp.day is None]
            self._targets.append(targets)
            self.index += [(r, k) for k in range(len(targets))]
            if not targets:
                log.info("%s: no segmented follow-up, contributes nothing to the evolution task", rec.patient_id)
        if undated:
            raise DataError(
                "follow-ups without a study date (days since baseline) cannot be used for the evolution task:\n"
                + "\n".join(undated)
            )
        self._cache: dict[int, dict[str, torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self.index)

    def _patient(self, r: int) -> dict[str, torch.Tensor]:
        if r not in self._cache:
            self._cache[r] = preprocess(self.records[r], self.data_config, self._targets[r])
        return self._cache[r]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        r, k = self.index[index]
        rec, tp = self.records[r], self._targets[r][k]
        out = self._patient(r)
        assert rec.treatment is not None and tp.day is not None
        return {
            "image": out[IMAGE_KEY],
            "seg": out[SEG_KEY],
            "treatment": encode_treatment(rec.treatment),
            "interval": torch.tensor([tp.day / 365.0], dtype=torch.float32),
            "target": out[f"target_{k}"],
        }


class OneFollowUpPerPatient(Dataset[dict[str, torch.Tensor]]):
    """The evolution task with one item per patient: a random follow-up at each access.

    DP-SGD clips and samples *items*; the unit of privacy is the *patient*.  With
    one item per patient a patient is in a batch at most once, so the accountant's
    (epsilon, delta) holds per patient.  Drawing the follow-up anew at each access
    still shows the model every interval over the epochs.
    """

    def __init__(self, base: EvolutionDataset, seed: int = 0) -> None:
        self.base = base
        self.patients = [r for r, targets in enumerate(base._targets) if targets]
        self._first_item = {r: base.index.index((r, 0)) for r in self.patients}
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.patients)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        r = self.patients[index]
        k = int(torch.randint(len(self.base._targets[r]), (1,), generator=self.generator))
        return self.base[self._first_item[r] + k]
