"""The reports' plots, drawn with matplotlib's object API into PNG bytes (no pyplot, no global state)."""

from __future__ import annotations

import io
from collections.abc import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from flame_private.reports.i18n import Lang, num, t

BLUE, ORANGE, RED, GREEN, AMBER, GREY = "#1f5fa8", "#d9822b", "#c0392b", "#2e8b57", "#e0a800", "#9aa0a6"
DPI = 160


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _decimal_axis(ax, lang: Lang) -> None:
    if lang == "fr":
        ax.yaxis.set_major_formatter(lambda v, _pos: f"{v:g}".replace(".", ","))


def spend_figure(times: Sequence[str], rounds: Sequence[int], runs: Sequence[str], epsilons: Sequence[float],
                 purposes: Sequence[str], cap: float, lang: Lang) -> Figure:
    """Cumulative epsilon after each release, by federated round and date, the remaining budget shaded.

    One x position per (run, round), labelled with the round and the date of its first release; the
    releases of a round sit side by side within it.  A step line from 0 at the left edge, markers by purpose,
    the cap as a dashed line, the budget left below the cap shaded (and any spend above it in red), runs
    separated by dotted lines.
    """
    fig = Figure(figsize=(7.0, 3.2), layout="constrained")
    ax = fig.add_subplot()
    members: dict[int, list[int]] = {}
    index, g = [], -1
    for i, (run, rnd) in enumerate(zip(runs, rounds, strict=True)):
        if i == 0 or (runs[i - 1], rounds[i - 1]) != (run, rnd):
            g += 1
        index.append(g)
        members.setdefault(g, []).append(i)
    groups = [(runs[m[0]], rounds[m[0]]) for m in members.values()]
    xs_pts = []
    for i, g in enumerate(index):
        k, n = members[g].index(i), len(members[g])
        xs_pts.append(g + (k - (n - 1) / 2) * (0.6 / max(n, 2)))
    right = len(groups) - 0.5 if groups else 0.5
    xs = [-0.5, *xs_pts, right]
    ys = [0.0, *epsilons, epsilons[-1] if epsilons else 0.0]
    ax.step(xs, ys, where="post", color=BLUE, linewidth=1.6, zorder=2)
    below = [min(y, cap) for y in ys]
    ax.fill_between(xs, below, [cap] * len(xs), step="post", color=GREEN, alpha=0.15, linewidth=0,
                    label=t("plot.remaining", lang), zorder=1)
    if any(y > cap for y in ys):
        ax.fill_between(xs, [cap] * len(xs), [max(y, cap) for y in ys], step="post", color=RED, alpha=0.25,
                        linewidth=0, label=t("plot.over", lang), zorder=1)
    for purpose, colour, marker in (("training", BLUE, "o"), ("evaluation", ORANGE, "s")):
        pts = [(x, e) for x, e, p in zip(xs_pts, epsilons, purposes, strict=True) if p == purpose]
        if pts:
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], color=colour, marker=marker, s=22, zorder=3,
                       label=t(f"plot.{purpose}", lang))
    ax.axhline(cap, color=RED, linestyle="--", linewidth=1.4, label=t("plot.cap", lang, cap=num(cap, lang)))
    firsts = [times[members[g][0]] for g in range(len(groups))]
    ax.set_xticks(range(len(groups)), [t("plot.round_tick", lang, round=rnd, date=when[:10])
                                       for (_run, rnd), when in zip(groups, firsts, strict=True)],
                  fontsize=7)
    for g in range(1, len(groups)):
        if groups[g][0] != groups[g - 1][0]:
            ax.axvline(g - 0.5, color=GREY, linestyle=":", linewidth=1)
    top = max(cap, max(epsilons, default=0.0)) * 1.15
    ax.set_ylim(0, top)
    ax.set_xlim(-0.5, right)
    ax.set_xlabel(t("plot.round_axis", lang))
    ax.set_ylabel(t("plot.epsilon", lang))
    _decimal_axis(ax, lang)
    ax.grid(axis="y", color="#e5e5e5")
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=5, fontsize=7, frameon=False)  # off the data
    return fig


def spend_plot(times: Sequence[str], rounds: Sequence[int], runs: Sequence[str], epsilons: Sequence[float],
               purposes: Sequence[str], cap: float, lang: Lang) -> bytes:
    """``spend_figure`` as PNG bytes."""
    return _png(spend_figure(times, rounds, runs, epsilons, purposes, cap, lang))


def consortium_plot(sites: Sequence[str], spent: Sequence[float | None], caps: Sequence[float], lang: Lang) -> bytes:
    """One horizontal bar per site (its spend; grey hatch when its ledger does not verify) and its cap."""
    fig = Figure(figsize=(7.0, 0.42 * len(sites) + 0.9), layout="constrained")
    ax = fig.add_subplot()
    ys = list(range(len(sites)))[::-1]
    for y, s, cap in zip(ys, spent, caps, strict=True):
        if s is None:
            ax.barh(y, cap, color="white", edgecolor=GREY, hatch="//", height=0.55)
            ax.text(cap * 0.02, y, t("unverified", lang), va="center", fontsize=8, color=RED)
        else:
            share = s / cap
            colour = GREEN if share < 0.8 else AMBER if share <= 1.0 else RED
            ax.barh(y, s, color=colour, height=0.55, label=None)
            ax.text(s + cap * 0.01, y, f"{num(s, lang)} / {num(cap, lang)}", va="center", fontsize=8)
        ax.plot([cap, cap], [y - 0.38, y + 0.38], color="black", linewidth=2)
    ax.set_yticks(ys, list(sites))
    ax.set_xlim(0, max([*caps, *(s for s in spent if s is not None)]) * 1.25)
    ax.set_xlabel(f"epsilon ({t('plot.spent', lang)} / {t('plot.cap_short', lang)})")
    if lang == "fr":
        ax.xaxis.set_major_formatter(lambda v, _pos: f"{v:g}".replace(".", ","))
    ax.grid(axis="x", color="#e5e5e5")
    return _png(fig)
