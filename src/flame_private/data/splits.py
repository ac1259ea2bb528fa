"""Patient-level train/val/test splits that never move a patient once assigned.

Each patient's split is a pure function of (seed, patient_id): a sha256 hash
mapped to [0, 1) and compared with the configured fractions.  Adding patients to
a site therefore never moves existing ones between splits (no test patient ever
leaks into training after a data refresh), and all of a patient's timepoints
follow the patient.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Literal

from flame_private.config import DataConfig, StrictModel
from flame_private.data.records import CaseRecord

Split = Literal["train", "val", "test"]


def patient_unit(seed: int, patient_id: str) -> float:
    """Uniform value in [0, 1) from sha256 of the seed and patient ID."""
    digest = hashlib.sha256(f"flame-split:{seed}:{patient_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_split(patient_id: str, seed: int, val_fraction: float, test_fraction: float) -> Split:
    """The split of one patient: test below test_fraction, then val, the rest train."""
    u = patient_unit(seed, patient_id)
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"


def split_patients(patient_ids: Iterable[str], data_config: DataConfig) -> dict[str, Split]:
    """patient_id -> split under ``data_config``'s seed and fractions."""
    return {
        pid: assign_split(pid, data_config.split_seed, data_config.val_fraction, data_config.test_fraction)
        for pid in patient_ids
    }


class Splits(StrictModel):
    """Records grouped by split; a patient appears in exactly one."""

    train: list[CaseRecord]
    val: list[CaseRecord]
    test: list[CaseRecord]


def split_records(records: Sequence[CaseRecord], data_config: DataConfig) -> Splits:
    """Group case records by their patient's split, keeping input order within each."""
    groups: dict[Split, list[CaseRecord]] = {"train": [], "val": [], "test": []}
    assigned = split_patients({r.patient_id for r in records}, data_config)
    for rec in records:
        groups[assigned[rec.patient_id]].append(rec)
    return Splits(**groups)
