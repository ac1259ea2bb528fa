"""Each layout reader turns its dataset's exact file naming into the same case records."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from data_fixtures import (
    flame_patient,
    make_brats2021_site,
    make_brats2023_site,
    make_flame_site,
    make_lumiere_site,
    make_upenn_site,
    write_clinical_csv,
    write_manifest,
)

from flame_private.data import DataError, Problem
from flame_private.data.layouts import READERS, detect_layout, read_site
from flame_private.data.layouts.brats2021 import read_brats2021
from flame_private.data.layouts.brats2023 import read_brats2023
from flame_private.data.layouts.flame import read_flame
from flame_private.data.layouts.lumiere import infer_label_map, read_lumiere
from flame_private.data.layouts.upenn import read_upenn
from flame_private.data.records import Covariates


def test_registry_covers_every_layout() -> None:
    assert set(READERS) == {"flame", "brats2021", "brats2023", "lumiere", "upenn"}


@pytest.mark.parametrize(
    ("maker", "layout"),
    [
        (make_flame_site, "flame"),
        (make_brats2021_site, "brats2021"),
        (make_brats2023_site, "brats2023"),
        (make_lumiere_site, "lumiere"),
        (make_upenn_site, "upenn"),
    ],
)
def test_detect_layout(tmp_path: Path, maker, layout: str) -> None:
    assert detect_layout(maker(tmp_path)) == layout


def test_detect_layout_refuses_an_unknown_folder(tmp_path: Path) -> None:
    (tmp_path / "scans").mkdir()
    with pytest.raises(DataError, match="cannot tell the dataset layout"):
        detect_layout(tmp_path)


# --------------------------------------------------------------------------- flame


def test_flame_reads_manifest_with_relative_paths_and_metadata(tmp_path: Path) -> None:
    records = read_flame(make_flame_site(tmp_path, n=3), "site-a")
    assert [r.patient_id for r in records] == ["site-a-000", "site-a-001", "site-a-002"]
    rec = records[1]
    assert rec.layout == "flame" and rec.site_id == "site-a"
    assert rec.treatment == "proton"
    assert rec.covariates == Covariates(age=55.0, sex="M", mgmt_methylated=False, resection="subtotal")
    assert (rec.rano, rec.responder) == ("PD", False)
    assert rec.baseline.name == "baseline" and rec.baseline.day == 0
    assert [(t.name, t.day) for t in rec.followups] == [("fu1", 75), ("fu2", 165)]
    assert rec.baseline.files.t1ce == tmp_path / "site-a-001/baseline/t1ce.nii.gz"
    assert rec.baseline.files.seg == tmp_path / "site-a-001/baseline/seg.nii.gz"
    assert rec.label_map == {0: 0, 1: 1, 2: 2, 3: 3}


def test_flame_timepoints_are_ordered_by_day(tmp_path: Path) -> None:
    entry = flame_patient(tmp_path, "p1")
    entry["timepoints"] = entry["timepoints"][::-1]
    write_manifest(tmp_path, [entry])
    (rec,) = read_flame(tmp_path, "site-a")
    assert [t.name for t in rec.timepoints] == ["baseline", "fu1", "fu2"]


def test_flame_unknown_treatment_is_reported_not_crashed(tmp_path: Path) -> None:
    write_manifest(tmp_path, [flame_patient(tmp_path, "p1", treatment="xray")])
    with pytest.raises(DataError, match=r"p1: .*manifest.json: unknown treatment 'xray'"):
        read_flame(tmp_path, "site-a")
    problems: list[Problem] = []
    (rec,) = read_flame(tmp_path, "site-a", problems)
    assert rec.treatment is None
    assert [(p.patient_id, p.path.name) for p in problems] == [("p1", "manifest.json")]


def test_flame_ignores_extra_patient_and_file_keys(tmp_path: Path) -> None:
    entry = flame_patient(tmp_path, "p1", kps=70, idh="wildtype")
    entry["timepoints"][0]["files"]["adc"] = "p1/baseline/adc.nii.gz"
    write_manifest(tmp_path, [entry])
    (rec,) = read_flame(tmp_path, "site-a")
    assert rec.patient_id == "p1" and rec.baseline.files.seg is not None


def test_flame_reads_the_dose_with_its_type_and_the_segmentation_with_who_drew_it(tmp_path: Path) -> None:
    drawn = "automatic (segmentation model sha256 " + "a1" * 32 + ")"
    entry = flame_patient(tmp_path, "p1")
    entry["timepoints"][0] |= {"dose_type": "EFFECTIVE", "seg_source": drawn}
    entry["timepoints"][0]["files"]["dose"] = "p1/baseline/dose.nii.gz"
    write_manifest(tmp_path, [entry])
    (rec,) = read_flame(tmp_path, "site-a")
    assert rec.baseline.files.dose == tmp_path / "p1/baseline/dose.nii.gz" and rec.baseline.dose_type == "EFFECTIVE"
    assert rec.baseline.seg_source == drawn and rec.followups[0].seg_source is None


@pytest.mark.parametrize(("change", "reason"), [
    ({"dose_type": None}, "a dose file without dose_type"),
    ({"dose_type": "RBE"}, "dose_type 'RBE' is neither PHYSICAL (Gy) nor EFFECTIVE"),
    ({"seg_source": "manual"}, "seg_source 'manual' is not 'automatic (segmentation model sha256"),
])
def test_flame_a_dose_of_unknown_unit_or_an_unknown_seg_source_is_a_problem(tmp_path: Path, change: dict,
                                                                           reason: str) -> None:
    entry = flame_patient(tmp_path, "p1")
    entry["timepoints"][0] |= {"dose_type": "PHYSICAL", **change}
    entry["timepoints"][0]["files"]["dose"] = "p1/baseline/dose.nii.gz"
    write_manifest(tmp_path, [entry])
    problems: list[Problem] = []
    read_flame(tmp_path, "site-a", problems)
    assert [p.patient_id for p in problems] == ["p1"] and reason in problems[0].reason, problems


def test_flame_a_follow_up_marked_as_drawn_is_a_problem(tmp_path: Path) -> None:
    """Follow-ups are the evolution model's targets: a model's drawing there would be learnt as truth."""
    entry = flame_patient(tmp_path, "p1")
    entry["timepoints"][1]["seg_source"] = "automatic (segmentation model sha256 " + "a1" * 32 + ")"
    write_manifest(tmp_path, [entry])
    with pytest.raises(DataError, match="a follow-up's segmentation marked as drawn"):
        read_flame(tmp_path, "site-a")


def test_flame_bad_covariates_name_the_field(tmp_path: Path) -> None:
    write_manifest(tmp_path, [flame_patient(tmp_path, "p1", sex="X")])
    problems: list[Problem] = []
    read_flame(tmp_path, "site-a", problems)
    assert len(problems) == 1 and "sex" in problems[0].reason and "'X'" in problems[0].reason


# --------------------------------------------------------------------------- BraTS


def test_brats2021_one_case_per_folder(tmp_path: Path) -> None:
    records = read_brats2021(make_brats2021_site(tmp_path, n=2), "s")
    assert [r.patient_id for r in records] == ["BraTS2021_00000", "BraTS2021_00001"]
    files = records[0].baseline.files
    assert files.t1ce.name == "BraTS2021_00000_t1ce.nii.gz"
    assert files.seg is not None and files.seg.name == "BraTS2021_00000_seg.nii.gz"
    assert records[0].label_map == {0: 0, 1: 1, 2: 2, 4: 3}
    assert records[0].treatment is None and records[0].covariates is None


def test_brats2023_groups_timepoints_of_one_patient(tmp_path: Path) -> None:
    make_brats2023_site(tmp_path, studies=((0, 1), (0, 0), (0, 2), (7, 0)))
    records = read_brats2023(tmp_path, "s")
    assert [r.patient_id for r in records] == ["BraTS-GLI-00000", "BraTS-GLI-00007"]
    assert [t.name for t in records[0].timepoints] == ["000", "001", "002"]
    assert records[0].baseline.files.t2.name == "BraTS-GLI-00000-000-t2w.nii.gz"
    assert records[0].followups[0].files.flair.name == "BraTS-GLI-00000-001-t2f.nii.gz"
    assert records[0].label_map[3] == 3 and records[0].label_map[4] == 0  # resection cavity is not tumour


# --------------------------------------------------------------------------- UPENN


def test_upenn_baseline_and_followup(tmp_path: Path) -> None:
    records = read_upenn(make_upenn_site(tmp_path), "s")
    by_id = {r.patient_id: r for r in records}
    assert set(by_id) == {"UPENN-GBM-00001", "UPENN-GBM-00002"}
    one = by_id["UPENN-GBM-00001"]
    assert [t.name for t in one.timepoints] == ["baseline", "followup"]
    assert one.baseline.files.t1ce.name == "UPENN-GBM-00001_11_T1GD.nii.gz"
    assert one.followups[0].files.seg == tmp_path / "images_segm/UPENN-GBM-00001_21_segm.nii.gz"
    two = by_id["UPENN-GBM-00002"]
    assert two.baseline.files.seg == tmp_path / "automated_segm/UPENN-GBM-00002_11_automated_approx_segm.nii.gz"
    assert one.label_map == {0: 0, 1: 1, 2: 2, 4: 3}


# --------------------------------------------------------------------------- LUMIERE


def test_lumiere_baseline_is_first_postop_and_ratings_give_response(tmp_path: Path) -> None:
    records = read_lumiere(make_lumiere_site(tmp_path), "s")
    one, two = records
    assert one.patient_id == "Patient-001"
    assert [t.name for t in one.timepoints] == ["week-000-2", "week-012", "week-044"]  # pre-op dropped
    assert [t.day for t in one.timepoints] == [0.0, 84.0, 308.0]
    assert [t.rano for t in one.timepoints] == ["Post-Op", "PR", "PD"]
    assert one.baseline.files.t1ce.name == "CT1.nii.gz"
    assert one.baseline.files.seg is not None and one.baseline.files.seg.name == "seg_mask.nii.gz"
    assert (one.rano, one.responder) == ("PR", True)
    assert (two.rano, two.responder) == ("PD", False)


def test_lumiere_accepts_root_pointing_at_imaging(tmp_path: Path) -> None:
    make_lumiere_site(tmp_path)
    records = read_lumiere(tmp_path / "Imaging", "s")  # ratings CSV sits next to Imaging/
    assert [r.responder for r in records] == [True, False]


def test_lumiere_skips_baseline_without_all_sequences(tmp_path: Path) -> None:
    make_lumiere_site(tmp_path)
    (tmp_path / "Imaging/Patient-001/week-000-2/FLAIR.nii.gz").unlink()
    one = read_lumiere(tmp_path, "s")[0]
    assert one.baseline.name == "week-012" and one.baseline.day == 0.0
    assert [t.day for t in one.followups] == [224.0]


def test_lumiere_infers_swapped_deepbratumia_codes_from_volumes(tmp_path: Path) -> None:
    # Masks store enhancing as 1 and necrosis as 3: the JSON volumes reveal it.
    make_lumiere_site(tmp_path, codes={0: 0, 1: 3, 2: 2, 3: 1})
    for rec in read_lumiere(tmp_path, "s"):
        assert rec.label_map == {0: 0, 1: 3, 2: 2, 3: 1}


def test_lumiere_without_json_uses_documented_default(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    make_lumiere_site(tmp_path, volumes_json=False)
    with caplog.at_level(logging.INFO):
        records = read_lumiere(tmp_path, "s")
    assert all(r.label_map == {0: 0, 1: 1, 2: 2, 3: 3} for r in records)
    assert "documented DeepBraTumIA codes" in caplog.text


def test_lumiere_json_that_matches_no_assignment_is_a_problem(tmp_path: Path) -> None:
    make_lumiere_site(tmp_path, json_scale=3.0)
    problems: list[Problem] = []
    read_lumiere(tmp_path, "s", problems)
    assert problems and all("do not match measured_volumes_in_mm3.json" in p.reason for p in problems)
    assert problems[0].path.name == "seg_mask.nii.gz"


def test_infer_label_map_completes_a_bijection() -> None:
    # Only two compartments present (no oedema): codes 1 and 3 swapped.
    mapping = infer_label_map({0: 1e5, 1: 300.0, 3: 50.0},
                              {"Enhancing_Core": 300, "Necrotic_NonEnhancing": 50, "Edema_Compartment": 0}, 1.0)
    assert mapping == {0: 0, 1: 3, 3: 1, 2: 2}
    assert infer_label_map({1: 300.0}, {"Enhancing_Core": 900, "Necrotic_NonEnhancing": 0, "Edema_Compartment": 0},
                           1.0) is None


# --------------------------------------------------------------------------- clinical.csv


def test_clinical_csv_supplies_treatment_covariates_and_outcome(tmp_path: Path) -> None:
    make_brats2021_site(tmp_path, n=2)
    write_clinical_csv(
        tmp_path,
        [
            {"patient_id": "BraTS2021_00000", "treatment": "proton", "age": 71, "sex": "m", "mgmt_methylated": "yes",
             "resection": "biopsy", "rano": "SD", "responder": "true"},
            {"patient_id": "BraTS2021_00001", "treatment": "carbon", "age": 44.5, "sex": "F", "mgmt_methylated": 0,
             "resection": "gross_total"},
        ],
    )
    a, b = read_site(tmp_path, "brats2021")
    assert a.treatment == "proton" and (a.rano, a.responder) == ("SD", True)
    assert a.covariates == Covariates(age=71, sex="M", mgmt_methylated=True, resection="biopsy")
    assert b.treatment == "carbon" and b.responder is None
    assert b.covariates == Covariates(age=44.5, sex="F", mgmt_methylated=False, resection="gross_total")


def test_clinical_csv_bad_values_name_patient_and_column(tmp_path: Path) -> None:
    make_upenn_site(tmp_path)
    write_clinical_csv(
        tmp_path,
        [
            {"patient_id": "UPENN-GBM-00001", "treatment": "xray", "age": "old", "sex": "F", "mgmt_methylated": "maybe",
             "resection": "partial"},
            {"patient_id": "UPENN-GBM-00002", "treatment": "photon", "age": 60, "sex": "F", "mgmt_methylated": "no",
             "resection": "subtotal"},
        ],
    )
    problems: list[Problem] = []
    records = read_upenn(tmp_path, "s", problems)
    reasons = [p.reason for p in problems]
    assert all(p.patient_id == "UPENN-GBM-00001" and p.path.name == "clinical.csv" for p in problems)
    assert any(r.startswith("column treatment: unknown treatment 'xray'") for r in reasons)
    assert any(r.startswith("column age: not a number") for r in reasons)
    assert any(r.startswith("column mgmt_methylated:") for r in reasons)
    assert any(r.startswith("column resection:") for r in reasons)
    assert {r.patient_id: r.treatment for r in records} == {"UPENN-GBM-00001": None, "UPENN-GBM-00002": "photon"}
    with pytest.raises(DataError, match="column treatment"):
        read_upenn(tmp_path, "s")


def test_clinical_csv_missing_column_is_a_site_problem(tmp_path: Path) -> None:
    make_brats2021_site(tmp_path, n=1)
    (tmp_path / "clinical.csv").write_text("patient_id,treatment\nBraTS2021_00000,photon\n")
    problems: list[Problem] = []
    read_brats2021(tmp_path, "s", problems)
    assert problems[0].patient_id is None and "missing column(s): age" in problems[0].reason


def test_flame_manifest_is_json(tmp_path: Path) -> None:
    """Guard for the fixture itself: the manifest matches the documented example's keys."""
    make_flame_site(tmp_path, n=1)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert {"format", "format_version", "site_id", "cohort", "grid", "patients"} <= set(manifest)
