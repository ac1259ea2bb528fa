"""The written cohort (cohort/writer.py): labels, manifests, counterfactual truth, determinism, atomic writes.

Most tests read the small cohort of configs/cohort/test.yaml, synthesised once per
session (``cohort_dir``); those that write their own use one-patient configs.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from nibabel.orientations import aff2axcodes, io_orientation

import flame_private.cohort.writer as writer
from flame_private.cohort.simulate import FOLLOWUP_NAMES
from flame_private.cohort.writer import CohortExistsError, synthesise_cohort
from flame_private.config import CANONICAL_LABELS, MODALITIES, MRI_SEQUENCES, CohortConfig

TIMEPOINTS = ["baseline", *FOLLOWUP_NAMES]
SITE_IDS = ["site-a", "site-b", "site-c"]


def _manifest(cohort_dir: Path, site_id: str) -> dict[str, Any]:
    return json.loads((cohort_dir / site_id / "manifest.json").read_text(encoding="utf-8"))


def _timepoints(cohort_dir: Path, site_id: str) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for patient in _manifest(cohort_dir, site_id)["patients"]:
        for tp in patient["timepoints"]:
            yield patient, tp


def _load(path: Path) -> tuple[np.ndarray, np.ndarray, nib.Nifti1Image]:
    img = nib.load(str(path))
    return np.asarray(img.dataobj), img.affine, img


def _voxel_ml(affine: np.ndarray) -> float:
    return abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0


@pytest.fixture(scope="module")
def truth(cohort_dir: Path) -> dict[str, Any]:
    return json.loads((cohort_dir / "truth" / "counterfactuals.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def truth_by_patient(truth: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["patient_id"]: p for p in truth["patients"]}


def _one_patient_cfg(make_cohort_cfg, cohort_raw, seed: int = 7, n: int = 1) -> CohortConfig:
    return make_cohort_cfg(seed=seed, sites=[{**cohort_raw["sites"][0], "n_patients": n}])


# --------------------------------------------------------------------------- layout


def test_cohort_has_the_documented_layout(cohort_dir: Path, cohort_cfg: CohortConfig) -> None:
    assert sorted(p.name for p in cohort_dir.iterdir()) == sorted(["cohort.json", "truth", *SITE_IDS])
    summary = json.loads((cohort_dir / "cohort.json").read_text(encoding="utf-8"))
    assert summary["seed"] == cohort_cfg.seed and summary["grid"] == 24
    assert [s["patients"] for s in summary["sites"]] == [4, 4, 4]
    for site_id in SITE_IDS:
        m = _manifest(cohort_dir, site_id)
        assert m["format"] == "flame-cohort" and m["site_id"] == site_id
        assert m["canonical_labels"] == {str(k): v for k, v in CANONICAL_LABELS.items()}
        assert [p["patient_id"] for p in m["patients"]] == [f"{site_id}-{i:03d}" for i in range(4)]


@pytest.mark.parametrize("site_id", SITE_IDS)
def test_every_patient_has_four_timepoints_with_all_sequences(cohort_dir: Path, site_id: str) -> None:
    for patient in _manifest(cohort_dir, site_id)["patients"]:
        assert [tp["name"] for tp in patient["timepoints"]] == TIMEPOINTS
        days = [tp["day"] for tp in patient["timepoints"]]
        assert days[0] == 0 and days == sorted(days) and len(set(days)) == 4
        for tp in patient["timepoints"]:
            assert set(tp["files"]) == {*MRI_SEQUENCES, "seg", *(["dose"] if tp["name"] == "baseline" else [])}
            for rel in tp["files"].values():
                assert (cohort_dir / site_id / rel).is_file()


@pytest.mark.parametrize("site_id", SITE_IDS)
def test_the_planned_dose_covers_the_tumour_at_the_prescription(cohort_dir: Path, site_id: str) -> None:
    """The dose a site holds (the modality given's plan, Gy(RBE)) lies on the baseline's grid over its tumour."""
    for patient in _manifest(cohort_dir, site_id)["patients"]:
        files = patient["timepoints"][0]["files"]
        dose, seg = (nib.load(cohort_dir / site_id / files[k]) for k in ("dose", "seg"))
        assert dose.shape == seg.shape and np.allclose(dose.affine, seg.affine)
        gy, tumour = dose.get_fdata(), np.asarray(seg.dataobj) > 0
        assert gy.min() >= 0.0 and gy.max() <= 1.3 * patient["prescription_gy"]
        assert gy[tumour].mean() >= 0.9 * patient["prescription_gy"], patient["patient_id"]
        assert np.median(gy[~tumour]) < 0.5 * patient["prescription_gy"], patient["patient_id"]


# --------------------------------------------------------------------------- labels and geometry


@pytest.mark.parametrize("site_id", SITE_IDS)
def test_seg_values_are_canonical_labels(cohort_dir: Path, site_id: str) -> None:
    seen: set[int] = set()
    for _, tp in _timepoints(cohort_dir, site_id):
        seg, _, img = _load(cohort_dir / site_id / tp["files"]["seg"])
        assert img.get_data_dtype() == np.uint8
        values = set(np.unique(seg).tolist())
        assert values <= {0, 1, 2, 3}
        seen |= values
    assert len(seen) > 1  # the cohort does contain tumour


def test_truth_seg_values_are_canonical_labels(cohort_dir: Path) -> None:
    files = sorted((cohort_dir / "truth").rglob("*_seg.nii.gz"))
    assert len(files) == 12 * 3 * len(FOLLOWUP_NAMES)
    for f in files:
        assert set(np.unique(_load(f)[0]).tolist()) <= {0, 1, 2, 3}, f


@pytest.mark.parametrize("site_id", SITE_IDS)
def test_seg_and_images_of_a_timepoint_share_shape_and_affine(cohort_dir: Path, site_id: str) -> None:
    for _, tp in _timepoints(cohort_dir, site_id):
        seg, seg_affine, _ = _load(cohort_dir / site_id / tp["files"]["seg"])
        for seq in MRI_SEQUENCES:
            data, affine, img = _load(cohort_dir / site_id / tp["files"][seq])
            assert data.shape == seg.shape, (tp["files"][seq], data.shape, seg.shape)
            np.testing.assert_allclose(affine, seg_affine, atol=1e-5)
            assert img.get_data_dtype() == np.int16 and data.min() >= 0


@pytest.mark.parametrize(
    "site_id",
    [
        "site-a",
        "site-b",
        "site-c",
    ],
)
def test_manifest_volumes_agree_with_the_seg_files(cohort_dir: Path, site_id: str) -> None:
    """necrotic/oedema/enhancing mL = voxel count x voxel volume of the file the site holds."""
    mismatches = []
    for patient, tp in _timepoints(cohort_dir, site_id):
        seg, affine, _ = _load(cohort_dir / site_id / tp["files"]["seg"])
        vml = _voxel_ml(affine)
        for label, key in ((1, "necrotic_ml"), (2, "oedema_ml"), (3, "enhancing_ml")):
            from_file = float((seg == label).sum()) * vml
            # the manifest rounds to 0.001 mL; headers store the spacing in float32
            if abs(from_file - tp[key]) > 0.002 + 1e-5 * from_file:
                where = f"{patient['patient_id']}/{tp['name']} {key}"
                mismatches.append(f"{where}: manifest {tp[key]}, file {from_file:.3f}")
    assert not mismatches, "\n".join(mismatches)


@pytest.mark.parametrize("site_index", [0, 2])  # the sites written at the simulation's voxel size
def test_resection_cavity_is_background_in_every_written_seg(cohort_dir: Path, cohort_cfg: CohortConfig,
                                                             anatomy24, truth_by_patient, site_index: int) -> None:
    """Re-simulate each patient's surgery and look up the cavity in the files the site and truth hold."""
    from flame_private.cohort.patient import choose_resection, depth_map, draw_patient
    from flame_private.cohort.simulate import grow_to_diagnosis, resect

    cfg, site = cohort_cfg, cohort_cfg.sites[site_index]
    depth = depth_map(anatomy24)
    checked = 0
    for i, patient in enumerate(_manifest(cohort_dir, site.site_id)["patients"]):
        drawn = draw_patient(np.random.default_rng([cfg.seed, site_index, i]), patient["patient_id"], anatomy24,
                             depth, site, cfg)
        resection = choose_resection(drawn, site)
        assert resection == patient["resection"]
        if resection == "biopsy":
            continue
        cavity = resect(grow_to_diagnosis(drawn, anatomy24, cfg)[0], resection, drawn, anatomy24, cfg).cavity
        assert cavity.any()
        files = [cohort_dir / site.site_id / tp["files"]["seg"] for tp in patient["timepoints"]]
        files += [cohort_dir / rel for o in truth_by_patient[patient["patient_id"]]["outcomes"].values()
                  for rel in o["segs"].values()]
        for f in files:
            canonical = nib.as_closest_canonical(nib.load(str(f)))  # back to the simulation's RAS grid
            np.testing.assert_allclose(canonical.affine, anatomy24.affine, atol=1e-4)
            seg = np.asarray(canonical.dataobj)
            assert np.all(seg[cavity] == 0), f
        checked += 1
    assert checked, "no resected patient at this site"


@pytest.mark.parametrize("site_index", range(3))
def test_written_orientation_is_the_site_scanner_orientation(cohort_dir: Path, cohort_cfg: CohortConfig,
                                                             site_index: int) -> None:
    site = cohort_cfg.sites[site_index]
    files = sorted((cohort_dir / site.site_id).rglob("*.nii.gz"))
    files += sorted((cohort_dir / "truth" / site.site_id).rglob("*.nii.gz"))
    assert files
    for f in files:
        img = nib.load(str(f))
        assert "".join(aff2axcodes(img.affine)) == site.scanner.orientation, f
        assert int(img.header["sform_code"]) == 1 and int(img.header["qform_code"]) == 1


@pytest.mark.parametrize("site_index", range(3))
def test_written_spacing_reflects_the_site_spacing_factor(cohort_dir: Path, cohort_cfg: CohortConfig,
                                                          anatomy24, site_index: int) -> None:
    site = cohort_cfg.sites[site_index]
    sim_spacing = np.asarray(anatomy24.spacing)
    factor = np.asarray(site.scanner.spacing_factor)
    for _, tp in _timepoints(cohort_dir, site.site_id):
        data, affine, _ = _load(cohort_dir / site.site_id / tp["files"]["t1"])
        world_axis = io_orientation(affine)[:, 0].astype(int)  # which RAS axis each voxel axis runs along
        spacing = np.empty(3)
        fov = np.empty(3)
        for vox_axis, w in enumerate(world_axis):
            spacing[w] = np.linalg.norm(affine[:3, vox_axis])
            fov[w] = spacing[w] * data.shape[vox_axis]
        np.testing.assert_allclose(spacing, sim_spacing * factor, rtol=0.05)
        # resampling keeps the field of view of the simulation grid
        np.testing.assert_allclose(fov, sim_spacing * 24, rtol=1e-5)


@pytest.mark.parametrize("site_index", range(3))
def test_written_images_cover_the_same_world_box_as_the_anatomy(cohort_dir: Path, cohort_cfg: CohortConfig,
                                                                anatomy24, site_index: int) -> None:
    """Reorientation and resampling move voxels, never the brain: the world bounding box is preserved."""
    site = cohort_cfg.sites[site_index]

    def box(shape, affine):
        corners = np.array([[i, j, k] for i in (-0.5, shape[0] - 0.5) for j in (-0.5, shape[1] - 0.5)
                            for k in (-0.5, shape[2] - 0.5)])
        world = corners @ affine[:3, :3].T + affine[:3, 3]
        return world.min(0), world.max(0)

    patient = _manifest(cohort_dir, site.site_id)["patients"][0]
    data, affine, _ = _load(cohort_dir / site.site_id / patient["timepoints"][0]["files"]["seg"])
    lo, hi = box(data.shape, affine)
    ref_lo, ref_hi = box(anatomy24.shape, anatomy24.affine)
    np.testing.assert_allclose(lo, ref_lo, atol=1e-3)
    np.testing.assert_allclose(hi, ref_hi, atol=1e-3)


# --------------------------------------------------------------------------- manifest content


@pytest.mark.parametrize("site_id", SITE_IDS)
def test_responder_is_exactly_not_progressive_disease(cohort_dir: Path, site_id: str) -> None:
    for patient in _manifest(cohort_dir, site_id)["patients"]:
        assert patient["rano"] in {"CR", "PR", "SD", "PD"}
        assert patient["responder"] == (patient["rano"] != "PD")
        assert not patient["pseudoprogression"] or patient["rano"] == "SD"


@pytest.mark.parametrize("site_index", range(3))
def test_manifest_treatment_is_offered_by_the_site(cohort_dir: Path, cohort_cfg: CohortConfig,
                                                   site_index: int) -> None:
    site = cohort_cfg.sites[site_index]
    offered = {m for m, share in site.treatment_mix.items() if share > 0}
    for patient in _manifest(cohort_dir, site.site_id)["patients"]:
        assert patient["treatment"] in offered
        assert patient["prescription_gy"] == cohort_cfg.therapy.prescription_gy


# --------------------------------------------------------------------------- counterfactual truth


def test_truth_has_all_three_modalities_for_every_patient(cohort_dir: Path, truth: dict[str, Any]) -> None:
    assert truth["modalities"] == list(MODALITIES)
    manifest_ids = [p["patient_id"] for s in SITE_IDS for p in _manifest(cohort_dir, s)["patients"]]
    assert [p["patient_id"] for p in truth["patients"]] == manifest_ids
    for p in truth["patients"]:
        assert set(p["outcomes"]) == set(MODALITIES), p["patient_id"]
        for m, o in p["outcomes"].items():
            assert set(o["segs"]) == set(FOLLOWUP_NAMES)
            assert o["responder"] == (o["rano"] != "PD")
            for rel in o["segs"].values():
                assert (cohort_dir / rel).is_file() and f"_{m}_seg" in rel


@pytest.mark.parametrize("site_id", SITE_IDS)
def test_given_treatment_outcome_in_truth_equals_the_manifest(cohort_dir: Path, truth_by_patient,
                                                              site_id: str) -> None:
    for patient in _manifest(cohort_dir, site_id)["patients"]:
        t = truth_by_patient[patient["patient_id"]]
        assert t["site_id"] == site_id
        assert t["treatment_given"] == patient["treatment"]
        given = t["outcomes"][patient["treatment"]]
        for key in ("rano", "responder", "pseudoprogression", "radionecrosis"):
            assert given[key] == patient[key], (patient["patient_id"], key)
        by_name = {tp["name"]: tp for tp in patient["timepoints"]}
        for name in FOLLOWUP_NAMES:
            assert given["enhancing_ml"][name] == by_name[name]["enhancing_ml"]


@pytest.mark.parametrize("site_id", SITE_IDS)
def test_truth_segs_of_the_given_treatment_are_the_site_follow_up_segs(cohort_dir: Path, truth_by_patient,
                                                                       site_id: str) -> None:
    for patient in _manifest(cohort_dir, site_id)["patients"]:
        given = truth_by_patient[patient["patient_id"]]["outcomes"][patient["treatment"]]
        by_name = {tp["name"]: tp for tp in patient["timepoints"]}
        for name in FOLLOWUP_NAMES:
            site_file = cohort_dir / site_id / by_name[name]["files"]["seg"]
            truth_file = cohort_dir / given["segs"][name]
            assert gzip.decompress(site_file.read_bytes()) == gzip.decompress(truth_file.read_bytes()), \
                (patient["patient_id"], name)


def test_other_treatments_produce_other_outcomes_somewhere(truth: dict[str, Any]) -> None:
    """The counterfactual branches are not copies: the physical outcome differs between modalities."""
    differs = [p for p in truth["patients"]
               if len({o["viable_burden_ml"] for o in p["outcomes"].values()}) > 1]
    assert differs
    for p in truth["patients"]:
        doses = {m: o["mean_brain_dose_gy"] for m, o in p["outcomes"].items()}
        assert doses["photon"] > doses["proton"] and doses["photon"] > doses["carbon"], p["patient_id"]


def _keys(obj: Any) -> Iterator[str]:
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield str(k)
            yield from _keys(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _keys(v)


def _strings(obj: Any) -> Iterator[str]:
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)
    elif isinstance(obj, str):
        yield obj


@pytest.mark.parametrize("site_id", SITE_IDS)
def test_site_folder_holds_nothing_about_untaken_treatments_or_hidden_biology(cohort_dir: Path,
                                                                              site_id: str) -> None:
    site_root = cohort_dir / site_id
    files = sorted(p.relative_to(site_root).as_posix() for p in site_root.rglob("*") if p.is_file())
    assert "manifest.json" in files
    for rel in files:
        assert not any(m in rel for m in MODALITIES), rel
        assert rel == "manifest.json" or (rel.endswith(".nii.gz") and rel.count("/") == 2), rel
    manifest = _manifest(cohort_dir, site_id)
    keys = set(_keys(manifest))
    assert not keys & {"hidden", "outcomes", "counterfactuals", "truth", "alpha_per_gy", "rho_post_factor",
                       "viable_burden_ml", "segs"}
    for patient in manifest["patients"]:
        named = [s for s in _strings(patient) if s in MODALITIES]
        assert named == [patient["treatment"]], patient["patient_id"]
    text = (site_root / "manifest.json").read_text(encoding="utf-8")
    assert "truth" not in text and "counterfactual" not in text


# --------------------------------------------------------------------------- determinism


def test_same_config_gives_the_same_bytes_whatever_the_number_of_workers(
    tmp_path: Path, cohort_dir: Path, cohort_cfg: CohortConfig, digests
) -> None:
    out = tmp_path / "again"
    synthesise_cohort(cohort_cfg, out, workers=2)
    first, second = digests(cohort_dir), digests(out)
    assert sorted(first) == sorted(second)
    differing = [k for k in first if first[k] != second[k]]
    assert not differing, differing


def test_a_patient_does_not_depend_on_the_rest_of_the_cohort(tmp_path: Path, cohort_dir: Path, make_cohort_cfg,
                                                             cohort_raw, digests) -> None:
    """Each patient is seeded by (seed, site, patient): a one-patient cohort reproduces site-a-000 exactly."""
    out = tmp_path / "one"
    synthesise_cohort(_one_patient_cfg(make_cohort_cfg, cohort_raw), out, workers=1)
    full = digests(cohort_dir / "site-a" / "site-a-000")
    alone = digests(out / "site-a" / "site-a-000")
    assert alone == full


def test_a_different_seed_gives_different_data(tmp_path: Path, cohort_dir: Path, make_cohort_cfg,
                                               cohort_raw, digests) -> None:
    out = tmp_path / "seed8"
    synthesise_cohort(_one_patient_cfg(make_cohort_cfg, cohort_raw, seed=8), out, workers=1)
    ref = digests(cohort_dir / "site-a" / "site-a-000")
    new = digests(out / "site-a" / "site-a-000")
    assert sorted(ref) == sorted(new)
    images = [k for k in ref if not k.endswith("seg.nii.gz")]
    assert all(ref[k] != new[k] for k in images)
    assert any(ref[k] != new[k] for k in ref if k.endswith("seg.nii.gz"))


# --------------------------------------------------------------------------- atomic writes


def _siblings(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir())


def test_existing_non_empty_output_is_refused_and_left_untouched(tmp_path: Path, cohort_cfg) -> None:
    out = tmp_path / "cohort"
    (out / "site-a").mkdir(parents=True)
    (out / "site-a" / "notes.txt").write_text("precious", encoding="utf-8")
    with pytest.raises(CohortExistsError):
        synthesise_cohort(cohort_cfg, out, workers=1)
    assert (out / "site-a" / "notes.txt").read_text(encoding="utf-8") == "precious"
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == ["site-a", "site-a/notes.txt"]
    assert _siblings(tmp_path) == ["cohort"]


def test_overwrite_replaces_an_existing_cohort_completely(tmp_path: Path, make_cohort_cfg, cohort_raw) -> None:
    out = tmp_path / "cohort"
    out.mkdir()
    (out / "stale.txt").write_text("old", encoding="utf-8")
    seen = []
    summary = synthesise_cohort(_one_patient_cfg(make_cohort_cfg, cohort_raw), out, workers=1,
                                overwrite=True, on_patient=seen.append)
    assert not (out / "stale.txt").exists()
    assert (out / "site-a" / "manifest.json").is_file() and (out / "truth" / "counterfactuals.json").is_file()
    assert [r.manifest_entry["patient_id"] for r in seen] == ["site-a-000"]
    assert summary["sites"][0]["patients"] == 1
    assert _siblings(tmp_path) == ["cohort"]  # no staging or backup folder left behind


def test_an_empty_output_folder_is_filled_without_overwrite(tmp_path: Path, make_cohort_cfg, cohort_raw) -> None:
    out = tmp_path / "cohort"
    out.mkdir()
    synthesise_cohort(_one_patient_cfg(make_cohort_cfg, cohort_raw), out, workers=1)
    assert (out / "site-a" / "manifest.json").is_file()
    assert _siblings(tmp_path) == ["cohort"]


@pytest.mark.parametrize("existing", [False, True])
def test_a_failure_mid_run_leaves_no_output_and_no_staging(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           cohort_cfg, existing: bool) -> None:
    parent = tmp_path / "runs"
    parent.mkdir()
    out = parent / "cohort"
    if existing:  # an earlier cohort, to be replaced: it must survive the failed run
        out.mkdir()
        (out / "old.txt").write_text("previous cohort", encoding="utf-8")
    real = writer.simulate_and_write_patient
    calls = []

    def flaky(*args, **kwargs):
        calls.append(args)
        if len(calls) == 3:
            raise RuntimeError("simulated crash on the 3rd patient")
        return real(*args, **kwargs)

    monkeypatch.setattr(writer, "simulate_and_write_patient", flaky)
    with pytest.raises(RuntimeError, match="3rd patient"):
        synthesise_cohort(cohort_cfg, out, workers=1, overwrite=existing)
    assert len(calls) == 3
    if existing:
        assert _siblings(parent) == ["cohort"]
        assert sorted(p.name for p in out.iterdir()) == ["old.txt"]
    else:
        assert _siblings(parent) == []
    assert not any(".partial-" in name or ".old-" in name for name in os.listdir(parent))
