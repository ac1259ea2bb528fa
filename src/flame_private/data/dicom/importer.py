"""``flame data import``: a hospital's DICOM export -> a site folder in the ``flame`` layout.

The site folder appears in one step, complete, or not at all: everything is
written under a hidden staging folder beside it and renamed into place only
after every patient was imported (or, with ``skip_invalid``, reported) and no
file in it holds a patient's identifiers. Each problem names the patient, the
file and the reason.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pydicom
import SimpleITK as sitk
from pydantic import Field

from flame_private.config import StrictModel
from flame_private.data.dicom.deidentify import (
    PseudonymMap,
    files_containing,
    identifiers,
    parse_dicom_date,
    redact,
)
from flame_private.data.dicom.dose import dose_header, read_rtdose
from flame_private.data.dicom.headers import SeriesHeader, scan_dicom_folder
from flame_private.data.dicom.qc import contact_sheet
from flame_private.data.dicom.registration import (
    Registration,
    brain_mask,
    isotropic_reference,
    register_rigid,
    resample,
)
from flame_private.data.dicom.segmentation import read_seg
from flame_private.data.dicom.sequences import SEQUENCES, SequenceRules, classify
from flame_private.data.dicom.volume import SeriesError, read_series
from flame_private.data.errors import DataError, Problem, format_problems
from flame_private.data.layouts._common import ClinicalRow, read_clinical_table
from flame_private.data.layouts.flame import FORMAT, FORMAT_VERSION, MANIFEST

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from flame_private.auto_segmentation import Segmenter

IMPORT_REPORT = "import.json"
MAX_REPORTED_AGE = 90
"""Ages above 89 are written as 90: rarer ages identify (the HIPAA Safe Harbor rule)."""


class ImportOptions(StrictModel):
    """How a DICOM export becomes a site folder."""

    site_id: str = Field(min_length=1)
    voxel_mm: float = Field(default=1.0, gt=0.0, le=8.0)
    """Isotropic voxel of the site folder's images (BraTS: 1 mm)."""
    skull_strip: bool = True
    """Extract the brain with the MNI152 mask (turn off for scans that are already skull-stripped)."""
    pseudonyms: Path
    """The hospital ID -> pseudonym map; kept at the site, outside the site folder."""
    sequences: Path | None = None
    """A site's series-name rules (sequences.SequenceRules YAML)."""
    clinical: Path | None = None
    """A clinical table keyed by the hospital's patient ID (the columns of clinical.csv)."""
    skip_invalid: bool = False
    """Write the valid patients and report the others, instead of writing nothing."""
    segmentation_model: Path | None = None
    """The baseline segmentation model (``segmentation.pt``): draws the baseline segmentation of a patient whose
    baseline study has no DICOM-SEG (``PatientReport.baseline_segmentation`` says which were drawn)."""


class SeriesReport(StrictModel):
    sequence: str
    description: str
    """The series description, any patient identifier in it replaced by [redacted]."""
    slices: int
    voxel_mm: list[float]
    transfer_syntax: str
    registration: Registration | None
    """Onto the baseline T1ce; None for the baseline T1ce itself."""


class TimepointReport(StrictModel):
    name: str
    day: int
    series: list[SeriesReport]
    segmentation: bool


class PatientReport(StrictModel):
    patient_id: str
    """The pseudonym."""
    timepoints: list[TimepointReport]
    treatment: str | None
    treatment_source: str
    brain_ml: float | None
    brain_mask_metric: float | None
    baseline_segmentation: str
    """``DICOM-SEG`` (the study's own), ``automatic (segmentation model sha256 <hex>)`` or ``none``."""
    dose: str
    """The planned dose imported from RTDOSE (its DoseType, Gy or Gy(RBE)), or why none was."""
    contact_sheet: str
    left_out: list[str]
    """Series seen and not used (localisers, other sequences), with the reason."""
    seconds: float
    steps: dict[str, float]
    """Seconds per step (read, register, resample, dose, brain, write, contact sheet): where a site's time goes."""


class ImportReport(StrictModel):
    """``import.json`` in the site folder: what was imported and how, for the site and its DPO."""

    site_id: str
    created: str
    voxel_mm: float
    skull_strip: bool
    patients: list[PatientReport]
    skipped: list[str]
    """Patients (by pseudonym) and files that were not imported, with the reason; identifiers redacted
    (the hospital's folder names often hold them). The full paths go to the site's log only."""
    warnings: list[str]
    """Likewise redacted."""


def _fail(header: SeriesHeader | None, path: Path, reason: str) -> DataError:
    return SeriesError(path, reason if header is None else f"{header.label}: {reason}")


def _pick_series(study: list[SeriesHeader], rules: SequenceRules | None, left_out: list[str],
                 secret: list[str], warnings: list[str]) -> dict[str, SeriesHeader]:
    """The T1, T1ce, T2 and FLAIR series of one study; raises naming what is missing or ambiguous."""
    found: dict[str, list[SeriesHeader]] = defaultdict(list)
    for s in study:
        if s.modality != "MR":
            continue
        kind = classify(s, rules)
        text, hit = redact(s.description or s.protocol, secret)
        if hit:
            warnings.append(f"{s.files[0]}: the series description holds patient identifiers; "
                            "it is reported as [redacted]")
        if kind in SEQUENCES:
            found[kind].append(s)
        elif kind == "localizer":
            left_out.append(f"{text!r}: a localiser")
        elif kind == "ignore":
            left_out.append(f"{text!r}: left out by the site's sequence rules")
        else:
            left_out.append(f"{text!r}: not recognised as T1, T1ce, T2 or FLAIR (add a rule with --sequences)")
    folder = study[0].files[0].parent.parent
    picked: dict[str, SeriesHeader] = {}
    for name in SEQUENCES:
        candidates = found.get(name, [])
        if not candidates:
            seen = ", ".join(repr(s.description) for s in study if s.modality == "MR") or "no MR series"
            raise _fail(None, folder, f"no {name.upper()} series in the study of {study[0].study_date} "
                                      f"(series seen: {seen}); a site names its own with --sequences")
        if len(candidates) > 1:
            raise _fail(None, candidates[1].files[0].parent,
                        f"{len(candidates)} series look like {name.upper()} in one study "
                        f"({', '.join(repr(c.description) for c in candidates)}): say which with --sequences "
                        "(an 'ignore' rule for the others)")
        chosen = candidates[0]
        if chosen.burned_in_annotation == "YES":
            raise _fail(chosen, chosen.files[0], "BurnedInAnnotation is YES: the pixels may show the patient's "
                                                 "identity, which this importer cannot remove")
        picked[name] = chosen
    return picked


def _treatment(plans: list[SeriesHeader]) -> str | None:
    """photon, proton or carbon from the RT plans' beams; raises when plans disagree."""
    found: set[str] = set()
    for plan in plans:
        for path in plan.files:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            for beam in list(ds.get("IonBeamSequence", [])) + list(ds.get("BeamSequence", [])):
                kind = str(beam.get("RadiationType", "")).upper()
                if kind == "PHOTON":
                    found.add("photon")
                elif kind == "PROTON":
                    found.add("proton")
                elif kind == "ION" and int(beam.get("RadiationAtomicNumber", 0) or 0) == 6:
                    found.add("carbon")
                elif kind:
                    raise _fail(plan, path, f"beam radiation type {kind!r} is none of photon, proton, carbon")
    if len(found) > 1:
        raise _fail(plans[0], plans[0].files[0], f"the RT plans mix {sorted(found)}: one patient, one modality")
    return found.pop() if found else None


def _import_patient(series: list[SeriesHeader], options: ImportOptions, rules: SequenceRules | None,
                    pseudonym: str, clinical: ClinicalRow | None, staging: Path, warnings: list[str],
                    unreadable: set[Path], segmenter: Segmenter | None = None
                    ) -> tuple[dict[str, Any], PatientReport, str]:
    """The patient's manifest entry, its report, and the baseline StudyInstanceUID (for the pseudonym map)."""
    started = time.perf_counter()
    steps: dict[str, float] = defaultdict(float)

    def clock(step: str, since: float) -> float:
        now = time.perf_counter()
        steps[step] += now - since
        return now

    first = series[0]
    identities = {(s.patient_name, s.birth_date) for s in series}
    if len(identities) > 1:
        raise _fail(None, first.files[0].parent, f"patient ID {first.patient_id!r} carries {len(identities)} "
                                                  "different names or birth dates: two patients under one ID?")
    studies: dict[str, list[SeriesHeader]] = defaultdict(list)
    for s in series:
        studies[s.study_uid].append(s)
    dates = {}
    for uid, members in studies.items():
        try:
            dates[uid] = parse_dicom_date(members[0].study_date, "StudyDate")
        except ValueError as exc:
            raise _fail(members[0], members[0].files[0], str(exc)) from None
    with_mr = [uid for uid in studies if any(s.modality == "MR" for s in studies[uid])]
    if not with_mr:
        raise _fail(None, first.files[0].parent, "no MR study")
    order = sorted(with_mr, key=lambda uid: dates[uid])
    if len({dates[uid] for uid in order}) != len(order):
        raise _fail(None, first.files[0].parent, "two MR studies on one date: which is the timepoint?")
    secret = identifiers(first.patient_id, first.patient_name, first.birth_date,
                         [s.study_date for s in series if s.study_date])
    left_out: list[str] = []
    picked = {uid: _pick_series(studies[uid], rules, left_out, secret, warnings) for uid in order}
    for chosen in (h for by_sequence in picked.values() for h in by_sequence.values()):
        if chosen.files[0].parent in unreadable:
            raise _fail(chosen, chosen.files[0].parent, "a file in this series' folder could not be read: the "
                                                        "volume may lack a slice at either end, which no gap shows")

    baseline_t1ce = read_series(picked[order[0]]["t1ce"].files)
    reference = isotropic_reference(baseline_t1ce, options.voxel_mm)
    volumes: dict[str, dict[str, sitk.Image]] = {}
    reports: list[TimepointReport] = []
    frames: dict[str, Registration | None] = {}
    """Frame of reference -> its registration onto the baseline T1ce (None: the T1ce's own)."""
    for t_index, uid in enumerate(order):
        day = (dates[uid] - dates[order[0]]).days
        name = "baseline" if t_index == 0 else f"day-{day:04d}"
        volumes[name] = {}
        series_reports = []
        registrations: dict[str, Registration | None] = {}
        for sequence in SEQUENCES:
            header = picked[uid][sequence]
            t = time.perf_counter()
            image = baseline_t1ce if (t_index == 0 and sequence == "t1ce") else read_series(header.files)
            t = clock("read", t)
            try:
                registration = None if (t_index == 0 and sequence == "t1ce") else register_rigid(baseline_t1ce,
                                                                                                    image)
            except RuntimeError as exc:  # ITK's failures (no overlap, no samples) arrive as RuntimeError
                raise _fail(header, header.files[0].parent, f"registration onto the baseline T1ce failed: "
                                                            f"{str(exc).strip().splitlines()[-1]}") from None
            t = clock("register", t)
            registrations[sequence] = registration
            if header.frame_of_reference and (header.frame_of_reference not in frames or registration is None):
                frames[header.frame_of_reference] = registration
            volumes[name][sequence] = resample(image, reference, registration.transform() if registration else None)
            clock("resample", t)
            series_reports.append(SeriesReport(
                sequence=sequence, description=redact(header.description or header.protocol, secret)[0],
                slices=len(header.files), voxel_mm=[round(v, 4) for v in image.GetSpacing()],
                transfer_syntax=getattr(pydicom.uid.UID(header.transfer_syntax), "name", header.transfer_syntax),
                registration=registration))
        segs = []
        for s in (s for s in studies[uid] if s.modality == "SEG"):
            if s.manufacturer == "flame-private":  # a prediction sent back to the archive, not a drawn label
                left_out.append(f"{s.description or 'SEG'!r}: a flame-private prediction, not a segmentation")
            else:
                segs.append(s)
        if len(segs) > 1:
            raise _fail(segs[1], segs[1].files[0], "more than one segmentation in one study")
        if segs:
            seg_header = segs[0]
            referenced = _referenced_series(seg_header.files[0])
            source = next((picked[uid][q] for q in SEQUENCES if picked[uid][q].series_uid == referenced), None)
            if source is None:
                raise _fail(seg_header, seg_header.files[0], f"it references series {referenced}, which is not one "
                                                             "of this study's T1, T1ce, T2 or FLAIR series")
            source_image = read_series(source.files)
            labels = read_seg(seg_header.files[0], source.files, source_image)
            sequence = next(q for q in SEQUENCES if picked[uid][q] is source)
            registration = registrations[sequence]
            volumes[name]["seg"] = resample(labels, reference, registration.transform() if registration else None,
                                            labels=True)
        reports.append(TimepointReport(name=name, day=day, series=series_reports, segmentation=bool(segs)))
    if not reports[0].segmentation and segmenter is None:
        warnings.append(f"{pseudonym}: no segmentation (DICOM-SEG) in the baseline study; both models need one, "
                        "so this patient cannot train or be predicted until it has one (or give "
                        "--segmentation-model to draw it)")

    t = time.perf_counter()
    dose_source, dose, dose_type = _plan_dose(series, frames, reference, pseudonym, left_out, warnings)
    if dose is not None:
        volumes["baseline"]["dose"] = dose  # written with the images, never masked: dose outside the brain is real
    t = clock("dose", t)

    brain_ml = metric = None
    if options.skull_strip:
        try:
            mask, metric = brain_mask(volumes["baseline"]["t1"], reference)
        except RuntimeError as exc:
            t1 = picked[order[0]]["t1"]
            raise _fail(t1, t1.files[0].parent, f"the MNI152 brain mask could not be fitted to this T1 "
                                                f"({str(exc).strip().splitlines()[-1]}); --no-skull-strip for "
                                                "scans already skull-stripped") from None
        brain_ml = float(sitk.GetArrayViewFromImage(mask).sum()) * options.voxel_mm ** 3 / 1000.0
        for images in volumes.values():
            for sequence in SEQUENCES:
                images[sequence] = sitk.Mask(images[sequence], mask)
    t = clock("brain", t)

    timepoints = []
    for report in reports:
        files = {}
        for key, image in volumes[report.name].items():
            path = staging / pseudonym / report.name / f"{key}.nii.gz"
            path.parent.mkdir(parents=True, exist_ok=True)
            sitk.WriteImage(image, str(path), useCompression=True)
            files[key] = f"{pseudonym}/{report.name}/{key}.nii.gz"
        timepoints.append({"name": report.name, "day": report.day, "files": files})
    if dose_type is not None:
        timepoints[0]["dose_type"] = dose_type  # the unit of dose.nii.gz: Gy (PHYSICAL) or Gy(RBE) (EFFECTIVE)
    t = clock("write", t)
    drawn = "DICOM-SEG" if reports[0].segmentation else "none"
    if not reports[0].segmentation and segmenter is not None:
        volumes["baseline"]["seg"] = _draw_baseline_segmentation(segmenter, staging, pseudonym, timepoints[0],
                                                                 options.site_id)
        drawn = segmenter.source
        timepoints[0]["seg_source"] = drawn  # in the manifest: a drawn segmentation is never taken for a reference
        warnings.append(f"{pseudonym}: the baseline segmentation was drawn by the segmentation model; check it on "
                        "the contact sheet")
        t = clock("segmentation", t)

    plans = [s for s in series if s.modality == "RTPLAN"]
    treatment, treatment_source = _treatment(plans), "RT plan"
    if clinical is not None and clinical.treatment is not None:
        if treatment is not None and clinical.treatment != treatment:
            raise _fail(plans[0], plans[0].files[0], f"the RT plan says {treatment}, the clinical table "
                                                     f"{clinical.treatment}")
        treatment_source = "RT plan and clinical table" if treatment else "clinical table"
        treatment = clinical.treatment
    if treatment is None:
        treatment_source = "none (no RT plan, no clinical table row)"
    entry: dict[str, Any] = {"patient_id": pseudonym, "timepoints": timepoints, "treatment": treatment}
    if clinical is not None:
        if clinical.covariates is not None:
            entry.update(clinical.covariates.model_dump(mode="json"))
            entry["age"] = min(float(entry["age"]), float(MAX_REPORTED_AGE))
        if clinical.rano is not None:
            entry["rano"] = clinical.rano
        if clinical.responder is not None:
            entry["responder"] = clinical.responder
    sheet = staging / "qc" / f"{pseudonym}.png"
    contact_sheet({tp.name: volumes[tp.name] for tp in reports}, sheet, title=pseudonym)
    clock("contact sheet", t)
    if clinical is None or clinical.covariates is None:
        log.info("%s: no covariates; give a clinical table (age, sex, MGMT, resection) to train on them", pseudonym)
    return entry, PatientReport(
        patient_id=pseudonym, timepoints=reports, treatment=treatment, treatment_source=treatment_source,
        brain_ml=None if brain_ml is None else round(brain_ml, 1),
        brain_mask_metric=None if metric is None else round(metric, 4), baseline_segmentation=drawn,
        dose=dose_source,
        contact_sheet=f"qc/{pseudonym}.png",
        left_out=left_out,
        seconds=round(time.perf_counter() - started, 2), steps={k: round(v, 2) for k, v in steps.items()}), order[0]


def _plan_dose(series: list[SeriesHeader], frames: dict[str, Registration | None], reference: sitk.Image,
               pseudonym: str, left_out: list[str], warnings: list[str]
               ) -> tuple[str, sitk.Image | None, str | None]:
    """How the patient's planned dose (the RTDOSE summed over the plan) was found, the dose on the site folder's
    grid and its DoseType; no dose when the patient has none, or it cannot be placed on the MRI (a warning
    says so)."""
    plan_doses: list[tuple[SeriesHeader, Path]] = []
    for s in (s for s in series if s.modality == "RTDOSE"):
        for path in s.files:
            kind = str(dose_header(path).get("DoseSummationType", "")).upper()
            if kind == "PLAN":
                plan_doses.append((s, path))
            else:
                left_out.append(f"RT dose {kind or '(no DoseSummationType)'}: only the plan's total dose (PLAN) "
                                "is imported")
    if not plan_doses:
        return "none", None, None
    if len(plan_doses) > 1:
        header, path = plan_doses[1]
        raise _fail(header, path, f"{len(plan_doses)} plan doses (RTDOSE, DoseSummationType PLAN) for one patient: "
                                  "export only the dose of the plan that was delivered")
    header, path = plan_doses[0]
    dose = read_rtdose(path)
    if dose.frame_of_reference not in frames:
        warnings.append(f"{pseudonym}: the RT dose is in a frame of reference that no imported MR series shares "
                        "(the planning CT's?); without a registration to the MRI it was not imported")
        return "not imported: frame of reference of no MR series", None, None
    registration = frames[dose.frame_of_reference]
    image = sitk.Resample(dose.image, reference, registration.transform() if registration else sitk.Transform(),
                          sitk.sitkLinear, 0.0, sitk.sitkFloat32)  # linear: no overshoot into negative dose
    unit = "Gy(RBE)" if dose.dose_type == "EFFECTIVE" else "Gy"
    return f"RTDOSE {dose.dose_type} in {unit}, grid {_mm(dose.image.GetSpacing())} mm", image, dose.dose_type


def _mm(spacing: tuple[float, ...]) -> str:
    return " x ".join(f"{v:.3g}" for v in spacing)


def _draw_baseline_segmentation(segmenter: Segmenter, staging: Path, pseudonym: str,
                                baseline: dict[str, Any], site_id: str) -> sitk.Image:
    """The segmentation model's labels of the staged baseline, written beside its images; returned for the
    contact sheet."""
    from flame_private.data.layouts import LABEL_MAPS
    from flame_private.data.records import CaseRecord, ImageFiles, TimepointRecord

    files = ImageFiles(**{k: staging / v for k, v in baseline["files"].items()})
    record = CaseRecord(patient_id=pseudonym, site_id=site_id, layout="flame", label_map=LABEL_MAPS["flame"],
                        timepoints=[TimepointRecord(name=baseline["name"], day=0, files=files)])
    path = staging / pseudonym / baseline["name"] / "seg.nii.gz"
    try:
        segmenter.on_scan(record).to_filename(path)
    except (RuntimeError, ValueError, OSError) as exc:  # a patient the model cannot read is this patient's problem
        raise _fail(None, files.t1ce, f"the segmentation model could not draw the baseline segmentation: {exc}") \
            from exc
    baseline["files"]["seg"] = f"{pseudonym}/{baseline['name']}/seg.nii.gz"
    return sitk.ReadImage(str(path))


def _referenced_series(seg_path: Path) -> str:
    ds = pydicom.dcmread(seg_path, stop_before_pixels=True)
    try:
        return str(ds.ReferencedSeriesSequence[0].SeriesInstanceUID)
    except (AttributeError, IndexError):
        raise SeriesError(seg_path, "the segmentation names no ReferencedSeriesSequence") from None


def import_dicom(dicom_dir: Path, out: Path, options: ImportOptions,
                 on_patient: Callable[[str], None] | None = None) -> ImportReport:
    """Import every patient under DICOM_DIR into the new site folder OUT; see the module docstring."""
    out = Path(out)
    if out.exists():
        raise DataError(f"{out}: already exists; import into a new folder (nothing was changed)")
    if options.pseudonyms.resolve().is_relative_to(out.resolve()):
        raise DataError(f"{options.pseudonyms}: the pseudonym map must not be inside the site folder {out}")
    rules = SequenceRules.load(options.sequences) if options.sequences else None
    seen: set[str] = set()
    series, problems = scan_dicom_folder(dicom_dir, seen)
    unreadable = {p.path.parent for p in problems if p.path is not None}
    if problems and not options.skip_invalid:
        raise DataError(format_problems(problems, f"{dicom_dir}: unusable files"))
    if not any(s.modality == "MR" for s in series):
        raise DataError(f"{Path(dicom_dir).resolve()}: no MR series found under this folder")
    clinical: dict[str, ClinicalRow] = {}
    if options.clinical is not None:
        table_problems: list[Problem] = []
        clinical = read_clinical_table(options.clinical, table_problems)
        if table_problems:
            raise DataError(format_problems(table_problems, f"{options.clinical}: bad clinical table"))
    pseudonyms = PseudonymMap(options.pseudonyms, options.site_id)
    segmenter = None
    if options.segmentation_model is not None:
        from flame_private.auto_segmentation import Segmenter

        segmenter = Segmenter.load(options.segmentation_model)

    by_patient: dict[str, list[SeriesHeader]] = defaultdict(list)
    for s in series:
        by_patient[s.patient_id].append(s)
    staging = out.parent / f".{out.name}.importing-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    entries: list[dict[str, Any]] = []
    reports: list[PatientReport] = []
    warnings: list[str] = []
    skipped = list(problems)
    try:
        for patient_id, members in sorted(by_patient.items()):
            pseudonym = pseudonyms.pseudonym(patient_id)
            try:
                entry, patient_report, baseline_uid = _import_patient(
                    members, options, rules, pseudonym, clinical.get(patient_id), staging, warnings, unreadable,
                    segmenter)
            except DataError as exc:
                path = getattr(exc, "path", None)
                reason = getattr(exc, "reason", str(exc))
                skipped.append(Problem(patient_id=pseudonym, path=path, reason=reason))
                shutil.rmtree(staging / pseudonym, ignore_errors=True)
            else:
                entries.append(entry)
                reports.append(patient_report)
                pseudonyms.set_baseline_study(patient_id, baseline_uid)
            if on_patient is not None:
                on_patient(pseudonym)
        unknown = sorted(set(clinical) - set(by_patient))
        if unknown:
            warnings.append(f"{options.clinical}: rows for patients with no images: {len(unknown)}")
        if skipped and not options.skip_invalid:
            raise DataError(format_problems(skipped, f"{dicom_dir}: patients that cannot be imported"))
        if not entries:
            raise DataError(format_problems(skipped, f"{dicom_dir}: no patient could be imported"))
        # Every header's identifiers, also of files and series not used: a report names those too.
        secret = sorted(seen, key=len, reverse=True)  # longest first: a date inside an ID stays whole
        for line in [*map(str, skipped), *warnings]:
            log.warning(line)
        report = ImportReport(site_id=options.site_id, created=datetime.now(UTC).isoformat(timespec="seconds"),
                              voxel_mm=options.voxel_mm, skull_strip=options.skull_strip, patients=reports,
                              skipped=[redact(str(p), secret)[0] for p in skipped],
                              warnings=[redact(w, secret)[0] for w in warnings])
        manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "site_id": options.site_id,
                    "source": "flame data import", "patients": entries}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")
        (staging / IMPORT_REPORT).write_text(report.model_dump_json(indent=1), encoding="utf-8")
        leaks = files_containing(staging, secret)
        if leaks:
            raise DataError(format_problems(
                [Problem(patient_id=None, path=out / p.relative_to(staging), reason=f"holds identifier {s!r}")
                 for p, s in leaks], "identifying data would be written; nothing was"))
        pseudonyms.save()
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return report

