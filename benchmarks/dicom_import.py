"""What `flame data import` costs per patient, step by step, and how well it recovers the truth.

Synthesises the small test cohort (configs/cohort/test.yaml), writes PATIENTS of one
site as a PACS-style DICOM export at EXPORT_MM isotropic voxels (1 mm: the matrix of
a clinical 3-D acquisition, 192^3 over the simulator's field of view), imports it at
VOXEL_MM, and prints and saves (benchmarks/results/dicom_import.json) the seconds per
patient of each step, the registration error against the known follow-up motion and
the whole-tumour Dice of the re-imported segmentations (a follow-up's against the exported one
brought back by the true motion: both pass a label map through nearest-neighbour resampling twice,
which costs small tumours more Dice than the registration error does).

Usage: python benchmarks/dicom_import.py [--patients 2] [--export-mm 1] [--voxel-mm 1] [--site site-b]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from _common import ROOT, save


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patients", type=int, default=2)
    ap.add_argument("--export-mm", type=float, default=1.0)
    ap.add_argument("--voxel-mm", type=float, default=1.0)
    ap.add_argument("--site", default="site-b")
    ap.add_argument("--out", default="dicom_import")
    args = ap.parse_args()

    from flame_private.cohort.writer import synthesise_cohort
    from flame_private.config.cohort import CohortConfig
    from flame_private.config.loading import load_config
    from flame_private.data.dicom.deidentify import PseudonymMap
    from flame_private.data.dicom.export import export_site_dicom, moved
    from flame_private.data.dicom.importer import ImportOptions, import_dicom
    from flame_private.data.dicom.registration import isotropic_reference, registration_error_mm
    from flame_private.data.layouts.flame import read_manifest

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cfg = load_config(ROOT / "configs" / "cohort" / "test.yaml", CohortConfig)
        synthesise_cohort(cfg, work / "cohort", workers=1)
        site = work / "cohort" / args.site
        chosen = [p["patient_id"] for p in read_manifest(site)["patients"]][: args.patients]
        t0 = time.perf_counter()
        truth = export_site_dicom(site, work / "pacs", patients=chosen, voxel_mm=args.export_mm)
        export_s = time.perf_counter() - t0
        files = sum(1 for _ in (work / "pacs").rglob("*.dcm"))
        megabytes = sum(p.stat().st_size for p in (work / "pacs").rglob("*.dcm")) / 1e6
        t0 = time.perf_counter()
        report = import_dicom(work / "pacs", work / "site", ImportOptions(
            site_id=args.site, voxel_mm=args.voxel_mm, pseudonyms=work / "pseudonyms.csv"))
        import_s = time.perf_counter() - t0

        names = PseudonymMap(work / "pseudonyms.csv", args.site)
        originals = {p["patient_id"]: p for p in read_manifest(site)["patients"]}
        entries = {e["patient_id"]: e for e in read_manifest(work / "site")["patients"]}
        errors: list[float] = []
        dice: dict[str, list[float]] = {"baseline": [], "follow-up": []}
        for mrn, record in truth["patients"].items():
            pseudonym = names.pseudonym(mrn)
            patient = next(p for p in report.patients if p.patient_id == pseudonym)
            tps = sorted(record["timepoints"].values(), key=lambda t: t["day"])
            rng = np.random.default_rng(0)
            for tp, known in zip(patient.timepoints[1:], tps[1:], strict=True):
                t1ce = next(s for s in tp.series if s.sequence == "t1ce")
                assert t1ce.registration is not None
                points = np.asarray(known["motion_centre"]) + rng.uniform(-50, 50, size=(200, 3))
                errors.append(registration_error_mm(t1ce.registration, known["motion"], known["motion_centre"],
                                                    points))
            for new, old, known in zip(entries[pseudonym]["timepoints"], originals[record["patient_id"]]["timepoints"],
                                       tps, strict=True):
                mine = sitk.ReadImage(str(work / "site" / new["files"]["seg"]))
                seg = sitk.ReadImage(str(site / old["files"]["seg"]), sitk.sitkUInt8)
                if args.export_mm:  # as export_site_dicom resampled it before moving it
                    grid = isotropic_reference(sitk.ReadImage(str(site / old["files"]["t1ce"])), args.export_mm)
                    seg = sitk.Resample(seg, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
                motion = sitk.Euler3DTransform()
                motion.SetCenter(known["motion_centre"])
                motion.SetParameters(known["motion"])
                sent = moved(seg, known["motion"], True, known["motion_centre"])
                expected = sitk.Resample(sent, mine, motion.GetInverse(), sitk.sitkNearestNeighbor, 0,
                                         sitk.sitkUInt8)
                a, b = sitk.GetArrayFromImage(mine) > 0, sitk.GetArrayFromImage(expected) > 0
                if b.sum() > 0:
                    kind = "baseline" if known["day"] == 0 else "follow-up"
                    dice[kind].append(float(2 * (a & b).sum() / (a.sum() + b.sum())))

    steps = sorted({k for p in report.patients for k in p.steps})
    per_step = {k: statistics.mean(p.steps.get(k, 0.0) for p in report.patients) for k in steps}
    figures = {
        "command": f"python benchmarks/dicom_import.py --patients {args.patients} --export-mm {args.export_mm} "
                   f"--voxel-mm {args.voxel_mm} --site {args.site}",
        "patients": len(report.patients),
        "timepoints_per_patient": statistics.mean(len(p.timepoints) for p in report.patients),
        "export_mm": args.export_mm, "voxel_mm": args.voxel_mm,
        "dicom_files": files, "dicom_megabytes": round(megabytes, 1),
        "export_seconds": round(export_s, 1), "import_seconds": round(import_s, 1),
        "seconds_per_patient": round(statistics.mean(p.seconds for p in report.patients), 1),
        "seconds_per_patient_by_step": {k: round(v, 1) for k, v in per_step.items()},
        "registration_error_mm": {"mean": round(float(np.mean(errors)), 2), "max": round(float(np.max(errors)), 2),
                                  "follow_ups": len(errors)},
        "segmentation_dice_whole_tumour": {
            kind: {"mean": round(float(np.mean(v)), 3), "min": round(float(np.min(v)), 3), "n": len(v)}
            for kind, v in dice.items() if v},
    }
    for key, val in figures.items():
        print(f"{key}: {val}")
    print(f"saved {save(args.out, figures)}")


if __name__ == "__main__":
    main()
