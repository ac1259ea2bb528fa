"""Tiny synthetic sites in each public dataset's exact file naming, for the data tests.

Volumes are 24^3 at 1 mm: an ellipsoidal "brain" (zero outside, as in skull-stripped
data) with a spherical tumour made of a necrotic core, an enhancing rim and an
oedema shell.  Canonical labels are re-encoded into each layout's own codes.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np

SHAPE = (24, 24, 24)
SEQUENCE_BASE = {"t1": 100.0, "t1ce": 120.0, "t2": 80.0, "flair": 90.0}
BRATS2021_CODES = {0: 0, 1: 1, 2: 2, 3: 4}
"""canonical -> BraTS 2021 / UPENN code."""


def phantom(
    shape: tuple[int, int, int] = SHAPE, tumour_offset: tuple[float, float, float] = (3, 3, 3), seed: int = 0
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Four MRI sequences (float32) and a canonical seg (0-3) on a voxel grid."""
    rng = np.random.default_rng(seed)
    idx = np.indices(shape, dtype=np.float32)
    centre = [(s - 1) / 2 for s in shape]
    rel = [idx[a] - centre[a] for a in range(3)]
    brain = sum((rel[a] / (0.42 * shape[a])) ** 2 for a in range(3)) <= 1.0
    r = np.sqrt(sum((rel[a] - tumour_offset[a]) ** 2 for a in range(3)))
    seg = np.zeros(shape, np.int16)
    seg[(r <= 5.5) & brain] = 2
    seg[(r <= 3.5) & brain] = 3
    seg[(r <= 2.0) & brain] = 1
    images = {}
    for k, (name, base) in enumerate(SEQUENCE_BASE.items()):
        vol = base + 10.0 * rng.standard_normal(shape) + 5.0 * k * (seg > 0)
        images[name] = np.where(brain, vol, 0.0).astype(np.float32)
    return images, seg


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))
    return path


def encode(seg: np.ndarray, codes: dict[int, int]) -> np.ndarray:
    out = np.zeros_like(seg)
    for canon, code in codes.items():
        out[seg == canon] = code
    return out


def make_brats2021_site(root: Path, n: int = 2) -> Path:
    for i in range(n):
        pid = f"BraTS2021_{i:05d}"
        images, seg = phantom(seed=i)
        for name, vol in images.items():
            write_nifti(root / pid / f"{pid}_{name}.nii.gz", vol)
        write_nifti(root / pid / f"{pid}_seg.nii.gz", encode(seg, BRATS2021_CODES))
    return root


def make_brats2023_site(root: Path, studies: tuple[tuple[int, int], ...] = ((0, 0), (0, 1), (2, 0))) -> Path:
    names = {"t1": "t1n", "t1ce": "t1c", "t2": "t2w", "flair": "t2f"}
    for patient, tp in studies:
        case = f"BraTS-GLI-{patient:05d}-{tp:03d}"
        images, seg = phantom(seed=patient * 10 + tp)
        for name, vol in images.items():
            write_nifti(root / case / f"{case}-{names[name]}.nii.gz", vol)
        seg = seg.copy()
        seg[0, 0, 0] = 4  # 2024 post-treatment: resection cavity
        write_nifti(root / case / f"{case}-seg.nii.gz", seg)
    return root


def make_upenn_site(root: Path) -> Path:
    """Subject 00001 with _11 and _21 (expert segs); subject 00002 _11 only, automated seg."""
    names = {"t1": "T1", "t1ce": "T1GD", "t2": "T2", "flair": "FLAIR"}
    for study, seg_dir, seg_suffix in (
        ("UPENN-GBM-00001_11", "images_segm", "segm"),
        ("UPENN-GBM-00001_21", "images_segm", "segm"),
        ("UPENN-GBM-00002_11", "automated_segm", "automated_approx_segm"),
    ):
        images, seg = phantom()
        for name, vol in images.items():
            write_nifti(root / "images_structural" / study / f"{study}_{names[name]}.nii.gz", vol)
        write_nifti(root / seg_dir / f"{study}_{seg_suffix}.nii.gz", encode(seg, BRATS2021_CODES))
    return root


LUMIERE_SEG = Path("DeepBraTumIA-segmentation/atlas/segmentation/seg_mask.nii.gz")
RATING_COLUMN = "Rating (according to RANO, PD/SD/PR/CR/Pre-Op/Post-Op)"


def make_lumiere_site(
    root: Path,
    codes: dict[int, int] | None = None,
    volumes_json: bool = True,
    json_scale: float = 1.0,
    ratings: dict[str, dict[str, str]] | None = None,
) -> Path:
    """Patient-001 (pre-op, post-op, week-012, week-044) and Patient-002 (post-op, week-020).

    ``codes`` re-encodes canonical labels (canonical -> DeepBraTumIA code) in the
    masks; the JSON volumes always describe the true compartments (times json_scale).
    """
    codes = codes or {0: 0, 1: 1, 2: 2, 3: 3}
    files = {"t1": "T1", "t1ce": "CT1", "t2": "T2", "flair": "FLAIR"}
    studies = {"Patient-001": ["week-000-1", "week-000-2", "week-012", "week-044"],
               "Patient-002": ["week-000-2", "week-020"]}
    if ratings is None:
        ratings = {
            "Patient-001": {"week-000-1": "Pre-Op", "week-000-2": "Post-Op", "week-012": "PR", "week-044": "PD"},
            "Patient-002": {"week-000-2": "Post-Op", "week-020": "PD"},
        }
    for pid, weeks in studies.items():
        for w in weeks:
            images, seg = phantom(seed=len(w))
            for name, vol in images.items():
                write_nifti(root / "Imaging" / pid / w / f"{files[name]}.nii.gz", vol)
            mask = write_nifti(root / "Imaging" / pid / w / LUMIERE_SEG, encode(seg, codes))
            if volumes_json:
                vols = {
                    "Necrotic_NonEnhancing": float((seg == 1).sum()) * json_scale,
                    "Edema_Compartment": float((seg == 2).sum()) * json_scale,
                    "Enhancing_Core": float((seg == 3).sum()) * json_scale,
                }
                (mask.parent / "measured_volumes_in_mm3.json").write_text(json.dumps(vols))
    with (root / "LUMIERE-ExpertRating-v202211.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["Patient", "Date", "LessThan3Months", RATING_COLUMN, "Rating rationale"])
        for pid, rows in ratings.items():
            for date, rating in rows.items():
                w.writerow([pid, date, "", rating, ""])
    return root


FLAME_DAYS = {"baseline": 0, "fu1": 75, "fu2": 165}


def flame_patient(root: Path, pid: str, treatment: object = "photon", seed: int = 0, **extra: object) -> dict:
    """Write one patient's images under ROOT/pid and return its manifest entry."""
    timepoints = []
    for k, (name, day) in enumerate(FLAME_DAYS.items()):
        images, seg = phantom(seed=seed * 7 + k, tumour_offset=(3 + k, 3, 3))
        files = {}
        for seq, vol in images.items():
            write_nifti(root / pid / name / f"{seq}.nii.gz", vol)
            files[seq] = f"{pid}/{name}/{seq}.nii.gz"
        write_nifti(root / pid / name / "seg.nii.gz", seg)
        files["seg"] = f"{pid}/{name}/seg.nii.gz"
        timepoints.append({"name": name, "day": day, "files": files})
    entry = {
        "patient_id": pid,
        "age": 50.0 + 5 * seed,
        "sex": "F" if seed % 2 == 0 else "M",
        "mgmt_methylated": seed % 2 == 0,
        "resection": ["gross_total", "subtotal", "biopsy"][seed % 3],
        "treatment": treatment,
        "timepoints": timepoints,
        "rano": "PR" if seed % 2 == 0 else "PD",
        "responder": seed % 2 == 0,
        "pseudoprogression": False,
        "radionecrosis": False,
        "kps": 80,
    }
    entry.update(extra)
    return entry


def make_flame_site(root: Path, n: int = 3, site_id: str = "site-a", patients: list[dict] | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    if patients is None:
        treatments = ["photon", "proton", "carbon"]
        patients = [flame_patient(root, f"{site_id}-{i:03d}", treatments[i % 3], seed=i) for i in range(n)]
    write_manifest(root, patients, site_id)
    return root


def write_manifest(root: Path, patients: list[dict], site_id: str = "site-a") -> None:
    manifest = {"format": "flame-cohort", "format_version": 1, "site_id": site_id, "cohort": "demo", "grid": 24,
                "patients": patients}
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1))


CLINICAL_COLUMNS = ["patient_id", "treatment", "age", "sex", "mgmt_methylated", "resection", "rano", "responder"]


def write_clinical_csv(root: Path, rows: list[dict[str, object]]) -> Path:
    path = root / "clinical.csv"
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=CLINICAL_COLUMNS)
        w.writeheader()
        for row in rows:
            w.writerow({c: row.get(c, "") for c in CLINICAL_COLUMNS})
    return path


def corrupt_gzip(path: Path) -> None:
    """Overwrite the middle of the compressed stream with garbage (header left intact)."""
    raw = bytearray(path.read_bytes())
    start = len(raw) // 3
    raw[start : start + 512] = bytes((i * 37 + 11) % 256 for i in range(512))
    path.write_bytes(bytes(raw))


def truncate(path: Path, keep: float = 0.5) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * keep)])
