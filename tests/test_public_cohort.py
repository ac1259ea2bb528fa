"""The cohort writer's public layouts (cohort/layouts.py) and configs/cohort/public.yaml.

A small cohort (2 sites, 5 patients, 24^3) is written once in the flame layout and
once in each public layout from the same config and seed; each public site folder
is then loaded with the project's loader (layout detected) and must give back the
flame layout's patients field by field, down to the segmentation voxels.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, get_args

import nibabel as nib
import numpy as np
import pytest

from flame_private.cohort.writer import synthesise_cohort
from flame_private.config import CohortConfig, CohortLayout, ConfigError, Layout, load_config, parse_config
from flame_private.data.checks import load_site
from flame_private.data.layouts import detect_layout
from flame_private.data.records import CaseRecord

PUBLIC_YAML = Path(__file__).resolve().parents[1] / "configs" / "cohort" / "public.yaml"
STUDY_YAML = PUBLIC_YAML.parent / "study.yaml"

RAW: dict[str, Any] = {
    "name": "public-test",
    "seed": 2,  # a draw with every treatment, both responder labels, both sexes and MGMT states
    "grid": 24,
    "sites": [
        {"site_id": "pub-a", "n_patients": 3, "treatment_mix": {"photon": 0.4, "proton": 0.3, "carbon": 0.3}},
        {"site_id": "pub-b", "n_patients": 2, "treatment_mix": {"photon": 1.0},
         "scanner": {"orientation": "LPS", "spacing_factor": [1.0, 1.0, 1.5], "intensity_scale": 600}},
    ],
}
SITES = [s["site_id"] for s in RAW["sites"]]


def _cohort(tmp_path_factory: pytest.TempPathFactory, layout: str | None) -> Path:
    raw = RAW if layout is None else {**RAW, "layout": layout}
    out = tmp_path_factory.mktemp(layout or "flame") / "cohort"
    synthesise_cohort(parse_config(raw, CohortConfig), out, workers=1)
    return out


@pytest.fixture(scope="module")
def flame_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _cohort(tmp_path_factory, None)


@pytest.fixture(scope="module")
def lumiere_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _cohort(tmp_path_factory, "lumiere")


@pytest.fixture(scope="module")
def brats_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _cohort(tmp_path_factory, "brats2021")


def _truth(cohort: Path) -> list[dict[str, Any]]:
    return json.loads((cohort / "truth" / "counterfactuals.json").read_text(encoding="utf-8"))["patients"]


def _records(cohort: Path) -> dict[str, CaseRecord]:
    """Every site of the cohort through the project's loader, layout detected, keyed by patient id."""
    out: dict[str, CaseRecord] = {}
    for site in SITES:
        loaded = load_site(cohort / site)
        assert not loaded.skipped
        for rec in loaded.records:
            assert rec.site_id == site and rec.patient_id not in out
            out[rec.patient_id] = rec
    return out


def _pairs(flame_dir: Path, other_dir: Path) -> list[tuple[CaseRecord, CaseRecord]]:
    """(flame record, public-layout record) of the same simulated patient, matched through the truth."""
    flame, other = _records(flame_dir), _records(other_dir)
    truth_f, truth_o = _truth(flame_dir), _truth(other_dir)
    assert len(truth_f) == len(truth_o) == len(flame) == len(other) == 5
    pairs = []
    for tf, to in zip(truth_f, truth_o, strict=True):
        assert tf["site_id"] == to["site_id"]
        pairs.append((flame[tf["patient_id"]], other[to["patient_id"]]))
    return pairs


def _canonical_seg(path: Path, label_map: dict[int, int]) -> tuple[np.ndarray, np.ndarray]:
    img = nib.load(str(path))
    raw = np.asarray(img.dataobj).astype(np.int64)
    assert set(np.unique(raw).tolist()) <= set(label_map), path
    lut = np.zeros(max(label_map) + 1, dtype=np.int64)
    for src, canon in label_map.items():
        lut[src] = canon
    return lut[raw], img.affine


def _assert_same_study(f: CaseRecord, fi: int, o: CaseRecord, oi: int) -> None:
    ftp, otp = f.timepoints[fi], o.timepoints[oi]
    assert ftp.files.seg is not None and otp.files.seg is not None
    fseg, faff = _canonical_seg(ftp.files.seg, f.label_map)
    oseg, oaff = _canonical_seg(otp.files.seg, o.label_map)
    np.testing.assert_array_equal(oseg, fseg, err_msg=f"{o.patient_id} {otp.name}")
    np.testing.assert_allclose(oaff, faff, atol=1e-6)
    for seq, path in ftp.files.images().items():
        other = otp.files.images()[seq]
        np.testing.assert_array_equal(np.asarray(nib.load(str(other)).dataobj), np.asarray(nib.load(str(path)).dataobj),
                                      err_msg=f"{o.patient_id} {otp.name} {seq}")


def _assert_same_patient(f: CaseRecord, o: CaseRecord) -> None:
    assert f.treatment is not None and f.covariates is not None and f.responder is not None
    assert o.treatment == f.treatment, o.patient_id
    assert o.covariates == f.covariates, o.patient_id
    assert o.rano == f.rano and o.responder == f.responder, o.patient_id


def _ids(cohort: Path) -> list[str]:
    return [p["patient_id"] for p in _truth(cohort)]


# --------------------------------------------------------------------------- LUMIERE


def test_the_small_cohort_varies_every_field_the_round_trips_compare(flame_dir: Path) -> None:
    """A field that never varies here could be lost or swapped without the round trips noticing."""
    records = list(_records(flame_dir).values())
    assert {r.treatment for r in records} == {"photon", "proton", "carbon"}
    assert {r.responder for r in records} == {True, False}
    covariates = [r.covariates for r in records if r.covariates is not None]
    assert {c.sex for c in covariates} == {"F", "M"} and {c.mgmt_methylated for c in covariates} == {True, False}
    assert len({c.resection for c in covariates}) >= 2 and len({c.age for c in covariates}) == 5


def test_lumiere_layout_reads_back_as_the_flame_layout(flame_dir: Path, lumiere_dir: Path) -> None:
    for f, o in _pairs(flame_dir, lumiere_dir):
        assert o.layout == "lumiere"
        _assert_same_patient(f, o)
        # Baseline is the post-operative study; follow-ups at their week, in order.
        assert len(o.timepoints) == len(f.timepoints) == 4
        assert o.baseline.name == "week-000-2" and o.baseline.day == 0.0
        for ftp, otp in zip(f.followups, o.followups, strict=True):
            assert otp.name == f"week-{round(ftp.day / 7):03d}"
            assert otp.day is not None and ftp.day is not None and abs(otp.day - ftp.day) <= 3.5
        # Rated as LUMIERE is: post-op, then the response at the first evaluation only.
        assert [tp.rano for tp in o.timepoints] == ["Post-Op", None, f.rano, None]
        # Label codes inferred from measured_volumes_in_mm3.json: the canonical ones.
        assert o.label_map == {0: 0, 1: 1, 2: 2, 3: 3}
        for k in range(4):
            _assert_same_study(f, k, o, k)


def test_lumiere_truth_is_the_flame_truth_keyed_by_the_site_ids(flame_dir: Path, lumiere_dir: Path) -> None:
    assert _ids(lumiere_dir) == [f"Patient-{k:03d}" for k in range(1, 6)]  # numbered across the cohort
    for tf, to in zip(_truth(flame_dir), _truth(lumiere_dir), strict=True):
        for t in (tf, to):
            for o in t["outcomes"].values():
                o["segs"] = {name: Path(rel).name for name, rel in o["segs"].items()}
            t.pop("patient_id")
        assert to == tf
    for pid in _ids(lumiere_dir)[:3]:
        assert (lumiere_dir / "truth" / "pub-a" / pid / "evaluation_carbon_seg.nii.gz").is_file()


def test_lumiere_site_holds_the_lumiere_files(lumiere_dir: Path) -> None:
    site = lumiere_dir / "pub-a"
    assert sorted(p.name for p in site.iterdir()) == ["Imaging", "LUMIERE-ExpertRating-synthetic.csv", "clinical.csv"]
    study = site / "Imaging" / "Patient-001" / "week-000-2"
    assert sorted(p.name for p in study.iterdir()) == ["CT1.nii.gz", "DeepBraTumIA-segmentation", "FLAIR.nii.gz",
                                                      "T1.nii.gz", "T2.nii.gz"]
    seg_dir = study / "DeepBraTumIA-segmentation" / "atlas" / "segmentation"
    volumes = json.loads((seg_dir / "measured_volumes_in_mm3.json").read_text(encoding="utf-8"))
    assert set(volumes) == {"Necrotic_NonEnhancing", "Edema_Compartment", "Enhancing_Core"}
    summary = json.loads((lumiere_dir / "cohort.json").read_text(encoding="utf-8"))
    assert summary["config"]["layout"] == "lumiere"


# --------------------------------------------------------------------------- BraTS 2021


def test_brats2021_layout_reads_back_as_the_flame_baseline(flame_dir: Path, brats_dir: Path) -> None:
    enhancing = 0
    for f, o in _pairs(flame_dir, brats_dir):
        assert o.layout == "brats2021"
        _assert_same_patient(f, o)
        assert [tp.name for tp in o.timepoints] == ["baseline"]
        _assert_same_study(f, 0, o, 0)
        assert o.baseline.files.seg is not None
        raw = np.asarray(nib.load(str(o.baseline.files.seg)).dataobj)
        assert 3 not in raw  # BraTS 2021 codes enhancing tumour 4
        enhancing += int((raw == 4).sum())
    assert enhancing > 0
    assert _ids(brats_dir) == [f"BraTS2021_{k:05d}" for k in range(5)]
    assert sorted(p.name for p in (brats_dir / "pub-b").iterdir()) == ["BraTS2021_00003", "BraTS2021_00004",
                                                                       "clinical.csv"]


# --------------------------------------------------------------------------- detection and config


@pytest.mark.parametrize("site", SITES)
def test_public_layouts_are_detected(flame_dir: Path, lumiere_dir: Path, brats_dir: Path, site: str) -> None:
    assert detect_layout(flame_dir / site) == "flame"
    assert detect_layout(lumiere_dir / site) == "lumiere"
    assert detect_layout(brats_dir / site) == "brats2021"


def test_cohort_layouts_are_layouts_with_a_reader() -> None:
    assert set(get_args(CohortLayout)) == {"flame", "lumiere", "brats2021"}
    assert set(get_args(CohortLayout)) <= set(get_args(Layout))
    assert parse_config(RAW, CohortConfig).layout == "flame"


def test_an_unknown_layout_is_refused_naming_the_field() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({**RAW, "layout": "bids"}, CohortConfig, "cohort.yaml")
    text = str(err.value)
    assert "cohort.yaml" in text and "  layout:" in text and "'bids'" in text
    assert "'lumiere'" in text and "'brats2021'" in text


def test_public_yaml_is_a_lumiere_cohort_apart_from_the_study() -> None:
    public = load_config(PUBLIC_YAML, CohortConfig)
    study = load_config(STUDY_YAML, CohortConfig)
    assert public.layout == "lumiere" and public.grid == study.grid == 32
    assert len(public.sites) == 2 and 140 <= sum(s.n_patients for s in public.sites) <= 180
    assert public.seed != study.seed
    assert not {s.site_id for s in public.sites} & {s.site_id for s in study.sites}
    assert all(s.treatment_mix == {"photon": 1.0} for s in public.sites)
    study_scanners = {s.scanner for s in study.sites}
    assert all(s.scanner not in study_scanners for s in public.sites)


def test_an_explicit_flame_layout_writes_the_same_bytes_as_the_default(tmp_path: Path, digests) -> None:
    one = {**RAW, "sites": [{**RAW["sites"][0], "n_patients": 1}]}
    synthesise_cohort(parse_config(one, CohortConfig), tmp_path / "default", workers=1)
    synthesise_cohort(parse_config({**one, "layout": "flame"}, CohortConfig), tmp_path / "explicit", workers=1)
    assert digests(tmp_path / "explicit") == digests(tmp_path / "default")
