"""Reader for BraTS 2021: one folder per patient, one study date each.

``BraTS2021_00000/BraTS2021_00000_{t1,t1ce,t2,flair,seg}.nii.gz``; labels 1
necrosis, 2 oedema, 4 enhancing.  Treatment and covariates come from an optional
``clinical.csv`` since BraTS itself ships none.
"""

from __future__ import annotations

import re
from pathlib import Path

from flame_private.data.errors import Problem
from flame_private.data.layouts._common import apply_clinical, finish, read_clinical_csv
from flame_private.data.records import CaseRecord, ImageFiles, TimepointRecord

LABEL_MAP: dict[int, int] = {0: 0, 1: 1, 2: 2, 4: 3}
CASE_DIR = re.compile(r"^BraTS2021_\d+$")
SUFFIXES = {"t1": "t1", "t1ce": "t1ce", "t2": "t2", "flair": "flair"}


def case_dirs(root: Path) -> list[Path]:
    """Patient folders, sorted by name."""
    return sorted(p for p in Path(root).iterdir() if p.is_dir() and CASE_DIR.match(p.name))


def read_brats2021(root: Path, site_id: str, problems: list[Problem] | None = None) -> list[CaseRecord]:
    """One single-timepoint case per ``BraTS2021_*`` folder; a missing seg means seg=None."""
    root = Path(root)
    found: list[Problem] = []
    clinical = read_clinical_csv(root, found)
    records = []
    for case in case_dirs(root):
        pid = case.name
        seg = case / f"{pid}_seg.nii.gz"
        files = ImageFiles(
            **{key: case / f"{pid}_{suffix}.nii.gz" for key, suffix in SUFFIXES.items()},
            seg=seg if seg.exists() else None,
        )
        records.append(
            CaseRecord(
                patient_id=pid,
                site_id=site_id,
                layout="brats2021",
                timepoints=[TimepointRecord(name="baseline", day=None, files=files)],
                label_map=dict(LABEL_MAP),
            )
        )
    return finish(apply_clinical(records, clinical, root), found, problems, root)
