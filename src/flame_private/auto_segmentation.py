"""Drawing a baseline segmentation with the segmentation model, on the model grid or on the patient's scan.

Used where a case has none: by ``flame predict`` (on the model grid, where the
clinical models read it) and by ``flame data import`` (written as the site
folder's ``seg.nii.gz`` on the imported scan's grid, so the site can check it by
eye and train on it).  A checkpoint of another task, or one trained on another
grid than the models it feeds, is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from scipy.ndimage import affine_transform

from flame_private.config import DataConfig
from flame_private.data.errors import DataError
from flame_private.data.records import SEG_SOURCE_PATTERN, SEG_SOURCE_PREFIX, CaseRecord
from flame_private.data.transforms import preprocess
from flame_private.models.io import file_sha256, load_model
from flame_private.models.segmentation import segment


def drawing_model(source: str) -> str | None:
    """The SHA-256 of the segmentation model named in a ``Segmenter.source`` string (None if none is)."""
    if not re.fullmatch(SEG_SOURCE_PATTERN, source):
        return None
    return source.removeprefix(SEG_SOURCE_PREFIX).removesuffix(")")


@dataclass(frozen=True)
class Segmenter:
    """A loaded baseline segmentation model, with what identifies it."""

    model: torch.nn.Module
    data_config: DataConfig
    path: Path
    sha256: str

    @classmethod
    def load(cls, path: Path) -> Segmenter:
        if not Path(path).is_file():
            raise DataError(f"{path}: no baseline segmentation model there")
        task, model, _, data_config = load_model(path)
        if task != "segmentation":
            raise DataError(f"{path}: a {task} model, where the baseline segmentation model is needed")
        return cls(model, data_config, Path(path), file_sha256(path))

    @property
    def source(self) -> str:
        """How outputs name a segmentation it drew."""
        return f"{SEG_SOURCE_PREFIX}{self.sha256})"

    def on_model_grid(self, image: torch.Tensor) -> torch.Tensor:
        """Labels [1, D, H, W] of a preprocessed image [4, D, H, W] (the grid of ``data_config``)."""
        return segment(self.model, image)[None]

    def on_scan(self, record: CaseRecord) -> nib.Nifti1Image:
        """The labels of ``record``'s baseline on the grid of its T1ce file (nearest neighbour), uint8."""
        tensors = preprocess(record, self.data_config, with_affine=True)
        labels = self.on_model_grid(tensors["image"])[0].numpy()
        scan = nib.load(record.baseline.files.t1ce)
        if not isinstance(scan, nib.Nifti1Image):  # NIfTI-2 is a subclass
            raise DataError(f"{record.baseline.files.t1ce}: not a NIfTI image")
        # scan voxel -> RAS -> model-grid voxel
        to_model = np.linalg.inv(np.asarray(tensors["affine"], dtype=np.float64)) @ scan.affine
        shape = tuple(int(n) for n in scan.shape[:3])
        drawn = affine_transform(labels, to_model[:3, :3], offset=to_model[:3, 3], output_shape=shape, order=0,
                                 mode="constant", cval=0)
        return nib.Nifti1Image(drawn.astype(np.uint8), scan.affine)
