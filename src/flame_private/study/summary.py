"""Reading ``study.json``: the headline metric of each task, arm labels, and the study's targets."""

from __future__ import annotations

from typing import Any

HEADLINE = {"response": "auc", "evolution": "dice_whole_tumour"}


def arm_label(row: dict[str, Any]) -> str:
    """``central``, ``fedavg``, ``federated DP+HE eps 8``, ``single-site eps 4``, ``single-site no DP``."""
    arm = row["arm"]
    if arm == "federated":
        return f"federated DP+HE eps {row['epsilon']:g}"
    if arm == "single-site":
        return "single-site no DP" if row["epsilon"] is None else f"single-site eps {row['epsilon']:g}"
    return {"central": "central (pooled, no DP)", "fedavg": "FedAvg (no DP, no HE)"}.get(arm, arm)
