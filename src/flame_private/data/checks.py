"""Validate a site's data before any training touches it, and load only what passed.

A bad file found in epoch 3 of a federated round wastes every site's time and
the privacy budget spent so far; ``check_site`` finds all of them up front and
reports each as (patient, file, reason) so a site operator can fix them in one go.
``load_site`` never drops a case silently: it raises, or (when asked to skip)
returns and logs the skipped cases.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np
from rich.table import Table
from rich.text import Text

from flame_private.config import Layout, StrictModel
from flame_private.data.errors import DataError, NiftiError, Problem, format_problems
from flame_private.data.layouts import LAYOUT_EXPECTS, default_site_id, detect_layout, read_site
from flame_private.data.layouts.flame import MANIFEST
from flame_private.data.nifti import NiftiHeader, read_header, read_volume
from flame_private.data.records import CaseRecord, TimepointRecord

log = logging.getLogger(__name__)

AFFINE_TOL_MM = 1e-3
"""Largest difference between two modalities' voxel-to-world matrices still treated as the same grid."""


class CaseCheck(StrictModel):
    """Result for one patient: how many study dates, and every problem found."""

    patient_id: str
    timepoints: int
    problems: list[Problem] = []

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def status(self) -> str:
        return "OK" if self.ok else "INVALID"


class SiteCheckReport(StrictModel):
    """Everything ``check_site`` learnt about one site folder."""

    root: Path
    layout: Layout | None
    site_id: str
    cases: list[CaseCheck]
    site_problems: list[Problem] = []
    """Problems not tied to one patient (missing manifest, unreadable clinical table ...)."""
    records: list[CaseRecord] = []

    @property
    def ok(self) -> bool:
        return not self.site_problems and all(c.ok for c in self.cases)

    @property
    def problems(self) -> list[Problem]:
        """Every problem, site-level first."""
        return [*self.site_problems, *(p for c in self.cases for p in c.problems)]

    @property
    def invalid_ids(self) -> set[str]:
        return {c.patient_id for c in self.cases if not c.ok}

    @property
    def summary(self) -> str:
        """'N case(s), M invalid', and the site-level problems when there are any: a site whose manifest is
        missing must not read as a site with 0 invalid cases."""
        text = f"{len(self.cases)} case(s), {len(self.invalid_ids)} invalid"
        if self.site_problems:
            text += f", {len(self.site_problems)} site-level problem(s): INVALID"
        return text


class SkippedCase(StrictModel):
    """A case ``load_site(skip_invalid=True)`` left out, and why."""

    patient_id: str
    problems: list[Problem]


class LoadedSite(StrictModel):
    """The usable cases of a site, plus the ones skipped (empty unless skip_invalid)."""

    records: list[CaseRecord]
    skipped: list[SkippedCase] = []


# --------------------------------------------------------------------------- per-case checks


def _seg_label_problem(data: np.ndarray, label_map: dict[int, int], layout: str) -> str | None:
    values = np.unique(data)
    unknown = [v for v in values.tolist() if float(v) != round(float(v)) or int(round(float(v))) not in label_map]
    if not unknown:
        return None
    shown = ", ".join(str(int(v)) if float(v) == round(float(v)) else f"{v:g}" for v in unknown[:10])
    known = ", ".join(str(k) for k in sorted(label_map))
    return f"unknown label value(s) {shown} in segmentation ({layout} labels are {known})"


def _grid_problem(name: str, header: NiftiHeader, ref_name: str, ref: NiftiHeader) -> str | None:
    if header.shape != ref.shape:
        return f"{name} shape {header.shape} disagrees with {ref_name} shape {ref.shape}"
    diff = float(np.abs(header.affine - ref.affine).max())
    if diff > AFFINE_TOL_MM:
        return f"{name} affine disagrees with {ref_name} affine by up to {diff:.4g} mm (tolerance {AFFINE_TOL_MM} mm)"
    return None


def check_timepoint(record: CaseRecord, tp: TimepointRecord, full: bool = True) -> list[Problem]:
    """Problems of one study date: missing, unreadable, non-finite, misaligned files, bad labels."""
    pid = record.patient_id
    problems: list[Problem] = []
    reference: tuple[str, NiftiHeader] | None = None
    for key, path in tp.files.all().items():
        what = {"seg": "segmentation", "dose": "RT dose"}.get(key, f"{key} modality")
        if not path.exists():
            problems.append(Problem(patient_id=pid, path=path, reason=f"missing {what} file ({tp.name})"))
            continue
        try:
            if full:
                header, data = read_volume(path)
            else:
                header, data = read_header(path), None
        except NiftiError as exc:
            problems.append(Problem(patient_id=pid, path=path, reason=f"{exc.reason} ({tp.name} {key})"))
            continue
        if reference is None:
            reference = (key, header)
        else:
            grid = _grid_problem(key, header, *reference)
            if grid:
                problems.append(Problem(patient_id=pid, path=path, reason=f"{grid} ({tp.name})"))
        if key == "seg" and data is not None:
            labels = _seg_label_problem(data, record.label_map, record.layout)
            if labels:
                problems.append(Problem(patient_id=pid, path=path, reason=f"{labels} ({tp.name})"))
        if key == "dose" and data is not None and float(np.min(data)) < 0.0:
            problems.append(Problem(patient_id=pid, path=path,
                                    reason=f"negative RT dose ({float(np.min(data)):.3g} Gy) ({tp.name})"))
    return problems


def check_case(record: CaseRecord, full: bool = True) -> list[Problem]:
    """Every file problem of one case, over all its timepoints."""
    return [p for tp in record.timepoints for p in check_timepoint(record, tp, full=full)]


# --------------------------------------------------------------------------- site


def check_site(
    root: Path | str, layout: Layout | None = None, site_id: str | None = None, *, full: bool = True
) -> SiteCheckReport:
    """Read and validate every case of a site folder; never raises for bad data.

    ``full=False`` only reads headers (existence, dimensions, shapes, affines),
    which is quick on real data but misses corrupt/truncated voxels, NaN/Inf and
    bad segmentation labels.
    """
    root = Path(root)
    found: list[Problem] = []
    if layout is None:
        try:
            layout = detect_layout(root)
        except DataError as exc:
            return SiteCheckReport(
                root=root,
                layout=None,
                site_id=site_id or root.name,
                cases=[],
                site_problems=[Problem(patient_id=None, path=root, reason=str(exc).removeprefix(f"{root}: "))],
            )
    site_id = site_id or default_site_id(root, layout)
    try:
        records = read_site(root, layout, site_id, problems=found)
    except (OSError, DataError) as exc:
        found.append(Problem(patient_id=None, path=root, reason=f"cannot read site ({exc})"))
        records = []

    counts = Counter(r.patient_id for r in records)
    for pid, n in sorted(counts.items()):
        if n > 1:
            where = root / MANIFEST if layout == "flame" else root
            found.append(Problem(patient_id=pid, path=where, reason=f"duplicate patient ID (listed {n} times)"))
    for rec in records:
        log.debug("checking %s", rec.patient_id)
        found.extend(check_case(rec, full=full))

    cases: dict[str, CaseCheck] = {}
    for rec in records:
        if rec.patient_id not in cases:
            cases[rec.patient_id] = CaseCheck(patient_id=rec.patient_id, timepoints=len(rec.timepoints))
    site_problems = []
    per_case: dict[str, list[Problem]] = {}
    for p in found:
        if p.patient_id is None:
            site_problems.append(p)
        else:
            per_case.setdefault(p.patient_id, []).append(p)
            if p.patient_id not in cases:
                cases[p.patient_id] = CaseCheck(patient_id=p.patient_id, timepoints=0)
    rows = [c.model_copy(update={"problems": per_case.get(pid, [])}) for pid, c in cases.items()]
    if not rows and not site_problems:
        # A folder with nothing in it (or the wrong folder) must not pass as a site with 0 invalid cases.
        site_problems.append(Problem(patient_id=None, path=root, reason=(
            f"no cases found: looked in {root.absolute()} for the {layout} layout, which expects "
            f"{LAYOUT_EXPECTS.get(layout, 'its case folders')}")))
    report = SiteCheckReport(
        root=root, layout=layout, site_id=site_id, cases=rows, site_problems=site_problems, records=records
    )
    log.info("%s (%s, site %s): %s", root, layout, site_id, report.summary)
    return report


def load_site(
    root: Path | str, layout: Layout | None = None, site_id: str | None = None, skip_invalid: bool = False
) -> LoadedSite:
    """The validated cases of a site; raises DataError listing every invalid case unless skip_invalid.

    Site-level problems (no manifest, unreadable tables) always raise: there is no
    case to skip.  Skipped cases are returned and logged as warnings.
    """
    report = check_site(root, layout, site_id)
    if report.site_problems:
        header = f"site {report.site_id} at {report.root} cannot be loaded"
        raise DataError(format_problems(report.problems, header=header))
    bad = [c for c in report.cases if not c.ok]
    if bad and not skip_invalid:
        raise DataError(
            format_problems(
                [p for c in bad for p in c.problems],
                header=f"site {report.site_id} at {report.root}: {len(bad)} invalid case(s)",
            )
            + "\n(fix the files, or load with skip_invalid=True to leave these cases out)"
        )
    skipped = [SkippedCase(patient_id=c.patient_id, problems=c.problems) for c in bad]
    for case in skipped:
        log.warning(
            "skipping invalid case %s: %s", case.patient_id, "; ".join(f"{p.path}: {p.reason}" for p in case.problems)
        )
    invalid = report.invalid_ids
    records = [r for r in report.records if r.patient_id not in invalid]
    if not records:
        log.warning("site %s at %s has no valid cases", report.site_id, report.root)
    return LoadedSite(records=records, skipped=skipped)


# --------------------------------------------------------------------------- rendering


def _shown_path(path: Path | None, root: Path) -> str:
    if path is None:
        return ""
    try:
        return str(path.relative_to(root))
    except ValueError:
        return path.name


def render_check_table(report: SiteCheckReport) -> Table:
    """A rich table, one row per case (plus one for site-level problems), for ``flame data check``."""
    table = Table(
        title=f"{report.site_id} ({report.layout or 'unknown layout'}): {report.summary}",
        caption=str(report.root),
    )
    table.add_column("Patient", no_wrap=True)
    table.add_column("Timepoints", justify="right")
    table.add_column("Status")
    table.add_column("Problems", overflow="fold")
    if report.site_problems:
        table.add_row(
            "(site)",
            "",
            Text("INVALID", style="bold red"),
            Text("\n".join(f"{_shown_path(p.path, report.root)}: {p.reason}" for p in report.site_problems)),
        )
    for case in report.cases:
        status = Text("OK", style="green") if case.ok else Text("INVALID", style="bold red")
        reasons = Text("\n".join(f"{_shown_path(p.path, report.root)}: {p.reason}" for p in case.problems))
        table.add_row(Text(case.patient_id), str(case.timepoints), status, reasons)
    return table
