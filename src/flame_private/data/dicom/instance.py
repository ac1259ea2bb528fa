"""A new, empty DICOM instance of a storage class, with the file meta a reader needs."""

from __future__ import annotations

import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid


def new_instance(sop_class: str) -> pydicom.Dataset:
    """An instance of SOP_CLASS with a fresh SOP instance UID, to be written in explicit little endian."""
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UID(sop_class)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = str(generate_uid())
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds
