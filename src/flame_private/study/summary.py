"""Reading ``study.json``: the headline metric of each task, arm labels, and the study's targets."""

from __future__ import annotations

from typing import Any

HEADLINE = {"response": "auc", "evolution": "dice_whole_tumour", "segmentation": "dice_whole_tumour"}


def arm_label(row: dict[str, Any]) -> str:
    """``central``, ``fedavg``, ``federated DP+HE eps 8``, ``single-site eps 4``, ``single-site no DP``."""
    arm, again = row["arm"], f", repeat {row['repeat']}" if row.get("repeat") else ""
    if arm == "federated":
        return f"federated DP+HE eps {row['epsilon']:g}{again}"
    if arm == "single-site":
        return ("single-site no DP" if row["epsilon"] is None else f"single-site eps {row['epsilon']:g}") + again
    return {"central": "central (pooled, no DP)", "fedavg": "FedAvg (no DP, no HE)"}.get(arm, arm) + again


COLUMNS = {
    "response": (("auc", "AUC"), ("balanced_accuracy", "balanced accuracy"), ("brier", "Brier")),
    "evolution": (("dice_whole_tumour", "whole-tumour Dice"), ("dice_enhancing", "enhancing Dice"),
                  ("rano_class_agreement", "RANO agreement")),
    "segmentation": (("dice_whole_tumour", "whole-tumour Dice"), ("dice_enhancing", "enhancing Dice"),
                     ("dice_necrotic_core", "necrotic-core Dice"), ("rano_class_agreement", "RANO-stable volume")),
}
TREATMENT = (("best_modality_accuracy", "best-modality acc."), ("regret_viable_burden_ml", "regret (mL)"),
             ("lost_response_rate", "lost responses"))


def _fmt(m: dict[str, Any], key: str, ci: bool = True) -> str:
    v = m.get(key)
    if not isinstance(v, float):
        return "-"
    lo_hi = m.get(f"{key}_ci95")
    if ci and isinstance(lo_hi, list) and None not in lo_hi:
        return f"{v:.3f} [{lo_hi[0]:.3f}, {lo_hi[1]:.3f}]"
    return f"{v:.3f}"


def _over_runs(here: list[dict[str, Any]], task: str, cols: tuple[tuple[str, str], ...]) -> list[str]:
    """With repeats: each cell's mean over its runs, and the headline metric's range, runs in trained order."""
    cells: dict[tuple[str, Any, tuple[str, ...]], list[dict[str, Any]]] = {}
    for r in here:
        if r.get("status") == "ok":
            cells.setdefault((r["arm"], r["epsilon"], tuple(r["trained_at"])), []).append(r)
    if max((len(v) for v in cells.values()), default=0) < 2:
        return []
    key, name = cols[0]
    head = ["arm", "trained at", "runs", f"{name}: mean (range)", *(c for _, c in cols[1:])]
    if task == "response":
        head += [c for _, c in TREATMENT]
    lines = ["Each cell over its runs (mean; the range of the headline metric across runs):", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def mean(rows: list[dict[str, Any]], k: str) -> str:
        values = [r[k] for r in rows if isinstance(r.get(k), float)]
        return f"{sum(values) / len(values):.3f}" if values else "-"

    for (arm, eps, trained_at), runs in cells.items():
        values = [r[key] for r in runs if isinstance(r.get(key), float)]
        spread = f" ({min(values):.3f}-{max(values):.3f})" if len(values) > 1 else ""
        row = [arm_label({"arm": arm, "epsilon": eps}), ", ".join(trained_at), str(len(runs)),
               mean(runs, key) + spread, *(mean(runs, k) for k, _ in cols[1:])]
        if task == "response":
            row += [mean([r.get("treatment_comparison") or {} for r in runs], k) for k, _ in TREATMENT]
        lines.append("| " + " | ".join(row) + " |")
    return [*lines, ""]


def markdown(results: dict[str, Any]) -> str:
    """One table per (task, held-out site): every arm and the baselines on the same patients, 95 % intervals."""
    lines = [f"# Study {results['name']}", "", f"Command: `{results['command']}`", "",
             f"Cohort SHA-256 (cohort.json): `{results['cohort']['sha256']}`; "
             f"{results['units']['done']} of {results['units']['planned']} units done; "
             f"{results['wall_s'] / 60:.0f} min of training and scoring.", ""]
    rows = results["rows"]
    for task, cols in COLUMNS.items():
        for held in sorted({r["held_out_site"] for r in rows if r["task"] == task}):
            here = [r for r in rows if r["task"] == task and r["held_out_site"] == held]
            n = next((r["n"] for r in here if r.get("status") == "ok"), None)
            lines += [f"## {task}, held-out site {held} ({n:.0f} patients)" if n else f"## {task}, {held}", ""]
            head = ["arm", "trained at", *(c for _, c in cols)]
            if task == "response":
                head += [c for _, c in TREATMENT]
            head += ["epsilon spent", "train (s)"]
            lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            for r in here:
                if r.get("status") != "ok":
                    lines.append(f"| {arm_label(r)} | {', '.join(r['trained_at'])} | {r.get('reason', 'no model')} |")
                    continue
                cells = [arm_label(r), ", ".join(r["trained_at"]), *(_fmt(r, k) for k, _ in cols)]
                if task == "response":
                    tc = r.get("treatment_comparison") or {}
                    cells += [_fmt(tc, k, ci=False) for k, _ in TREATMENT]
                spent = r.get("epsilon_spent")
                cells += [f"{spent:.2f}" if isinstance(spent, float) else "-", f"{r['train_wall_s']:.0f}"]
                lines.append("| " + " | ".join(cells) + " |")
            first = next((r for r in here if r.get("status") == "ok"), None)
            if first:
                for name, m in first["baselines"].items():
                    cells = [f"baseline: {name.replace('_', ' ')}", "training sites' patients",
                             *(_fmt(m, k) for k, _ in cols)]
                    if task == "response":
                        tcb = (first.get("treatment_comparison_baselines") or {}).get(name, {})
                        cells += [_fmt(tcb, k, ci=False) for k, _ in TREATMENT]
                    lines.append("| " + " | ".join(cells + ["-", "-"]) + " |")
                if task == "response":
                    for name, m in (first.get("treatment_comparison_baselines") or {}).items():
                        if name in first["baselines"]:
                            continue
                        cells = [f"rule: {name.replace('_', ' ')}", "-", "-", "-", "-",
                                 *(_fmt(m, k, ci=False) for k, _ in TREATMENT), "-", "-"]
                        lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
            lines += _over_runs(here, task, cols)
    return "\n".join(lines)
