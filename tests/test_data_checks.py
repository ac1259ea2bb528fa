"""check_site finds every kind of bad input and names the patient, the file and the reason."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from data_fixtures import (
    BRATS2021_CODES,
    corrupt_gzip,
    encode,
    flame_patient,
    make_brats2021_site,
    make_flame_site,
    phantom,
    truncate,
    write_manifest,
    write_nifti,
)
from rich.console import Console

from flame_private.data import DataError, check_site, load_site, render_check_table
from flame_private.data.checks import SiteCheckReport
from flame_private.data.nifti import read_header, read_volume

PID = "BraTS2021_00000"


@pytest.fixture
def brats(tmp_path: Path) -> Path:
    return make_brats2021_site(tmp_path / "site", n=2)


def case_file(root: Path, suffix: str, pid: str = PID) -> Path:
    return root / pid / f"{pid}_{suffix}.nii.gz"


def only_problem(report: SiteCheckReport, pid: str = PID) -> tuple[str, str]:
    """The single problem of ``pid`` as (file name, reason); other cases must be clean."""
    (case,) = [c for c in report.cases if c.patient_id == pid]
    assert case.status == "INVALID"
    assert [c.patient_id for c in report.cases if not c.ok] == [pid]
    assert len(case.problems) == 1, case.problems
    (p,) = case.problems
    return p.path.name, p.reason


def test_clean_site_is_ok(brats: Path) -> None:
    report = check_site(brats)
    assert report.ok and report.layout == "brats2021" and report.site_id == "site"
    assert [(c.patient_id, c.timepoints, c.status) for c in report.cases] == [
        ("BraTS2021_00000", 1, "OK"),
        ("BraTS2021_00001", 1, "OK"),
    ]


def test_corrupt_gzip(brats: Path) -> None:
    corrupt_gzip(case_file(brats, "t2"))
    name, reason = only_problem(check_site(brats))
    assert name == f"{PID}_t2.nii.gz" and "corrupt gzip" in reason


def test_truncated_file(brats: Path) -> None:
    truncate(case_file(brats, "flair"))
    name, reason = only_problem(check_site(brats))
    assert name == f"{PID}_flair.nii.gz" and "truncated" in reason


def test_truncated_uncompressed_file_is_caught_from_the_header(tmp_path: Path) -> None:
    path = write_nifti(tmp_path / "x.nii", np.ones((8, 8, 8), np.float32))
    truncate(path, keep=0.7)
    with pytest.raises(DataError, match="x.nii: truncated file"):
        read_header(path)


def test_not_a_nifti_file(brats: Path) -> None:
    case_file(brats, "t1").write_bytes(b"this is not an image")
    name, reason = only_problem(check_site(brats))
    assert name == f"{PID}_t1.nii.gz" and ("gzip" in reason or "NIfTI" in reason)


def test_non_3d_image(brats: Path) -> None:
    write_nifti(case_file(brats, "t1ce"), np.zeros((24, 24, 24, 2), np.float32))
    name, reason = only_problem(check_site(brats))
    assert name == f"{PID}_t1ce.nii.gz" and "not a 3-D image" in reason and "(24, 24, 24, 2)" in reason


def test_4d_image_with_singleton_fourth_axis_is_accepted(brats: Path) -> None:
    images, _ = phantom()
    write_nifti(case_file(brats, "t1ce"), images["t1ce"][..., None])
    assert check_site(brats).ok
    header, data = read_volume(case_file(brats, "t1ce"))
    assert header.shape == (24, 24, 24) and data.shape == (24, 24, 24)


def test_shapes_that_disagree(brats: Path) -> None:
    write_nifti(case_file(brats, "t2"), np.ones((24, 24, 20), np.float32))
    name, reason = only_problem(check_site(brats))
    assert name == f"{PID}_t2.nii.gz" and "shape (24, 24, 20) disagrees with t1 shape (24, 24, 24)" in reason


def test_affines_that_disagree_beyond_tolerance(brats: Path) -> None:
    images, _ = phantom()
    shifted = np.eye(4)
    shifted[0, 3] = 0.01
    write_nifti(case_file(brats, "flair"), images["flair"], shifted)
    name, reason = only_problem(check_site(brats))
    assert name == f"{PID}_flair.nii.gz" and "affine disagrees with t1" in reason

    within = np.eye(4)
    within[0, 3] = 5e-4  # sub-micron rounding between exports is fine
    write_nifti(case_file(brats, "flair"), images["flair"], within)
    assert check_site(brats).ok


def test_segmentation_on_another_grid(brats: Path) -> None:
    _, seg = phantom()
    write_nifti(case_file(brats, "seg"), encode(seg, BRATS2021_CODES), np.diag([2.0, 2.0, 2.0, 1.0]))
    name, reason = only_problem(check_site(brats))
    assert name == f"{PID}_seg.nii.gz" and "seg affine disagrees" in reason


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf(brats: Path, bad: float) -> None:
    images, _ = phantom()
    vol = images["t1"].copy()
    vol[3, 4, 5] = bad
    write_nifti(case_file(brats, "t1"), vol)
    name, reason = only_problem(check_site(brats))
    assert name == f"{PID}_t1.nii.gz" and "NaN/Inf" in reason


def test_missing_modality_file(brats: Path) -> None:
    case_file(brats, "t1ce").unlink()
    name, reason = only_problem(check_site(brats))
    assert name == f"{PID}_t1ce.nii.gz" and "missing t1ce modality file" in reason


def test_missing_file_listed_in_flame_manifest(tmp_path: Path) -> None:
    root = make_flame_site(tmp_path, n=2)
    (root / "site-a-001/fu1/flair.nii.gz").unlink()
    name, reason = only_problem(check_site(root), "site-a-001")
    assert name == "flair.nii.gz" and "missing flair modality file (fu1)" in reason


def test_unknown_label_values(brats: Path) -> None:
    # BraTS 2021 has no label 3: a BraTS 2023 mask dropped into a 2021 folder.
    _, seg = phantom()
    write_nifti(case_file(brats, "seg"), seg)
    name, reason = only_problem(check_site(brats))
    assert name == f"{PID}_seg.nii.gz"
    assert "unknown label value(s) 3" in reason and "brats2021 labels are 0, 1, 2, 4" in reason


def test_unknown_treatment(tmp_path: Path) -> None:
    root = make_flame_site(tmp_path, n=2)
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["patients"][0]["treatment"] = "gamma-knife"
    (root / "manifest.json").write_text(json.dumps(manifest))
    name, reason = only_problem(check_site(root), "site-a-000")
    assert name == "manifest.json" and "unknown treatment 'gamma-knife'" in reason


def test_duplicate_patient_ids(tmp_path: Path) -> None:
    entry = flame_patient(tmp_path, "p1")
    write_manifest(tmp_path, [entry, entry, flame_patient(tmp_path, "p2", seed=1)])
    name, reason = only_problem(check_site(tmp_path), "p1")
    assert name == "manifest.json" and "duplicate patient ID (listed 2 times)" in reason


def test_missing_manifest(tmp_path: Path) -> None:
    report = check_site(tmp_path, layout="flame")
    assert not report.ok and report.cases == []
    (p,) = report.site_problems
    assert p.path.name == "manifest.json" and "missing manifest.json" in p.reason


def test_bad_manifest_json(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text('{"format": "flame-cohort", "patients": [')
    (p,) = check_site(tmp_path).site_problems
    assert p.path.name == "manifest.json" and "bad manifest JSON" in p.reason


def test_bad_manifest_entry_gets_its_own_row(tmp_path: Path) -> None:
    good = flame_patient(tmp_path, "p1")
    write_manifest(tmp_path, [good, {"patient_id": "p2", "timepoints": [{"name": "baseline"}]}])
    report = check_site(tmp_path)
    assert [(c.patient_id, c.status) for c in report.cases] == [("p1", "OK"), ("p2", "INVALID")]
    assert "timepoints.0.files" in report.cases[1].problems[0].reason


def test_missing_site_folder_is_reported_not_raised(tmp_path: Path) -> None:
    for layout in (None, "brats2021"):
        report = check_site(tmp_path / "nowhere", layout=layout)
        assert not report.ok and report.site_problems[0].path == tmp_path / "nowhere"


@pytest.mark.parametrize(("layout", "expects"), [("brats2021", "BraTS2021_<number>/"), ("flame", "manifest.json"),
                                                 ("brats2023", "BraTS-GLI-<patient>-<timepoint>/")])
def test_a_folder_with_no_case_fails_saying_where_it_looked_and_what_it_expected(
        tmp_path: Path, layout: str, expects: str) -> None:
    if layout == "flame":
        write_manifest(tmp_path, [])
    report = check_site(tmp_path, layout=layout)  # type: ignore[arg-type]
    assert not report.ok and report.cases == []
    (p,) = report.site_problems
    assert p.reason.startswith(f"no cases found: looked in {tmp_path} for the {layout} layout")
    assert expects in p.reason
    with pytest.raises(DataError, match="no cases found"):
        load_site(tmp_path, layout=layout, skip_invalid=True)  # type: ignore[arg-type]


def test_header_only_check_skips_voxel_reads(brats: Path) -> None:
    truncate(case_file(brats, "flair"))
    assert check_site(brats, full=False).ok
    assert not check_site(brats).ok


# --------------------------------------------------------------------------- load_site


def test_load_site_raises_listing_every_invalid_case(brats: Path) -> None:
    corrupt_gzip(case_file(brats, "t2"))
    case_file(brats, "flair", "BraTS2021_00001").unlink()
    with pytest.raises(DataError) as err:
        load_site(brats)
    msg = str(err.value)
    assert "2 invalid case(s)" in msg
    assert "BraTS2021_00000_t2.nii.gz: corrupt gzip" in msg
    assert "BraTS2021_00001_flair.nii.gz: missing flair modality file" in msg


def test_load_site_skip_invalid_returns_and_logs_skipped(brats: Path, caplog: pytest.LogCaptureFixture) -> None:
    truncate(case_file(brats, "t1"))
    with caplog.at_level(logging.WARNING):
        loaded = load_site(brats, skip_invalid=True)
    assert [r.patient_id for r in loaded.records] == ["BraTS2021_00001"]
    assert [s.patient_id for s in loaded.skipped] == [PID]
    assert "truncated" in loaded.skipped[0].problems[0].reason
    assert f"skipping invalid case {PID}" in caplog.text and f"{PID}_t1.nii.gz" in caplog.text


def test_load_site_clean(brats: Path) -> None:
    loaded = load_site(brats, layout="brats2021", site_id="hospital-x")
    assert len(loaded.records) == 2 and loaded.skipped == []
    assert {r.site_id for r in loaded.records} == {"hospital-x"}


def test_load_site_site_problems_always_raise(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="missing manifest.json"):
        load_site(tmp_path, layout="flame", skip_invalid=True)


def test_load_site_flame_site_id_defaults_to_manifest(tmp_path: Path) -> None:
    root = make_flame_site(tmp_path / "folder-name", n=1, site_id="site-b")
    assert load_site(root).records[0].site_id == "site-b"


# --------------------------------------------------------------------------- table


def test_render_check_table_has_one_row_per_case_with_reasons(brats: Path) -> None:
    case_file(brats, "t1ce").unlink()
    table = render_check_table(check_site(brats))
    assert [c.header for c in table.columns] == ["Patient", "Timepoints", "Status", "Problems"]
    assert table.row_count == 2
    console = Console(width=200, record=True)
    console.print(table)
    text = console.export_text()
    assert "INVALID" in text and "OK" in text
    assert f"{PID}_t1ce.nii.gz: missing t1ce modality file" in text
