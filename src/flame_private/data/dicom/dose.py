"""RT dose (RTDOSE): one multi-frame DICOM instance <-> one 3-D dose image in Gy.

A treatment-planning system exports the planned dose as a grid of integers
scaled by ``DoseGridScaling``, its frames stacked along the slice normal at the
offsets of ``GridFrameOffsetVector``, in the frame of reference of the images it
was planned on. A dose grid that is not one regular stack (uneven or repeated
frame offsets), or whose units are not Gy (a relative dose), is refused with the
file and the reason: resampled silently it would put the wrong dose on the wrong
voxels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk

from flame_private.data.dicom.volume import SPACING_TOLERANCE_MM, SeriesError
from flame_private.data.records import DOSE_TYPES

RT_DOSE_STORAGE = "1.2.840.10008.5.1.4.1.1.481.2"
GRID_FRAME_OFFSET_VECTOR = 0x3004000C


class RTDose:
    """A read RT dose: the image (Gy, LPS) and what its header says about it."""

    def __init__(self, image: sitk.Image, dose_type: str, summation: str, frame_of_reference: str) -> None:
        self.image = image
        self.dose_type = dose_type
        """``PHYSICAL``, or ``EFFECTIVE`` (RBE-weighted: Gy(RBE), as particle plans are prescribed)."""
        self.summation = summation
        """``PLAN`` (the whole plan), ``BEAM``, ``FRACTION``, ...: the importer keeps the plan's dose."""
        self.frame_of_reference = frame_of_reference


def dose_header(path: Path) -> pydicom.Dataset:
    """The RTDOSE's header (no pixels), for choosing among a patient's doses."""
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as exc:  # noqa: BLE001 - named with the file
        raise SeriesError(path, f"unreadable RT dose ({exc})") from None


def read_rtdose(path: Path) -> RTDose:
    """The dose of the RTDOSE instance at PATH in Gy, on its own grid; raises SeriesError naming the file."""
    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:  # noqa: BLE001 - named with the file
        raise SeriesError(path, f"unreadable RT dose ({exc})") from None
    units = str(ds.get("DoseUnits", "")).upper()
    if units != "GY":
        raise SeriesError(path, f"DoseUnits is {units or 'missing'!r}, not GY: a relative dose cannot be used "
                                "as a dose in Gy")
    dose_type = str(ds.get("DoseType", "")).upper()
    if dose_type not in DOSE_TYPES:
        raise SeriesError(path, f"DoseType is {dose_type or 'missing'!r}: only a PHYSICAL or an EFFECTIVE "
                                "(RBE-weighted) dose is a dose to import")
    try:
        position = np.asarray([float(v) for v in ds.ImagePositionPatient])
        orientation = np.asarray([float(v) for v in ds.ImageOrientationPatient])
        row_mm, col_mm = (float(v) for v in ds.PixelSpacing)
        offsets = np.asarray([float(v) for v in ds.GridFrameOffsetVector])
        scaling = float(ds.DoseGridScaling)
    except (AttributeError, TypeError, ValueError) as exc:
        raise SeriesError(path, f"no usable dose grid (ImagePositionPatient, ImageOrientationPatient, PixelSpacing, "
                                f"GridFrameOffsetVector, DoseGridScaling): {exc}") from None
    if position.shape != (3,) or orientation.shape != (6,):
        raise SeriesError(path, "ImagePositionPatient needs 3 values and ImageOrientationPatient 6")
    row_dir, col_dir = orientation[:3], orientation[3:]
    if (abs(np.linalg.norm(row_dir) - 1) > 1e-3 or abs(np.linalg.norm(col_dir) - 1) > 1e-3
            or abs(float(np.dot(row_dir, col_dir))) > 1e-3):
        raise SeriesError(path, f"ImageOrientationPatient {orientation.tolist()} is not two orthogonal unit vectors")
    if not (row_mm > 0 and col_mm > 0):
        raise SeriesError(path, f"PixelSpacing {[row_mm, col_mm]} is not positive")
    if not (np.isfinite(scaling) and scaling > 0):
        raise SeriesError(path, f"DoseGridScaling {scaling} is not a positive number")
    normal = np.cross(row_dir, col_dir)
    if offsets.size and offsets[0] != 0.0:
        # The one other form the standard allows: absolute z positions, the first equal to the position's z, on
        # an axial grid (normal along +z); anything else would be read mirrored or shifted.
        if abs(offsets[0] - position[2]) > 1e-3 or np.abs(orientation - (1, 0, 0, 0, 1, 0)).max() > 1e-3:
            raise SeriesError(path, f"the first GridFrameOffsetVector value is {offsets[0]:g}: it must be 0 "
                                    "(offsets from ImagePositionPatient), or the position's z on an axial "
                                    "(1\\0\\0\\0\\1\\0) grid")
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - pydicom raises several types for a missing decoder
        raise SeriesError(path, f"cannot decode the dose pixels: {exc}") from None
    if pixels.ndim != 3 or pixels.shape[0] != offsets.size or offsets.size < 2:
        raise SeriesError(path, f"{offsets.size} frame offset(s) for pixel data of shape {pixels.shape}: a dose "
                                "grid needs one offset per frame and at least 2 frames")
    # Offsets run along the slice normal from the first frame's position; a grid that lists absolute
    # z positions (first offset = the position's z, axial grids only) reads the same relative to its first.
    relative = offsets - offsets[0]
    order = np.argsort(relative)
    along = relative[order]
    gaps = np.diff(along)
    if np.any(gaps < 1e-3):
        raise SeriesError(path, f"two dose frames at one offset ({along[int(np.argmin(gaps))]:.2f} mm)")
    if float(gaps.max() - gaps.min()) > SPACING_TOLERANCE_MM:
        raise SeriesError(path, f"uneven dose frame offsets ({gaps.min():.3f} to {gaps.max():.3f} mm apart): this "
                                "importer reads a regular dose grid only")
    volume = pixels[order].astype(np.float32) * np.float32(scaling)  # (frames, rows, columns)
    try:
        image = sitk.GetImageFromArray(volume)
        image.SetOrigin(tuple(float(v) for v in position + along[0] * normal))
        image.SetSpacing((col_mm, row_mm, float(np.median(gaps))))
        image.SetDirection(tuple(float(v) for v in np.column_stack([row_dir, col_dir, normal]).ravel()))
    except RuntimeError as exc:  # ITK's refusals of a geometry the checks above let through
        raise SeriesError(path, f"unusable dose grid geometry: {str(exc).strip().splitlines()[-1]}") from None
    return RTDose(image, dose_type, str(ds.get("DoseSummationType", "")).upper(),
                  str(ds.get("FrameOfReferenceUID", "")))


def write_rtdose(ds: pydicom.Dataset, image: sitk.Image, path: Path, *, dose_type: str,
                 plan: tuple[str, str]) -> pydicom.Dataset:
    """IMAGE (Gy, LPS) as the plan's total dose in DS, an RT Dose Storage instance that already carries its
    patient, study, series and frame of reference; written at PATH.

    PLAN is the (SOP class, SOP instance) UID of the RT plan the dose belongs to.
    """
    if str(ds.SOPClassUID) != RT_DOSE_STORAGE:
        raise ValueError(f"not an RT Dose Storage instance: SOP class {ds.SOPClassUID}")
    if dose_type not in DOSE_TYPES:
        raise ValueError(f"dose type {dose_type!r} is neither of {DOSE_TYPES}")
    volume = sitk.GetArrayFromImage(image).astype(np.float64)  # (frames, rows, columns)
    peak = float(volume.max()) if volume.size else 0.0
    scaling = max(peak, 1e-6) / (2**32 - 2)
    stored = np.rint(np.clip(volume, 0.0, None) / scaling).astype(np.uint32)
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    spacing = image.GetSpacing()
    row_dir, col_dir = direction[:, 0], direction[:, 1]
    # Frames are stacked along the image's third axis; offsets are signed along row x column.
    sign = float(np.sign(np.dot(np.cross(row_dir, col_dir), direction[:, 2]))) or 1.0
    ds.ImagePositionPatient = [f"{v:.4f}" for v in image.TransformIndexToPhysicalPoint((0, 0, 0))]
    ds.ImageOrientationPatient = [f"{v:.6f}" for v in (*row_dir, *col_dir)]
    ds.PixelSpacing = [f"{spacing[1]:.4f}", f"{spacing[0]:.4f}"]
    ds.SliceThickness = f"{spacing[2]:.4f}"
    ds.GridFrameOffsetVector = [f"{sign * k * spacing[2] + 0.0:.4f}" for k in range(stored.shape[0])]  # never -0
    ds.FrameIncrementPointer = GRID_FRAME_OFFSET_VECTOR
    ds.NumberOfFrames = stored.shape[0]
    ds.Rows, ds.Columns = stored.shape[1:]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 32, 32, 31, 0
    ds.DoseUnits = "GY"
    ds.DoseType = dose_type
    ds.DoseSummationType = "PLAN"
    ds.DoseGridScaling = f"{scaling:.10g}"
    ds.TissueHeterogeneityCorrection = "IMAGE"
    ref = pydicom.Dataset()  # required for a PLAN summation
    ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = plan
    ds.ReferencedRTPlanSequence = [ref]
    ds.InstanceNumber = 1
    ds.PixelData = stored.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return ds
