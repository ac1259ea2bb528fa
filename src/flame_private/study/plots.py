"""The study's figures from ``study.json``: the headline metric against epsilon per arm, per-site bars, calibration.

Drawn with matplotlib's object API (no pyplot state), one PNG each, every point with its
95 % bootstrap interval where a single model on a single held-out site gives one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from flame_private.study.summary import HEADLINE, arm_label

DPI = 140
COLOURS = {"central": "#1f5fa8", "fedavg": "#2e8b57", "federated": "#c0392b", "single-site": "#d9822b",
           "baseline": "#6b6f73"}
BASELINE = {"response": "logistic_observables", "evolution": "no_change", "segmentation": "intensity_thresholds"}


def _ok(rows: list[dict[str, Any]], task: str) -> list[dict[str, Any]]:
    return [r for r in rows if r["task"] == task and r.get("status") == "ok"]


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, metadata={"Software": None})
    return path


def _mean(values: list[float | None]) -> float:
    """The mean of the values a metric has (null in study.json where the patients cannot give it)."""
    known = [v for v in values if v is not None]
    return float(np.mean(known)) if known else float("nan")


def metric_against_epsilon(rows: list[dict[str, Any]], task: str, path: Path) -> Path | None:
    """Federated DP + HE and single-site DP at each epsilon (means over held-out sites; single-site: the range over
    the sites it was trained at), the non-private arms and the baseline as horizontal references."""
    key = HEADLINE[task]
    rows = [r for r in _ok(rows, task) if r.get(key) is not None]
    eps = sorted({r["epsilon"] for r in rows if r["epsilon"] is not None})
    if not rows or not eps:
        return None
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    ax = fig.add_subplot()
    fed_runs = [[r[key] for r in rows if r["arm"] == "federated" and r["epsilon"] == e] for e in eps]
    ax.plot(eps, [_mean(v) for v in fed_runs], "o-", color=COLOURS["federated"], label="federated DP + CKKS")
    if len({r.get("repeat", 0) for r in rows}) > 1:  # repeats: every run, so the run-to-run spread is seen
        xs = [e for e, v in zip(eps, fed_runs, strict=True) for _ in v]
        ax.plot(xs, [x for v in fed_runs for x in v], ".", color=COLOURS["federated"], alpha=0.45,
                label="federated DP + CKKS, each run" + (" and held-out site" if len(
                    {r["held_out_site"] for r in rows}) > 1 else ""))
    single = [[r[key] for r in rows if r["arm"] == "single-site" and r["epsilon"] == e] for e in eps]
    ax.plot(eps, [_mean(v) for v in single], "s--", color=COLOURS["single-site"], label="single-site DP (mean)")
    ax.fill_between(eps, [min(v, default=np.nan) for v in single], [max(v, default=np.nan) for v in single],
                    color=COLOURS["single-site"], alpha=0.15, label="single-site DP (range over sites)")
    for arm, style in (("central", "-"), ("fedavg", "-."), ("single-site", ":")):
        values = [r[key] for r in rows if r["arm"] == arm and r["epsilon"] is None]
        if values:
            ax.axhline(_mean(values), color=COLOURS[arm], linestyle=style,
                       label=f"{arm_label({'arm': arm, 'epsilon': None})}")
    base = [r["baselines"][BASELINE[task]][key] for r in rows
            if r.get("baselines", {}).get(BASELINE[task], {}).get(key) is not None]
    if base:
        ax.axhline(_mean(base), color=COLOURS["baseline"], linestyle="--", linewidth=1,
                   label=f"baseline: {BASELINE[task].replace('_', ' ')}")
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(eps, [f"{e:g}" for e in eps])
    ax.set_xlabel("epsilon per site, whole run (delta 1e-5)")
    ax.set_ylabel(f"{key.replace('_', ' ')} on the held-out site")
    held = sorted({r["held_out_site"] for r in rows})
    runs = len({r.get("repeat", 0) for r in rows})
    ax.set_title((f"{task}: held out {', '.join(held)}" if len(held) <= 2 else f"{task}: mean over {len(held)} "
                  "held-out sites") + (f", mean of {runs} runs per cell" if runs > 1 else ""), fontsize=10)
    ax.legend(fontsize=7, loc="best")
    return _save(fig, path)


def per_site_bars(rows: list[dict[str, Any]], task: str, path: Path) -> Path | None:
    """For each held-out site: every arm's headline metric with its 95 % interval (single-site: best and worst).

    With repeats, a bar is the mean over the runs, its whiskers the mean of their 95 % intervals, and each run
    is a dot on it: the patients' sampling and the runs' spread side by side.
    """
    rows, key = _ok(rows, task), HEADLINE[task]
    held = sorted({r["held_out_site"] for r in rows})
    if not held:
        return None
    top = max((r["epsilon"] for r in rows if r["arm"] == "federated"), default=None)
    contenders: list[tuple[str, str, Any]] = [
        ("central", "central", lambda r: r["arm"] == "central"),
        ("FedAvg", "fedavg", lambda r: r["arm"] == "fedavg"),
        (f"federated DP+HE eps {top:g}" if top else "federated", "federated",
         lambda r: r["arm"] == "federated" and r["epsilon"] == top),
        ("best single-site", "single-site", "best"), ("worst single-site", "single-site", "worst")]
    fig = Figure(figsize=(max(6.4, 1.6 * len(held) + 3), 4.0), layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / (len(contenders) + 1)
    for j, (label, colour_key, pick) in enumerate([*contenders, ("baseline", "baseline", "baseline")]):
        values, lows, highs, dots = [], [], [], []
        for h in held:
            here = [r for r in rows if r["held_out_site"] == h]
            chosen: list[dict[str, Any]]
            if pick == "baseline":
                base = here[0]["baselines"].get(BASELINE[task]) if here else None
                chosen = [base] if base and base.get(key) is not None else []
            elif pick in ("best", "worst"):
                by_site: dict[str, list[dict[str, Any]]] = {}
                for r in here:
                    if r["arm"] == "single-site" and r["epsilon"] is None and r.get(key) is not None:
                        by_site.setdefault(r["trained_at"][0], []).append(r)
                chosen = (max if pick == "best" else min)(by_site.values(), key=lambda runs: _mean(
                    [r[key] for r in runs])) if by_site else []
            else:
                chosen = [r for r in here if pick(r) and r.get(key) is not None]
            runs = [r[key] for r in chosen]
            v = _mean(runs)
            cis = [r[f"{key}_ci95"] for r in chosen if r.get(f"{key}_ci95") and None not in r[f"{key}_ci95"]]
            lo, hi = (_mean([c[0] for c in cis]), _mean([c[1] for c in cis])) if cis else (v, v)
            values.append(v)
            lows.append(max(v - lo, 0.0))
            highs.append(max(hi - v, 0.0))
            dots.append(runs if len(runs) > 1 else [])
        x = np.arange(len(held)) + j * width
        ax.bar(x, values, width, yerr=[lows, highs], capsize=2, color=COLOURS[colour_key],
               alpha=0.55 if label.startswith("worst") else 0.9,
               label=label if label != "baseline" else f"baseline: {BASELINE[task].replace('_', ' ')}")
        for xi, runs in zip(x, dots, strict=True):
            ax.plot([xi + width * 0.25] * len(runs), runs, "o", markersize=3, markerfacecolor="white",
                    markeredgecolor="black", markeredgewidth=0.7)
    ax.set_xticks(np.arange(len(held)) + 0.4 - width / 2, held)
    several = any(r.get("repeat") for r in rows)
    ax.set_ylabel(f"{key.replace('_', ' ')} " + ("(mean of runs, mean 95 % CI; dots: runs)" if several
                                                 else "(95 % CI)"))
    ax.set_title(f"{task}: each held-out site, all its patients (single-site models without DP)", fontsize=10)
    fig.legend(fontsize=7, ncol=6, loc="outside lower center")  # below the axes: no bar hidden behind it
    return _save(fig, path)


def calibration(rows: list[dict[str, Any]], path: Path) -> Path | None:
    """Reliability of P(responder): central, FedAvg and each federated epsilon, pooled over held-out sites and
    runs."""
    rows = [r for r in _ok(rows, "response") if r["arm"] in ("central", "fedavg", "federated")]
    if not rows:
        return None
    fig = Figure(figsize=(4.8, 4.4), layout="constrained")
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="#bbbbbb", linewidth=1)
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(arm_label({**r, "repeat": 0}), []).append(r)  # every run of a cell pooled
    for label, group in groups.items():
        bins: dict[int, list[float]] = {}
        for r in group:
            for b in r["calibration"]:
                k = min(int(b["predicted"] * 10), 9)
                acc = bins.setdefault(k, [0.0, 0.0, 0.0])
                acc[0] += b["predicted"] * b["n"]
                acc[1] += b["observed"] * b["n"]
                acc[2] += b["n"]
        ks = sorted(bins)
        ax.plot([bins[k][0] / bins[k][2] for k in ks], [bins[k][1] / bins[k][2] for k in ks], "o-", markersize=3,
                label=label)
    ax.set_xlabel("predicted P(responder)")
    ax.set_ylabel("observed responder rate")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    return _save(fig, path)


def draw_all(results: dict[str, Any], folder: Path, prefix: str = "study") -> list[Path]:
    """Every figure the rows allow, as ``<prefix>-<figure>-<task>.png`` in ``folder``."""
    rows = results["rows"]
    out = []
    for task in HEADLINE:
        out.append(metric_against_epsilon(rows, task, folder / f"{prefix}-epsilon-{task}.png"))
        out.append(per_site_bars(rows, task, folder / f"{prefix}-sites-{task}.png"))
    out.append(calibration(rows, folder / f"{prefix}-calibration-response.png"))
    return [p for p in out if p is not None]
