"""Helpers every layout reader shares: problem collection and the optional clinical.csv.

Readers run in two modes.  Called on their own they are strict: any problem
raises one ``DataError`` listing all of them.  Called by ``check_site`` they get a
``problems`` list to append to, so one bad patient does not hide the others.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

from pydantic import ValidationError

from flame_private.config import MODALITIES, Modality
from flame_private.data.errors import DataError, Problem, format_problems
from flame_private.data.records import RESECTIONS, CaseRecord, Covariates

log = logging.getLogger(__name__)

CLINICAL_CSV = "clinical.csv"
CLINICAL_REQUIRED = ("patient_id", "treatment", "age", "sex", "mgmt_methylated", "resection")

_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f"}


def finish(records: list[CaseRecord], found: list[Problem], sink: list[Problem] | None, root: Path) -> list[CaseRecord]:
    """Hand problems to the caller's sink, or raise them all at once in strict mode."""
    if sink is not None:
        sink.extend(found)
        return records
    if found:
        raise DataError(format_problems(found, header=f"cannot read site at {root}"))
    return records


def parse_bool(value: str) -> bool:
    """Accept the usual spellings of a yes/no cell; raise ValueError otherwise."""
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ValueError(f"expected true/false, got {value!r}")


def parse_treatment(value: object) -> Modality:
    """Validate a treatment modality name; the error lists the accepted ones."""
    name = value.strip().lower() if isinstance(value, str) else None
    for modality in MODALITIES:
        if name == modality:
            return modality
    raise ValueError(f"unknown treatment {value!r} (expected one of {', '.join(MODALITIES)})")


def validation_reason(err: ValidationError, prefix: str = "") -> str:
    """Pydantic errors as 'field: message' pairs naming the offending value."""
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<entry>"
        got = "" if e["type"] == "missing" else f" (got {e.get('input')!r})"
        parts.append(f"{prefix}{loc}: {e['msg']}{got}")
    return "; ".join(parts)


class ClinicalRow:
    """Validated clinical values of one patient from clinical.csv."""

    def __init__(self) -> None:
        self.treatment: str | None = None
        self.covariates: Covariates | None = None
        self.rano: str | None = None
        self.responder: bool | None = None


def read_clinical_csv(root: Path, found: list[Problem]) -> dict[str, ClinicalRow]:
    """Read ROOT/clinical.csv if present; bad cells become per-patient problems naming the column."""
    path = root / CLINICAL_CSV
    if not path.is_file():
        return {}
    return read_clinical_table(path, found)


def read_clinical_table(path: Path, found: list[Problem]) -> dict[str, ClinicalRow]:
    """The rows of a clinical table at PATH (the columns of clinical.csv), keyed by patient_id."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        found.append(Problem(patient_id=None, path=path, reason=f"cannot read clinical table ({exc})"))
        return {}
    missing = [c for c in CLINICAL_REQUIRED if c not in columns]
    if missing:
        found.append(Problem(patient_id=None, path=path, reason=f"missing column(s): {', '.join(missing)}"))
        return {}

    out: dict[str, ClinicalRow] = {}
    for line, row in enumerate(rows, start=2):
        pid = row["patient_id"]
        if not pid:
            found.append(Problem(patient_id=None, path=path, reason=f"line {line}: empty patient_id"))
            continue
        if pid in out:
            found.append(Problem(patient_id=pid, path=path, reason=f"line {line}: duplicate patient_id {pid!r}"))
            continue
        out[pid] = _parse_clinical_row(pid, row, path, found)
    return out


def _parse_clinical_row(pid: str, row: dict[str, str], path: Path, found: list[Problem]) -> ClinicalRow:
    entry = ClinicalRow()

    def bad(column: str, why: str) -> None:
        found.append(Problem(patient_id=pid, path=path, reason=f"column {column}: {why}"))

    if row["treatment"]:
        try:
            entry.treatment = parse_treatment(row["treatment"])
        except ValueError as exc:
            bad("treatment", str(exc))

    raw = {c: row[c] for c in ("age", "sex", "mgmt_methylated", "resection")}
    if any(raw.values()):
        values: dict[str, object] = {}
        ok = True
        for column, cell in raw.items():
            if not cell:
                bad(column, "empty (covariates need age, sex, mgmt_methylated and resection)")
                ok = False
        if ok:
            try:
                values["age"] = float(raw["age"])
            except ValueError:
                bad("age", f"not a number: {raw['age']!r}")
                ok = False
            values["sex"] = raw["sex"].upper()
            if values["sex"] not in ("F", "M"):
                bad("sex", f"expected F or M, got {raw['sex']!r}")
                ok = False
            try:
                values["mgmt_methylated"] = parse_bool(raw["mgmt_methylated"])
            except ValueError as exc:
                bad("mgmt_methylated", str(exc))
                ok = False
            values["resection"] = raw["resection"].lower()
            if values["resection"] not in RESECTIONS:
                bad("resection", f"expected one of {', '.join(RESECTIONS)}, got {raw['resection']!r}")
                ok = False
        if ok:
            try:
                entry.covariates = Covariates.model_validate(values)
            except ValidationError as exc:
                for e in exc.errors():
                    bad(str(e["loc"][0]) if e["loc"] else "covariates", f"{e['msg']} (got {e.get('input')!r})")

    entry.rano = row.get("rano") or None
    if row.get("responder"):
        try:
            entry.responder = parse_bool(row["responder"])
        except ValueError as exc:
            bad("responder", str(exc))
    return entry


def apply_clinical(
    records: list[CaseRecord], clinical: dict[str, ClinicalRow], root: Path
) -> list[CaseRecord]:
    """Fill treatment, covariates and outcome from clinical.csv; CSV values win over the reader's."""
    if not clinical:
        return records
    out = []
    for rec in records:
        row = clinical.get(rec.patient_id)
        if row is None:
            log.warning("%s: no row for patient %s in %s", root, rec.patient_id, CLINICAL_CSV)
            out.append(rec)
            continue
        update: dict[str, object] = {"treatment": row.treatment, "covariates": row.covariates}
        if row.rano is not None:
            update["rano"] = row.rano
        if row.responder is not None:
            update["responder"] = row.responder
        out.append(rec.model_copy(update=update))
    unknown = sorted(set(clinical) - {r.patient_id for r in records})
    if unknown:
        log.warning("%s: %s lists patients with no images: %s", root, CLINICAL_CSV, ", ".join(unknown))
    return out
