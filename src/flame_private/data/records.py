"""The one case record every layout reader produces.

Readers differ (BraTS folders, LUMIERE weeks, a JSON manifest); everything
downstream (checks, transforms, datasets, splits) sees only these models, so a
new layout is a new reader and nothing else.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from flame_private.config import CANONICAL_LABELS, Layout, Modality, StrictModel

Sex = Literal["F", "M"]
Resection = Literal["gross_total", "subtotal", "biopsy"]
RESECTIONS: tuple[str, ...] = ("gross_total", "subtotal", "biopsy")
"""Extent of resection, in the fixed order used for one-hot encodings."""
SEG_SOURCE_PREFIX = "automatic (segmentation model sha256 "
SEG_SOURCE_PATTERN = "^" + re.escape(SEG_SOURCE_PREFIX) + r"[0-9a-f]{64}\)$"
"""The one ``seg_source`` there is: a segmentation drawn by the baseline segmentation model named by its hash."""
DOSE_TYPES = ("PHYSICAL", "EFFECTIVE")
"""The dose types a dose map may hold: physical dose in Gy, RBE-weighted (effective) dose in Gy(RBE)."""


class Covariates(StrictModel):
    """Clinical covariates known at baseline that modulate treatment response."""

    age: float = Field(ge=0.0, le=130.0)
    sex: Sex
    mgmt_methylated: bool
    resection: Resection


class ImageFiles(StrictModel):
    """The four structural MRI sequences of one study date, its segmentation and its RT dose if any."""

    t1: Path
    t1ce: Path
    t2: Path
    flair: Path
    seg: Path | None = None
    dose: Path | None = None
    """The planned RT dose on the study's grid (the baseline's, in the flame layout); its unit is the
    timepoint's ``dose_type``."""

    def images(self) -> dict[str, Path]:
        """The four MRI sequences, keyed and ordered as ``MRI_SEQUENCES``."""
        return {"t1": self.t1, "t1ce": self.t1ce, "t2": self.t2, "flair": self.flair}

    def all(self) -> dict[str, Path]:
        """Every file of the study date: the sequences, then the segmentation and the dose when present."""
        files = self.images()
        if self.seg is not None:
            files["seg"] = self.seg
        if self.dose is not None:
            files["dose"] = self.dose
        return files


class TimepointRecord(StrictModel):
    """One study date of a patient."""

    name: str
    day: float | None = None
    """Days since the baseline scan; None where the layout does not record dates."""
    files: ImageFiles
    rano: str | None = None
    seg_source: str | None = Field(default=None, pattern=SEG_SOURCE_PATTERN)
    """Who drew the segmentation when no person did: ``automatic (segmentation model sha256 <hex>)``, written
    by ``flame data import --segmentation-model`` for a baseline. None for a reference segmentation (a
    clinician's, a dataset's): only those are targets the segmentation model learns from or is scored on."""
    dose_type: Literal["PHYSICAL", "EFFECTIVE"] | None = None
    """What ``files.dose`` holds: EFFECTIVE, RBE-weighted dose in Gy(RBE), or PHYSICAL dose in Gy."""


class CaseRecord(StrictModel):
    """One patient at one site, whatever layout the site stores its data in."""

    patient_id: str = Field(min_length=1)
    site_id: str
    layout: Layout
    timepoints: list[TimepointRecord] = Field(min_length=1)
    """Baseline first, then follow-ups in time order."""
    treatment: Modality | None = None
    covariates: Covariates | None = None
    rano: str | None = None
    """Patient-level response assessment (RANO) at the first evaluation, if known."""
    responder: bool | None = None
    label_map: dict[int, int]
    """Source label value -> canonical label (see ``CANONICAL_LABELS``)."""

    @field_validator("label_map")
    @classmethod
    def _canonical_targets(cls, v: dict[int, int]) -> dict[int, int]:
        bad = sorted({t for t in v.values() if t not in CANONICAL_LABELS})
        if bad:
            raise ValueError(f"label_map targets must be canonical labels {sorted(CANONICAL_LABELS)}, got {bad}")
        return v

    @property
    def baseline(self) -> TimepointRecord:
        """The first timepoint: the scan the treatment decision is made on."""
        return self.timepoints[0]

    @property
    def followups(self) -> list[TimepointRecord]:
        """Every timepoint after baseline, in time order."""
        return list(self.timepoints[1:])
