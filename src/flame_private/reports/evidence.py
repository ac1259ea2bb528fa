"""Attack results as evidence for a report: every ``*.json`` of an attacks folder, with its figures.

Each file is read with ``flame_private.attacks.result.load_result``, which
recomputes the verdict from the arms rather than trusting a stored one.  A file
that is not a valid attack result is bad input (ReportError naming it): a
report never quietly leaves out evidence it was pointed at.  A figure the
result names but that is missing is kept as a note, not an error.
"""

from __future__ import annotations

from pathlib import Path

from flame_private.attacks.result import AttackResult, load_result
from flame_private.config import StrictModel
from flame_private.reports.errors import ReportError


class FigureFile(StrictModel):
    name: str
    """As the result names it (relative to the JSON)."""
    path: str
    present: bool


class AttackEvidence(StrictModel):
    source: str
    """The JSON file the result was read from."""
    result: AttackResult
    figures: list[FigureFile]


def load_attack_evidence(folder: Path) -> list[AttackEvidence]:
    """Every attack result in ``folder`` (top level, by file name); [] when it holds none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ReportError(f"{folder}: attack results folder not found")
    out = []
    for path in sorted(folder.glob("*.json")):
        try:
            result = load_result(path)
        except ValueError as exc:
            raise ReportError(str(exc)) from None
        figures = []
        for name in result.figures:
            fig = (path.parent / name).resolve()
            inside = fig.is_relative_to(path.parent.resolve())
            figures.append(FigureFile(name=name, path=str(fig), present=inside and fig.is_file()))
        out.append(AttackEvidence(source=str(path), result=result, figures=figures))
    return out
