"""Reader for LUMIERE (Suter et al. 2022): longitudinal GBM MRI with expert RANO ratings.

``Imaging/Patient-001/week-000-1/{T1,CT1,T2,FLAIR}.nii.gz``: ``week-000-1`` is
pre-operative, ``week-000-2`` post-operative, later folders are follow-ups by week.
Baseline is the first post-operative study with all four sequences (treatment is
planned on it).  Segmentations are DeepBraTumIA masks whose integer codes are
disputed between public loaders, so where the ``measured_volumes_in_mm3.json``
written next to a mask is available the code of each compartment is inferred by
matching label volumes to it instead of trusting a fixed table.
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
import re
from pathlib import Path

import numpy as np

from flame_private.data.errors import NiftiError, Problem
from flame_private.data.layouts._common import apply_clinical, finish, read_clinical_csv
from flame_private.data.nifti import read_volume
from flame_private.data.records import CaseRecord, ImageFiles, TimepointRecord

log = logging.getLogger(__name__)

DEFAULT_LABEL_MAP: dict[int, int] = {0: 0, 1: 1, 2: 2, 3: 3}
"""DeepBraTumIA codes as documented: 1 necrotic/non-enhancing, 2 oedema, 3 enhancing."""
SEQUENCE_FILES = {"t1": "T1.nii.gz", "t1ce": "CT1.nii.gz", "t2": "T2.nii.gz", "flair": "FLAIR.nii.gz"}
SEG_SUBPATH = Path("DeepBraTumIA-segmentation/atlas/segmentation/seg_mask.nii.gz")
VOLUMES_JSON = "measured_volumes_in_mm3.json"
COMPARTMENTS = {"Necrotic_NonEnhancing": 1, "Edema_Compartment": 2, "Enhancing_Core": 3}
RATINGS_GLOB = "LUMIERE-ExpertRating*.csv"
RATING_COLUMN = "Rating (according to RANO, PD/SD/PR/CR/Pre-Op/Post-Op)"
RESPONSE = {"CR": True, "PR": True, "SD": True, "PD": False}
PATIENT_DIR = re.compile(r"^Patient-\d+$")
WEEK_DIR = re.compile(r"^week-(\d+)(?:-(\d+))?$")
VOLUME_RTOL = 0.02
"""Relative tolerance when matching a label's volume to the JSON (plus one voxel)."""


def imaging_dir(root: Path) -> Path:
    """ROOT/Imaging when present, else ROOT itself (a site may point at Imaging/ directly)."""
    return root / "Imaging" if (root / "Imaging").is_dir() else root


def _ratings_csv(root: Path) -> Path | None:
    for folder in (root, imaging_dir(root), root.parent):
        hits = sorted(folder.glob(RATINGS_GLOB))
        if hits:
            return hits[-1]
    return None


def read_ratings(path: Path) -> dict[tuple[str, str], str]:
    """(patient, week folder) -> RANO rating string."""
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        fields = [f.strip() for f in reader.fieldnames or []]
        column = RATING_COLUMN if RATING_COLUMN in fields else next((f for f in fields if f.startswith("Rating")), None)
        if "Patient" not in fields or "Date" not in fields or column is None:
            raise ValueError(f"expected columns Patient, Date and {RATING_COLUMN!r}, found {fields}")
        out = {}
        for row in reader:
            row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
            if row["Patient"] and row["Date"] and row[column]:
                out[(row["Patient"], row["Date"])] = row[column]
        return out


def infer_label_map(
    label_volumes_mm3: dict[int, float], measured_mm3: dict[str, float], voxel_mm3: float
) -> dict[int, int] | None:
    """Source label -> canonical label such that each label's volume matches its compartment.

    Returns None when no assignment matches within tolerance (the mask and the
    JSON disagree: the mapping cannot be trusted either way).
    """
    labels = sorted(v for v, vol in label_volumes_mm3.items() if v != 0 and vol > 0)
    targets = {COMPARTMENTS[k]: float(v) for k, v in measured_mm3.items() if k in COMPARTMENTS and float(v) > 0}
    if len(labels) != len(targets):
        return None
    best: tuple[float, dict[int, int]] | None = None
    for perm in itertools.permutations(sorted(targets)):
        errors = []
        for label, canon in zip(labels, perm, strict=True):
            got, want = label_volumes_mm3[label], targets[canon]
            errors.append(abs(got - want) / max(want * VOLUME_RTOL + voxel_mm3, 1e-9))
        worst = max(errors, default=0.0)
        if worst <= 1.0 and (best is None or worst < best[0]):
            best = (worst, dict(zip(labels, perm, strict=True)))
    if best is None:
        return None
    mapping = {0: 0, **best[1]}
    # Complete to a bijection on {1, 2, 3} so labels absent here still map somewhere sane.
    free_sources = [s for s in (1, 2, 3) if s not in mapping]
    free_targets = [t for t in (1, 2, 3) if t not in mapping.values()]
    for s in list(free_sources):
        if s in free_targets:
            mapping[s] = s
            free_sources.remove(s)
            free_targets.remove(s)
    mapping.update(zip(free_sources, free_targets, strict=False))
    return mapping


def _read_volumes_json(path: Path) -> dict[str, float]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError("expected an object of compartment volumes")
    out = {}
    for key in COMPARTMENTS:
        if key not in data:
            raise ValueError(f"missing key {key}")
        out[key] = float(data[key])
    return out


def _mask_label_map(seg: Path) -> dict[int, int] | str | None:
    """Inferred map for one mask, None when there is no JSON, or a reason string when it fails."""
    json_path = seg.parent / VOLUMES_JSON
    if not json_path.is_file():
        return None
    try:
        measured = _read_volumes_json(json_path)
        header, data = read_volume(seg)
    except NiftiError as exc:
        return exc.reason
    except (OSError, ValueError, json.JSONDecodeError) as exc:
        return f"cannot read {json_path.name} ({exc})"
    values, counts = np.unique(np.rint(data).astype(np.int64), return_counts=True)
    vox = header.voxel_volume_mm3
    volumes = {int(v): float(c) * vox for v, c in zip(values, counts, strict=True)}
    mapping = infer_label_map(volumes, measured, vox)
    if mapping is None:
        shown = {k: round(v, 1) for k, v in volumes.items() if k != 0}
        return f"label volumes {shown} mm^3 do not match {json_path.name} {measured}: cannot tell which code is which"
    return mapping


def _week_key(name: str) -> tuple[int, int]:
    m = WEEK_DIR.match(name)
    assert m is not None
    return int(m.group(1)), int(m.group(2) or 0)


def _patient(
    pdir: Path, site_id: str, ratings: dict[tuple[str, str], str], found: list[Problem]
) -> CaseRecord | None:
    pid = pdir.name
    studies = sorted(
        (d for d in pdir.iterdir() if d.is_dir() and WEEK_DIR.match(d.name)), key=lambda d: _week_key(d.name)
    )
    complete = [d for d in studies if all((d / f).exists() for f in SEQUENCE_FILES.values())]

    def is_preop(d: Path) -> bool:
        return ratings.get((pid, d.name), "").lower() == "pre-op" or d.name == "week-000-1"

    post = [d for d in complete if not is_preop(d)]
    if not post:
        reason = "no post-operative study with all four sequences (T1, CT1, T2, FLAIR)"
        found.append(Problem(patient_id=pid, path=pdir, reason=reason))
        return None
    base = post[0]
    base_week = _week_key(base.name)[0]
    later = [d for d in complete if _week_key(d.name) > _week_key(base.name)]
    skipped = [d.name for d in studies if d not in complete and _week_key(d.name) > _week_key(base.name)]
    if skipped:
        log.info("%s: follow-up studies without all four sequences not used: %s", pid, ", ".join(skipped))

    label_map: dict[int, int] | None = None
    timepoints = []
    for d in [base, *later]:
        seg = d / SEG_SUBPATH
        seg_path = seg if seg.exists() else None
        if seg_path is not None:
            inferred = _mask_label_map(seg_path)
            if isinstance(inferred, str):
                found.append(Problem(patient_id=pid, path=seg_path, reason=inferred))
            elif inferred is not None:
                if label_map is not None and inferred != label_map:
                    found.append(
                        Problem(
                            patient_id=pid,
                            path=seg_path,
                            reason=f"label codes {inferred} differ from the patient's earlier masks {label_map}",
                        )
                    )
                label_map = label_map or inferred
        files = ImageFiles(**{k: d / f for k, f in SEQUENCE_FILES.items()}, seg=seg_path)
        timepoints.append(
            TimepointRecord(
                name=d.name,
                day=7.0 * (_week_key(d.name)[0] - base_week),
                files=files,
                rano=ratings.get((pid, d.name)),
            )
        )
    if label_map is None:
        log.info(
            "%s: no %s next to the masks, using the documented DeepBraTumIA codes %s",
            pid,
            VOLUMES_JSON,
            DEFAULT_LABEL_MAP,
        )
        label_map = dict(DEFAULT_LABEL_MAP)

    rano = next((tp.rano for tp in timepoints[1:] if tp.rano in RESPONSE), None)
    return CaseRecord(
        patient_id=pid,
        site_id=site_id,
        layout="lumiere",
        timepoints=timepoints,
        rano=rano,
        responder=RESPONSE[rano] if rano is not None else None,
        label_map=label_map,
    )


def read_lumiere(root: Path, site_id: str, problems: list[Problem] | None = None) -> list[CaseRecord]:
    """One case per ``Patient-*`` folder, with RANO ratings when the expert-rating CSV is found."""
    root = Path(root)
    found: list[Problem] = []
    clinical = read_clinical_csv(root, found)
    ratings: dict[tuple[str, str], str] = {}
    csv_path = _ratings_csv(root)
    if csv_path is None:
        log.warning("%s: no %s found, patients get no RANO rating", root, RATINGS_GLOB)
    else:
        try:
            ratings = read_ratings(csv_path)
        except (OSError, UnicodeDecodeError, csv.Error, ValueError) as exc:
            found.append(Problem(patient_id=None, path=csv_path, reason=f"cannot read ratings ({exc})"))

    records = []
    images = imaging_dir(root)
    for pdir in sorted(p for p in images.iterdir() if p.is_dir() and PATIENT_DIR.match(p.name)):
        record = _patient(pdir, site_id, ratings, found)
        if record is not None:
            records.append(record)
    return finish(apply_clinical(records, clinical, root), found, problems, root)
