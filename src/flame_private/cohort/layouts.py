"""Where the cohort writer puts a site's files: the flame layout or a public dataset's.

Each layout here is the mirror image of its reader in ``flame_private.data.layouts``
and takes its file names, label codes and table columns from that reader, so a
written site reads back through the same code a real download would::

    flame      <site>/manifest.json, <site>/<patient>/<timepoint>/{t1,t1ce,t2,flair,seg}.nii.gz
    lumiere    <site>/Imaging/Patient-001/week-000-2/{T1,CT1,T2,FLAIR}.nii.gz   (post-operative baseline)
               <site>/Imaging/Patient-001/week-011/...                          (follow-ups, by week)
               .../DeepBraTumIA-segmentation/atlas/segmentation/{seg_mask.nii.gz,measured_volumes_in_mm3.json}
               <site>/LUMIERE-ExpertRating-synthetic.csv, <site>/clinical.csv
    brats2021  <site>/BraTS2021_00000/BraTS2021_00000_{t1,t1ce,t2,flair,seg}.nii.gz  (baseline only)
               <site>/clinical.csv

Public datasets number their cases consecutively, so the LUMIERE and BraTS
layouts number patients across the whole cohort (site by site): every patient id
is unique in the cohort, and the truth is keyed by the id the site's reader gives.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from flame_private.config import MRI_SEQUENCES, CohortConfig, CohortLayout
from flame_private.data.layouts import brats2021, lumiere
from flame_private.data.layouts._common import CLINICAL_CSV, CLINICAL_REQUIRED

RATINGS_CSV = "LUMIERE-ExpertRating-synthetic.csv"
"""Matches the reader's ``LUMIERE-ExpertRating*.csv``; named so it is never taken for the real table."""
POSTOP_RATING = "Post-Op"
RATED_FOLLOWUP = "evaluation"
"""The follow-up whose rating is the patient's response: RANO 2.0's first evaluation, progression confirmed."""


def _bool(value: bool) -> str:
    return "true" if value else "false"


class SiteLayout:
    """The flame layout; subclasses override what their public layout names differently."""

    name: ClassVar[CohortLayout] = "flame"
    seg_codes: ClassVar[dict[int, int] | None] = None
    """Canonical label -> the code written in the masks; None keeps canonical labels."""
    baseline_only: ClassVar[bool] = False
    """Single-timepoint layouts hold the baseline study and no follow-up."""

    def patient_id(self, cfg: CohortConfig, site_index: int, patient_index: int) -> str:
        return f"{cfg.sites[site_index].site_id}-{patient_index:03d}"

    def scan_files(self, site_root: Path, pid: str, scan_name: str, day: int) -> dict[str, Path]:
        """Path of each sequence and of the segmentation ("seg") of one study date."""
        folder = site_root / pid / scan_name
        return {**{seq: folder / f"{seq}.nii.gz" for seq in MRI_SEQUENCES}, "seg": folder / "seg.nii.gz"}

    def dose_file(self, site_root: Path, pid: str, baseline_name: str) -> Path | None:
        """Where the planned RT dose of the modality given is written (beside the baseline study), or None
        where the public layout holds no dose."""
        return site_root / pid / baseline_name / "dose.nii.gz"

    def describe_scan(self, files: dict[str, Path], volumes_ml: dict[str, float]) -> None:
        """Write what the layout keeps next to a study's files (nothing in the flame layout)."""

    def write_index(self, site_root: Path, entries: list[dict[str, Any]]) -> None:
        """Write the site's tables; the flame manifest is written by the cohort writer itself."""

    def encode_seg(self, seg: np.ndarray) -> np.ndarray:
        """Canonical labels in this layout's codes."""
        if self.seg_codes is None:
            return seg
        lut = np.zeros(max(self.seg_codes) + 1, dtype=np.uint8)
        for canon, code in self.seg_codes.items():
            lut[canon] = code
        return lut[np.rint(seg).astype(np.int64)]


def _running_index(cfg: CohortConfig, site_index: int, patient_index: int) -> int:
    """Position of the patient in the whole cohort, site by site."""
    return sum(s.n_patients for s in cfg.sites[:site_index]) + patient_index


def write_clinical_csv(site_root: Path, entries: list[dict[str, Any]], outcome: bool) -> None:
    """clinical.csv as ``read_clinical_csv`` reads it: treatment and covariates, with the outcome if asked."""
    columns = [*CLINICAL_REQUIRED, *(("rano", "responder") if outcome else ())]
    with (site_root / CLINICAL_CSV).open("w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh, lineterminator="\n")
        out.writerow(columns)
        for e in entries:
            row = [e["patient_id"], e["treatment"], e["age"], e["sex"], _bool(e["mgmt_methylated"]), e["resection"]]
            if outcome:
                row += [e["rano"], _bool(e["responder"])]
            out.writerow(row)


class LumiereLayout(SiteLayout):
    """LUMIERE: longitudinal studies by week, DeepBraTumIA masks, expert RANO ratings."""

    name = "lumiere"

    def patient_id(self, cfg: CohortConfig, site_index: int, patient_index: int) -> str:
        return f"Patient-{_running_index(cfg, site_index, patient_index) + 1:03d}"

    @staticmethod
    def study(scan_name: str, day: int) -> str:
        """week-000-2 for the post-operative baseline, else the week of the study after it."""
        return "week-000-2" if scan_name == "baseline" else f"week-{round(day / 7):03d}"

    def scan_files(self, site_root: Path, pid: str, scan_name: str, day: int) -> dict[str, Path]:
        folder = site_root / "Imaging" / pid / self.study(scan_name, day)
        return {**{seq: folder / name for seq, name in lumiere.SEQUENCE_FILES.items()},
                "seg": folder / lumiere.SEG_SUBPATH}

    def dose_file(self, site_root: Path, pid: str, baseline_name: str) -> None:
        return None  # the public dataset holds no RT dose

    def describe_scan(self, files: dict[str, Path], volumes_ml: dict[str, float]) -> None:
        # DeepBraTumIA's volumes next to the mask: the reader checks the label codes against them.
        keys = {1: "necrotic_ml", 2: "oedema_ml", 3: "enhancing_ml"}
        measured = {name: round(volumes_ml[keys[label]] * 1000.0, 3) for name, label in lumiere.COMPARTMENTS.items()}
        (files["seg"].parent / lumiere.VOLUMES_JSON).write_text(json.dumps(measured, indent=1) + "\n",
                                                                encoding="utf-8")

    def write_index(self, site_root: Path, entries: list[dict[str, Any]]) -> None:
        # The outcome is in the ratings table, as in LUMIERE; clinical.csv adds what LUMIERE lacks.
        with (site_root / RATINGS_CSV).open("w", newline="", encoding="utf-8") as fh:
            out = csv.writer(fh, lineterminator="\n")
            out.writerow(["Patient", "Date", lumiere.RATING_COLUMN])
            for e in entries:
                for tp in e["timepoints"]:
                    rating = {"baseline": POSTOP_RATING, RATED_FOLLOWUP: e["rano"]}.get(tp["name"])
                    if rating is not None:
                        out.writerow([e["patient_id"], self.study(tp["name"], tp["day"]), rating])
        write_clinical_csv(site_root, entries, outcome=False)


class Brats2021Layout(SiteLayout):
    """BraTS 2021: one folder per patient, the baseline study, labels 1/2/4."""

    name = "brats2021"
    seg_codes = {canon: code for code, canon in brats2021.LABEL_MAP.items()}
    baseline_only = True

    def patient_id(self, cfg: CohortConfig, site_index: int, patient_index: int) -> str:
        return f"BraTS2021_{_running_index(cfg, site_index, patient_index):05d}"

    def scan_files(self, site_root: Path, pid: str, scan_name: str, day: int) -> dict[str, Path]:
        folder = site_root / pid
        return {**{seq: folder / f"{pid}_{suffix}.nii.gz" for seq, suffix in brats2021.SUFFIXES.items()},
                "seg": folder / f"{pid}_seg.nii.gz"}

    def dose_file(self, site_root: Path, pid: str, baseline_name: str) -> None:
        return None  # the public dataset holds no RT dose

    def write_index(self, site_root: Path, entries: list[dict[str, Any]]) -> None:
        # BraTS ships no clinical data: treatment, covariates and outcome all come from clinical.csv.
        write_clinical_csv(site_root, entries, outcome=True)


SITE_LAYOUTS: dict[CohortLayout, SiteLayout] = {
    "flame": SiteLayout(),
    "lumiere": LumiereLayout(),
    "brats2021": Brats2021Layout(),
}
