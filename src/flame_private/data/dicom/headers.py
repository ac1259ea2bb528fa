"""What each file of a DICOM export is, read from its header alone.

Reading headers without pixels lets a site's folder of tens of thousands of
files be sorted into patients, studies and series in seconds, and every file
that is not usable is named with its reason before anything is converted.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from flame_private.config import StrictModel
from flame_private.data.dicom.deidentify import identifiers
from flame_private.data.errors import Problem

log = logging.getLogger(__name__)

IMAGE_MODALITIES = frozenset({"MR"})
"""Series the importer turns into volumes; SEG and RTPLAN are read for labels and treatment."""
KNOWN_MODALITIES = IMAGE_MODALITIES | {"SEG", "RTPLAN", "RTDOSE", "RTSTRUCT", "SR", "PR", "KO", "OT", "CT"}


class SeriesHeader(StrictModel):
    """One series as its headers describe it; ``files`` are sorted by instance number."""

    patient_id: str
    patient_name: str
    birth_date: str
    sex: str
    age: str
    study_uid: str
    study_date: str
    series_uid: str
    series_number: int | None
    modality: str
    manufacturer: str
    description: str
    protocol: str
    image_type: list[str]
    contrast_agent: str
    echo_time: float | None
    repetition_time: float | None
    inversion_time: float | None
    burned_in_annotation: str
    transfer_syntax: str
    files: list[Path]
    frame_of_reference: str = ""
    """FrameOfReferenceUID: series sharing one share patient coordinates (how an RT dose finds its images)."""

    @property
    def label(self) -> str:
        """How the series is named to people: number, description and folder."""
        number = f"#{self.series_number} " if self.series_number is not None else ""
        return f"series {number}{self.description or self.protocol or '(no description)'!r} " \
               f"({len(self.files)} file(s) in {self.files[0].parent})"


def _text(ds: pydicom.Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def _number(ds: pydicom.Dataset, keyword: str) -> float | None:
    value = ds.get(keyword)
    if value in (None, ""):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _integer(ds: pydicom.Dataset, keyword: str) -> int | None:
    number = _number(ds, keyword)
    return None if number is None else int(number)


def header_identifiers(ds: pydicom.Dataset) -> set[str]:
    """What in one header identifies the patient or links back to the hospital's archive."""
    found = set(identifiers(_text(ds, "PatientID"), _text(ds, "PatientName"), _text(ds, "PatientBirthDate"),
                            [_text(ds, k) for k in ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate")]))
    found |= {_text(ds, k) for k in ("AccessionNumber", "StudyInstanceUID", "SeriesInstanceUID",
                                      "OtherPatientIDs") if len(_text(ds, k)) >= 3}
    return found


def scan_dicom_folder(root: Path, seen: set[str] | None = None) -> tuple[list[SeriesHeader], list[Problem]]:
    """Every series under ROOT, and every file that could not be read as DICOM.

    Files that are plainly not DICOM (no preamble, e.g. a README) and DICOMDIR
    index files are logged and left out; a file that starts like DICOM but cannot
    be parsed is a problem, named with its reason. SEEN, when given, collects the
    identifiers of every header read (``header_identifiers``), also of files
    that are not used, so that none of them reaches a report.
    """
    root = Path(root)
    if not root.is_dir():
        return [], [Problem(patient_id=None, path=root, reason="not a folder")]
    problems: list[Problem] = []
    by_series: dict[str, list[tuple[int, Path, pydicom.Dataset]]] = defaultdict(list)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        try:
            ds: pydicom.Dataset = pydicom.dcmread(path, stop_before_pixels=True)
        except InvalidDicomError:
            log.info("not DICOM, left out: %s", path)
            continue
        except Exception as exc:  # noqa: BLE001 - any parser failure is reported with the file
            problems.append(Problem(patient_id=None, path=path, reason=f"unreadable DICOM ({exc})"))
            continue
        if "DirectoryRecordSequence" in ds:
            log.info("DICOMDIR index, left out: %s", path)
            continue
        if seen is not None:
            seen |= header_identifiers(ds)
        missing = [k for k in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "Modality") if not _text(ds, k)]
        if missing:
            problems.append(Problem(patient_id=None, path=path, reason=f"missing {', '.join(missing)} in the header"))
            continue
        instance = int(_number(ds, "InstanceNumber") or 0)
        by_series[_text(ds, "SeriesInstanceUID")].append((instance, path, ds))

    # An export sorted into folders (per patient, study or series) that has another patient's file in one of
    # them was misfiled somewhere: which other files went astray cannot be told, so it is refused. A flat
    # export (every file in one folder) is sorted by the headers alone.
    patients_by_folder: dict[Path, set[str]] = defaultdict(set)
    for members in by_series.values():
        for _, path, ds in members:
            patients_by_folder[path.parent].add(_text(ds, "PatientID"))
    if len(patients_by_folder) > 1:
        for folder, ids in sorted(patients_by_folder.items()):
            if len(ids) > 1:
                problems.append(Problem(patient_id=None, path=folder,
                                        reason=f"this folder mixes files of {len(ids)} patients {sorted(ids)}: "
                                               "a misfiled export? (files are sorted by their headers, but what "
                                               "else went astray cannot be told)"))

    series: list[SeriesHeader] = []
    for uid, members in by_series.items():
        members.sort(key=lambda m: (m[0], str(m[1])))
        ds = members[0][2]
        patients = {_text(m[2], "PatientID") for m in members}
        if len(patients) > 1:
            problems.append(Problem(patient_id=None, path=members[0][1].parent,
                                    reason=f"one series mixes {len(patients)} patients {sorted(patients)}"))
            continue
        image_type = ds.get("ImageType")
        series.append(SeriesHeader(
            patient_id=_text(ds, "PatientID"),
            patient_name=_text(ds, "PatientName"),
            birth_date=_text(ds, "PatientBirthDate"),
            sex=_text(ds, "PatientSex"),
            age=_text(ds, "PatientAge"),
            study_uid=_text(ds, "StudyInstanceUID"),
            study_date=_text(ds, "StudyDate") or _text(ds, "SeriesDate") or _text(ds, "AcquisitionDate"),
            series_uid=uid,
            series_number=_integer(ds, "SeriesNumber"),
            modality=_text(ds, "Modality").upper(),
            manufacturer=_text(ds, "Manufacturer"),
            description=_text(ds, "SeriesDescription"),
            protocol=_text(ds, "ProtocolName"),
            image_type=[str(v).upper() for v in image_type] if image_type else [],
            contrast_agent=_text(ds, "ContrastBolusAgent"),
            echo_time=_number(ds, "EchoTime"),
            repetition_time=_number(ds, "RepetitionTime"),
            inversion_time=_number(ds, "InversionTime"),
            # YES on any slice marks the series: one slice with a name in its pixels is enough.
            burned_in_annotation="YES" if any(_text(m[2], "BurnedInAnnotation").upper() == "YES" for m in members)
            else _text(ds, "BurnedInAnnotation").upper(),
            transfer_syntax=str(ds.file_meta.get("TransferSyntaxUID", "")) if hasattr(ds, "file_meta") else "",
            files=[m[1] for m in members],
            frame_of_reference=_text(ds, "FrameOfReferenceUID"),
        ))
    for s in series:
        if s.modality not in KNOWN_MODALITIES:
            log.info("modality %s not used, left out: %s", s.modality, s.label)
    series.sort(key=lambda s: (s.patient_id, s.study_date, s.study_uid, s.series_number or 0, s.series_uid))
    return series, problems
