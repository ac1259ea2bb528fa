"""Every report of a federation at once: each site's ethics report and the consortium overview, in each
language and format, facts gathered (and records verified) once per site.  What ``flame demo`` writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from flame_private.reports.consortium import ConsortiumReport, consortium_from
from flame_private.reports.consortium_doc import consortium_document
from flame_private.reports.content import build_ethics_report
from flame_private.reports.ethics_doc import ethics_document
from flame_private.reports.facts import EthicsReport
from flame_private.reports.i18n import LANGS, Lang
from flame_private.reports.output import FORMATS, Format, write_document


@dataclass
class ReportBundle:
    folder: Path
    sites: list[EthicsReport]
    consortium: ConsortiumReport
    files: list[Path] = field(default_factory=list)


def write_reports(site_yamls: list[Path], folder: Path, *, attacks_dir: Path | None = None,
                  params: Path | None = None, study: str | None = None, langs: tuple[Lang, ...] = LANGS,
                  formats: tuple[Format, ...] = FORMATS) -> ReportBundle:
    """``ethics-<site>-<lang>.<fmt>`` for each site and ``consortium-<lang>.<fmt>`` in ``folder``."""
    sites = [build_ethics_report(p, attacks_dir=attacks_dir, params=params, study=study) for p in site_yamls]
    bundle = ReportBundle(folder=folder, sites=sites, consortium=consortium_from(sites, study=study))
    for lang in langs:
        docs = [(f"ethics-{s.site_id}-{lang}", ethics_document(s, lang)) for s in sites]
        docs.append((f"consortium-{lang}", consortium_document(bundle.consortium, lang)))
        for stem, doc in docs:
            for fmt in formats:
                bundle.files.append(write_document(doc, folder / f"{stem}.{fmt}", fmt))
    return bundle
