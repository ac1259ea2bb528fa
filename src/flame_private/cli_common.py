"""What every ``flame`` command shares: the one error helper and the fixed choices of its options.

Errors: a command never prints a traceback for a refusal it expects.  ``fail``
prints one ``error:`` line (the exception's message names the file, field or site)
and exits with the status of the policy in :mod:`flame_private.errors`;
``refusals()`` does that for every :class:`~flame_private.errors.FlameError` (and a
configuration file that does not validate) raised inside it.

Choices: options with a fixed set of values are Enums, so ``--help`` lists them
and a typo is typer's usage error (exit 2) naming the choices.  They are spelled
out (a type checker cannot follow an Enum built at run time) and a test keeps each
equal to the library's own values (``config.Task``, ``config.Layout``, the reports'
languages and formats, the attacks' sizes).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from flame_private.config import ConfigError, load_config
from flame_private.errors import ExitCode, FlameError, exit_code_of

M = TypeVar("M")

_LABEL = {ExitCode.CHECK_FAILED: "failed", ExitCode.PRIVACY_REFUSED: "refused"}


def fail(problem: BaseException | str, code: int | None = None) -> typer.Exit:
    """Print ``error: <problem>`` on stderr and return the ``typer.Exit`` to raise.

    ``code`` defaults to the exception's own exit status (bad input for a plain message).
    """
    status = ExitCode(code) if code is not None else (
        exit_code_of(problem) if isinstance(problem, BaseException) else ExitCode.INPUT)
    label = _LABEL.get(status, "error")
    Console(stderr=True, highlight=False, soft_wrap=True).print(f"[bold red]{label}:[/] {escape(str(problem))}")
    return typer.Exit(int(status))


EXPECTED: tuple[type[BaseException], ...] = (FlameError, ConfigError, FileNotFoundError)
"""What a command turns into a message and an exit status; anything else is a bug and keeps its traceback."""


@contextmanager
def refusals() -> Iterator[None]:
    """Turn the library's expected errors raised inside into ``fail(exc)``: one line, the class's exit status."""
    try:
        yield
    except EXPECTED as exc:
        raise fail(exc) from None


def load(path: Path, model: type[M]) -> M:
    """A configuration file, or exit with the error naming the file and the field."""
    with refusals():
        return load_config(path, model)  # type: ignore[type-var]


class TaskChoice(StrEnum):
    """Which model: response, evolution or the baseline segmentation (config.Task; a test keeps them equal)."""

    response = "response"
    evolution = "evolution"
    segmentation = "segmentation"


class LayoutChoice(StrEnum):
    """A site's data layout (config.Layout; a test keeps them equal)."""

    flame = "flame"
    brats2021 = "brats2021"
    brats2023 = "brats2023"
    lumiere = "lumiere"
    upenn = "upenn"


# The reports package is heavy to import; tests check these equal reports.i18n.LANGS and reports.output.FORMATS.
class LangChoice(StrEnum):
    """Language of a report."""

    en = "en"
    fr = "fr"


class FormatChoice(StrEnum):
    """File format of a report."""

    html = "html"
    pdf = "pdf"


class SizeChoice(StrEnum):
    """Size of an attack simulation: ci (minutes on a laptop) or full (the benchmark size)."""

    ci = "ci"
    full = "full"


def value(choice: Enum | None) -> Any:
    """The plain value of a choice (what the library takes), or None."""
    return None if choice is None else choice.value


def metric_text(m: dict, key: str) -> str:
    """One metric for a person: value with its interval or DP spread, or why there is none."""
    value = m.get(key)
    if value is None:
        return f"{key}: {m.get(f'{key}_status', 'n/a')}"
    text = f"{key}={value:.3f}" if isinstance(value, float) else f"{key}={value}"
    if isinstance(m.get(f"{key}_ci95"), list) and None not in m[f"{key}_ci95"]:
        lo, hi = m[f"{key}_ci95"]
        text += f" [{lo:.2f}, {hi:.2f}]"
    elif isinstance(m.get(f"{key}_dp_sd"), float):
        text += f" (+/- {m[f'{key}_dp_sd']:.2f} DP)"
    return text
