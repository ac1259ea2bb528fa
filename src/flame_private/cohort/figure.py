"""A picture of simulated patients: baseline, and the first evaluation under each modality.

What a reader of docs/cohort.md (or a clinician trying the simulator) wants to
see: is the anatomy plausible, do the compartments look like glioblastoma, and
does the treatment change the follow-up?  Images are read back from the written
cohort (site folder + truth), reoriented to RAS for display.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np

from flame_private.config import MODALITIES

LABEL_COLOURS = {1: (0.85, 0.2, 0.2), 2: (0.2, 0.75, 0.3), 3: (1.0, 0.85, 0.1)}
"""necrotic core red, oedema green, enhancing yellow."""


def _ras(path: Path) -> np.ndarray:
    return np.asarray(nib.as_closest_canonical(nib.load(str(path))).dataobj)


def overlay(ax, image: np.ndarray, seg: np.ndarray | None, title: str) -> None:  # noqa: ANN001
    """One axial slice, windowed on the brain (non-zero voxels), with the labels in colour."""
    brain = image[image != 0]
    lo, hi = np.percentile(brain, [1, 99.5]) if brain.size else (0, 1)
    image = np.where(image != 0, image, lo - (hi - lo))  # outside the brain: black, whatever the intensity scale
    ax.imshow(np.rot90(image), cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
    if seg is not None:
        rgba = np.zeros((*seg.shape, 4))
        for lab, colour in LABEL_COLOURS.items():
            rgba[seg == lab] = (*colour, 0.45)
        ax.imshow(np.rot90(rgba), interpolation="nearest")
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def plot_patients(cohort: Path, out: Path, site_id: str | None = None, n_patients: int = 3) -> Path:
    """Plot ``n_patients`` of one site (the first with carbon patients if not given) and save a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    truth = json.loads((cohort / "truth" / "counterfactuals.json").read_text(encoding="utf-8"))
    by_id = {p["patient_id"]: p for p in truth["patients"]}
    sites = sorted(p.name for p in cohort.iterdir() if (p / "manifest.json").is_file())
    if site_id is None:
        site_id = next((s for s in sites if any(p["site_id"] == s and p["treatment_given"] == "carbon"
                                                for p in truth["patients"])), sites[0])
    manifest = json.loads((cohort / site_id / "manifest.json").read_text(encoding="utf-8"))
    # The patients with the most tumour at baseline show the most.
    patients = sorted(manifest["patients"], key=lambda p: -(p["timepoints"][0]["enhancing_ml"]
                                                            + p["timepoints"][0]["necrotic_ml"]))[:n_patients]
    cols = 3 + len(MODALITIES)
    fig, axes = plt.subplots(len(patients), cols, figsize=(2.1 * cols, 2.3 * len(patients)), squeeze=False)
    for row, p in zip(axes, patients, strict=True):
        base = p["timepoints"][0]["files"]
        evaluation = next(t for t in p["timepoints"] if t["name"] == "evaluation")
        t1ce = _ras(cohort / site_id / base["t1ce"])
        flair = _ras(cohort / site_id / base["flair"])
        seg0 = _ras(cohort / site_id / base["seg"])
        tumour = np.argwhere(seg0 > 0)
        z = int(np.median(tumour[:, 2])) if len(tumour) else seg0.shape[2] // 2
        overlay(row[0], t1ce[:, :, z], None, f"{p['patient_id']} baseline T1ce")
        overlay(row[1], flair[:, :, z], seg0[:, :, z], f"baseline FLAIR + seg ({p['resection']})")
        fu = _ras(cohort / site_id / evaluation["files"]["t1ce"])
        overlay(row[2], fu[:, :, z], None, f"day {evaluation['day']} T1ce ({p['treatment']})")
        outcomes = by_id[p["patient_id"]]["outcomes"]
        for ax, m in zip(row[3:], MODALITIES, strict=True):
            seg = _ras(cohort / outcomes[m]["segs"]["evaluation"])
            given = " (given)" if m == p["treatment"] else ""
            overlay(ax, t1ce[:, :, z], seg[:, :, z], f"{m}{given}: {outcomes[m]['rano']}")
    fig.suptitle(f"{site_id}: baseline and first evaluation under each modality "
                 "(red necrosis, green oedema, yellow enhancing)", fontsize=9)
    return save_figure(fig, out)


def save_figure(fig, out: Path) -> Path:  # noqa: ANN001
    """Lay out, write as PNG (creating the folder) and free the figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout(rect=(0, 0, 1, 0.94))  # leave room for the suptitle above two-line panel titles
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
