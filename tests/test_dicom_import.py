"""`flame data import`: a PACS-style DICOM export becomes a de-identified site folder.

The synthetic site is written as DICOM (vendor-style series, a localiser, DICOM-SEG,
an RT plan, identifying headers, follow-ups moved as a patient lies differently on
each visit) and imported back: the same cases come out, registered, without any
identity; each kind of bad input is refused naming the file and the reason, and
nothing is half-written.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.data import get_testdata_file
from typer.testing import CliRunner

from flame_private.cli import app
from flame_private.data.checks import check_site
from flame_private.data.dicom.deidentify import PseudonymMap, files_containing, identifiers
from flame_private.data.dicom.export import export_site_dicom, moved
from flame_private.data.dicom.headers import SeriesHeader, scan_dicom_folder
from flame_private.data.dicom.importer import ImportOptions, ImportReport, import_dicom
from flame_private.data.dicom.registration import Registration, registration_error_mm
from flame_private.data.dicom.sequences import SequenceRules, classify
from flame_private.data.dicom.volume import SeriesError, read_series
from flame_private.data.errors import DataError
from flame_private.data.layouts.flame import read_manifest

SITE = "site-b"  # LPS orientation, 6.4 x 7.8 x 10 mm voxels: the least convenient geometry of the test cohort
PATIENTS = ["site-b-002", "site-b-003"]  # carbon and proton: both kinds of ion plan
VOXEL_MM = 4.0


def _import(dicom: Path, out: Path, **options: Any) -> ImportReport:
    options.setdefault("pseudonyms", out.parent / f"{out.name}-pseudonyms.csv")
    return import_dicom(dicom, out, ImportOptions(site_id=SITE, voxel_mm=VOXEL_MM, **options))


@pytest.fixture(scope="module")
def exported(cohort_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("dicom") / "pacs"
    truth = export_site_dicom(cohort_dir / SITE, out, patients=PATIENTS)
    return out, truth


@pytest.fixture(scope="module")
def clinical_table(cohort_dir: Path, exported: tuple[Path, dict[str, Any]], tmp_path_factory) -> Path:
    """The cohort's covariates and outcome keyed by the hospital IDs, as a site's clinical system exports them."""
    manifest = {p["patient_id"]: p for p in read_manifest(cohort_dir / SITE)["patients"]}
    path = tmp_path_factory.mktemp("clinical") / "clinical.csv"
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["patient_id", "treatment", "age", "sex", "mgmt_methylated", "resection", "responder"])
        for mrn, record in exported[1]["patients"].items():
            p = manifest[record["patient_id"]]
            writer.writerow([mrn, "", p["age"], p["sex"], p["mgmt_methylated"], p["resection"], p["responder"]])
    return path


@pytest.fixture(scope="module")
def imported(exported, clinical_table, tmp_path_factory) -> tuple[Path, ImportReport, Path]:
    out = tmp_path_factory.mktemp("imported") / SITE
    pseudonyms = out.parent / "pseudonyms.csv"
    report = _import(exported[0], out, pseudonyms=pseudonyms, clinical=clinical_table)
    return out, report, pseudonyms


def _one_patient_copy(exported: tuple[Path, dict[str, Any]], tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    mrn, record = next(iter(exported[1]["patients"].items()))
    dicom = tmp_path / "pacs"
    shutil.copytree(exported[0] / mrn, dicom / mrn)
    return dicom / mrn, record


def _series_folder(patient_dir: Path, description: str, timepoint: int = 0) -> Path:
    study = sorted(p for p in patient_dir.iterdir() if p.is_dir())[timepoint]
    for folder in sorted(study.iterdir()):
        first = sorted(folder.iterdir())[0]
        if str(pydicom.dcmread(first, stop_before_pixels=True).get("SeriesDescription", "")) == description:
            return folder
    raise AssertionError(f"no series {description!r} in {study}")


def _rewrite(paths: Any, **fields: Any) -> None:
    """Set header FIELDS in each DICOM file of PATHS, as a careless export tool or a typo would."""
    for path in paths:
        ds = pydicom.dcmread(path)
        for key, value in fields.items():
            setattr(ds, key, value)
        ds.save_as(path)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * (a & b).sum() / total)


# --- the round trip -----------------------------------------------------------------------------------------

def test_an_exported_site_imports_as_the_same_cases(imported, exported, cohort_dir: Path) -> None:
    out, report, pseudonyms = imported
    check = check_site(out, site_id=SITE)
    assert check.ok, check
    originals = {p["patient_id"]: p for p in read_manifest(cohort_dir / SITE)["patients"]}
    by_mrn = PseudonymMap(pseudonyms, SITE)
    entries = {e["patient_id"]: e for e in read_manifest(out)["patients"]}
    assert len(entries) == len(PATIENTS)
    for mrn, record in exported[1]["patients"].items():
        entry, original = entries[by_mrn.pseudonym(mrn)], originals[record["patient_id"]]
        assert entry["treatment"] == original["treatment"]  # read from the RT plan's beams
        assert [tp["day"] for tp in entry["timepoints"]] == [tp["day"] for tp in original["timepoints"]]
        for key in ("sex", "mgmt_methylated", "resection", "responder"):  # from the clinical table
            assert entry[key] == original[key]
    sources = {p.patient_id: p.treatment_source for p in report.patients}
    assert set(sources.values()) == {"RT plan"}


def test_reimported_segmentations_match_the_originals(imported, exported, cohort_dir: Path) -> None:
    """Whole-tumour Dice of each imported segmentation against the one exported, on the imported grid.

    A follow-up's exported segmentation is the original moved by the visit's motion;
    brought back by the true motion it is what a perfect import writes.
    """
    out, _, pseudonyms = imported
    by_mrn = PseudonymMap(pseudonyms, SITE)
    originals = {p["patient_id"]: p for p in read_manifest(cohort_dir / SITE)["patients"]}
    scores = []
    for mrn, record in exported[1]["patients"].items():
        entry = next(e for e in read_manifest(out)["patients"] if e["patient_id"] == by_mrn.pseudonym(mrn))
        truths = sorted(record["timepoints"].values(), key=lambda t: t["day"])
        for new, old, truth in zip(entry["timepoints"], originals[record["patient_id"]]["timepoints"], truths,
                                   strict=True):
            mine = sitk.ReadImage(str(out / new["files"]["seg"]))
            seg = sitk.ReadImage(str(cohort_dir / SITE / old["files"]["seg"]), sitk.sitkUInt8)
            motion = sitk.Euler3DTransform()
            motion.SetCenter(truth["motion_centre"])
            motion.SetParameters(truth["motion"])
            sent = moved(seg, truth["motion"], True, truth["motion_centre"])
            expected = sitk.Resample(sent, mine, motion.GetInverse(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
            a, b = sitk.GetArrayFromImage(mine) > 0, sitk.GetArrayFromImage(expected) > 0
            if b.sum() >= 20:  # a tumour of a few voxels at 4 mm says little about the import
                scores.append((new["name"], _dice(a, b)))
    assert scores
    assert min(d for name, d in scores if name == "baseline") > 0.95, scores  # only resampled
    # Follow-ups: also through the registration (off by 0.2-0.6 mm here); a sub-voxel difference moves the
    # nearest-neighbour boundary of a tumour of a few dozen 4 mm voxels by a voxel in places.
    assert min(d for _, d in scores) > 0.75, scores


def test_the_plan_dose_is_imported_onto_the_mri_it_was_planned_on(imported, exported, cohort_dir: Path) -> None:
    """RTDOSE (on a planning system's axial 3 mm grid) -> dose.nii.gz on the imported grid: the same dose as
    the site's own map brought onto that grid directly; the same map mirrored left-right (a dose on the wrong
    side) is far off, so the check can fail."""
    out, report, pseudonyms = imported
    by_mrn = PseudonymMap(pseudonyms, SITE)
    originals = {p["patient_id"]: p for p in read_manifest(cohort_dir / SITE)["patients"]}
    entries = {e["patient_id"]: e for e in read_manifest(out)["patients"]}
    for mrn, record in exported[1]["patients"].items():
        pid = by_mrn.pseudonym(mrn)
        assert next(p for p in report.patients if p.patient_id == pid).dose.startswith(
            "RTDOSE EFFECTIVE in Gy(RBE), grid 3 x 3 x 3 mm")
        assert entries[pid]["timepoints"][0]["dose_type"] == "EFFECTIVE"
        dose = sitk.ReadImage(str(out / entries[pid]["timepoints"][0]["files"]["dose"]))
        source = sitk.ReadImage(str(cohort_dir / SITE / originals[record["patient_id"]]["timepoints"][0]["files"]
                                    ["dose"]), sitk.sitkFloat32)
        truth = sitk.GetArrayFromImage(sitk.Resample(source, dose, sitk.Transform(), sitk.sitkLinear, -1.0))
        got = sitk.GetArrayFromImage(dose)
        inside = truth >= 0  # on the planned grid
        assert inside.mean() > 0.5 and got.max() > 50.0  # the prescription (60 Gy(RBE)) is there
        error = np.abs(got - truth)[inside]
        mirrored = np.abs(got - truth[:, :, ::-1])[inside & inside[:, :, ::-1]].mean()
        high = _dice((got >= 57.0) & inside, (truth >= 57.0) & inside)  # the 95 % isodose of 60 Gy(RBE)
        # Gy: twice interpolated (onto the planning system's 3 mm grid, then onto the import's 4 mm one)
        assert error.mean() < 0.5 and np.percentile(error, 95) < 1.5 and high > 0.9, pid
        assert mirrored > 3.0, pid


def test_registration_undoes_the_follow_up_motion(imported, exported) -> None:
    out, report, pseudonyms = imported
    by_mrn = PseudonymMap(pseudonyms, SITE)
    errors, unregistered = [], []
    identity = Registration(rotation_deg=[0, 0, 0], translation_mm=[0, 0, 0], metric=0.0, parameters=[0.0] * 6,
                            center=[0.0, 0.0, 0.0])
    for mrn, record in exported[1]["patients"].items():
        patient = next(p for p in report.patients if p.patient_id == by_mrn.pseudonym(mrn))
        baseline = sitk.ReadImage(str(out / patient.patient_id / "baseline" / "t1ce.nii.gz"))
        centre = baseline.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in baseline.GetSize()])
        rng = np.random.default_rng(0)
        points = np.asarray(centre) + rng.uniform(-50, 50, size=(200, 3))  # within a brain's extent
        truths = sorted(record["timepoints"].values(), key=lambda t: t["day"])
        for tp, truth in zip(patient.timepoints[1:], truths[1:], strict=True):
            t1ce = next(s for s in tp.series if s.sequence == "t1ce")
            assert t1ce.registration is not None
            errors.append(registration_error_mm(t1ce.registration, truth["motion"], truth["motion_centre"], points))
            unregistered.append(registration_error_mm(identity, truth["motion"], truth["motion_centre"], points))
    assert min(unregistered) > 2.0, unregistered  # the motion is real: doing nothing fails this test
    assert max(errors) < 2.0, errors  # below a third of the finest original voxel (6.4 mm)


def test_localisers_and_unused_series_are_reported_not_silently_dropped(imported) -> None:
    _, report, _ = imported
    for patient in report.patients:
        assert sum("a localiser" in line for line in patient.left_out) == len(patient.timepoints)
        assert (imported[0] / patient.contact_sheet).stat().st_size > 10_000


# --- de-identification ----------------------------------------------------------------------------------------

def test_nothing_identifying_reaches_the_site_folder(imported, exported) -> None:
    out, _, pseudonyms = imported
    secret = []
    for path in exported[0].rglob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        secret += identifiers(str(ds.PatientID), str(ds.PatientName), str(ds.PatientBirthDate), [str(ds.StudyDate)])
        secret += [str(ds.AccessionNumber), str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)]
    secret = sorted(set(secret))
    assert files_containing(out, secret) == []
    # ...and, independently of that search, as plain substrings of every text file and file name
    written = [p for p in out.rglob("*")]
    texts = "\n".join(p.read_text() for p in written if p.suffix in (".json", ".csv")) + "\n".join(map(str, written))
    for s in secret:
        if len(s) >= 6:  # IDs, dates, UIDs, accession numbers, long name parts
            assert s.lower() not in texts.lower(), s
    assert not pseudonyms.resolve().is_relative_to(out.resolve())
    assert pseudonyms.stat().st_mode & 0o077 == 0  # the map is the key back to the patients: owner only


def test_the_identity_scan_finds_an_identifier_where_there_is_one(imported, tmp_path: Path) -> None:
    """Positive control for the check above: a planted name is found, in JSON and in a NIfTI header."""
    copy = tmp_path / "copy"
    shutil.copytree(imported[0], copy)
    manifest = copy / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"treatment"', '"Kowalski Dieter", "treatment"', 1))
    nifti = next(copy.rglob("t1.nii.gz"))
    image = nib.load(nifti)
    image.header["descrip"] = b"MRN1234567"
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj), image.affine, image.header), nifti)
    hits = files_containing(copy, ["Kowalski", "MRN1234567"])
    assert {(p.name, s) for p, s in hits} == {("manifest.json", "Kowalski"), ("t1.nii.gz", "MRN1234567")}


def test_a_second_import_reuses_the_pseudonyms(imported, exported, tmp_path: Path) -> None:
    out, report, pseudonyms = imported
    kept = tmp_path / "pseudonyms.csv"
    shutil.copy(pseudonyms, kept)
    dicom, _ = _one_patient_copy(exported, tmp_path)
    again = _import(dicom.parent, tmp_path / "again", pseudonyms=kept)
    assert again.patients[0].patient_id in {p.patient_id for p in report.patients}


def test_identifiers_in_a_series_description_are_redacted_and_named(exported, tmp_path: Path, caplog) -> None:
    patient_dir, record = _one_patient_copy(exported, tmp_path)
    folder = _series_folder(patient_dir, "AX T2 FSE")
    family = record["name"].split("^")[0]
    _rewrite(folder.iterdir(), SeriesDescription=f"AX T2 FSE {family}")
    with caplog.at_level(logging.WARNING):
        report = _import(patient_dir.parent, tmp_path / "out")
    assert any(str(folder) in r.getMessage() and "identifiers" in r.getMessage() for r in caplog.records)
    assert any("[redacted]" in w and "identifiers" in w for w in report.warnings)  # the folder names the patient
    t2 = next(s for s in report.patients[0].timepoints[0].series if s.sequence == "t2")
    assert t2.description == "AX T2 FSE [redacted]"
    assert files_containing(tmp_path / "out", [family]) == []


# --- bad input: named, and nothing half-written ------------------------------------------------------------

def _refused(dicom: Path, out: Path, *expected: str, **options: Any) -> str:
    pseudonyms = out.parent / f"{out.name}-pseudonyms.csv"
    with pytest.raises(DataError) as info:
        _import(dicom, out, pseudonyms=pseudonyms, **options)
    message = str(info.value)
    for text in expected:
        assert text in message, message
    assert not out.exists(), "a refused import must write no site folder"
    assert not list(out.parent.glob(f".{out.name}.importing-*")), "staging left behind"
    assert not pseudonyms.exists(), "a refused import must not record pseudonyms"
    return message


def test_a_missing_sequence_is_named_with_its_study(exported, tmp_path: Path) -> None:
    patient_dir, _ = _one_patient_copy(exported, tmp_path)
    shutil.rmtree(_series_folder(patient_dir, "AX T2 FLAIR", timepoint=2))
    _refused(patient_dir.parent, tmp_path / "out", "no FLAIR series", "AX T2 FSE")


def test_a_missing_slice_is_named_as_inconsistent_spacing(exported, tmp_path: Path) -> None:
    patient_dir, _ = _one_patient_copy(exported, tmp_path)
    folder = _series_folder(patient_dir, "AX T1 SE +C")
    (folder / "IM0008.dcm").unlink()
    _refused(patient_dir.parent, tmp_path / "out", "inconsistent slice spacing", str(folder))


def test_a_series_mixing_patients_is_refused(exported, tmp_path: Path) -> None:
    patient_dir, _ = _one_patient_copy(exported, tmp_path)
    stray = _series_folder(patient_dir, "AX T1 SE") / "IM0005.dcm"
    _rewrite([stray], PatientID="MRN0000001")
    _refused(patient_dir.parent, tmp_path / "out", "mixes 2 patients", "MRN0000001")


def test_one_id_with_two_identities_is_refused(exported, tmp_path: Path) -> None:
    patient_dir, _ = _one_patient_copy(exported, tmp_path)
    _rewrite(_series_folder(patient_dir, "AX T2 FSE", timepoint=1).iterdir(), PatientBirthDate="19500101")
    _refused(patient_dir.parent, tmp_path / "out", "2 different names or birth dates")


def test_burned_in_annotations_are_refused(exported, tmp_path: Path) -> None:
    patient_dir, _ = _one_patient_copy(exported, tmp_path)
    path = sorted(_series_folder(patient_dir, "AX T1 SE").iterdir())[9]  # one slice in the middle is enough
    _rewrite([path], BurnedInAnnotation="YES")
    _refused(patient_dir.parent, tmp_path / "out", "BurnedInAnnotation is YES")


def test_an_undecodable_transfer_syntax_is_named_with_the_file(exported, tmp_path: Path) -> None:
    patient_dir, _ = _one_patient_copy(exported, tmp_path)
    path = sorted(_series_folder(patient_dir, "AX T1 SE +C").iterdir())[3]
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = pydicom.uid.UID("1.2.840.10008.1.2.4.100")  # MPEG2: no image decoder
    ds.PixelData = pydicom.encaps.encapsulate([ds.PixelData])
    ds.save_as(path, enforce_file_format=True)
    _refused(patient_dir.parent, tmp_path / "out", path.name, "cannot decode the pixels", "MPEG2")


def test_compressed_series_import_to_the_same_voxels(cohort_dir: Path, tmp_path: Path) -> None:
    plain, rle = tmp_path / "plain", tmp_path / "rle"
    export_site_dicom(cohort_dir / SITE, plain, patients=PATIENTS[:1])
    export_site_dicom(cohort_dir / SITE, rle, patients=PATIENTS[:1], compress=True)
    syntaxes = {str(pydicom.dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID)
                for p in (rle / next(iter(json.loads((rle / "export.json").read_text())["patients"]))).rglob("IM*")}
    assert syntaxes == {pydicom.uid.RLELossless}
    a = read_series(sorted(next(plain.rglob("S003")).iterdir()))
    b = read_series(sorted(next(rle.rglob("S003")).iterdir()))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))


def test_an_existing_site_folder_is_never_overwritten(exported, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(DataError, match="already exists"):
        _import(exported[0], out)
    assert (out / "keep.txt").read_text() == "x"


def test_an_unreadable_file_is_named_and_skip_invalid_writes_the_rest(exported, tmp_path: Path) -> None:
    dicom = tmp_path / "pacs"
    shutil.copytree(exported[0], dicom)
    mrn = next(iter(exported[1]["patients"]))
    first = _series_folder(dicom / mrn, "AX T1 SE +C") / "IM0008.dcm"
    first.write_bytes(first.read_bytes()[:400])  # truncated in transfer: the series has a gap
    _refused(dicom, tmp_path / "out", str(first))
    report = _import(dicom, tmp_path / "partial", skip_invalid=True)
    assert len(report.patients) == len(PATIENTS) - 1  # the patient of the truncated file is left out...
    assert len(report.skipped) == 2 and first.name in report.skipped[0]  # ...and the file and patient are named
    assert "could not be read" in report.skipped[1]  # a lost end slice would leave no gap: the series is refused
    assert "[redacted]" in report.skipped[0]  # the hospital's folder names hold identifiers


# --- pieces ----------------------------------------------------------------------------------------------------

def test_a_dose_in_a_frame_of_reference_no_mr_series_shares_is_left_out_with_a_warning(exported,
                                                                                     tmp_path: Path) -> None:
    """A dose planned on a CT: without the CT-MR registration it cannot be placed, and the report says so."""
    patient_dir, _ = _one_patient_copy(exported, tmp_path)
    _rewrite(_series_folder(patient_dir, "RT dose PLAN").iterdir(), FrameOfReferenceUID="1.2.826.0.1.99")
    out = tmp_path / "out"
    report = _import(patient_dir.parent, out)
    (patient,) = report.patients
    assert patient.dose == "not imported: frame of reference of no MR series"
    assert any("RT dose" in w and "not imported" in w for w in report.warnings), report.warnings
    assert "dose" not in read_manifest(out)["patients"][0]["timepoints"][0]["files"]


def test_a_beam_dose_is_reported_as_left_out_and_two_plan_doses_are_refused(exported, tmp_path: Path) -> None:
    patient_dir, _ = _one_patient_copy(exported, tmp_path)
    folder = _series_folder(patient_dir, "RT dose PLAN")
    second = pydicom.dcmread(folder / "RD0001.dcm")
    second.SOPInstanceUID = second.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    second.save_as(folder / "RD0002.dcm")
    _refused(patient_dir.parent, tmp_path / "refused", "2 plan doses", "RD0002.dcm")
    _rewrite([folder / "RD0002.dcm"], DoseSummationType="BEAM")
    report = _import(patient_dir.parent, tmp_path / "out")
    (patient,) = report.patients
    assert patient.dose.startswith("RTDOSE EFFECTIVE")
    assert "RT dose BEAM: only the plan's total dose (PLAN) is imported" in patient.left_out


def _header(description: str, **fields: Any) -> SeriesHeader:
    values: dict[str, Any] = dict(patient_id="p", patient_name="", birth_date="", sex="", age="", study_uid="1",
                                  study_date="20250101", series_uid="2", series_number=1, modality="MR",
                                  manufacturer="",
                                  description=description, protocol="", image_type=[], contrast_agent="",
                                  echo_time=None, repetition_time=None, inversion_time=None,
                                  burned_in_annotation="", transfer_syntax="", files=[Path("x")])
    values.update(fields)
    return SeriesHeader(**values)


@pytest.mark.parametrize(("description", "fields", "expected"), [
    ("AX T1 SE", {}, "t1"), ("Ax T1 MPRAGE POST", {}, "t1ce"), ("T1CE", {}, "t1ce"), ("sag t1 +C", {}, "t1ce"),
    ("t1_se_tra", {"contrast_agent": "Gadovist"}, "t1ce"), ("AX T2 FSE", {}, "t2"), ("Ax T2 FLAIR", {}, "flair"),
    ("3-PL LOC", {}, "localizer"), ("Ax T1 FLAIR", {}, "t1"), ("Survey_32ch", {}, "localizer"),
    ("ep2d_diff", {}, "unknown"),
    ("Sequence 7", {"echo_time": 120.0, "repetition_time": 9000.0, "inversion_time": 2500.0}, "flair"),
    ("Sequence 8", {"echo_time": 100.0, "repetition_time": 4000.0}, "t2"),
    ("Sequence 9", {"echo_time": 10.0, "repetition_time": 500.0}, "t1"),
])
def test_series_are_classified_by_name_then_by_acquisition(description: str, fields: dict, expected: str) -> None:
    assert classify(_header(description, **fields)) == expected


def test_a_sites_rules_name_its_own_series(tmp_path: Path) -> None:
    rules_file = tmp_path / "sequences.yaml"
    rules_file.write_text("flair: ['^KOPF_DF']\nignore: ['ep2d']\nt1: ['^KOPF_NATIV']\n")
    rules = SequenceRules.load(rules_file)
    assert classify(_header("KOPF_DF_tra"), rules) == "flair"
    assert classify(_header("KOPF_NATIV"), rules) == "t1"
    assert classify(_header("ep2d_diff"), rules) == "ignore"
    rules_file.write_text("t1: ['(unclosed']\n")
    with pytest.raises(Exception, match="bad regular expression"):
        SequenceRules.load(rules_file)


def test_pydicoms_real_mr_files_decode_the_same_in_every_transfer_syntax(tmp_path: Path) -> None:
    """Real-format files shipped with pydicom: compressed variants give the uncompressed pixels; one slice is
    refused as a volume, with the folder named."""
    from flame_private.data.dicom.volume import _pixels

    reference = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    for name in ("MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm", "MR_small_jp2klossless.dcm",
                 "MR_small_bigendian.dcm"):
        path = Path(get_testdata_file(name))
        np.testing.assert_array_equal(_pixels(pydicom.dcmread(path), path), _pixels(reference, path))
    folder = tmp_path / "one-slice"
    folder.mkdir()
    shutil.copy(get_testdata_file("MR_small.dcm"), folder / "a.dcm")
    series, problems = scan_dicom_folder(folder)
    assert problems == [] and series[0].modality == "MR" and series[0].patient_id
    with pytest.raises(SeriesError, match="only 1 slice"):
        read_series(series[0].files)


def test_the_cli_exports_imports_and_the_result_passes_the_data_check(cohort_dir: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    pacs, site = tmp_path / "pacs", tmp_path / "site-c"
    result = runner.invoke(app, ["data", "export-dicom", str(cohort_dir / "site-c"), "--out", str(pacs),
                                 "--patient", "site-c-000", "--patient", "site-c-001"])
    assert result.exit_code == 0, result.output
    assert "export.json" in result.output
    result = runner.invoke(app, ["data", "import", "--dicom", str(pacs), "--out", str(site), "--voxel-mm", "6"])
    assert result.exit_code == 0, result.output
    assert "2 patient(s) imported" in result.output and "site-c-pseudonyms.csv" in result.output
    assert runner.invoke(app, ["data", "check", str(site)]).exit_code == 0
    again = runner.invoke(app, ["data", "import", "--dicom", str(pacs), "--out", str(site)])
    assert again.exit_code != 0 and "already exists" in again.output


def test_short_identifiers_count_as_whole_tokens_long_ones_anywhere() -> None:
    """A research ID '017' or a name part 'Ann' inside a number or a word is chance; a date inside a date-time
    or an ID inside a file name is a leak."""
    from flame_private.data.dicom.deidentify import redact

    text, hit = redact("AX T2 Kowalski 017 annotation 20260418093000 a017b", ["Kowalski", "017", "20260418", "Ann"])
    assert hit and text == "AX T2 [redacted] [redacted] annotation [redacted]093000 a017b"
    assert redact("slices 1017, bright", ["017", "Ann"]) == ("slices 1017, bright", False)


# --- results back to the clinician ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def untrained_models(tmp_path_factory) -> Path:
    """Untrained models: the evolution model is then exactly "no change", so its DICOM-SEG must be the
    baseline segmentation, which makes the placement on the scans checkable."""
    import torch

    from flame_private.config import DataConfig, ModelConfig
    from flame_private.models import build_model
    from flame_private.models.io import save_model

    out = tmp_path_factory.mktemp("models")
    config = ModelConfig(response_channels=(8, 16, 32), evolution_channels=(8, 16, 32), norm_groups=4, dropout=0.0)
    torch.manual_seed(0)
    for task in ("response", "evolution"):
        save_model(out / f"{task}.pt", task, build_model(task, config), config, DataConfig(grid=32), card={})
    return out


def _patient_of(imported, exported, index: int = 0) -> tuple[str, Path]:
    """(pseudonym, the hospital's baseline T1ce series folder) of an exported patient."""
    mrn = list(exported[1]["patients"])[index]
    pseudonym = PseudonymMap(imported[2], SITE).pseudonym(mrn)
    return pseudonym, _series_folder(exported[0] / mrn, "AX T1 SE +C")


def test_predictions_go_back_as_dicom_seg_on_the_baseline_series_and_a_pdf(imported, exported, untrained_models,
                                                                          tmp_path: Path) -> None:
    from pypdf import PdfReader

    from flame_private.data.dicom.segmentation import read_seg
    from flame_private.predict import case_from_folder, predict_case
    from flame_private.predict_dicom import write_prediction_dicom

    # site-b-003: its baseline tumour covers 148 voxels of the DICOM grid (site-b-002's: 11, too few to measure)
    pseudonym, series = _patient_of(imported, exported, PATIENTS.index("site-b-003"))
    pred = predict_case(untrained_models, case_from_folder(imported[0] / pseudonym), interval_days=120)
    written = write_prediction_dicom(pred, series, tmp_path / "dicom", imported[2], SITE)
    assert pseudonym not in PdfReader(io.BytesIO(bytes(pydicom.dcmread(written[3]).EncapsulatedDocument))) \
        .pages[0].extract_text()  # in the archive, beside the patient's name, it would link the two
    assert [p.name for p in written] == ["SEG-photon.dcm", "SEG-proton.dcm", "SEG-carbon.dcm",
                                         "treatment-comparison.dcm"]
    files = sorted(series.iterdir())
    reference = read_series(files)
    drawn = sitk.GetArrayFromImage(read_seg(next(series.parent.glob("S100/*.dcm")), files, reference)) > 0
    source = pydicom.dcmread(files[0], stop_before_pixels=True)
    for path in written[:3]:
        seg = pydicom.dcmread(path, stop_before_pixels=True)
        assert seg.PatientID == source.PatientID and seg.StudyInstanceUID == source.StudyInstanceUID
        assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
        assert seg.SegmentSequence[0].SegmentAlgorithmType == "AUTOMATIC"
        predicted = sitk.GetArrayFromImage(read_seg(path, files, reference)) > 0
        # "no change", through the import's 4 mm grid and the model's 6 mm grid, back on 6.4 x 7.8 x 10 mm voxels
        assert drawn.sum() > 100 and _dice(predicted, drawn) > 0.8, _dice(predicted, drawn)
        shifted = [_dice(np.roll(predicted, shift, axis=(0, 1, 2)), drawn)
                   for shift in itertools.product((-1, 0, 1), repeat=3) if shift != (0, 0, 0)]
        assert max(shifted) < _dice(predicted, drawn)  # placed on the voxels it belongs to, not one off
    doc = pydicom.dcmread(written[3])
    assert doc.MIMETypeOfEncapsulatedDocument == "application/pdf" and doc.PatientID == source.PatientID
    text = PdfReader(io.BytesIO(bytes(doc.EncapsulatedDocument))).pages[0].extract_text()
    for modality, p in pred.probabilities.items():
        assert modality in text and f"{p:.3f}" in text


def test_a_series_of_another_patient_is_refused_before_anything_is_written(imported, exported, untrained_models,
                                                                           tmp_path: Path) -> None:
    from flame_private.predict import case_from_folder, predict_case
    from flame_private.predict_dicom import write_prediction_dicom

    pseudonym, _ = _patient_of(imported, exported)
    other = list(exported[1]["patients"])[1]
    pred = predict_case(untrained_models, case_from_folder(imported[0] / pseudonym))
    with pytest.raises(DataError, match="is not patient"):
        write_prediction_dicom(pred, _series_folder(exported[0] / other, "AX T1 SE +C"), tmp_path / "dicom",
                               imported[2], SITE)
    assert not (tmp_path / "dicom").exists()


def test_flame_predict_writes_the_dicom_files_outside_the_site_folder(imported, exported, untrained_models,
                                                                     tmp_path: Path) -> None:
    pseudonym, series = _patient_of(imported, exported)
    result = CliRunner().invoke(app, ["predict", "--model", str(untrained_models), "--case",
                                      str(imported[0] / pseudonym), "--out", str(tmp_path / "p.png"),
                                      "--dicom-series", str(series), "--pseudonyms", str(imported[2])])
    assert result.exit_code == 0, result.output
    assert "wrote 4 DICOM files" in result.output
    default = imported[0].parent / f"{imported[0].name}-dicom" / pseudonym  # beside the site folder, not in it
    assert len(list(default.iterdir())) == 4
    assert not list(imported[0].rglob("*.dcm"))


def test_a_patient_without_a_baseline_segmentation_imports_with_a_warning(exported, tmp_path: Path) -> None:
    patient_dir, _ = _one_patient_copy(exported, tmp_path)
    shutil.rmtree(next(sorted(patient_dir.iterdir())[0].glob("S100")))
    report = _import(patient_dir.parent, tmp_path / "out")
    assert report.patients[0].timepoints[0].segmentation is False
    assert any("no segmentation (DICOM-SEG) in the baseline study" in w for w in report.warnings)
    entry = read_manifest(tmp_path / "out")["patients"][0]
    assert "seg" not in entry["timepoints"][0]["files"] and "seg" in entry["timepoints"][1]["files"]


def test_a_missing_baseline_segmentation_is_drawn_by_the_segmentation_model_and_reported(exported, untrained_models,
                                                                                          tmp_path: Path) -> None:
    import nibabel as nib
    import torch

    from flame_private.config import DataConfig, ModelConfig
    from flame_private.data.checks import load_site
    from flame_private.models import build_model
    from flame_private.models.io import file_sha256, save_model

    patient_dir, _ = _one_patient_copy(exported, tmp_path)
    shutil.rmtree(next(sorted(patient_dir.iterdir())[0].glob("S100")))
    config = ModelConfig(segmentation_channels=(4, 8), norm_groups=2)
    torch.manual_seed(0)
    model = tmp_path / "segmentation.pt"
    save_model(model, "segmentation", build_model("segmentation", config), config, DataConfig(grid=24), card={})
    out = tmp_path / "out"
    report = _import(patient_dir.parent, out, segmentation_model=model)
    patient = report.patients[0]
    assert patient.baseline_segmentation == f"automatic (segmentation model sha256 {file_sha256(model)})"
    assert "segmentation" in patient.steps
    assert not any("no segmentation (DICOM-SEG)" in w for w in report.warnings)
    assert any("drawn by the segmentation model; check it on the contact sheet" in w for w in report.warnings)
    baseline = read_manifest(out)["patients"][0]["timepoints"][0]["files"]
    seg, t1ce = nib.load(out / baseline["seg"]), nib.load(out / baseline["t1ce"])
    assert seg.shape == t1ce.shape and np.allclose(seg.affine, t1ce.affine)  # on the imported scan's grid
    assert set(np.unique(np.asarray(seg.dataobj))) <= {0, 1, 2, 3}
    # The manifest says who drew it: the clinical models may start from it, the segmentation model never
    # learns from it, and a prediction from it says so.
    record = load_site(out, "flame", SITE).records[0]
    assert record.baseline.files.seg is not None and record.baseline.seg_source == patient.baseline_segmentation
    assert record.followups[0].seg_source is None
    from flame_private.data.records import Covariates
    from flame_private.predict import case_from_folder, predict_case

    covariates = Covariates(age=60, sex="F", mgmt_methylated=True, resection="subtotal")
    pred = predict_case(untrained_models, case_from_folder(out / patient.patient_id, covariates))
    assert pred.baseline_seg_source == patient.baseline_segmentation
    assert pred.segmentation_model_sha256 == file_sha256(model)


def test_the_report_numbers_are_too_short_to_spell_a_date_or_numeric_id(imported) -> None:
    """With 8-digit study dates of every patient searched in every file, a long float in import.json would
    sooner or later spell one by chance and stop a large site's import for nothing."""
    import re

    text = (imported[0] / "import.json").read_text()
    assert max(len(run) for run in re.findall(r"\d+", text)) <= 5


def test_a_follow_up_series_of_the_right_patient_is_refused_too(imported, exported, untrained_models,
                                                                tmp_path: Path) -> None:
    """The prediction lies in the baseline scan's coordinates; on a follow-up it would be off by the motion
    between visits while the viewer showed it as aligned."""
    from flame_private.predict import case_from_folder, predict_case
    from flame_private.predict_dicom import write_prediction_dicom

    pseudonym, _ = _patient_of(imported, exported, PATIENTS.index("site-b-003"))
    mrn = list(exported[1]["patients"])[PATIENTS.index("site-b-003")]
    pred = predict_case(untrained_models, case_from_folder(imported[0] / pseudonym))
    with pytest.raises(DataError, match="not from the baseline study"):
        write_prediction_dicom(pred, _series_folder(exported[0] / mrn, "AX T1 SE +C", timepoint=1),
                               tmp_path / "dicom", imported[2], SITE)
    with pytest.raises(DataError, match="inside the site folder"):
        write_prediction_dicom(pred, _series_folder(exported[0] / mrn, "AX T1 SE +C"),
                               imported[0] / pseudonym / "dicom", imported[2], SITE)
    assert not (tmp_path / "dicom").exists() and not (imported[0] / pseudonym / "dicom").exists()


def test_predictions_sent_back_to_the_archive_are_never_imported_as_labels(imported, exported, untrained_models,
                                                                           tmp_path: Path) -> None:
    from flame_private.predict import case_from_folder, predict_case
    from flame_private.predict_dicom import write_prediction_dicom

    index = PATIENTS.index("site-b-003")
    pseudonym, series = _patient_of(imported, exported, index)
    mrn = list(exported[1]["patients"])[index]
    pacs = tmp_path / "pacs"
    shutil.copytree(exported[0] / mrn, pacs / mrn)
    pred = predict_case(untrained_models, case_from_folder(imported[0] / pseudonym))
    write_prediction_dicom(pred, series, pacs / mrn / series.parent.name / "S7000", imported[2], SITE)
    report = _import(pacs, tmp_path / "out")
    assert sum("a flame-private prediction" in line for line in report.patients[0].left_out) == 3
    assert report.patients[0].timepoints[0].segmentation  # the drawn one, still


def test_series_geometry_agrees_with_an_independent_reader(exported) -> None:
    """ITK's own DICOM series reader (GDCM) and this importer's stack give the same origin, axes, spacing and
    voxels: a convention error made alike in the exporter and the importer would not show in a round trip."""
    mrn = next(iter(exported[1]["patients"]))
    folder = _series_folder(exported[0] / mrn, "AX T2 FLAIR", timepoint=1)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    theirs = reader.Execute()
    mine = read_series(sorted(folder.iterdir()))
    np.testing.assert_allclose(mine.GetOrigin(), theirs.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(mine.GetDirection(), theirs.GetDirection(), atol=1e-5)
    np.testing.assert_allclose(mine.GetSpacing(), theirs.GetSpacing(), atol=1e-3)
    np.testing.assert_allclose(sitk.GetArrayFromImage(mine), sitk.GetArrayFromImage(theirs), rtol=1e-5, atol=1e-3)


def test_two_series_that_look_alike_and_an_unknown_segment_label_are_refused(exported, tmp_path: Path) -> None:
    patient_dir, _ = _one_patient_copy(exported, tmp_path)
    t1ce = _series_folder(patient_dir, "AX T1 SE +C")
    twin = t1ce.parent / "S050"
    shutil.copytree(t1ce, twin)
    uid = pydicom.uid.generate_uid()
    for path in twin.iterdir():
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID, ds.SOPInstanceUID = uid, pydicom.uid.generate_uid()
        ds.SeriesDescription = "AX T1 SE +C repeat"
        ds.save_as(path)
    _refused(patient_dir.parent, tmp_path / "out", "2 series look like T1CE")
    shutil.rmtree(twin)
    seg_path = next(t1ce.parent.glob("S100/*.dcm"))
    ds = pydicom.dcmread(seg_path)
    ds.SegmentSequence[0].SegmentLabel = "Lesion"
    ds.save_as(seg_path)
    _refused(patient_dir.parent, tmp_path / "out2", "'Lesion' names none of the tumour compartments")


def test_a_folder_mixing_patients_is_refused(exported, tmp_path: Path) -> None:
    """A file of one patient in another's folder: the export was misfiled, and what else went astray
    cannot be told."""
    dicom = tmp_path / "pacs"
    shutil.copytree(exported[0], dicom)
    first, second = list(exported[1]["patients"])
    stray = _series_folder(dicom / second, "AX T2 FSE") / "IM0003.dcm"
    target = _series_folder(dicom / first, "AX T2 FSE") / "IM9003.dcm"
    stray.rename(target)
    _refused(dicom, tmp_path / "out", "this folder mixes files of 2 patients", str(target.parent))
