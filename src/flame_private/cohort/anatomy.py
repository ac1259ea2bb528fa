"""Healthy-brain anatomy on the simulation grid, from the MNI ICBM152 2009 template.

nilearn ships the template inside its wheel, so the simulator needs no download.
The template is cropped to the brain's bounding box and each axis resampled to
the configured number of voxels, so the grid always spans the whole brain;
voxels are slightly anisotropic (the brain is longer front to back).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

MARGIN_MM = 4.0


@dataclass(frozen=True)
class Anatomy:
    """Tissue maps of one healthy brain on a ``grid``^3 RAS grid."""

    t1: np.ndarray
    """Template T1 intensity in [0, 1] (texture for the synthetic images)."""
    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    brain: np.ndarray
    """Boolean brain mask (parenchyma and ventricles)."""
    affine: np.ndarray
    """Voxel index -> RAS millimetres."""

    @property
    def spacing(self) -> tuple[float, float, float]:
        sx, sy, sz = (float(s) for s in np.abs(np.diag(self.affine)[:3]))
        return sx, sy, sz

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.brain.shape

    @property
    def voxel_ml(self) -> float:
        sx, sy, sz = self.spacing
        return sx * sy * sz / 1000.0

    @property
    def tissue(self) -> np.ndarray:
        """Where tumour cells can live: grey or white matter inside the brain."""
        return self.brain & ((self.gm + self.wm) > 0.25)


@functools.lru_cache(maxsize=4)
def load_anatomy(grid: int) -> Anatomy:
    """Load the MNI152 template and resample it to ``grid``^3 over the brain's bounding box."""
    from nilearn import datasets  # heavy import: only when anatomy is needed

    resolution = 1 if grid > 96 else 2
    t1_img = datasets.load_mni152_template(resolution=resolution)
    gm_img = datasets.load_mni152_gm_template(resolution=resolution)
    wm_img = datasets.load_mni152_wm_template(resolution=resolution)
    mask_img = datasets.load_mni152_brain_mask(resolution=resolution)
    src_affine = np.asarray(t1_img.affine, dtype=np.float64)
    src_spacing = np.abs(np.diag(src_affine)[:3])

    mask = np.asarray(mask_img.get_fdata(), dtype=np.float32) > 0.5
    idx = np.argwhere(mask)
    margin = np.ceil(MARGIN_MM / src_spacing).astype(int)
    lo = np.maximum(idx.min(0) - margin, 0)
    hi = np.minimum(idx.max(0) + 1 + margin, mask.shape)
    crop = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    extent_vox = hi - lo
    zoom = grid / extent_vox

    def resample(img_data: np.ndarray, order: int) -> np.ndarray:
        out = ndimage.zoom(np.asarray(img_data, dtype=np.float32)[crop], zoom, order=order, grid_mode=True,
                           mode="nearest")
        assert out.shape == (grid, grid, grid), out.shape
        return out

    t1 = np.clip(resample(t1_img.get_fdata(), 1), 0, None)
    t1 /= max(float(t1.max()), 1e-6)
    gm = np.clip(resample(gm_img.get_fdata(), 1), 0, 1)
    wm = np.clip(resample(wm_img.get_fdata(), 1), 0, 1)
    brain = resample(mask.astype(np.float32), 1) > 0.5
    brain = ndimage.binary_fill_holes(brain)
    gm *= brain
    wm *= brain
    total = gm + wm
    over = total > 1
    gm[over] /= total[over]
    wm[over] /= total[over]
    csf = np.where(brain, np.clip(1.0 - gm - wm, 0, 1), 0).astype(np.float32)

    new_spacing = src_spacing * extent_vox / grid
    affine = np.eye(4)
    affine[:3, :3] = np.diag(new_spacing)
    # Voxel centres of the grid_mode zoom: the first new voxel centre sits half a new voxel in.
    origin_src = src_affine[:3, :3] @ (lo - 0.5) + src_affine[:3, 3]
    affine[:3, 3] = origin_src + 0.5 * new_spacing
    for a in (t1, gm, wm, csf):
        a.setflags(write=False)
    brain.setflags(write=False)
    return Anatomy(t1=t1.astype(np.float32), gm=gm.astype(np.float32), wm=wm.astype(np.float32),
                   csf=csf, brain=brain, affine=affine)
