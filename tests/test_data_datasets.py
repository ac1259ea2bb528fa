"""Datasets hand the models fixed-shape tensors and refuse records that lack what a task needs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from data_fixtures import make_brats2021_site, make_flame_site, make_upenn_site, write_clinical_csv

import flame_private.data.datasets as datasets_module
from flame_private.config import MODALITIES, DataConfig
from flame_private.data import DataError, load_site
from flame_private.data.datasets import EvolutionDataset, ResponseDataset, encode_covariates, encode_treatment
from flame_private.data.records import Covariates

CFG = DataConfig(grid=16, spacing_mm=2.0)


@pytest.fixture(scope="module")
def flame_records(tmp_path_factory: pytest.TempPathFactory):
    return load_site(make_flame_site(tmp_path_factory.mktemp("flame"), n=3)).records


def test_encode_treatment_follows_modalities_order() -> None:
    for i, m in enumerate(MODALITIES):
        expected = torch.zeros(3)
        expected[i] = 1
        assert torch.equal(encode_treatment(m), expected)
    with pytest.raises(DataError, match="unknown treatment"):
        encode_treatment("xray")


def test_encode_covariates() -> None:
    cov = Covariates(age=75.0, sex="F", mgmt_methylated=True, resection="subtotal")
    out = encode_covariates(cov)
    assert out.dtype == torch.float32
    assert out.tolist() == [1.5, 1.0, 1.0, 0.0, 1.0, 0.0]
    cov = Covariates(age=50.0, sex="M", mgmt_methylated=False, resection="biopsy")
    assert encode_covariates(cov).tolist() == [-1.0, 0.0, 0.0, 0.0, 0.0, 1.0]


def test_response_items(flame_records) -> None:
    ds = ResponseDataset(flame_records, CFG)
    assert len(ds) == 3
    item = ds[1]
    assert item["image"].shape == (4, 16, 16, 16) and item["image"].dtype == torch.float32
    assert item["seg"].shape == (1, 16, 16, 16) and item["seg"].dtype == torch.int64
    assert item["treatment"].tolist() == [0.0, 1.0, 0.0]  # proton
    assert item["covariates"].shape == (6,) and item["covariates"].dtype == torch.float32
    assert item["label"].shape == () and item["label"].dtype == torch.float32 and item["label"].item() == 0.0
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    assert batch["image"].shape == (3, 4, 16, 16, 16) and batch["label"].shape == (3,)


def test_response_caches_preprocessing(flame_records, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = datasets_module.preprocess
    monkeypatch.setattr(datasets_module, "preprocess", lambda *a, **k: calls.append(1) or real(*a, **k))
    ds = ResponseDataset(flame_records[:1], CFG)
    first = ds[0]
    second = ds[0]
    assert len(calls) == 1
    assert torch.equal(first["image"], second["image"])


def test_response_refuses_records_without_labels(tmp_path: Path) -> None:
    records = load_site(make_brats2021_site(tmp_path, n=2)).records  # BraTS: no treatment or outcome
    with pytest.raises(DataError, match=r"BraTS2021_00000 \(site .*\): no treatment, covariates, responder label"):
        ResponseDataset(records, CFG)


def test_evolution_items_one_per_segmented_followup(flame_records, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = datasets_module.preprocess
    monkeypatch.setattr(datasets_module, "preprocess", lambda *a, **k: calls.append(1) or real(*a, **k))
    ds = EvolutionDataset(flame_records, CFG)
    assert len(ds) == 6  # 3 patients x (fu1, fu2)
    items = [ds[i] for i in range(len(ds))]
    assert len(calls) == 3  # one preprocessing pass per patient, shared by its follow-ups
    item = items[1]
    assert item["image"].shape == (4, 16, 16, 16) and item["seg"].shape == (1, 16, 16, 16)
    assert item["target"].shape == (1, 16, 16, 16) and item["target"].dtype == torch.int64
    assert item["interval"].shape == (1,) and item["interval"].item() == pytest.approx(165 / 365)
    assert items[0]["interval"].item() == pytest.approx(75 / 365)
    assert not torch.equal(item["target"], item["seg"])  # the tumour moved in the fixture
    assert set(torch.unique(item["target"]).tolist()) <= {0, 1, 2, 3}


def test_evolution_refuses_undated_followups(tmp_path: Path) -> None:
    root = make_upenn_site(tmp_path)
    write_clinical_csv(
        root,
        [{"patient_id": p, "treatment": "photon"} for p in ("UPENN-GBM-00001", "UPENN-GBM-00002")],
    )
    records = load_site(root).records
    with pytest.raises(DataError, match="UPENN-GBM-00001 followup"):
        EvolutionDataset(records, CFG)
