"""Write a synthetic multi-centre cohort to disk: one folder per site, plus the truth.

Layout of ``OUT/``::

    cohort.json                      config, seed, version, per-site summary
    <site_id>/manifest.json          what a site would hold (flame layout)
    <site_id>/<patient>/<timepoint>/{t1,t1ce,t2,flair,seg}.nii.gz
    <site_id>/<patient>/baseline/dose.nii.gz   planned dose of the modality given (dose_type in the manifest)
    truth/counterfactuals.json       every patient's outcome under all three modalities
    truth/<site_id>/<patient>/<timepoint>_<modality>_seg.nii.gz

With ``layout: lumiere`` or ``layout: brats2021`` the site folders follow that
public dataset's naming instead (``cohort/layouts.py``); the simulation, the
images and ``truth/`` are the same, keyed by the patient ids the site holds.

``truth/`` is what training code never reads: it scores treatment-comparison
predictions.  Site folders are written in each site's scanner space (voxel
size, orientation, intensity), so readers are exercised as on real data.
The cohort is written into a hidden sibling folder and renamed into place when
complete, so an interrupted run never leaves a half-written cohort.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flame_private import __version__
from flame_private.cohort.anatomy import Anatomy, load_anatomy
from flame_private.cohort.imaging import (
    apply_scanner,
    bias_field,
    proliferation_index,
    save_dose_nifti,
    save_nifti,
    synthesise,
    to_scanner_space,
)
from flame_private.cohort.layouts import SITE_LAYOUTS, SiteLayout
from flame_private.cohort.patient import choose_resection, choose_treatment, depth_map, draw_patient
from flame_private.cohort.simulate import PatientCourse, Scan, simulate_course
from flame_private.config import MODALITIES, MRI_SEQUENCES, CohortConfig
from flame_private.errors import ExitCode, FlameError

log = logging.getLogger(__name__)

MANIFEST_FORMAT = "flame-cohort"
MANIFEST_VERSION = 1


class CohortExistsError(FlameError, FileExistsError):
    """The output folder already holds something and overwriting was not asked for."""

    exit_code = ExitCode.INPUT


@dataclass(frozen=True)
class PatientJob:
    site_index: int
    patient_index: int


@dataclass(frozen=True)
class PatientResult:
    site_index: int
    patient_index: int
    manifest_entry: dict[str, Any]
    truth_entry: dict[str, Any]


_DEPTH_CACHE: dict[int, np.ndarray] = {}


def _depth(anatomy: Anatomy, grid: int) -> np.ndarray:
    if grid not in _DEPTH_CACHE:
        _DEPTH_CACHE[grid] = depth_map(anatomy)
    return _DEPTH_CACHE[grid]


def _write_scan(paths: dict[str, Path], scan: Scan, anatomy: Anatomy, cfg: CohortConfig, site_index: int,
                site_bias: np.ndarray, rng: np.random.Generator, root: Path, aggression: float,
                layout: SiteLayout) -> tuple[dict[str, str], dict[str, float]]:
    """Synthesise the four sequences of one scan, pass them through the site's scanner, save at ``paths``."""
    site = cfg.sites[site_index]
    for path in paths.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    files: dict[str, str] = {}
    patient_bias = bias_field(anatomy.shape, 0.3 * site.scanner.bias_field, rng)
    for seq in MRI_SEQUENCES:
        clean = synthesise(seq, anatomy.gm, anatomy.wm, anatomy.csf, anatomy.brain, anatomy.t1, scan.compartments,
                           aggression)
        img = apply_scanner(clean, anatomy.brain, site.scanner, site_bias * patient_bias, rng)
        data, affine = to_scanner_space(img, anatomy.affine, site.scanner, is_label=False)
        save_nifti(paths[seq], data, affine, is_label=False)
        files[seq] = paths[seq].relative_to(root).as_posix()
    data, affine = to_scanner_space(scan.seg, anatomy.affine, site.scanner, is_label=True)
    save_nifti(paths["seg"], layout.encode_seg(data), affine, is_label=True)
    files["seg"] = paths["seg"].relative_to(root).as_posix()
    # Volumes as a site would measure them: on the written segmentation, in its own voxels.
    volumes = _volumes(data, abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0)
    layout.describe_scan(paths, volumes)
    return files, volumes


def _volumes(seg: np.ndarray, voxel_ml: float) -> dict[str, float]:
    return {name: round(float((seg == lab).sum() * voxel_ml), 3)
            for lab, name in ((1, "necrotic_ml"), (2, "oedema_ml"), (3, "enhancing_ml"))}


def simulate_and_write_patient(cfg: CohortConfig, job: PatientJob, staging: Path) -> PatientResult:
    """Simulate one patient under all modalities and write its files; pure given (config, job)."""
    site = cfg.sites[job.site_index]
    layout = SITE_LAYOUTS[cfg.layout]
    anatomy = load_anatomy(cfg.grid)
    pid = layout.patient_id(cfg, job.site_index, job.patient_index)
    rng = np.random.default_rng([cfg.seed, job.site_index, job.patient_index])
    patient = draw_patient(rng, pid, anatomy, _depth(anatomy, cfg.grid), site, cfg)
    resection = choose_resection(patient, site)
    course: PatientCourse = simulate_course(patient, resection, anatomy, cfg)
    base = course.baseline
    base_vol = _volumes(base.seg, anatomy.voxel_ml)
    treatment = choose_treatment(patient, site, base_vol["necrotic_ml"], base_vol["enhancing_ml"])
    given = course.outcomes[treatment]

    site_bias = bias_field(anatomy.shape, site.scanner.bias_field,
                           np.random.default_rng([cfg.seed, job.site_index, 2**31 - 1]))
    img_rng = np.random.default_rng([cfg.seed, job.site_index, job.patient_index, 1])
    site_root = staging / site.site_id
    aggression = proliferation_index(patient.rho, cfg.tumour.rho_range)
    timepoints: list[dict[str, Any]] = []
    for scan in [base] if layout.baseline_only else [base, *given.scans]:
        files, volumes = _write_scan(layout.scan_files(site_root, pid, scan.name, scan.day), scan, anatomy, cfg,
                                     job.site_index, site_bias, img_rng, site_root, aggression, layout)
        timepoints.append({"name": scan.name, "day": int(scan.day), "files": files, **volumes})
    dose_path = layout.dose_file(site_root, pid, base.name)
    if dose_path is not None:
        dose_gy = course.dose_fraction[treatment] * cfg.therapy.prescription_gy
        data, affine = to_scanner_space(dose_gy, anatomy.affine, site.scanner, is_label=False)
        save_dose_nifti(dose_path, data, affine)
        timepoints[0]["files"]["dose"] = dose_path.relative_to(site_root).as_posix()
        # Particle doses are RBE-weighted, as they are prescribed; for photons (RBE 1) the two coincide.
        timepoints[0]["dose_type"] = "PHYSICAL" if treatment == "photon" else "EFFECTIVE"
    rt_start = patient.rt_delay_days
    entry = {
        "patient_id": pid,
        "age": patient.age,
        "sex": patient.sex,
        "mgmt_methylated": patient.mgmt_methylated,
        "resection": resection,
        "treatment": treatment,
        "rt_start_day": rt_start,
        "prescription_gy": cfg.therapy.prescription_gy,
        "fractions": cfg.therapy.fractions,
        "timepoints": timepoints,
        "rano": given.rano,
        "responder": given.responder,
        "pseudoprogression": given.pseudoprogression,
        "radionecrosis": given.radionecrosis,
    }

    truth_root = staging / "truth" / site.site_id / pid
    truth_root.mkdir(parents=True, exist_ok=True)
    outcomes = {}
    for m in MODALITIES:
        o = course.outcomes[m]
        segs, enhancing = {}, {}
        for scan in o.scans:
            data, affine = to_scanner_space(scan.seg, anatomy.affine, site.scanner, is_label=True)
            path = truth_root / f"{scan.name}_{m}_seg.nii.gz"
            save_nifti(path, data, affine, is_label=True)
            segs[scan.name] = path.relative_to(staging).as_posix()
            enhancing[scan.name] = _volumes(data, abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0)["enhancing_ml"]
        outcomes[m] = {
            "rano": o.rano,
            "responder": o.responder,
            "pseudoprogression": o.pseudoprogression,
            "radionecrosis": o.radionecrosis,
            "lymphopenia": o.lymphopenia,
            "mean_brain_dose_gy": round(o.mean_brain_dose_gy, 3),
            "viable_burden_ml": round(o.viable_burden_ml, 4),
            "enhancing_ml": enhancing,
            "segs": segs,
        }
    truth = {
        "patient_id": pid,
        "site_id": site.site_id,
        "treatment_given": treatment,
        "outcomes": outcomes,
        # Hidden biology, for analysis of what limits any model: never in a site's manifest.
        "hidden": {
            "alpha_per_gy": round(patient.alpha, 5),
            "rho_per_day": round(patient.rho, 5),
            "d_white_mm2_per_day": round(patient.d_white, 5),
            "rho_post_factor": round(patient.rho_post_factor, 4),
            "hypoxia_shift": round(patient.hypoxia_shift, 4),
            "preop_growth_days": course.preop_days,
        },
    }
    return PatientResult(job.site_index, job.patient_index, entry, truth)


def _atomic_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _worker_init(grid: int) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    load_anatomy(grid)


def synthesise_cohort(cfg: CohortConfig, out: Path, *, workers: int = 1, overwrite: bool = False,
                      on_patient: Callable[[PatientResult], None] | None = None) -> dict[str, Any]:
    """Simulate every patient of every site and write the cohort to ``out``; returns the summary.

    Same config, same bytes, whatever ``workers`` is.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CohortExistsError(f"{out}: exists and is not a folder")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise CohortExistsError(f"{out}: exists and is not empty (pass overwrite to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.parent / f".{out.name}.partial-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    jobs = [PatientJob(si, pi) for si, s in enumerate(cfg.sites) for pi in range(s.n_patients)]
    t0 = time.perf_counter()
    results: list[PatientResult] = []
    try:
        load_anatomy(cfg.grid)  # loaded once here; forked workers inherit it
        if workers <= 1:
            for job in jobs:
                r = simulate_and_write_patient(cfg, job, staging)
                results.append(r)
                if on_patient:
                    on_patient(r)
        else:
            ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context("spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init,
                                     initargs=(cfg.grid,)) as pool:
                futures = [pool.submit(simulate_and_write_patient, cfg, job, staging) for job in jobs]
                for f in futures:
                    r = f.result()
                    results.append(r)
                    if on_patient:
                        on_patient(r)
        summary = _write_indexes(cfg, staging, results, time.perf_counter() - t0)
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
            os.replace(staging, out)
            shutil.rmtree(old)
        else:
            os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("cohort written to %s (%d patients, %.1f s)", out, len(results), summary["seconds"])
    return summary


def _write_indexes(cfg: CohortConfig, staging: Path, results: list[PatientResult], seconds: float) -> dict[str, Any]:
    results = sorted(results, key=lambda r: (r.site_index, r.patient_index))
    sites_summary = []
    for si, site in enumerate(cfg.sites):
        entries = [r.manifest_entry for r in results if r.site_index == si]
        manifest = {
            "format": MANIFEST_FORMAT,
            "format_version": MANIFEST_VERSION,
            "site_id": site.site_id,
            "cohort": cfg.name,
            "grid": cfg.grid,
            "canonical_labels": {"0": "background", "1": "necrotic_core", "2": "oedema", "3": "enhancing"},
            "patients": entries,
        }
        if cfg.layout == "flame":
            _atomic_json(staging / site.site_id / "manifest.json", manifest)
        else:
            SITE_LAYOUTS[cfg.layout].write_index(staging / site.site_id, entries)
        treat = {m: sum(e["treatment"] == m for e in entries) for m in MODALITIES}
        sites_summary.append({
            "site_id": site.site_id,
            "patients": len(entries),
            "responders": sum(e["responder"] for e in entries),
            "treatments": treat,
            "pseudoprogression": sum(e["pseudoprogression"] for e in entries),
            "radionecrosis": sum(e["radionecrosis"] for e in entries),
        })
    truth = {"cohort": cfg.name, "seed": cfg.seed, "modalities": list(MODALITIES),
             "patients": [r.truth_entry for r in results]}
    (staging / "truth").mkdir(exist_ok=True)
    _atomic_json(staging / "truth" / "counterfactuals.json", truth)
    summary = {
        "name": cfg.name,
        "seed": cfg.seed,
        "grid": cfg.grid,
        "flame_private_version": __version__,
        "sites": sites_summary,
        # The default layout is left out so that a flame cohort's cohort.json reads as it always has.
        "config": cfg.model_dump(mode="json", exclude={"layout"} if cfg.layout == "flame" else None),
    }
    _atomic_json(staging / "cohort.json", summary)
    summary = dict(summary, seconds=round(seconds, 2))
    return summary
