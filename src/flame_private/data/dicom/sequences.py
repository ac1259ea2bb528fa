"""Which MR series is T1, T1ce, T2 or FLAIR, and which is a localiser.

Series names differ between vendors and between sites' protocols, so a site can
give its own rules (a YAML mapping of sequence -> regular expressions on the
series description or protocol name). Without them, the acquisition parameters
decide where the names do not: a contrast agent makes T1ce, a long inversion
time with a long echo FLAIR, a long echo and repetition time T2.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, field_validator

from flame_private.config import StrictModel
from flame_private.data.dicom.headers import SeriesHeader

SEQUENCES = ("t1", "t1ce", "t2", "flair")

_DEFAULT_NAMES: dict[str, list[str]] = {
    "localizer": [r"\b(loc|localis|localiz|scout|survey|3[- ]?pl(ane)?)"],
    # GE's "T1 FLAIR" is T1-weighted: a FLAIR only when no T1 is named before it.
    "flair": [r"(?<!t1 )(?<!t1_)(?<!t1-)flair", r"\bdark[- ]?fluid"],
    "t1ce": [r"t1.*(\+ ?c\b|\bpost|\bgd|gado|contrast|\bce\b|\bc\+)", r"\bt1 ?(ce|c|gd)\b",
             r"(mprage|spgr|bravo|tfe).*(\+ ?c\b|\bpost|\bgd)"],
    "t2": [r"\bt2(?!\*)(?!.*flair)", r"\bfse\b.*t2"],
    "t1": [r"\bt1", r"mprage", r"spgr", r"bravo", r"\btfe\b"],
}


class SequenceRules(StrictModel):
    """A site's series names: sequence -> regular expressions (case-insensitive), tried first."""

    t1: list[str] = Field(default_factory=list)
    t1ce: list[str] = Field(default_factory=list)
    t2: list[str] = Field(default_factory=list)
    flair: list[str] = Field(default_factory=list)
    localizer: list[str] = Field(default_factory=list)
    ignore: list[str] = Field(default_factory=list)
    """Series to leave out on purpose (diffusion, perfusion, ...): listed in the report, never used."""

    @field_validator("t1", "t1ce", "t2", "flair", "localizer", "ignore")
    @classmethod
    def _compiles(cls, patterns: list[str]) -> list[str]:
        for p in patterns:
            try:
                re.compile(p)
            except re.error as exc:
                raise ValueError(f"bad regular expression {p!r}: {exc}") from None
        return patterns

    @classmethod
    def load(cls, path: Path) -> SequenceRules:
        from flame_private.config.loading import load_config

        return load_config(path, cls)


def _matches(patterns: list[str], header: SeriesHeader) -> bool:
    text = f"{header.description} | {header.protocol}"
    return any(re.search(p, text, flags=re.IGNORECASE) for p in patterns)


def classify(header: SeriesHeader, rules: SequenceRules | None = None) -> str:
    """``t1``, ``t1ce``, ``t2``, ``flair``, ``localizer``, ``ignore`` or ``unknown``."""
    if header.modality != "MR":
        return "ignore"
    if rules is not None:
        for name in ("ignore", "localizer", "flair", "t1ce", "t2", "t1"):
            if _matches(getattr(rules, name), header):
                return name
    if "LOCALIZER" in header.image_type or _matches(_DEFAULT_NAMES["localizer"], header):
        return "localizer"
    for name in ("flair", "t1ce", "t2", "t1"):
        if _matches(_DEFAULT_NAMES[name], header):
            return "t1ce" if name == "t1" and header.contrast_agent else name
    te, tr, ti = header.echo_time, header.repetition_time, header.inversion_time
    if ti is not None and ti > 1200 and te is not None and te > 60:
        return "flair"
    if te is not None and tr is not None and te > 60 and tr > 1800:
        return "t2"
    if te is not None and te < 30:
        return "t1ce" if header.contrast_agent else "t1"
    return "unknown"
