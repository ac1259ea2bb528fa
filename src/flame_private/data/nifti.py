"""Open NIfTI files so that every failure becomes a named, readable reason.

nibabel reads the header eagerly and the voxels lazily, so a corrupt or truncated
``.nii.gz`` often loads fine and only fails (with ``EOFError``, ``zlib.error``,
``BadGzipFile`` ...) when the data is touched, deep inside a training loop.  These
helpers force that failure to happen here and translate it into a ``NiftiError``.
"""

from __future__ import annotations

import gzip
import logging
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError

from flame_private.data.errors import NiftiError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NiftiHeader:
    """What can be learnt about a NIfTI file without reading its voxels."""

    path: Path
    shape: tuple[int, int, int]
    affine: np.ndarray
    zooms: tuple[float, float, float]

    @property
    def voxel_volume_mm3(self) -> float:
        """Volume of one voxel, for converting label counts to mm^3."""
        return float(np.prod(self.zooms))


def _spatial_shape(path: Path, shape: tuple[int, ...]) -> tuple[int, int, int]:
    """A 3-D shape, accepting a 4-D image whose 4th axis is a singleton."""
    if len(shape) == 3:
        return (int(shape[0]), int(shape[1]), int(shape[2]))
    if len(shape) == 4 and shape[3] == 1:
        return (int(shape[0]), int(shape[1]), int(shape[2]))
    raise NiftiError(path, f"not a 3-D image: shape {tuple(int(s) for s in shape)} (expected X x Y x Z)")


def _load(path: Path) -> nib.Nifti1Image:
    if not path.exists():
        raise NiftiError(path, "file not found")
    if path.stat().st_size == 0:
        raise NiftiError(path, "empty file (0 bytes)")
    try:
        img = nib.load(str(path))
    except EOFError:
        raise NiftiError(path, "truncated file: the compressed stream ends inside the header") from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise NiftiError(path, f"corrupt gzip stream ({exc})") from None
    except ImageFileError as exc:
        raise NiftiError(path, f"not a readable NIfTI image ({exc})") from None
    except (OSError, ValueError) as exc:
        raise NiftiError(path, f"cannot read header ({type(exc).__name__}: {exc})") from None
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise NiftiError(path, f"not a NIfTI image (nibabel read it as {type(img).__name__})")
    return img


def _header(path: Path, img: nib.Nifti1Image) -> NiftiHeader:
    shape = _spatial_shape(path, img.shape)
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise NiftiError(path, "invalid affine (non-finite or singular voxel-to-world matrix)")
    if not path.name.endswith(".gz"):
        # Uncompressed: a truncated file is visible from its size alone.
        needed = int(img.header["vox_offset"]) + int(np.prod(img.shape)) * img.get_data_dtype().itemsize
        size = path.stat().st_size
        if size < needed:
            raise NiftiError(path, f"truncated file: {size} bytes, the header describes {needed}")
    return NiftiHeader(path=path, shape=shape, affine=affine, zooms=(zooms[0], zooms[1], zooms[2]))


def read_header(path: Path | str) -> NiftiHeader:
    """Shape, affine and voxel size of a 3-D NIfTI file, reading only its header (cheap)."""
    path = Path(path)
    return _header(path, _load(path))


def read_volume(path: Path | str) -> tuple[NiftiHeader, np.ndarray]:
    """Header and the full 3-D voxel array; fails on corrupt, truncated or non-finite data."""
    path = Path(path)
    img = _load(path)
    header = _header(path, img)
    try:
        data = np.asanyarray(img.dataobj)
    except EOFError:
        raise NiftiError(path, "truncated file: the compressed stream ends before the image data does") from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise NiftiError(path, f"corrupt gzip stream ({exc})") from None
    except (OSError, ValueError) as exc:
        raise NiftiError(path, f"truncated or corrupt image data ({type(exc).__name__}: {exc})") from None
    data = data.reshape(header.shape)
    if np.issubdtype(data.dtype, np.floating):
        bad = int(np.count_nonzero(~np.isfinite(data)))
        if bad:
            raise NiftiError(path, f"contains NaN/Inf values ({bad} voxels)")
    return header, data
