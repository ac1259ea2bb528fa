"""Reader for UPENN-GBM (TCIA): ``images_structural/<ID>_11`` baseline, ``_21`` follow-up.

Expert segmentations live in ``images_segm/<ID>_segm.nii.gz``; where a case has
only the automated one (``automated_segm/<ID>_automated_approx_segm.nii.gz``) that
is used instead.  Labels 1 necrosis, 2 oedema, 4 enhancing.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from pathlib import Path

from flame_private.data.errors import Problem
from flame_private.data.layouts._common import apply_clinical, finish, read_clinical_csv
from flame_private.data.records import CaseRecord, ImageFiles, TimepointRecord

log = logging.getLogger(__name__)

LABEL_MAP: dict[int, int] = {0: 0, 1: 1, 2: 2, 4: 3}
STRUCTURAL = "images_structural"
CASE_DIR = re.compile(r"^(UPENN-GBM-\d+)_(\d+)$")
SUFFIXES = {"t1": "T1", "t1ce": "T1GD", "t2": "T2", "flair": "FLAIR"}
TIMEPOINT_NAMES = {11: "baseline", 21: "followup"}


def _segmentation(root: Path, study: str) -> Path | None:
    manual = root / "images_segm" / f"{study}_segm.nii.gz"
    if manual.exists():
        return manual
    auto = root / "automated_segm" / f"{study}_automated_approx_segm.nii.gz"
    if auto.exists():
        log.info("%s: no expert segmentation, using the automated one", study)
        return auto
    return None


def read_upenn(root: Path, site_id: str, problems: list[Problem] | None = None) -> list[CaseRecord]:
    """One case per UPENN-GBM subject; study suffix _11 first, then _21 (and any later)."""
    root = Path(root)
    found: list[Problem] = []
    clinical = read_clinical_csv(root, found)
    structural = root / STRUCTURAL
    groups: dict[str, list[tuple[int, Path]]] = defaultdict(list)
    if structural.is_dir():
        for study in sorted(structural.iterdir()):
            m = CASE_DIR.match(study.name)
            if study.is_dir() and m:
                groups[m.group(1)].append((int(m.group(2)), study))
    else:
        found.append(Problem(patient_id=None, path=structural, reason=f"missing {STRUCTURAL}/ folder"))

    records = []
    for pid in sorted(groups):
        timepoints = []
        for number, study in sorted(groups[pid]):
            name = study.name
            files = ImageFiles(
                **{key: study / f"{name}_{suffix}.nii.gz" for key, suffix in SUFFIXES.items()},
                seg=_segmentation(root, name),
            )
            timepoints.append(
                TimepointRecord(name=TIMEPOINT_NAMES.get(number, f"study_{number}"), day=None, files=files)
            )
        if sorted(groups[pid])[0][0] != 11:
            log.warning("%s: no _11 (pre-treatment) study, using %s as baseline", pid, timepoints[0].name)
        records.append(
            CaseRecord(
                patient_id=pid,
                site_id=site_id,
                layout="upenn",
                timepoints=timepoints,
                label_map=dict(LABEL_MAP),
            )
        )
    return finish(apply_clinical(records, clinical, root), found, problems, root)
