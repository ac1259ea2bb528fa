"""Pseudonyms for patients, intervals for dates, and a last check that no identity got through.

The site folder is what trains; it must not say who a patient is. Patients get
random pseudonyms, kept with the hospital's IDs in a mapping file that the
importer writes outside the site folder and that never leaves the site; a later
import of the same patients reuses their pseudonyms. Study dates become days
since the baseline study. The importer copies no free text from the headers
unless it is free of the patient's identifiers, and before the folder is put in
place every file in it is searched for them.
"""

from __future__ import annotations

import csv
import gzip
import os
import re
import secrets
import struct
import zlib
from datetime import date, datetime
from pathlib import Path

from flame_private.data.errors import DataError

PSEUDONYM_COLUMNS = ("patient_id", "pseudonym", "baseline_study_uid")
PSEUDONYM_LETTERS = "abcdefghjkmnpqrstuvwxyz"
"""Letters only (23^8 = 8e10 pseudonyms a site): no run of digits in a pseudonym can spell a patient's
numeric ID or date, which the last search before writing would take for a leak."""


class PseudonymMap:
    """Hospital patient ID <-> pseudonym, stored as a CSV at the site (never in the site folder)."""

    def __init__(self, path: Path, site_id: str) -> None:
        self.path = Path(path)
        self.site_id = site_id
        self._by_id: dict[str, str] = {}
        self._baseline: dict[str, str] = {}
        if self.path.exists():
            try:
                with self.path.open(newline="", encoding="utf-8") as fh:
                    reader = csv.DictReader(fh)
                    if tuple(reader.fieldnames or ()) != PSEUDONYM_COLUMNS:
                        raise DataError(f"{self.path}: expected columns {', '.join(PSEUDONYM_COLUMNS)}, "
                                        f"got {reader.fieldnames}")
                    for row in reader:
                        self._by_id[row["patient_id"]] = row["pseudonym"]
                        if row["baseline_study_uid"]:
                            self._baseline[row["patient_id"]] = row["baseline_study_uid"]
            except (OSError, UnicodeDecodeError, csv.Error) as exc:
                raise DataError(f"{self.path}: cannot read the pseudonym map ({exc})") from None
            if len(set(self._by_id.values())) != len(self._by_id):
                raise DataError(f"{self.path}: two patients share a pseudonym")

    def known(self, patient_id: str) -> str | None:
        """The patient's pseudonym if the map has one (never draws a new one)."""
        return self._by_id.get(patient_id)

    def baseline_study(self, patient_id: str) -> str | None:
        """The StudyInstanceUID the import took as the patient's baseline (what predictions are drawn on)."""
        return self._baseline.get(patient_id)

    def set_baseline_study(self, patient_id: str, study_uid: str) -> None:
        self._baseline[patient_id] = study_uid

    def pseudonym(self, patient_id: str) -> str:
        """The patient's pseudonym, drawn at random the first time it is asked for."""
        if patient_id not in self._by_id:
            taken = set(self._by_id.values())
            while (candidate := f"{self.site_id}-"
                                f"{''.join(secrets.choice(PSEUDONYM_LETTERS) for _ in range(8))}") in taken:
                pass
            self._by_id[patient_id] = candidate
        return self._by_id[patient_id]

    def save(self) -> None:
        """Write the map atomically (a crash leaves the old one, never half of the new)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # owner-only from the first byte
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(PSEUDONYM_COLUMNS)
            for pid, pseudonym in sorted(self._by_id.items()):
                writer.writerow([pid, pseudonym, self._baseline.get(pid, "")])
        os.replace(tmp, self.path)


def parse_dicom_date(value: str, what: str) -> date:
    """A DICOM DA value (YYYYMMDD); raises ValueError naming WHAT."""
    try:
        return datetime.strptime(value.strip()[:8], "%Y%m%d").date()
    except ValueError:
        raise ValueError(f"{what}: not a DICOM date (YYYYMMDD): {value!r}") from None


def identifiers(patient_id: str, patient_name: str, birth_date: str, study_dates: list[str]) -> list[str]:
    """The strings that identify a patient in text: ID, each part of the name, birth and study dates."""
    found = {patient_id, birth_date, *study_dates}
    found |= {part for part in re.split(r"[\^ ,=]+", patient_name) if len(part) >= 3}  # '=': ideographic groups
    return sorted(s for s in found if s and len(s) >= 3)


SHORT = 6
"""Identifiers shorter than this (a 3-letter name part, a research ID such as 017) only count as whole
tokens: inside a longer word or number (or after a decimal point) they are chance, and would stop every
import. Longer ones count anywhere (a date inside a date-time, an ID inside a file name); the report keeps
its numbers short (4 decimals) so that no run of their digits spells one by chance."""


def _pattern(secret: str) -> str:
    escaped = re.escape(secret)
    return rf"(?<![0-9a-z.]){escaped}(?![0-9a-z])" if len(secret) < SHORT else escaped


def redact(text: str, secrets_: list[str]) -> tuple[str, bool]:
    """TEXT with every identifier replaced, and whether any was found."""
    out = text
    for s in sorted(secrets_, key=len, reverse=True):
        out = re.sub(_pattern(s.casefold()), "[redacted]", out, flags=re.IGNORECASE)
    return out, out != text


def _text_of(path: Path) -> bytes:
    """The bytes of PATH that can carry text: NIfTI header and extensions, PNG text chunks, else all.

    Image voxels are left out: a short name part would turn up by chance in
    megabytes of floating-point data.
    """
    if path.name.endswith((".nii", ".nii.gz")):
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as fh:
            head = fh.read(352)
            vox_offset = int(struct.unpack("<f", head[108:112])[0]) if len(head) >= 112 else 352
            return head + fh.read(max(0, vox_offset - 352))
    data = path.read_bytes()
    if path.suffix == ".png":
        chunks, pos = [], 8
        while pos + 8 <= len(data):
            length, kind = struct.unpack(">I4s", data[pos:pos + 8])
            body = data[pos + 8:pos + 8 + length]
            if kind in (b"tEXt", b"iTXt"):
                chunks.append(body)
            elif kind == b"zTXt":
                chunks.append(zlib.decompress(body.split(b"\0", 1)[1][1:]))
            pos += 12 + length
        return b"\n".join(chunks)
    return gzip.decompress(data) if path.suffix == ".gz" else data


def files_containing(folder: Path, secrets_: list[str]) -> list[tuple[Path, str]]:
    """(file, identifier) for every file under FOLDER whose text holds one (case-insensitive)."""
    hits: list[tuple[Path, str]] = []
    needles = [(s, re.compile(_pattern(s.casefold()))) for s in secrets_ if s]
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        folded = _text_of(path).decode("utf-8", errors="ignore").casefold()  # Öztürk as well as Smith
        hits += [(path, s) for s, needle in needles if needle.search(folded)]
    return hits
