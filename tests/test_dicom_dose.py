"""RT dose as DICOM (RTDOSE): what a planning system writes reads back as the same dose at the same place.

The importer puts a patient's planned dose on the MRI it imports; a dose read on a
wrong grid (a flipped frame order, a misread scaling, a relative dose taken for Gy)
would put the high dose on the wrong voxels, so each is checked against a known
dose, and pydicom's own RTDOSE files are read too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.data import get_testdata_file

from flame_private.data.dicom.dose import RT_DOSE_STORAGE, read_rtdose, write_rtdose
from flame_private.data.dicom.instance import new_instance
from flame_private.data.dicom.volume import SeriesError

PLAN = ("1.2.840.10008.5.1.4.1.1.481.8", "9.9")


def _dose_image(direction: np.ndarray, spacing: tuple[float, float, float]) -> sitk.Image:
    """A dose with a hot, off-centre sphere (60 Gy) and a gradient, so any flip or shift shows."""
    shape = (12, 14, 16)  # (frames, rows, columns)
    k, j, i = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    hot = (k - 4) ** 2 + (j - 9) ** 2 + (i - 5) ** 2 < 9
    data = (2.0 + 0.5 * i + 0.25 * k + 58.0 * hot).astype(np.float32)
    image = sitk.GetImageFromArray(data)
    image.SetSpacing(spacing)
    image.SetOrigin((-40.0, 25.0, -12.5))
    image.SetDirection(tuple(float(v) for v in direction.ravel()))
    return image


def _instance() -> pydicom.Dataset:
    ds = new_instance(RT_DOSE_STORAGE)
    ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = "P1", "1.2.3", "1.2.3.4"
    ds.FrameOfReferenceUID = "1.2.3.5"
    return ds


def _oblique_flipped() -> np.ndarray:
    """An oblique orientation whose third axis points against row x column (a left-handed voxel grid)."""
    a = np.radians(20.0)
    rot = np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])
    return rot @ np.diag([1.0, 1.0, -1.0])


@pytest.mark.parametrize("direction", [np.eye(3), _oblique_flipped()], ids=["axial", "oblique-flipped"])
def test_a_written_dose_reads_back_as_the_same_dose_at_the_same_place(direction, tmp_path: Path) -> None:
    original = _dose_image(direction, (2.5, 3.0, 4.0))
    path = tmp_path / "RD.dcm"
    write_rtdose(_instance(), original, path, dose_type="EFFECTIVE", plan=PLAN)
    dose = read_rtdose(path)
    assert (dose.dose_type, dose.summation, dose.frame_of_reference) == ("EFFECTIVE", "PLAN", "1.2.3.5")
    # Compared in patient space: the read grid may stack the frames the other way round.
    back = sitk.GetArrayFromImage(sitk.Resample(dose.image, original, sitk.Transform(), sitk.sitkNearestNeighbor))
    assert np.abs(back - sitk.GetArrayFromImage(original)).max() < 1e-4
    hot_mm = original.TransformIndexToPhysicalPoint((5, 9, 4))
    hot = dose.image.GetPixel(dose.image.TransformPhysicalPointToIndex(hot_mm))
    assert hot == pytest.approx(2.0 + 0.5 * 5 + 0.25 * 4 + 58.0, abs=1e-3)
    ds = pydicom.dcmread(path)
    assert ds.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID == "9.9"
    assert ds.FrameIncrementPointer == 0x3004000C


def test_pydicoms_rtdose_is_refused_as_relative_and_read_in_gy_once_its_units_are_gy(tmp_path: Path) -> None:
    source = Path(get_testdata_file("rtdose.dcm"))
    with pytest.raises(SeriesError, match="DoseUnits is 'RELATIVE'") as info:
        read_rtdose(source)
    assert info.value.path == source
    ds = pydicom.dcmread(source)
    for name in ("rtdose.dcm", "rtdose_rle.dcm"):  # uncompressed and RLE: the same dose
        copy = pydicom.dcmread(get_testdata_file(name))
        copy.DoseUnits = "GY"
        copy.save_as(tmp_path / name)
        dose = read_rtdose(tmp_path / name)
        data = sitk.GetArrayFromImage(dose.image)
        np.testing.assert_allclose(data, ds.pixel_array * float(ds.DoseGridScaling), rtol=1e-6)
        assert dose.image.GetSpacing() == pytest.approx((10.0, 10.0, 5.0))
        assert dose.image.GetOrigin() == pytest.approx([float(v) for v in ds.ImagePositionPatient])
        assert dose.summation == "BEAM"


def test_absolute_frame_positions_read_as_offsets_from_the_first_frame(tmp_path: Path) -> None:
    """Axial grids may list absolute z positions (the first equal to the position's z)."""
    original = _dose_image(np.eye(3), (2.0, 2.0, 3.0))
    path = tmp_path / "RD.dcm"
    ds = write_rtdose(_instance(), original, path, dose_type="PHYSICAL", plan=PLAN)
    z0 = float(ds.ImagePositionPatient[2])
    ds.GridFrameOffsetVector = [f"{z0 + 3.0 * k:.4f}" for k in range(int(ds.NumberOfFrames))]
    ds.save_as(path, enforce_file_format=True)
    assert read_rtdose(path).image.GetOrigin() == pytest.approx(original.GetOrigin())


@pytest.mark.parametrize(("change", "reason"), [
    ({"GridFrameOffsetVector": ["0", "3", "6", "10", *[f"{3 * k + 1}" for k in range(4, 12)]]},
     "uneven dose frame offsets"),
    ({"GridFrameOffsetVector": ["0", "0", *[f"{3 * k}" for k in range(2, 12)]]}, "two dose frames at one offset"),
    ({"GridFrameOffsetVector": ["0", "3"]}, "2 frame offset(s) for pixel data of shape (12, 14, 16)"),
    ({"DoseUnits": "RELATIVE"}, "DoseUnits is 'RELATIVE'"),
    ({"DoseType": "ERROR"}, "DoseType is 'ERROR'"),
    ({"DoseGridScaling": "0"}, "DoseGridScaling 0.0 is not a positive number"),
    ({"DoseGridScaling": "-1e-6"}, "DoseGridScaling -1e-06 is not a positive number"),
    ({"ImageOrientationPatient": ["1", "0", "0", "0", "1"]}, "ImageOrientationPatient 6"),
    ({"ImagePositionPatient": ["0", "0"]}, "ImagePositionPatient needs 3 values"),
    ({"ImageOrientationPatient": ["1", "0", "0", "1", "0", "0"]}, "not two orthogonal unit vectors"),
    ({"ImageOrientationPatient": ["0", "0", "0", "0", "0", "0"]}, "not two orthogonal unit vectors"),
    ({"PixelSpacing": ["0", "2"]}, "PixelSpacing [0.0, 2.0] is not positive"),
    # Absolute z positions on a feet-first grid (the standard allows them on head-first axial grids only):
    # read as offsets they would mirror the dose along z.
    ({"ImageOrientationPatient": ["-1", "0", "0", "0", "1", "0"],
      "GridFrameOffsetVector": [f"{-12.5 + 3 * k}" for k in range(12)]}, "the first GridFrameOffsetVector value"),
    ({"GridFrameOffsetVector": [f"{5 + 3 * k}" for k in range(12)]}, "the first GridFrameOffsetVector value is 5"),
])
def test_a_dose_grid_that_is_not_a_regular_stack_in_gy_is_refused_naming_the_file(change, reason,
                                                                                   tmp_path: Path) -> None:
    path = tmp_path / "RD.dcm"
    ds = write_rtdose(_instance(), _dose_image(np.eye(3), (2.0, 2.0, 3.0)), path, dose_type="PHYSICAL", plan=PLAN)
    for key, value in change.items():
        setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(SeriesError) as info:
        read_rtdose(path)
    assert info.value.path == path and reason in info.value.reason


def test_only_an_rt_dose_instance_is_written_as_one(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not an RT Dose Storage"):
        write_rtdose(new_instance("1.2.840.10008.5.1.4.1.1.4"), _dose_image(np.eye(3), (1.0, 1.0, 1.0)),
                     tmp_path / "x.dcm", dose_type="PHYSICAL", plan=PLAN)
    assert not (tmp_path / "x.dcm").exists()
