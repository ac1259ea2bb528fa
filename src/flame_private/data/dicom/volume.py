"""One DICOM series -> one 3-D image, with its geometry checked slice by slice.

A series that is not one regular stack of parallel slices (a missing or doubled
slice, slices of different thickness, a tilted slice) would be resampled into a
distorted volume without anyone noticing; it is refused with the file and the
reason instead. Compressed transfer syntaxes are decoded by pydicom's handlers
(RLE natively, JPEG-LS and JPEG 2000 through the installed plugins); a syntax
no handler decodes is named with the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk

from flame_private.data.errors import DataError

SPACING_TOLERANCE_MM = 0.01
"""Largest tolerated difference between consecutive slice gaps (scanner rounding is far below it)."""
ORIENTATION_TOLERANCE = 1e-4


class SeriesError(DataError):
    """A series cannot be turned into a volume; ``path`` is the offending file (or folder)."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


def _geometry(ds: pydicom.Dataset, path: Path) -> tuple[np.ndarray, np.ndarray, tuple[float, float], tuple[int, int]]:
    try:
        position = np.asarray([float(v) for v in ds.ImagePositionPatient])
        orientation = np.asarray([float(v) for v in ds.ImageOrientationPatient])
        row_mm, col_mm = (float(v) for v in ds.PixelSpacing)
        shape = (int(ds.Rows), int(ds.Columns))
    except (AttributeError, TypeError, ValueError) as exc:
        raise SeriesError(path, f"no usable slice geometry (ImagePositionPatient, ImageOrientationPatient, "
                                f"PixelSpacing, Rows, Columns): {exc}") from None
    if position.shape != (3,) or orientation.shape != (6,):
        raise SeriesError(path, "ImagePositionPatient needs 3 values and ImageOrientationPatient 6")
    return position, orientation, (row_mm, col_mm), shape


def _pixels(ds: pydicom.Dataset, path: Path) -> np.ndarray:
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # noqa: BLE001 - pydicom raises several types for a missing decoder
        name = getattr(syntax, "name", str(syntax))
        raise SeriesError(path, f"cannot decode the pixels (transfer syntax {name}): {exc}") from None
    if pixels.ndim != 2:
        raise SeriesError(path, f"expected one 2-D frame per file, got pixel data of shape {pixels.shape} "
                                "(multi-frame and colour images are not MR volumes this importer reads)")
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    return pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept)


def read_series(files: list[Path]) -> sitk.Image:
    """The slices of FILES stacked along their normal, in LPS patient coordinates.

    Raises SeriesError naming the file when the slices do not form one regular
    stack: fewer than 3 slices, differing orientation, pixel spacing or matrix,
    two slices at one position, or uneven gaps (a missing slice).
    """
    if not files:
        raise SeriesError(Path("."), "series without files")
    slices = []
    for path in files:
        try:
            ds = pydicom.dcmread(path)
        except Exception as exc:  # noqa: BLE001 - named with the file
            raise SeriesError(path, f"unreadable DICOM ({exc})") from None
        slices.append((path, ds, *_geometry(ds, path)))
    if len(slices) < 3:
        raise SeriesError(files[0].parent, f"only {len(slices)} slice(s): not a volume")
    first_path, _, _, orientation, spacing, shape = slices[0]
    for path, _, _, o, s, sh in slices[1:]:
        if np.max(np.abs(o - orientation)) > ORIENTATION_TOLERANCE:
            raise SeriesError(path, f"slice orientation {o.tolist()} differs from {first_path.name}'s "
                                    f"{orientation.tolist()}")
        if sh != shape or max(abs(a - b) for a, b in zip(s, spacing, strict=True)) > 1e-4:
            raise SeriesError(path, f"matrix {sh} / pixel spacing {s} differ from {first_path.name}'s "
                                    f"{shape} / {spacing}")
    row_dir, col_dir = orientation[:3], orientation[3:]
    normal = np.cross(row_dir, col_dir)
    slices.sort(key=lambda sl: float(np.dot(sl[2], normal)))
    along = np.asarray([float(np.dot(sl[2], normal)) for sl in slices])
    gaps = np.diff(along)
    if np.any(gaps < 1e-3):
        k = int(np.argmin(gaps))
        raise SeriesError(slices[k + 1][0], f"two slices at the same position ({along[k]:.2f} mm along the normal; "
                                            f"also {slices[k][0].name})")
    if np.max(gaps) - np.min(gaps) > SPACING_TOLERANCE_MM:
        k = int(np.argmax(np.abs(gaps - np.median(gaps))))
        raise SeriesError(slices[k + 1][0], f"inconsistent slice spacing: {gaps[k]:.3f} mm after "
                                            f"{slices[k][0].name} where the series has {np.median(gaps):.3f} mm "
                                            "(a missing slice or a mixed series)")
    for path, _, pos, *_ in slices[1:]:
        off = pos - slices[0][2]
        in_plane = off - np.dot(off, normal) * normal
        if np.linalg.norm(in_plane) > 0.01 * max(spacing) + 1e-3:
            raise SeriesError(path, "slice is shifted in-plane against the first slice (a gantry tilt or a "
                                    "mixed series), which this importer does not resample")
    volume = np.stack([_pixels(ds, path) for path, ds, *_ in slices])  # (slices, rows, columns)
    image = sitk.GetImageFromArray(volume)
    image.SetOrigin(tuple(float(v) for v in slices[0][2]))
    image.SetSpacing((spacing[1], spacing[0], float(np.median(gaps))))
    image.SetDirection(tuple(float(v) for v in np.column_stack([row_dir, col_dir, normal]).ravel()))
    return image


def from_ras(data: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """DATA (indexed x, y, z, as nibabel and MONAI hold it) with AFFINE (voxel -> RAS mm) as a SimpleITK
    image, whose physical space is LPS: where a NIfTI-side array meets the DICOM side."""
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(affine, dtype=np.float64)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(data).transpose(2, 1, 0)))
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetDirection(tuple(float(v) for v in (lps[:3, :3] / spacing).ravel()))
    image.SetOrigin(tuple(float(v) for v in lps[:3, 3]))
    return image
