"""The one error a report raises for bad input: it names the file, and no report is written."""

from __future__ import annotations

from flame_private.errors import ExitCode, FlameError


class ReportError(FlameError):
    """The report cannot be made from these inputs (missing or unreadable site file, policy, ledger, attack
    result...).  The message names the file; nothing was written."""

    exit_code = ExitCode.INPUT
