"""The baseline segmentation model's pieces: its dataset, its baseline, and drawing a segmentation on a scan."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from torch import nn

from flame_private.baselines import THRESHOLD_GRID, ThresholdSegmenter, intensity_thresholds
from flame_private.config import DataConfig
from flame_private.data.errors import DataError
from flame_private.data.layouts import LABEL_MAPS
from flame_private.data.records import CaseRecord, ImageFiles, TimepointRecord
from flame_private.evaluation import SegmentationScores, score_segmentation

RULE = ThresholdSegmenter(tumour=1.0, enhancing=1.5, necrotic=-0.5)


def _items(n: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Brain-like images with a tumour whose labels follow ``RULE`` exactly (z-scored units, zero outside)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        image = rng.normal(0.0, 0.3, (4, 16, 16, 16)).astype(np.float32)
        centre = rng.integers(5, 11, 3)
        r = np.sqrt(((np.indices((16, 16, 16)) - centre[:, None, None, None]) ** 2).sum(0))
        image[2:][:, r <= 4] += 2.0  # T2 and FLAIR: tumour and oedema
        image[1][r <= 2.5] += 2.5  # T1ce: enhancing rim and core
        image[1][r <= 1.2] -= 2.5  # ... but not the necrotic centre
        image[0][r <= 1.2] -= 1.5  # T1: dark necrosis
        image[:, 0] = 0.0  # outside the brain
        target = torch.from_numpy(RULE.predict(image)[None].astype(np.int64))
        out.append({"image": torch.from_numpy(image), "target": target})
    return out


def test_the_threshold_baseline_recovers_a_rule_the_labels_follow() -> None:
    train, test = _items(12), _items(6, seed=1)
    fitted = ThresholdSegmenter.fit(train)
    for item in test:
        drawn = fitted.predict(item["image"].numpy())
        assert (drawn == item["target"][0].numpy()).mean() > 0.99
    scores = intensity_thresholds(train, test, voxel_ml=1.0).metrics()
    assert scores["n"] == 6 and scores["dice_whole_tumour"] > 0.95 and scores["dice_enhancing"] > 0.9


def test_the_necrotic_threshold_is_the_grids_best_for_the_dice_the_evaluation_reports() -> None:
    """Fitted and scored the same way: a patient without a necrotic core counts only where necrosis is drawn.

    Most patients here have none, and their images have dark-T1 noise a rule cannot avoid: counting their
    "nothing where nothing" as Dice 1 would pick a rule that draws no necrosis at all, which the evaluation
    scores 0."""
    from dataclasses import replace

    items = _items(12, seed=4)
    rng = np.random.default_rng(5)
    for item in items[3:]:  # no necrotic core, but scattered dark T1 inside the tumour
        image, target = item["image"], item["target"]
        core = target[0] == 1
        image[1][core] += 2.5  # the centre enhances instead
        target[0][core] = 3
        tumour = target[0] > 0
        image[0][tumour] -= torch.from_numpy((rng.random(int(tumour.sum())) < 0.3) * 2.0).float()
    fitted = ThresholdSegmenter.fit(items)

    def necrotic_dice(rule: ThresholdSegmenter) -> float:
        cases = [[(rule.predict(i["image"].numpy()), i["target"][0].numpy(), i["target"][0].numpy())]
                 for i in items]
        dice = SegmentationScores.from_cases(cases, voxel_ml=1.0).metrics(ci=False)["dice_necrotic_core"]
        return float(dice) if dice is not None and not np.isnan(dice) else 0.0

    best = necrotic_dice(fitted)
    assert best > 0.2
    for threshold in THRESHOLD_GRID:
        assert necrotic_dice(replace(fitted, necrotic=float(threshold))) <= best + 1e-9, threshold


def test_the_threshold_baseline_cannot_score_labels_the_images_do_not_show() -> None:
    """Negative control: labels drawn at random places, the same intensities: the rule fits nothing."""
    train, test = _items(12), _items(6, seed=1)
    rng = np.random.default_rng(3)
    for item in [*train, *test]:
        item["target"] = torch.from_numpy(np.roll(item["target"].numpy(), int(rng.integers(5, 9)), axis=1))
    assert intensity_thresholds(train, test, voxel_ml=1.0).metrics()["dice_whole_tumour"] < 0.3


class _Oracle(nn.Module):
    """Logits of ``RULE`` applied to the preprocessed image: a segmentation model that is right by construction."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        labels = torch.stack([torch.from_numpy(RULE.predict(x.numpy()).astype(np.int64)) for x in image])
        return torch.nn.functional.one_hot(labels, 4).permute(0, 4, 1, 2, 3).float()


def test_a_perfect_model_scores_one_on_every_label_it_draws() -> None:
    scores = score_segmentation(_Oracle(), _items(4), voxel_ml=1.0).metrics()
    assert scores["dice_whole_tumour"] == 1.0 and scores["dice_enhancing"] == 1.0
    assert scores["rano_class_agreement"] == 1.0  # the drawn enhancing volume reads as the reference's


def test_a_drawn_segmentation_lands_on_the_scan_where_the_tumour_is(tmp_path: Path) -> None:
    """Scan on an oblique, anisotropic grid: the model works on its own grid, the labels come back on the scan's."""
    from flame_private.auto_segmentation import Segmenter

    shape = (40, 36, 30)
    idx = np.indices(shape).astype(np.float32)
    affine = np.array([[0.0, -4.5, 0.0, 80.0], [5.0, 0.0, 0.0, -90.0], [0.0, 0.0, 6.0, -70.0], [0, 0, 0, 1]])
    mm = np.einsum("ij,j...->i...", affine[:3, :3], idx) + affine[:3, 3, None, None, None]
    brain = ((mm[0] / 70) ** 2 + ((mm[1] + 10) / 80) ** 2 + ((mm[2] + 10) / 60) ** 2) <= 1
    tumour = np.sqrt((mm[0] - 20) ** 2 + (mm[1] + 20) ** 2 + (mm[2] + 5) ** 2) <= 22
    rng = np.random.default_rng(0)
    files = {}
    for name, lift in (("t1", 0.0), ("t1ce", 0.0), ("t2", 400.0), ("flair", 400.0)):
        vol = np.where(brain, 500.0 + lift * tumour + rng.normal(0, 5, shape), 0.0).astype(np.float32)
        files[name] = tmp_path / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(vol, affine), files[name])
    record = CaseRecord(patient_id="p", site_id="s", layout="flame", label_map=LABEL_MAPS["flame"],
                        timepoints=[TimepointRecord(name="baseline", day=0, files=ImageFiles(**files))])
    segmenter = Segmenter(_Oracle(), DataConfig(grid=32), tmp_path / "oracle.pt", "0" * 64)
    drawn = segmenter.on_scan(record)
    assert drawn.shape == shape and np.allclose(drawn.affine, affine) and drawn.get_data_dtype() == np.uint8
    labels = np.asarray(drawn.dataobj)
    dice = 2 * ((labels > 0) & tumour).sum() / ((labels > 0).sum() + tumour.sum())
    assert dice > 0.85  # the model grid is 6 mm: the edge voxels differ, the place does not
    assert segmenter.source == f"automatic (segmentation model sha256 {'0' * 64})"


def test_a_checkpoint_of_another_task_is_refused_as_the_segmentation_model(tmp_path: Path) -> None:
    from flame_private.auto_segmentation import Segmenter
    from flame_private.config import ModelConfig
    from flame_private.models import build_model
    from flame_private.models.io import save_model

    config = ModelConfig(response_channels=(4, 8), norm_groups=2)
    save_model(tmp_path / "response.pt", "response", build_model("response", config), config, DataConfig(), card={})
    with pytest.raises(DataError, match="response.pt: a response model, where the baseline segmentation model"):
        Segmenter.load(tmp_path / "response.pt")
    with pytest.raises(DataError, match="missing.pt: no baseline segmentation model there"):
        Segmenter.load(tmp_path / "missing.pt")


def test_the_segmentation_dataset_names_each_patient_without_a_baseline_segmentation(cohort_dir: Path) -> None:
    from flame_private.data.checks import load_site
    from flame_private.data.datasets import SegmentationDataset

    records = load_site(cohort_dir / "site-a", "flame", "site-a").records
    item = SegmentationDataset(records[:1], DataConfig(grid=24))[0]
    assert set(item) == {"image", "target"} and item["image"].shape == (4, 24, 24, 24)
    assert item["target"].shape == (1, 24, 24, 24)
    baseline = records[1].baseline
    unsegmented = records[1].model_copy(update={"timepoints": [
        baseline.model_copy(update={"files": baseline.files.model_copy(update={"seg": None})}),
        *records[1].followups]})
    with pytest.raises(DataError, match=f"{records[1].patient_id} \\(site site-a\\): no baseline segmentation"):
        SegmentationDataset([records[0], unsegmented], DataConfig(grid=24))


def test_a_segmentation_the_model_drew_is_never_a_target(cohort_dir: Path, caplog) -> None:
    """Learning from (or scoring against) the model's own drawing would teach it its own mistakes."""
    from flame_private.data.checks import load_site
    from flame_private.data.datasets import SegmentationDataset

    records = load_site(cohort_dir / "site-a", "flame", "site-a").records[:3]
    source = "automatic (segmentation model sha256 " + "ab" * 32 + ")"
    drawn = records[1].model_copy(update={"timepoints": [
        records[1].baseline.model_copy(update={"seg_source": source}), *records[1].followups]})
    with caplog.at_level("WARNING"):
        dataset = SegmentationDataset([records[0], drawn, records[2]], DataConfig(grid=24))
    assert [r.patient_id for r in dataset.records] == [records[0].patient_id, records[2].patient_id]
    assert dataset.left_out == [drawn.patient_id]
    assert f"{drawn.patient_id} (site site-a)" in caplog.text and "1 patient(s) left out" in caplog.text
    # A split of drawn segmentations only is empty (it scores n = 0); training on it is refused before any spend.
    only_drawn = SegmentationDataset([drawn], DataConfig(grid=24))
    assert len(only_drawn) == 0
    from flame_private.config import DPConfig, ModelConfig
    from flame_private.models import build_model
    from flame_private.training import TrainSettings, plan_training, train

    model = build_model("segmentation", ModelConfig(segmentation_channels=(4, 8), norm_groups=2))
    with pytest.raises(DataError, match="no patient to train the segmentation model on"):
        plan_training(model, "segmentation", only_drawn, TrainSettings(), DPConfig(noise_multiplier=1.0))
    with pytest.raises(DataError, match="no patient to train the segmentation model on"):
        train(model, "segmentation", only_drawn, TrainSettings(), None)


def test_the_segmentation_models_source_is_the_one_a_manifest_accepts() -> None:
    import re

    from flame_private.auto_segmentation import Segmenter, drawing_model
    from flame_private.data.records import SEG_SOURCE_PATTERN

    segmenter = Segmenter(model=nn.Identity(), data_config=DataConfig(grid=24), path=Path("s.pt"), sha256="0f" * 32)
    assert re.fullmatch(SEG_SOURCE_PATTERN, segmenter.source)
    assert drawing_model(segmenter.source) == "0f" * 32 and drawing_model("reference") is None


def test_a_label_no_training_patient_has_gets_a_threshold_that_draws_none_of_it() -> None:
    train = _items(8)
    for item in train:  # no enhancing anywhere: its voxels relabelled necrotic
        item["target"] = torch.where(item["target"] == 3, torch.ones_like(item["target"]), item["target"])
    fitted = ThresholdSegmenter.fit(train)
    assert not any((fitted.predict(item["image"].numpy()) == 3).any() for item in _items(4, seed=1))


def test_a_threshold_rule_fitted_on_no_patient_draws_nothing() -> None:
    rule = ThresholdSegmenter.fit([])
    assert not rule.predict(_items(1)[0]["image"].numpy()).any()
