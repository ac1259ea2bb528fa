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


def spend_plot(seqs: Sequence[int], epsilons: Sequence[float], purposes: Sequence[str], runs: Sequence[str],
               cap: float, lang: Lang) -> bytes:
    """Cumulative epsilon after each ledger entry (a step line from 0), entries marked by purpose, and the cap."""
    fig = Figure(figsize=(7.0, 3.0), layout="constrained")
    ax = fig.add_subplot()
    xs = [0, *seqs, len(seqs) + 0.5]  # from nothing spent, to just past the last entry
    ys = [0.0, *epsilons, epsilons[-1] if epsilons else 0.0]
    ax.step(xs, ys, where="post", color=BLUE, linewidth=1.6, zorder=2)
    for purpose, colour, marker in (("training", BLUE, "o"), ("evaluation", ORANGE, "s")):
        pts = [(s, e) for s, e, p in zip(seqs, epsilons, purposes, strict=True) if p == purpose]
        if pts:
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], color=colour, marker=marker, s=22, zorder=3,
                       label=t(f"plot.{purpose}", lang))
    ax.axhline(cap, color=RED, linestyle="--", linewidth=1.4, label=t("plot.cap", lang, cap=num(cap, lang)))
    for i in range(1, len(runs)):
        if runs[i] != runs[i - 1]:
            ax.axvline(seqs[i] - 0.5, color=GREY, linestyle=":", linewidth=1)
    top = max(cap, max(epsilons, default=0.0)) * 1.15
    ax.set_ylim(0, top)
    ax.set_xlim(0, max(1, len(seqs)) + 0.5)
    ax.set_xlabel(t("plot.entry", lang))
    ax.set_ylabel(t("plot.epsilon", lang))
    ax.xaxis.get_major_locator().set_params(integer=True)
    _decimal_axis(ax, lang)
    ax.grid(axis="y", color="#e5e5e5")
    ax.legend(loc="lower right", fontsize=8, frameon=True)
    return _png(fig)


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
