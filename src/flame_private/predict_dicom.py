"""``flame predict --dicom-series``: a prediction back into the PACS as DICOM-SEG and an encapsulated PDF.

A radiation oncologist reads results in the viewer they use, beside the
patient's scans. The predicted follow-up tumour under photons, protons and carbon
ions becomes three DICOM-SEG series on the patient's baseline series (so a viewer
overlays them on it), and the response probabilities an encapsulated PDF in the
same study. Both carry the patient's identity copied from that series: they go
back into the hospital's own archive, never into the site folder or the
federation.

The case is the de-identified one in the site folder; the series is the
hospital's. Before anything is written, the pseudonym map must say that they are
the same patient.
"""

from __future__ import annotations

import io
import logging
import shutil
import tempfile
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.uid import generate_uid

from flame_private import __version__
from flame_private.config import MODALITIES
from flame_private.data.dicom.deidentify import PseudonymMap
from flame_private.data.dicom.headers import SeriesHeader, scan_dicom_folder
from flame_private.data.dicom.instance import new_instance
from flame_private.data.dicom.segmentation import write_seg
from flame_private.data.dicom.sequences import classify
from flame_private.data.dicom.volume import from_ras, read_series
from flame_private.data.errors import DataError, format_problems
from flame_private.predict import Prediction, plot_prediction

log = logging.getLogger(__name__)

ENCAPSULATED_PDF_STORAGE = "1.2.840.10008.5.1.4.1.1.104.1"
RESEARCH_NOTICE = ("Research use only. Not a medical device: these predictions come from models trained on the "
                   "federation's data, whose validation is in the project's docs/results.md.")


def _source_series(folder: Path) -> SeriesHeader:
    """The one MR series under FOLDER, or its T1ce when FOLDER holds a whole study."""
    series, problems = scan_dicom_folder(folder)
    if problems:
        raise DataError(format_problems(problems, f"{folder}: unusable files"))
    mr = [s for s in series if s.modality == "MR"]
    if len(mr) > 1:
        mr = [s for s in mr if classify(s) == "t1ce"]
    if len(mr) != 1:
        raise DataError(f"{folder}: expected one MR series (or one T1ce among a study's series), found {len(mr)}; "
                        "give the folder of the baseline series the segmentations are to be drawn on")
    if len({s.study_uid for s in series if s.modality == "MR"}) > 1:
        raise DataError(f"{folder}: holds more than one study; give the baseline study's series")
    return mr[0]


def _sorted_datasets(files: list[Path], reference: sitk.Image) -> list[pydicom.Dataset]:
    """The series' datasets in the slice order of ``read_series`` (along the normal)."""
    normal = np.asarray(reference.GetDirection()).reshape(3, 3)[:, 2]
    datasets = [pydicom.dcmread(f) for f in files]
    return sorted(datasets, key=lambda ds: float(np.dot([float(v) for v in ds.ImagePositionPatient], normal)))


def _report_pdf(pred: Prediction, figure: Path | None, models: dict[str, str]) -> bytes:
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    pdf.add_page()
    pdf.set_font("helvetica", "B", 14)
    pdf.cell(0, 9, "flame-private: treatment comparison", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("helvetica", "", 10)
    pdf.multi_cell(0, 5, f"Predicted response and tumour {pred.interval_days} days after the planning MRI, under "
                         "each radiotherapy modality.")
    if pred.baseline_seg_source != "reference":
        pdf.set_font("helvetica", "B", 10)
        pdf.multi_cell(0, 5, "The baseline tumour segmentation these predictions start from was drawn automatically "
                             "by the baseline segmentation model, not by a clinician: check it on the figure.")
        pdf.set_font("helvetica", "", 10)
    pdf.ln(2)
    enhancing = pred.enhancing_ml()
    with pdf.table(col_widths=(40, 50, 70), text_align=("LEFT", "RIGHT", "RIGHT")) as table:
        table.row(["modality", "P(responder)", f"enhancing tumour at day {pred.interval_days} (mL)"])
        for m in MODALITIES:
            table.row([m, f"{pred.probabilities[m]:.3f}", f"{enhancing[m]:.1f}"])
    pdf.ln(3)
    if figure is not None and figure.is_file():
        pdf.image(str(figure), w=180)
        pdf.ln(2)
    pdf.set_font("helvetica", "", 8)
    for name, digest in models.items():
        pdf.cell(0, 4, f"{name}: sha256 {digest}", new_x="LMARGIN", new_y="NEXT")
    pdf.cell(0, 4, f"flame-private {__version__}", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)
    pdf.set_font("helvetica", "B", 9)
    pdf.multi_cell(0, 5, RESEARCH_NOTICE)
    buffer = io.BytesIO()
    pdf.output(buffer)
    return buffer.getvalue()


def _encapsulated_pdf(document: bytes, like: pydicom.Dataset, series_number: int, out: Path) -> None:
    ds = new_instance(ENCAPSULATED_PDF_STORAGE)
    for key in ("SpecificCharacterSet", "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                "StudyInstanceUID", "StudyDate", "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName"):
        setattr(ds, key, like.get(key, ""))
    now = datetime.now()
    ds.Modality = "DOC"
    ds.SeriesInstanceUID = str(generate_uid())
    ds.SeriesNumber = series_number
    ds.SeriesDescription = "flame-private treatment comparison"
    ds.InstanceNumber = 1
    ds.ContentDate, ds.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.AcquisitionDateTime = now.strftime("%Y%m%d%H%M%S")
    ds.ConversionType = "WSD"
    ds.Manufacturer = "flame-private"
    ds.BurnedInAnnotation = "NO"  # the PDF names no patient; the header does
    ds.DocumentTitle = "flame-private treatment comparison"
    ds.ConceptNameCodeSequence = []
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = document + (b"\0" if len(document) % 2 else b"")
    ds.EncapsulatedDocumentLength = len(document)
    ds.save_as(out, enforce_file_format=True)


def write_prediction_dicom(pred: Prediction, series_folder: Path, out: Path, pseudonyms: Path, site_id: str,
                           models: dict[str, str] | None = None) -> list[Path]:
    """Three DICOM-SEG (one per modality) on the series in SERIES_FOLDER and one encapsulated PDF, in OUT.

    Refuses, before writing: a series whose patient the pseudonym map does not
    name as PRED's patient, or that is not from the study imported as the
    baseline; an OUT inside a site folder; a prediction without its grid's affine.
    """
    if pred.affine is None:
        raise DataError(f"{pred.patient_id}: the prediction has no grid affine; cannot place it on the scans")
    source = _source_series(series_folder)
    if not Path(pseudonyms).is_file():
        raise DataError(f"{pseudonyms}: no pseudonym map: it is what shows that the series and the case are one "
                        "patient (flame data import writes it beside the site folder)")
    names = PseudonymMap(pseudonyms, site_id)
    mapped = names.known(source.patient_id)
    if mapped != pred.patient_id:
        raise DataError(f"{series_folder}: this series is not patient {pred.patient_id}'s "
                        f"(the pseudonym map gives {mapped or 'no pseudonym'} for its patient); nothing written")
    if names.baseline_study(source.patient_id) != source.study_uid:
        raise DataError(f"{series_folder}: this series is not from the baseline study the case was imported from; "
                        "the prediction is placed on the baseline scan, so give a series of that study")
    out = Path(out)
    if out.exists():
        raise DataError(f"{out}: already exists; write into a new folder")
    site_folder = next((p for p in [out.resolve(), *out.resolve().parents] if (p / "manifest.json").is_file()), None)
    if site_folder is not None:
        raise DataError(f"{out}: inside the site folder {site_folder}; these files carry the patient's identity "
                        "and belong in the hospital's archive, not where the models train")
    reference = read_series(source.files)
    datasets = _sorted_datasets(source.files, reference)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.writing-", dir=out.parent))
    try:
        written = []
        for number, modality in enumerate(MODALITIES, start=1):
            labels = from_ras(pred.segmentations[modality].astype(np.uint8), pred.affine)
            on_series = sitk.Resample(labels, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0,
                                      sitk.sitkUInt8)
            path = staging / f"SEG-{modality}.dcm"
            write_seg(sitk.GetArrayFromImage(on_series), datasets, path, 7000 + number, "flame-private",
                      description=f"Predicted tumour day {pred.interval_days}, {modality}",
                      algorithm=("flame-private evolution model", __version__))
            written.append(out / path.name)
        # The figure drawn anew without the pseudonym: in the archive, beside the patient's name, it would link
        # the two for anyone who can read the study.
        figure = plot_prediction(replace(pred, patient_id="this patient"), staging / "figure.png")
        document = _report_pdf(pred, figure, models or {})
        figure.unlink()
        _encapsulated_pdf(document, datasets[0], 7010, staging / "treatment-comparison.dcm")
        written.append(out / "treatment-comparison.dcm")
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return written
