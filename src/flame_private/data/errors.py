"""Errors and problem reports shared by every reader and check.

A site's data is checked before training, and the person running the check is
usually not the person who wrote the loader: every problem therefore carries the
patient, the file and a plain-language reason, never a bare traceback.
"""

from __future__ import annotations

from pathlib import Path

from flame_private.config import StrictModel
from flame_private.errors import ExitCode, FlameError


class DataError(FlameError, ValueError):
    """A site's data cannot be used as it is; the message names the files and reasons."""

    exit_code = ExitCode.INPUT


class NiftiError(DataError):
    """One NIfTI file cannot be used; ``path`` and ``reason`` are kept for reports."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


class Problem(StrictModel):
    """One reason a case (or, with ``patient_id=None``, a whole site) cannot be used."""

    patient_id: str | None
    path: Path | None
    reason: str

    def __str__(self) -> str:
        who = self.patient_id if self.patient_id is not None else "(site)"
        where = f"{self.path}: " if self.path is not None else ""
        return f"{who}: {where}{self.reason}"


def format_problems(problems: list[Problem], header: str = "invalid data") -> str:
    """One line per problem under a header, for exception messages and logs."""
    lines = [f"{header} ({len(problems)} problem(s)):"]
    lines += [f"  - {p}" for p in problems]
    return "\n".join(lines)
