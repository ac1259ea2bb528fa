"""A synthetic site folder written out as a hospital's DICOM export, with known truth.

What a PACS export holds for each patient: one study per timepoint, with a
localiser and the four structural series under vendor-style names, the tumour
segmentation as DICOM-SEG on the T1ce, the radiotherapy plan (photon plan, or
ion plan for protons and carbon) and its dose (RTDOSE, on a planning system's own
axial 3 mm grid) in the baseline study, and identifying headers
(name, hospital ID, birth and study dates, accession numbers). Each follow-up is
moved by a small rigid motion, as a patient lies differently on each visit, so
that the importer's registration is checked against motion it must undo.

``export.json`` beside the series holds the truth for checking an import (the
synthetic patient behind each hospital ID and each follow-up's motion); it is
not DICOM, and the importer leaves it out.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.uid import RLELossless, generate_uid

from flame_private.data.dicom.dose import RT_DOSE_STORAGE, write_rtdose
from flame_private.data.dicom.instance import new_instance
from flame_private.data.dicom.registration import isotropic_reference
from flame_private.data.dicom.segmentation import write_seg
from flame_private.data.layouts.flame import read_manifest

log = logging.getLogger(__name__)

MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
RT_PLAN_STORAGE = "1.2.840.10008.5.1.4.1.1.481.5"
RT_ION_PLAN_STORAGE = "1.2.840.10008.5.1.4.1.1.481.8"
DOSE_GRID_MM = 3.0
"""A planning system's dose grid: 2-4 mm, axial, whatever the MR's voxels and orientation."""

# (description, TE ms, TR ms, TI ms, contrast agent) per sequence, as a vendor protocol names them.
_SERIES: dict[str, tuple[str, float, float, float | None, str]] = {
    "t1": ("AX T1 SE", 12.0, 600.0, None, ""),
    "t1ce": ("AX T1 SE +C", 12.0, 600.0, None, "GADOBUTROL 0.1 mmol/kg"),
    "t2": ("AX T2 FSE", 100.0, 4000.0, None, ""),
    "flair": ("AX T2 FLAIR", 120.0, 9000.0, 2500.0, ""),
}
_VENDORS = (("SIEMENS", "Skyra", 3.0), ("GE MEDICAL SYSTEMS", "SIGNA Premier", 3.0), ("Philips", "Ingenia", 1.5))
_GIVEN = ("Anna", "Bruno", "Carla", "Dieter", "Elena", "Felix", "Greta", "Hugo", "Ines", "Jonas", "Klara", "Lukas")
_FAMILY = ("Albrecht", "Bianchi", "Castillo", "Dubois", "Eriksen", "Fontaine", "Gallo", "Hansen", "Ivanova",
           "Jansen", "Kowalski", "Lindqvist")
BASE_DATE = date(2025, 1, 6)


def _rng(*keys: str) -> np.random.Generator:
    digest = hashlib.sha256("/".join(keys).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def image_centre(image: sitk.Image) -> list[float]:
    return [float(v) for v in image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in image.GetSize()])]


def moved(image: sitk.Image, params: list[float], labels: bool, centre: list[float]) -> sitk.Image:
    """IMAGE's content moved rigidly about CENTRE (the grid stays where it is).

    Resampling reads the original at T(x), so the content moves by T's inverse; a
    registration onto the original that is exact composes with T to the identity.
    """
    t = sitk.Euler3DTransform()
    t.SetCenter(centre)
    t.SetParameters(params)
    return sitk.Resample(image, image, t, sitk.sitkNearestNeighbor if labels else sitk.sitkLinear, 0.0,
                         image.GetPixelID())


def _base(patient: dict[str, Any], study: dict[str, Any], series_uid: str, number: int, description: str,
          modality: str, sop_class: str) -> pydicom.Dataset:
    ds = new_instance(sop_class)
    ds.SpecificCharacterSet = "ISO_IR 192"
    for key in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAge"):
        setattr(ds, key, patient[key])
    for key in ("StudyInstanceUID", "StudyDate", "StudyTime", "StudyID", "AccessionNumber", "StudyDescription",
                "ReferringPhysicianName", "InstitutionName", "StationName", "Manufacturer",
                "ManufacturerModelName", "FrameOfReferenceUID"):
        setattr(ds, key, study[key])
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = number
    ds.SeriesDescription = description
    ds.SeriesDate = study["StudyDate"]
    ds.Modality = modality
    ds.BodyPartExamined = "BRAIN"
    return ds


def _mr_series(image: sitk.Image, sequence: str, patient: dict[str, Any], study: dict[str, Any], number: int,
               field_t: float, folder: Path, compress: bool, localizer: bool = False) -> list[pydicom.Dataset]:
    description, te, tr, ti, agent = _SERIES[sequence]
    if localizer:
        description = "3-PL LOC"
    volume = sitk.GetArrayFromImage(image).astype(np.float64)  # (slices, rows, columns)
    lo, hi = float(volume.min()), float(volume.max())
    slope = (hi - lo) / 4095.0 if hi > lo else 1.0
    stored = np.rint((volume - lo) / slope).astype(np.uint16)
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    spacing = image.GetSpacing()
    series_uid = generate_uid()
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    indices = [volume.shape[0] // 2 - 1, volume.shape[0] // 2, volume.shape[0] // 2 + 1] if localizer \
        else range(volume.shape[0])
    for n, k in enumerate(indices, start=1):
        ds = _base(patient, study, series_uid, number, description, "MR", MR_STORAGE)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"] if localizer else ["ORIGINAL", "PRIMARY", "M", "ND"]
        ds.ProtocolName = description
        ds.ScanningSequence = "IR" if ti else "SE"
        ds.SequenceVariant = "SK"
        ds.MRAcquisitionType = "2D"
        ds.EchoTime = f"{te:g}"
        ds.RepetitionTime = f"{tr:g}"
        if ti:
            ds.InversionTime = f"{ti:g}"
        if agent:
            ds.ContrastBolusAgent = agent
        ds.MagneticFieldStrength = f"{field_t:g}"
        ds.PatientPosition = "HFS"
        ds.BurnedInAnnotation = "NO"
        ds.InstanceNumber = n
        position = np.asarray(image.TransformIndexToPhysicalPoint((0, 0, int(k))))
        ds.ImagePositionPatient = [f"{v:.4f}" for v in position]
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in (*direction[:, 0], *direction[:, 1])]
        ds.SliceLocation = f"{float(np.dot(position, direction[:, 2])):.4f}"
        ds.PixelSpacing = [f"{spacing[1]:.4f}", f"{spacing[0]:.4f}"]
        ds.SliceThickness = f"{spacing[2]:.4f}"
        ds.SpacingBetweenSlices = f"{spacing[2]:.4f}"
        ds.PositionReferenceIndicator = ""
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = stored.shape[1:]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleIntercept = f"{lo:.6g}"
        ds.RescaleSlope = f"{slope:.6g}"
        ds.RescaleType = "US"
        ds.PixelData = stored[int(k)].tobytes()
        if compress:
            ds.compress(RLELossless)
        ds.save_as(folder / f"IM{n:04d}.dcm", enforce_file_format=True)
        out.append(ds)
    return out


def _rt_plan(patient: dict[str, Any], study: dict[str, Any], entry: dict[str, Any], folder: Path
             ) -> tuple[str, str]:
    """The plan in FOLDER; returns its (SOP class, SOP instance) UIDs, for the dose to reference."""
    treatment = entry["treatment"]
    ion = treatment in ("proton", "carbon")
    ds = _base(patient, study, generate_uid(), 900, f"RT plan {entry.get('prescription_gy', 60):g} Gy",
               "RTPLAN", RT_ION_PLAN_STORAGE if ion else RT_PLAN_STORAGE)
    ds.RTPlanLabel = "BRAIN GBM"
    ds.RTPlanGeometry = "PATIENT"
    ds.InstanceNumber = 1
    fraction = pydicom.Dataset()
    fraction.FractionGroupNumber = 1
    fraction.NumberOfFractionsPlanned = int(entry.get("fractions") or 30)
    fraction.NumberOfBeams = 2
    ds.FractionGroupSequence = [fraction]
    dose = pydicom.Dataset()
    dose.DoseReferenceNumber = 1
    dose.DoseReferenceStructureType = "SITE"
    dose.DoseReferenceType = "TARGET"
    dose.TargetPrescriptionDose = f"{float(entry.get('prescription_gy') or 60):g}"
    ds.DoseReferenceSequence = [dose]
    beams = []
    for number in (1, 2):
        beam = pydicom.Dataset()
        beam.BeamNumber = number
        beam.BeamName = f"G{number}"
        beam.TreatmentDeliveryType = "TREATMENT"
        if ion:
            beam.RadiationType = "PROTON" if treatment == "proton" else "ION"
            if treatment == "carbon":
                beam.RadiationAtomicNumber, beam.RadiationMassNumber, beam.RadiationChargeState = 6, 12, 6
        else:
            beam.RadiationType = "PHOTON"
        beams.append(beam)
    if ion:
        ds.IonBeamSequence = beams
    else:
        ds.BeamSequence = beams
    folder.mkdir(parents=True, exist_ok=True)
    ds.save_as(folder / "RP0001.dcm", enforce_file_format=True)
    return str(ds.SOPClassUID), str(ds.SOPInstanceUID)


def _rt_dose(patient: dict[str, Any], study: dict[str, Any], dose_type: str, dose: sitk.Image,
             plan: tuple[str, str], folder: Path) -> None:
    """The plan's dose in the baseline study's frame of reference (the images it was planned on), on a planning
    system's own grid: axial, DOSE_GRID_MM apart, over the site folder's field of view."""
    grid = _dose_grid(dose)
    on_grid = sitk.Resample(dose, grid, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    ds = _base(patient, study, generate_uid(), 901, "RT dose PLAN", "RTDOSE", RT_DOSE_STORAGE)
    ds.OperatorsName = ""
    ds.PositionReferenceIndicator = ""
    write_rtdose(ds, on_grid, folder / "RD0001.dcm", plan=plan, dose_type=dose_type)


def _dose_grid(image: sitk.Image) -> sitk.Image:
    """An axial (identity-oriented) grid of DOSE_GRID_MM voxels covering IMAGE's field of view."""
    corners = np.asarray([image.TransformContinuousIndexToPhysicalPoint([c * (n - 1) for c, n in
                                                                         zip(corner, image.GetSize(), strict=True)])
                          for corner in itertools.product((0, 1), repeat=3)])
    low, high = corners.min(axis=0), corners.max(axis=0)
    size = [int(np.ceil((h - lo) / DOSE_GRID_MM)) + 1 for lo, h in zip(low, high, strict=True)]
    grid = sitk.Image(size, sitk.sitkFloat32)
    grid.SetSpacing((DOSE_GRID_MM,) * 3)
    grid.SetOrigin(tuple(float(v) for v in low))
    return grid


def export_site_dicom(site_dir: Path, out: Path, *, max_motion_mm: float = 4.0, max_motion_deg: float = 3.0,
                      compress: bool = False, patients: list[str] | None = None, voxel_mm: float | None = None,
                      on_patient: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Write the flame-layout site at SITE_DIR as DICOM under OUT; returns (and writes) the truth.

    VOXEL_MM resamples the images onto a finer isotropic grid first (1 mm: the
    matrix of a clinical 3-D acquisition), so that an import's cost can be measured
    at the size of real scans; the anatomy stays the simulator's.
    """
    manifest = read_manifest(Path(site_dir))
    site_id = str(manifest.get("site_id") or Path(site_dir).name)
    vendor, model, field_t = _VENDORS[int(hashlib.sha256(site_id.encode()).hexdigest(), 16) % len(_VENDORS)]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=False)
    truth: dict[str, Any] = {"site_id": site_id, "patients": {}}
    for index, entry in enumerate(manifest["patients"]):
        pid = entry["patient_id"]
        if patients is not None and pid not in patients:
            continue
        rng = _rng(site_id, pid)
        age = int(round(float(entry.get("age") or 60)))
        mrn = f"MRN{rng.integers(10**6, 10**7)}"
        name = f"{_FAMILY[rng.integers(len(_FAMILY))]}^{_GIVEN[rng.integers(len(_GIVEN))]}"
        first_day = BASE_DATE + timedelta(days=int(rng.integers(0, 600)))
        birth = first_day - timedelta(days=int(age * 365.25 + rng.integers(0, 300)))
        patient = {"PatientName": name, "PatientID": mrn, "PatientBirthDate": birth.strftime("%Y%m%d"),
                   "PatientSex": entry.get("sex") or "O", "PatientAge": f"{age:03d}Y"}
        record: dict[str, Any] = {"patient_id": pid, "hospital_id": mrn, "name": name, "timepoints": {}}
        for t_index, tp in enumerate(entry["timepoints"]):
            day = int(tp.get("day") or 0)
            when = first_day + timedelta(days=day)
            study = {"StudyInstanceUID": generate_uid(), "StudyDate": when.strftime("%Y%m%d"), "StudyTime": "093000",
                     "StudyID": str(t_index + 1), "AccessionNumber": f"ACC{rng.integers(10**7, 10**8)}",
                     "StudyDescription": "MRI BRAIN W/WO CONTRAST", "ReferringPhysicianName": "Moreau^Claire",
                     "InstitutionName": f"{site_id} hospital", "StationName": "MR1", "Manufacturer": vendor,
                     "ManufacturerModelName": model, "FrameOfReferenceUID": generate_uid()}
            motion = [0.0] * 6
            if t_index > 0:
                motion = [*(np.radians(rng.uniform(-max_motion_deg, max_motion_deg, 3))),
                          *rng.uniform(-max_motion_mm, max_motion_mm, 3)]
                motion = [float(v) for v in motion]
            folder = out / mrn / f"{when:%Y%m%d}"
            images = {sequence: sitk.ReadImage(str(Path(site_dir) / tp["files"][sequence]), sitk.sitkFloat32)
                      for sequence in ("t1", "t1ce", "t2", "flair")}
            grid = isotropic_reference(images["t1ce"], voxel_mm) if voxel_mm else None
            if grid is not None:
                images = {q: sitk.Resample(image, grid, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
                          for q, image in images.items()}
            centre = image_centre(images["t1ce"])
            if t_index > 0:
                images = {q: moved(image, motion, False, centre) for q, image in images.items()}
            _mr_series(images["t1"], "t1", patient, study, 1, field_t, folder / "S001", compress, localizer=True)
            sources = {}
            for number, sequence in enumerate(("t1", "t1ce", "t2", "flair"), start=2):
                sources[sequence] = _mr_series(images[sequence], sequence, patient, study, number, field_t,
                                               folder / f"S{number:03d}", compress)
            if tp["files"].get("seg"):
                seg = sitk.ReadImage(str(Path(site_dir) / tp["files"]["seg"]), sitk.sitkUInt8)
                if grid is not None:
                    seg = sitk.Resample(seg, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
                if t_index > 0:
                    seg = moved(seg, motion, True, centre)
                (folder / "S100").mkdir()
                write_seg(sitk.GetArrayFromImage(seg), sources["t1ce"], folder / "S100" / "SEG0001.dcm", 100, vendor)
            if t_index == 0 and entry.get("treatment"):
                plan = _rt_plan(patient, study, entry, folder / "S900")
                if tp["files"].get("dose"):
                    dose = sitk.ReadImage(str(Path(site_dir) / tp["files"]["dose"]), sitk.sitkFloat32)
                    _rt_dose(patient, study, str(tp.get("dose_type") or "PHYSICAL"), dose, plan, folder / "S901")
            record["timepoints"][tp["name"]] = {"study_date": study["StudyDate"], "day": day,
                                                "motion": motion, "motion_centre": centre}
        truth["patients"][mrn] = record
        log.info("exported %s (%s) as %s", pid, index, mrn)
        if on_patient is not None:
            on_patient(pid)
    (out / "export.json").write_text(json.dumps(truth, indent=1, sort_keys=True), encoding="utf-8")
    return truth
