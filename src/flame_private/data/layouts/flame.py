"""Reader for the ``flame`` layout: a site folder described by ``manifest.json``.

This is what the synthetic cohort writes and the native format a site may adopt:
all metadata (treatment, covariates, outcome, study dates) sits in one JSON file,
and the image paths in it are relative to the site folder.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from flame_private.config import CANONICAL_LABELS
from flame_private.data.errors import Problem
from flame_private.data.layouts._common import finish, parse_treatment, validation_reason
from flame_private.data.records import (
    DOSE_TYPES,
    SEG_SOURCE_PATTERN,
    CaseRecord,
    Covariates,
    ImageFiles,
    TimepointRecord,
)

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = "flame-cohort"
FORMAT_VERSION = 1
LABEL_MAP: dict[int, int] = {k: k for k in CANONICAL_LABELS}
"""The flame layout stores canonical labels already."""

_COVARIATE_KEYS = ("age", "sex", "mgmt_methylated", "resection")


class _Files(BaseModel):
    """Image paths of one timepoint; other keys are ignored, not refused."""

    model_config = ConfigDict(extra="ignore")
    t1: str
    t1ce: str
    t2: str
    flair: str
    seg: str | None = None
    dose: str | None = None


class _Timepoint(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str
    day: float | None = None
    files: _Files
    rano: str | None = None
    seg_source: str | None = None
    dose_type: str | None = None


class _Patient(BaseModel):
    """A manifest patient entry; unknown keys (pseudoprogression, kps, ...) are ignored."""

    model_config = ConfigDict(extra="ignore")
    patient_id: str
    timepoints: list[_Timepoint]
    treatment: Any = None
    rano: str | None = None
    responder: bool | None = None


def read_manifest(root: Path) -> dict[str, Any]:
    """The parsed manifest mapping; raises ValueError with a readable reason."""
    path = root / MANIFEST
    if not path.is_file():
        raise ValueError(f"missing {MANIFEST} (a flame-layout site folder must contain one)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"bad manifest JSON: {exc}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read manifest ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError("bad manifest JSON: expected an object at the top level")
    if data.get("format") != FORMAT:
        raise ValueError(f"bad manifest: format must be {FORMAT!r}, got {data.get('format')!r}")
    if data.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"bad manifest: unsupported format_version {data.get('format_version')!r} "
            f"(this reader knows {FORMAT_VERSION})"
        )
    if not isinstance(data.get("patients"), list):
        raise ValueError("bad manifest: 'patients' must be a list")
    return data


def manifest_site_id(root: Path) -> str | None:
    """The site_id a manifest declares, or None when it cannot be read."""
    try:
        sid = read_manifest(root).get("site_id")
    except ValueError:
        return None
    return sid if isinstance(sid, str) and sid else None


def read_flame(root: Path, site_id: str, problems: list[Problem] | None = None) -> list[CaseRecord]:
    """Every patient listed in ROOT/manifest.json, paths resolved against ROOT."""
    root = Path(root)
    found: list[Problem] = []
    manifest_path = root / MANIFEST
    try:
        manifest = read_manifest(root)
    except ValueError as exc:
        found.append(Problem(patient_id=None, path=manifest_path, reason=str(exc)))
        return finish([], found, problems, root)
    declared = manifest.get("site_id")
    if declared is not None and declared != site_id:
        log.warning("%s declares site_id %r, reading it as site %r", manifest_path, declared, site_id)

    records: list[CaseRecord] = []
    for index, entry in enumerate(manifest["patients"]):
        record = _read_patient(root, site_id, index, entry, manifest_path, found)
        if record is not None:
            records.append(record)
    return finish(records, found, problems, root)


def _read_patient(
    root: Path, site_id: str, index: int, entry: object, manifest_path: Path, found: list[Problem]
) -> CaseRecord | None:
    pid = entry.get("patient_id") if isinstance(entry, dict) else None
    who = pid if isinstance(pid, str) and pid else f"patients[{index}]"

    def bad(reason: str) -> None:
        found.append(Problem(patient_id=who, path=manifest_path, reason=reason))

    try:
        patient = _Patient.model_validate(entry)
    except ValidationError as exc:
        bad(f"bad manifest entry: {validation_reason(exc)}")
        return None
    if not patient.timepoints:
        bad("bad manifest entry: no timepoints")
        return None

    treatment = None
    if patient.treatment is not None:
        try:
            treatment = parse_treatment(patient.treatment)
        except ValueError as exc:
            bad(str(exc))

    covariates = None
    assert isinstance(entry, dict)
    present = [k for k in _COVARIATE_KEYS if entry.get(k) is not None]
    if present:
        try:
            covariates = Covariates.model_validate({k: entry.get(k) for k in _COVARIATE_KEYS})
        except ValidationError as exc:
            bad(f"bad covariates: {validation_reason(exc)}")

    for raw in patient.timepoints:
        if raw.seg_source is not None and not re.fullmatch(SEG_SOURCE_PATTERN, raw.seg_source):
            bad(f"timepoint {raw.name}: seg_source {raw.seg_source!r} is not 'automatic (segmentation model sha256 "
                "<64 hex digits>)'; leave it out where the segmentation is a reference (a clinician's)")
            raw.seg_source = None
        if raw.dose_type is not None and raw.dose_type not in DOSE_TYPES:
            bad(f"timepoint {raw.name}: dose_type {raw.dose_type!r} is neither PHYSICAL (Gy) nor EFFECTIVE (Gy(RBE))")
            raw.dose_type = None
        elif raw.files.dose and raw.dose_type is None:
            bad(f"timepoint {raw.name}: a dose file without dose_type: say PHYSICAL (Gy) or EFFECTIVE (Gy(RBE))")
    timepoints = [
        TimepointRecord(
            name=tp.name,
            day=tp.day,
            rano=tp.rano,
            seg_source=tp.seg_source,
            dose_type=tp.dose_type,  # type: ignore[arg-type]  # checked above
            files=ImageFiles(
                t1=root / tp.files.t1,
                t1ce=root / tp.files.t1ce,
                t2=root / tp.files.t2,
                flair=root / tp.files.flair,
                seg=root / tp.files.seg if tp.files.seg else None,
                dose=root / tp.files.dose if tp.files.dose else None,
            ),
        )
        for tp in patient.timepoints
    ]
    if all(tp.day is not None for tp in timepoints):
        timepoints.sort(key=lambda tp: tp.day or 0)
    for tp in timepoints[1:]:
        if tp.seg_source is not None:
            bad(f"timepoint {tp.name}: a follow-up's segmentation marked as drawn by a model; only baselines are "
                "drawn (follow-ups are the evolution model's targets). The baseline is the earliest timepoint by "
                "day, or the first listed where days are missing")
    return CaseRecord(
        patient_id=patient.patient_id,
        site_id=site_id,
        layout="flame",
        timepoints=timepoints,
        treatment=treatment,
        covariates=covariates,
        rano=patient.rano,
        responder=patient.responder,
        label_map=dict(LABEL_MAP),
    )
