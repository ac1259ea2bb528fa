"""Would a physics prior beat "no change"?  The simulator's own growth and dose physics run from the baseline images.

``evolution_rules.py`` found that no rule fitted on what a model sees beats
"no change"; ``cohort_difficulty.py``'s twin (which knows the simulator's true
baseline state and growth parameters) gains +0.19 whole-tumour Dice.  This
script asks what lies between: a mechanistic forecast that starts from the
tumour-cell density *inferred from the baseline images and segmentation* and
grows and irradiates it with the cohort's own equations (Fisher-KPP growth,
linear-quadratic kill under the modality's dose plan, temozolomide, clearance
of dead cells, oedema from the enhancing tumour), with the patient's biology
either

- ``population``: the cohort's population means, age-adjusted as the simulator
  does (what a deployable physics prior would know), or
- ``true_<fields>``: the simulator's hidden per-patient values of those fields
  (diagnostics only: they are not in the site's data).

The forecast is scored like a model (per-patient means of the project's
evolution metrics) on the first ``--follow-ups`` validation follow-ups, beside
"no change" on the same follow-ups.  The equations are the simulator's, so the
physics is exactly right here: a real cohort would do worse, not better.

Inferred state: tissue fractions from the healthy brain's T1 quantiles,
enhancing voxels at density ``--c-enhancing``, oedema at ``--c-oedema``, a
sub-threshold tail decaying ``--tail-mm`` from the tumour, necrosis where
labelled, the resection cavity where the tumour encloses unlabelled voxels; the
dose plan is the cohort's (CTV = tumour + 15 mm) at a beam angle of 0.

Saves benchmarks/results/evolution_physics.json.

Usage: python benchmarks/evolution_physics.py [--follow-ups 90] [--cohort runs/study/cohort]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from typing import Any

import numpy as np
from _common import add_study_args, cohort_identity, save, study_splits
from evolution_rules import FollowUp, load_part, score
from scipy import ndimage

BIOLOGY = ("d_white", "d_grey", "rho", "alpha", "rho_post_factor", "hypoxia_shift", "oedema_extent_mm",
           "rt_delay_days")
ARMS: dict[str, tuple[str, ...]] = {
    "population": (),
    "true_growth": ("d_white", "d_grey", "rho"),
    "true_radiosensitivity": ("alpha",),
    "true_growth_radiosensitivity_post_treatment": ("d_white", "d_grey", "rho", "alpha", "rho_post_factor"),
    "true_biology": BIOLOGY,
}
"""Forecast arms: which hidden fields come from the simulator's truth (the rest: population values)."""
FRACTION_SPAN_DAYS = 39
"""First to last of 30 fractions, five a week."""


def anatomy_from(image: np.ndarray, seg: np.ndarray, voxel_mm: float) -> Any:
    """Tissue maps inferred from the z-scored T1: CSF, grey and white matter by the healthy brain's quantiles."""
    from flame_private.cohort.anatomy import Anatomy

    brain = ndimage.binary_fill_holes(image[0] != 0)
    t1 = image[0]
    lo, mid, hi = np.percentile(t1[brain & (seg == 0)], [5, 40, 90])
    wm = np.clip((t1 - mid) / (hi - mid), 0, 1)
    gm = np.where(t1 >= mid, 1 - wm, np.clip((t1 - lo) / (mid - lo), 0, 1))
    tumour = seg > 0  # tumour grows in white matter in this cohort
    wm, gm = np.where(tumour, 1.0, wm) * brain, np.where(tumour, 0.0, gm) * brain
    csf = np.where(brain, np.clip(1 - gm - wm, 0, 1), 0)
    return Anatomy(t1=np.clip((t1 - lo) / (hi - lo), 0, 1).astype(np.float32), gm=gm.astype(np.float32),
                   wm=wm.astype(np.float32), csf=csf.astype(np.float32), brain=brain,
                   affine=np.diag([voxel_mm, voxel_mm, voxel_mm, 1.0]))


def forecast(it: FollowUp, cfg: Any, voxel_mm: float, args: argparse.Namespace, truth: Any | None,
             keep: tuple[str, ...]) -> np.ndarray:
    """The follow-up segmentation the physics predicts from the baseline of ``it``."""
    from flame_private.cohort import dose as dosimetry
    from flame_private.cohort.patient import Patient
    from flame_private.cohort.simulate import TumourState, _scan, treat_and_follow
    from flame_private.config import MODALITIES

    seg, obs = it.seg, it.observables  # observables: volumes (4), covariates (6), treatment (3), ...
    age, female, mgmt = 60.0 + 10.0 * obs[4], obs[5] > 0.5, obs[6] > 0.5
    modality = MODALITIES[int(np.argmax(obs[10:13]))]
    day = int(round(obs[16] * 365))
    spacing = (voxel_mm,) * 3
    anat = anatomy_from(it.image, seg, voxel_mm)
    tumour = seg > 0
    cavity = ndimage.binary_fill_holes(tumour) & ~tumour
    if not (tumour | cavity).any():
        return np.zeros_like(seg)
    dist = ndimage.distance_transform_edt(~tumour, sampling=spacing) if tumour.any() else np.full(seg.shape, 1e3)
    c = np.where(seg == 3, args.c_enhancing, np.where(seg == 2, args.c_oedema, 0.0))
    c = np.where(seg == 0, cfg.tumour.flair_threshold * np.exp(-dist / args.tail_mm), c) * anat.tissue
    c = np.where(cavity | (seg == 1), 0.0, c).astype(np.float32)
    state = TumourState(c=c, necrosis=(seg == 1).astype(np.float32), cavity=cavity, dead=np.zeros_like(c))
    ptv, signed = dosimetry.target_volume(tumour | cavity, anat.brain, spacing, cfg.therapy.ctv_margin_mm)
    dose = dosimetry.dose_fraction_map(modality, ptv, signed, spacing, 0.0)
    # Population biology, age-adjusted as the simulator draws it (geometric means of its log-uniform ranges).
    tum = cfg.tumour
    v = float(np.sqrt(np.prod(tum.velocity_range))) * float(np.exp(0.015 * (age - 60.0)))
    invasiveness = float(np.sqrt(np.prod(tum.invasiveness_range)))
    d_white = 0.5 * v * np.sqrt(invasiveness)
    ratio = float(np.mean(tum.white_grey_ratio_range))
    alpha = cfg.therapy.alpha_mean * (1.05 if female else 1.0) * float(np.exp(-0.005 * (age - 60.0)))
    patient = Patient(
        patient_id=it.patient, age=age, sex="F" if female else "M", mgmt_methylated=bool(mgmt), seed_voxel=(0, 0, 0),
        depth_mm=0.0, d_white=d_white, d_grey=d_white / ratio, rho=0.5 * v / np.sqrt(invasiveness),
        detection_flair_ml=0.0, alpha=alpha, rho_post_factor=1.0, resection_u=0.5, subtotal_fraction=0.7,
        beam_angle=0.0, pseudo_u=1.0, necrosis_u=1.0, followup_gaps=(1, 1, 1), rt_delay_days=10, treatment_u=0.5,
        oedema_extent_mm=20.0, hypoxia_shift=float(np.mean(tum.hypoxia_shift_range)), lymphopenia_u=1.0)
    if keep:
        patient = replace(patient, **{f: getattr(truth, f) for f in keep})
    # The forecast's first scan falls on the follow-up's day (pseudoprogression and radionecrosis are off).
    gap = max(day - patient.rt_delay_days - FRACTION_SPAN_DAYS, 1)
    patient = replace(patient, followup_gaps=(gap, 1, 1))
    baseline = _scan("baseline", 0, state, anat, cfg, patient.oedema_extent_mm)
    return treat_and_follow(patient, state, anat, cfg, modality, dose, ptv, baseline).scans[0].seg.astype(np.int8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_study_args(ap)
    ap.add_argument("--follow-ups", type=int, default=90, help="validation follow-ups scored (the first N)")
    ap.add_argument("--c-enhancing", type=float, default=0.7)
    ap.add_argument("--c-oedema", type=float, default=0.28)
    ap.add_argument("--tail-mm", type=float, default=3.0)
    args = ap.parse_args()

    from flame_private.cohort.anatomy import load_anatomy
    from flame_private.cohort.patient import depth_map, draw_patient
    from flame_private.config import CohortConfig, DataConfig, FederationConfig, load_config

    t0 = time.time()
    cfg = load_config(args.config, CohortConfig)
    fed = FederationConfig(seed=cfg.seed, data=DataConfig(grid=cfg.grid))
    voxel_mm = fed.data.voxel_mm
    voxel_ml = voxel_mm**3 / 1000.0
    items = load_part(study_splits(args.cohort, cfg, fed.data), "val", fed, voxel_ml)[: args.follow_ups]
    anatomy = load_anatomy(cfg.grid)
    depth = depth_map(anatomy)
    sites = [s.site_id for s in cfg.sites]

    def truth(patient_id: str) -> Any:
        """The simulator's draws for this patient (same random stream as ``flame cohort synth``)."""
        site, index = patient_id.rsplit("-", 1)
        k = sites.index(site)
        rng = np.random.default_rng([cfg.seed, k, int(index)])
        return draw_patient(rng, patient_id, anatomy, depth, cfg.sites[k], cfg)

    truths = {it.patient: truth(it.patient) for it in items}
    rows: dict[str, dict] = {"no_change": score(items, [it.seg for it in items], voxel_ml, ci=True)}
    for arm, keep in ARMS.items():
        preds = [forecast(it, cfg, voxel_mm, args, truths[it.patient], keep) for it in items]
        rows[arm] = score(items, preds, voxel_ml, ci=True)
    for arm, m in rows.items():
        print(f"{arm:45s} whole {m['dice_whole_tumour']:.3f} {np.round(m['dice_whole_tumour_ci95'], 3)}  "
              f"enhancing {m['dice_enhancing']:.3f}  rano {m['rano_class_agreement']:.3f}", flush=True)
    figures = {**cohort_identity(args), "follow_ups": len(items), "patients": len(truths),
               "state": {"c_enhancing": args.c_enhancing, "c_oedema": args.c_oedema, "tail_mm": args.tail_mm},
               "arms": {arm: list(keep) for arm, keep in ARMS.items()}, "validation": rows,
               "seconds": round(time.time() - t0),
               "command": f"python benchmarks/evolution_physics.py --follow-ups {args.follow_ups}"}
    print(f"saved {save('evolution_physics', figures)}")


if __name__ == "__main__":
    main()
