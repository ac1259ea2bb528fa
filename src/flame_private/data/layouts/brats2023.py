"""Reader for BraTS 2023/2024 gliomas: ``BraTS-GLI-<patient>-<timepoint>`` folders.

Files are ``<case>-{t1n,t1c,t2w,t2f,seg}.nii.gz``; labels 1 necrosis, 2 oedema,
3 enhancing, and the 2024 post-treatment release adds 4 = resection cavity, which
is not tumour and maps to background.  Folders sharing a patient number are one
patient scanned several times; the trailing number orders the timepoints.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from flame_private.data.errors import Problem
from flame_private.data.layouts._common import apply_clinical, finish, read_clinical_csv
from flame_private.data.records import CaseRecord, ImageFiles, TimepointRecord

LABEL_MAP: dict[int, int] = {0: 0, 1: 1, 2: 2, 3: 3, 4: 0}
CASE_DIR = re.compile(r"^(BraTS-[A-Z]+-\d+)-(\d+)$")
SUFFIXES = {"t1": "t1n", "t1ce": "t1c", "t2": "t2w", "flair": "t2f"}


def case_dirs(root: Path) -> list[Path]:
    """Study folders, sorted by name."""
    return sorted(p for p in Path(root).iterdir() if p.is_dir() and CASE_DIR.match(p.name))


def read_brats2023(root: Path, site_id: str, problems: list[Problem] | None = None) -> list[CaseRecord]:
    """One case per patient number, its study folders as timepoints in numeric order."""
    root = Path(root)
    found: list[Problem] = []
    clinical = read_clinical_csv(root, found)
    groups: dict[str, list[tuple[int, Path]]] = defaultdict(list)
    for study in case_dirs(root):
        m = CASE_DIR.match(study.name)
        assert m is not None
        groups[m.group(1)].append((int(m.group(2)), study))

    records = []
    for pid in sorted(groups):
        timepoints = []
        for _, study in sorted(groups[pid]):
            name = study.name
            seg = study / f"{name}-seg.nii.gz"
            files = ImageFiles(
                **{key: study / f"{name}-{suffix}.nii.gz" for key, suffix in SUFFIXES.items()},
                seg=seg if seg.exists() else None,
            )
            timepoints.append(TimepointRecord(name=name.rsplit("-", 1)[1], day=None, files=files))
        records.append(
            CaseRecord(
                patient_id=pid,
                site_id=site_id,
                layout="brats2023",
                timepoints=timepoints,
                label_map=dict(LABEL_MAP),
            )
        )
    return finish(apply_clinical(records, clinical, root), found, problems, root)
