"""The contact sheet a site checks by eye after an import.

One row per timepoint, one column per sequence, at the axial slice through the
most tumour (or the middle), with the segmentation's outline: misregistration,
a swapped sequence, a brain mask that cuts tumour or a segmentation on the
wrong slice are seen at a glance, which no automatic check promises. An imported
RT dose is drawn as isodose lines on the baseline T1ce: a dose that does not
cover the tumour was placed wrongly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from flame_private.data.dicom.sequences import SEQUENCES


def contact_sheet(volumes: dict[str, dict[str, sitk.Image]], out: Path, title: str) -> Path:
    """Write the PNG of VOLUMES (timepoint -> sequence/seg -> image on one grid) to OUT."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(volumes)
    baseline = volumes[names[0]]
    seg = baseline.get("seg")
    depth = sitk.GetArrayViewFromImage(baseline["t1ce"]).shape[0]
    k = depth // 2
    if seg is not None:
        per_slice = (sitk.GetArrayViewFromImage(seg) > 0).sum(axis=(1, 2))
        if per_slice.any():
            k = int(np.argmax(per_slice))
    dose = baseline.get("dose")
    peak = float(sitk.GetArrayViewFromImage(dose).max()) if dose is not None else 0.0
    fig, axes = plt.subplots(len(names), len(SEQUENCES), figsize=(2.2 * len(SEQUENCES), 2.3 * len(names)),
                             squeeze=False)
    for row, name in enumerate(names):
        for col, sequence in enumerate(SEQUENCES):
            ax = axes[row][col]
            image = sitk.GetArrayViewFromImage(volumes[name][sequence])[k]
            ax.imshow(image, cmap="gray", interpolation="nearest")
            labels = volumes[name].get("seg")
            if labels is not None:
                ax.contour(sitk.GetArrayViewFromImage(labels)[k] > 0, levels=[0.5], colors="tab:red",
                           linewidths=0.8)
            if dose is not None and name == names[0] and sequence == "t1ce" and peak > 0:
                ax.contour(sitk.GetArrayViewFromImage(dose)[k], levels=[0.5 * peak, 0.95 * peak],
                           colors="tab:cyan", linewidths=0.7, linestyles=["dashed", "solid"])
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(sequence.upper(), fontsize=9)
            if col == 0:
                ax.set_ylabel(name, fontsize=9)
    isodose = "; cyan (baseline T1CE): 95 % and 50 % (dashed) of the maximum dose" if peak > 0 else ""
    fig.suptitle(f"{title}: axial slice {k}; red: tumour outline{isodose}", fontsize=9)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80, metadata={"Software": None})
    plt.close(fig)
    return out
