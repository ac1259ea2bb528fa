"""The one exception base of flame-private and the ``flame`` command's exit statuses.

Every error the library raises on purpose derives from :class:`FlameError` and
carries a stable ``exit_code``: the CLI turns any of them into a one-line message
and that status, so a script (or a DPO's checklist) can tell "a check failed" from
"the input is wrong", "privacy refused it" and "the key material is wrong" without
reading the text.  Each class keeps its other bases (``ValueError``...), so
existing ``except`` clauses still catch it.  The policy is documented in docs/cli.md.

Imports nothing from the package, so any module may import it.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Exit statuses of every ``flame`` command; stable: scripts and checklists depend on them."""

    OK = 0
    """Done; every check passed (warnings allowed)."""
    CHECK_FAILED = 1
    """A check or verification failed: audit, ``budget show|verify``, ``data check``, ``keys verify``, a report
    that flags a problem, an attack whose evidence does not hold, a record (ledger, egress log, approved-apps
    log) that does not verify."""
    USAGE = 2
    """The command line is wrong (typer's own): unknown option, missing option, a value not among the choices."""
    INPUT = 3
    """A configuration or input file cannot be used (missing, malformed, invalid field, exists already): the
    message names the file and the field or site."""
    PRIVACY_REFUSED = 4
    """Privacy refused it: the budget would be exceeded, the privacy policy is missing, a template or not valid
    today, or the app bundle is not approved."""
    CRYPTO = 5
    """Key or encryption material cannot be used: HE parameters, contexts, key files (permissions), ciphertexts."""


class FlameError(Exception):
    """Base of every error flame-private raises on purpose; ``exit_code`` is what ``flame`` exits with."""

    exit_code: ExitCode = ExitCode.INPUT


def exit_code_of(exc: BaseException) -> ExitCode:
    """The exit status for ``exc``: its class's ``exit_code``; any other ``ValueError``/``OSError`` is bad input."""
    if isinstance(exc, FlameError):
        return ExitCode(type(exc).exit_code)
    return ExitCode.INPUT
