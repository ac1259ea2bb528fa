"""One preprocessing chain brings any layout's scans to RAS, the model grid and canonical labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from data_fixtures import BRATS2021_CODES, encode, phantom, write_nifti

from flame_private.config import DataConfig
from flame_private.data.layouts.brats2021 import LABEL_MAP as BRATS2021_MAP
from flame_private.data.records import CaseRecord, ImageFiles, TimepointRecord
from flame_private.data.transforms import build_transforms, preprocess

SPACING = (1.5, 1.25, 3.0)
"""Anisotropic voxels (mm): thick slices along the third axis."""
TUMOUR_RAS_MM = np.array([9.0, 7.0, 6.0])
"""Tumour centre in world (RAS+) millimetres: right, anterior and superior of the brain centre."""


def lps_case(tmp_path: Path) -> CaseRecord:
    """A BraTS-2021-coded case stored LPS with anisotropic spacing; world geometry known exactly."""
    shape = (36, 44, 16)
    # LPS: voxel i increases to the Left (-x), j to Posterior (-y), k to Superior (+z).
    affine = np.diag([-SPACING[0], -SPACING[1], SPACING[2], 1.0])
    centre_vox = (np.array(shape) - 1) / 2
    affine[:3, 3] = -affine[:3, :3] @ centre_vox  # brain centre at world origin
    idx = np.indices(shape).reshape(3, -1).astype(float)
    world = (affine[:3, :3] @ idx + affine[:3, 3:4]).T.reshape(*shape, 3)
    brain = ((world / np.array([22.0, 25.0, 20.0])) ** 2).sum(-1) <= 1.0
    r = np.linalg.norm(world - TUMOUR_RAS_MM, axis=-1)
    seg = np.zeros(shape, np.int16)
    seg[(r <= 8) & brain] = 2
    seg[(r <= 5.5) & brain] = 3
    seg[(r <= 3) & brain] = 1
    rng = np.random.default_rng(0)
    files = {}
    for k, name in enumerate(("t1", "t1ce", "t2", "flair")):
        vol = np.where(brain, 500.0 * (k + 1) + 60.0 * rng.standard_normal(shape) + 200.0 * (seg > 0), 0.0)
        files[name] = write_nifti(tmp_path / f"{name}.nii.gz", vol.astype(np.float32), affine)
    files["seg"] = write_nifti(tmp_path / "seg.nii.gz", encode(seg, BRATS2021_CODES), affine)
    return CaseRecord(
        patient_id="p",
        site_id="s",
        layout="brats2021",
        timepoints=[TimepointRecord(name="baseline", files=ImageFiles(**files))],
        label_map=BRATS2021_MAP,
    )


@pytest.fixture(scope="module")
def lps_out(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    record = lps_case(tmp_path_factory.mktemp("lps"))
    return preprocess(record, DataConfig(grid=24, spacing_mm=2.0))


def test_output_shapes_and_dtypes(lps_out: dict[str, torch.Tensor]) -> None:
    assert set(lps_out) == {"image", "seg"}
    assert lps_out["image"].shape == (4, 24, 24, 24) and lps_out["image"].dtype == torch.float32
    assert lps_out["seg"].shape == (1, 24, 24, 24) and lps_out["seg"].dtype == torch.int64
    assert type(lps_out["image"]) is torch.Tensor  # plain tensors, no MetaTensor baggage for opacus


def test_labels_are_canonical(lps_out: dict[str, torch.Tensor]) -> None:
    labels = set(torch.unique(lps_out["seg"]).tolist())
    assert labels == {0, 1, 2, 3}  # BraTS 4 (enhancing) became 3


def test_reoriented_to_ras(lps_out: dict[str, torch.Tensor]) -> None:
    # In RAS, voxel index grows towards Right, Anterior, Superior: the tumour (R, A, S of the
    # brain centre) must sit at higher indices than the brain's centre on every axis.
    brain = lps_out["image"][0] != 0
    tumour = lps_out["seg"][0] > 0
    brain_c = torch.nonzero(brain).float().mean(0)
    tumour_c = torch.nonzero(tumour).float().mean(0)
    expected = torch.tensor(TUMOUR_RAS_MM / 2.0, dtype=torch.float32)  # mm -> 2 mm voxels
    assert torch.all(tumour_c - brain_c > 1.5)
    assert torch.allclose(tumour_c - brain_c, expected, atol=1.0)


def test_resampled_to_model_spacing_and_centred(lps_out: dict[str, torch.Tensor]) -> None:
    brain = lps_out["image"][0] != 0
    coords = torch.nonzero(brain)
    extent = (coords.max(0).values - coords.min(0).values + 1).float()
    # Brain semi-axes 22, 25, 20 mm -> about 22, 25, 20 voxels across at 2 mm.
    assert torch.allclose(extent, torch.tensor([22.0, 24.0, 20.0]), atol=2.0)
    centre = coords.float().mean(0)
    assert torch.all((centre - 11.5).abs() <= 1.5)


def test_intensities_normalised_inside_the_brain(lps_out: dict[str, torch.Tensor]) -> None:
    image = lps_out["image"]
    for c in range(4):
        inside = image[c][image[c] != 0]
        assert abs(float(inside.mean())) < 1e-3
        assert abs(float(inside.std()) - 1.0) < 1e-2
    assert torch.all(image[:, lps_out["image"][0] == 0] == 0)  # background stays zero


def test_same_affine_images_share_the_grid_with_followup_target(tmp_path: Path) -> None:
    images, seg = phantom()
    base = {k: write_nifti(tmp_path / f"b_{k}.nii.gz", v) for k, v in images.items()}
    base["seg"] = write_nifti(tmp_path / "b_seg.nii.gz", seg)
    follow_seg = write_nifti(tmp_path / "f_seg.nii.gz", seg)
    record = CaseRecord(
        patient_id="p",
        site_id="s",
        layout="flame",
        timepoints=[
            TimepointRecord(name="baseline", day=0, files=ImageFiles(**base)),
            TimepointRecord(name="fu1", day=90, files=ImageFiles(**{**base, "seg": follow_seg})),
        ],
        label_map={0: 0, 1: 1, 2: 2, 3: 3},
    )
    out = preprocess(record, DataConfig(grid=16, spacing_mm=2.0), targets=record.followups)
    assert out["target_0"].shape == (1, 16, 16, 16)
    assert torch.equal(out["target_0"], out["seg"])  # identical seg -> identical voxels


def test_chain_is_built_once_per_label_map() -> None:
    cfg = DataConfig(grid=16, spacing_mm=2.0)
    assert build_transforms(cfg, {0: 0, 4: 3}) is build_transforms(cfg, {4: 3, 0: 0})
    assert build_transforms(cfg, {0: 0, 4: 3}) is not build_transforms(cfg, {0: 0, 3: 1})


def test_4d_singleton_image_goes_through_the_chain(tmp_path: Path) -> None:
    images, seg = phantom()
    files = {k: write_nifti(tmp_path / f"{k}.nii.gz", v[..., None]) for k, v in images.items()}
    files["seg"] = write_nifti(tmp_path / "seg.nii.gz", seg)
    record = CaseRecord(
        patient_id="p",
        site_id="s",
        layout="flame",
        timepoints=[TimepointRecord(name="baseline", files=ImageFiles(**files))],
        label_map={0: 0, 1: 1, 2: 2, 3: 3},
    )
    out = preprocess(record, DataConfig(grid=16, spacing_mm=2.0))
    assert out["image"].shape == (4, 16, 16, 16)
