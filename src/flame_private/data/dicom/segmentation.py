"""Tumour segmentations as DICOM-SEG, read and written with highdicom.

A segment is mapped to the canonical labels (1 necrotic / non-enhancing core,
2 oedema, 3 enhancing tumour) by its label text, which is what viewers and
segmentation tools fill in; a label nothing matches is an error naming the file
and the label, never a guess.
"""

from __future__ import annotations

import re
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.sr.codedict import codes

from flame_private.data.dicom.volume import SeriesError

_LABEL_PATTERNS: tuple[tuple[int, str], ...] = (
    (1, r"necro|non[- ]?enhanc|\bncr\b|\bnet\b|core"),
    (3, r"enhanc|\bet\b"),
    (2, r"o?edema|\bed\b|flair|swelling|infiltrat"),
)
CANONICAL_SEGMENTS = {1: "Necrotic or non-enhancing core", 2: "Oedema", 3: "Enhancing tumour"}


def canonical_label(segment_label: str) -> int | None:
    """1, 2 or 3 for a segment's label text, or None when it names none of them (core before enhancing:
    "non-enhancing core" is 1)."""
    text = segment_label.strip().lower()
    for value, pattern in _LABEL_PATTERNS:
        if re.search(pattern, text):
            return value
    return None


def read_seg(path: Path, source_files: list[Path], reference: sitk.Image) -> sitk.Image:
    """The label map of the SEG at PATH on the geometry of its source series.

    SOURCE_FILES are the files of the series the SEG was drawn on, REFERENCE that
    series as a volume (``volume.read_series``): the frames are placed by the
    source instances they reference, so the labels land on the voxels they were
    drawn on whatever the SEG's own frame order.
    """
    try:
        seg = hd.seg.segread(path)
    except Exception as exc:  # noqa: BLE001 - named with the file
        raise SeriesError(path, f"not a readable DICOM-SEG ({exc})") from None
    mapping: dict[int, int] = {}
    for number in seg.get_segment_numbers():
        label = seg.get_segment_description(number).segment_label
        value = canonical_label(label)
        if value is None:
            raise SeriesError(path, f"segment {number} {label!r} names none of the tumour compartments "
                                    f"({', '.join(CANONICAL_SEGMENTS.values())})")
        mapping[number] = value
    # The source instances in the volume's slice order (read_series sorts along the normal).
    by_uid = {}
    for f in source_files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        by_uid[str(ds.SOPInstanceUID)] = np.asarray([float(v) for v in ds.ImagePositionPatient])
    normal = np.asarray(reference.GetDirection()).reshape(3, 3)[:, 2]
    ordered = sorted(by_uid, key=lambda uid: float(np.dot(by_uid[uid], normal)))
    try:
        frames = seg.get_pixels_by_source_instance(source_sop_instance_uids=ordered, combine_segments=False,
                                                   assert_missing_frames_are_empty=True)
    except Exception as exc:  # noqa: BLE001
        raise SeriesError(path, f"its frames do not match the series it references ({exc})") from None
    labels = np.zeros(frames.shape[:3], dtype=np.uint8)
    for index, number in enumerate(seg.get_segment_numbers()):
        labels[frames[..., index] > 0] = mapping[number]
    image = sitk.GetImageFromArray(labels)
    image.CopyInformation(reference)
    return image


def write_seg(labels: np.ndarray, source: list[pydicom.Dataset], out: Path, series_number: int,
              manufacturer: str, description: str = "Tumour segmentation",
              algorithm: tuple[str, str] | None = None) -> None:
    """LABELS ((slices, rows, columns), canonical values) as a SEG on the SOURCE slices, in their order.

    ALGORITHM (name, version) marks the segments as a model's output, as viewers
    show it; without it they are marked as drawn by hand.
    """
    present = [v for v in CANONICAL_SEGMENTS if np.any(labels == v)] or [1]
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=i + 1,
            segment_label=CANONICAL_SEGMENTS[v],
            segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=codes.SCT.Neoplasm,
            algorithm_type=(hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC if algorithm
                            else hd.seg.SegmentAlgorithmTypeValues.MANUAL),
            algorithm_identification=(hd.AlgorithmIdentificationSequence(
                name=algorithm[0], version=algorithm[1], family=codes.cid7162.ArtificialIntelligence)
                if algorithm else None),
        )
        for i, v in enumerate(present)
    ]
    stacked = np.zeros(labels.shape, dtype=np.uint8)
    for i, v in enumerate(present):
        stacked[labels == v] = i + 1
    seg = hd.seg.Segmentation(
        source_images=source, pixel_array=stacked, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=series_number,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer=manufacturer,
        manufacturer_model_name="flame-private", software_versions="flame-private",
        device_serial_number="0", series_description=description, omit_empty_frames=False,
    )
    seg.save_as(out)
