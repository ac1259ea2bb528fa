"""Volumetric RANO 2.0 response from enhancing-tumour volumes (docs/references.md 1).

For newly diagnosed glioblastoma RANO 2.0 takes the post-radiotherapy MRI as
the reference scan (so early treatment effects do not count as progression);
thresholds are the RANO 2.0 volumetric ones. A clinical rule, not part of the
simulator: metrics on real data and the synthetic cohort both use it.
"""

from __future__ import annotations

from typing import Literal

RanoClass = Literal["CR", "PR", "SD", "PD"]

PR_RATIO = 0.35
"""Enhancing volume at or below 35 % of reference (-65 %)."""
PD_RATIO = 1.40
"""Enhancing volume at or above 140 % of nadir (+40 %)."""
MEASURABLE_ML = 1.0
"""Smallest measurable enhancing volume (a 10 x 10 mm lesion ~ 0.5-1 mL): modelling choice."""
VISIBLE_ML = 0.05
"""Enhancement below this is not called on imaging (a few voxels: noise)."""


def classify(reference_ml: float, current_ml: float, nadir_ml: float | None = None) -> RanoClass:
    """RANO 2.0 class of ``current_ml`` enhancing volume against the reference and nadir."""
    nadir = reference_ml if nadir_ml is None else min(reference_ml, nadir_ml)
    if current_ml < VISIBLE_ML:
        return "CR"
    if nadir < MEASURABLE_ML:
        # No measurable disease at the reference: only a new measurable lesion is progression.
        return "PD" if current_ml >= MEASURABLE_ML else "SD"
    if current_ml >= PD_RATIO * nadir:
        return "PD"
    if current_ml <= PR_RATIO * reference_ml:
        return "PR"
    return "SD"


def confirmed_response(reference_ml: float, first_ml: float, confirm_ml: float) -> tuple[RanoClass, bool]:
    """Class at the first evaluation after chemoradiation, with progression confirmed.

    A preliminary PD that is not confirmed on the next scan (enhancement back
    below the progression threshold) is pseudoprogression and is scored SD, as in
    RANO 2.0. Returns the class and whether it was an unconfirmed PD.
    """
    first = classify(reference_ml, first_ml)
    if first != "PD":
        return first, False
    if classify(reference_ml, confirm_ml) == "PD":
        return "PD", False
    return "SD", True


def is_responder(rano: RanoClass) -> bool:
    """Project definition: CR, PR or SD at the first evaluation is a response."""
    return rano != "PD"
