"""One CLI: one exception base with a stable exit status, fixed choices as enums, one meaning per option name.

The policy itself is docs/cli.md; these tests hold the code to it, for every command and every
error class (new ones are found by walking the package, not listed here).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
import typer.main
from typer.testing import CliRunner

import flame_private
from flame_private.cli import app
from flame_private.errors import ExitCode, FlameError

DOCS = Path(__file__).resolve().parents[1] / "docs" / "cli.md"
CONFIGS = Path(__file__).resolve().parents[1] / "configs"
WIDE = {"COLUMNS": "240"}

def _exception_classes() -> Iterator[type[BaseException]]:
    """Every exception class defined in flame_private (imported from the module that defines it)."""
    seen: set[type] = set()
    for info in pkgutil.walk_packages(flame_private.__path__, "flame_private."):
        module = importlib.import_module(info.name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__ == info.name and obj not in seen:
                seen.add(obj)
                yield obj


EXCEPTIONS = sorted(_exception_classes(), key=lambda c: f"{c.__module__}.{c.__qualname__}")


def test_the_walk_finds_the_exception_classes() -> None:
    """Positive control: the walk sees classes in subpackages, not only the top level."""
    names = {c.__qualname__ for c in EXCEPTIONS}
    assert {"HEError", "KeyCheckMismatch", "LedgerError", "BudgetExceeded", "ReportError", "DataError"} <= names


@pytest.mark.parametrize("exc", EXCEPTIONS, ids=lambda c: f"{c.__module__}.{c.__qualname__}")
def test_every_error_derives_from_flame_error_with_an_exit_status_of_the_policy(exc: type[BaseException]) -> None:
    assert issubclass(exc, FlameError)
    assert isinstance(exc.exit_code, ExitCode)
    assert exc.exit_code not in (ExitCode.OK, ExitCode.USAGE)  # 0 is success, 2 is typer's


def test_errors_keep_their_other_bases_so_existing_except_clauses_still_catch_them() -> None:
    from flame_private.config import ConfigError
    from flame_private.data.errors import DataError
    from flame_private.privacy.policy import PolicyError
    from flame_private.secure.public.errors import HEError

    assert issubclass(HEError, ValueError) and issubclass(DataError, ValueError)
    assert issubclass(PolicyError, ConfigError) and issubclass(PolicyError, FlameError)


def test_the_exit_statuses_are_the_documented_ones() -> None:
    from flame_private.privacy.budget import BudgetExceeded
    from flame_private.privacy.ledger import LedgerError
    from flame_private.privacy.policy import PolicyError
    from flame_private.secure.public.errors import ContextFileError
    from flame_private.secure.site.keycheck import KeyCheckMismatch

    assert [int(c) for c in ExitCode] == [0, 1, 2, 3, 4, 5]
    assert (BudgetExceeded.exit_code, PolicyError.exit_code) == (ExitCode.PRIVACY_REFUSED,) * 2
    assert (ContextFileError.exit_code, KeyCheckMismatch.exit_code) == (ExitCode.CRYPTO, ExitCode.CHECK_FAILED)
    assert LedgerError.exit_code == ExitCode.CHECK_FAILED
    table = DOCS.read_text(encoding="utf-8")
    for code in ExitCode:
        assert re.search(rf"^\| {int(code)} \|", table, re.M), f"docs/cli.md does not document status {int(code)}"


def test_a_refusal_inside_a_command_exits_with_its_class_status_and_one_error_line() -> None:
    """The one helper: the library's error becomes one line naming the file and the class's status."""
    import typer

    from flame_private.cli_common import refusals
    from flame_private.privacy.budget import BudgetExceeded

    one = typer.Typer()

    @one.command()
    def spend() -> None:
        with refusals():
            raise BudgetExceeded("site-a: epsilon 3.2 would exceed the approved cap 3.0 (policy.yaml)", None)  # type: ignore[arg-type]

    result = CliRunner().invoke(one, [], env=WIDE)
    assert result.exit_code == 4
    assert result.output.strip().splitlines() == [
        "refused: site-a: epsilon 3.2 would exceed the approved cap 3.0 (policy.yaml)"]


# --------------------------------------------------------------------------- fixed choices

SITE = CONFIGS / "sites" / "site-a.yaml"
FED = CONFIGS / "federation" / "demo.yaml"
TYPOS = {
    "--task": (["train", "local", "--site", SITE, "--federation", FED, "--task", "respones"], "response"),
    "--layout": (["data", "check", ".", "--layout", "brats2022"], "brats2021"),
    "--lang": (["report", "ethics", "--site", SITE, "--out", "r.pdf", "--lang", "de"], "fr"),
    "--format": (["report", "ethics", "--site", SITE, "--out", "r.pdf", "--format", "docx"], "pdf"),
    "--size": (["attack", "noise-replay", "--size", "small"], "full"),
    "--kind": (["config", "validate", SITE, "--kind", "sites"], "federation"),
    "site init --layout": (["site", "init", "x", "--out", "x", "--data-dir", ".", "--layout", "BraTS"], "upenn"),
}


@pytest.mark.parametrize("option", TYPOS)
def test_a_typo_in_a_choice_is_a_usage_error_listing_the_choices(option: str, tmp_path: Path) -> None:
    args, choice = TYPOS[option]
    result = CliRunner().invoke(app, [str(a) for a in args], env=WIDE)
    text = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert "is not one of" in text and f"'{choice}'" in text
    assert not (Path("r.pdf").exists() or Path("x").exists())


def test_help_lists_the_choices() -> None:
    result = CliRunner().invoke(app, ["train", "local", "--help"], env=WIDE)
    assert "[response|evolution|segmentation]" in result.output


def test_the_report_choices_are_the_reports_own() -> None:
    from flame_private.cli_common import FormatChoice, LangChoice, SizeChoice
    from flame_private.reports.i18n import LANGS
    from flame_private.reports.output import FORMATS

    assert [c.value for c in LangChoice] == list(LANGS)
    assert [c.value for c in FormatChoice] == list(FORMATS)
    from flame_private.attacks import dp_audit, gradient_inversion, membership

    for module in (dp_audit, gradient_inversion, membership):
        assert {c.value for c in SizeChoice} == set(module.SIZES)


def test_the_task_and_layout_choices_are_the_configs_own() -> None:
    from typing import get_args

    from flame_private.cli_common import LayoutChoice, TaskChoice
    from flame_private.config import Layout, Task

    assert [c.value for c in TaskChoice] == list(get_args(Task))
    assert [c.value for c in LayoutChoice] == list(get_args(Layout))


# --------------------------------------------------------------------------- one meaning per option name


def _options() -> Iterator[tuple[str, click.Option]]:
    def walk(cmd: click.Command, path: list[str]) -> Iterator[tuple[str, click.Option]]:
        if isinstance(cmd, click.Group):
            for p in cmd.params:
                if isinstance(p, click.Option):
                    yield " ".join(path), p
            for name, sub in sorted(cmd.commands.items()):
                yield from walk(sub, [*path, name])
        else:
            yield from ((" ".join(path), p) for p in cmd.params if isinstance(p, click.Option) and p.name != "help")

    yield from walk(typer.main.get_command(app), ["flame"])


def _documented() -> dict[str, str]:
    """docs/cli.md's option table: long name -> short name ('' when none)."""
    rows = re.findall(r"^\| (`--[^|]+) \| ?(?:`(-[a-z])`)? ?\|", DOCS.read_text(encoding="utf-8"), re.M)
    return {long: short for names, short in rows for long in re.findall(r"`(--[a-z-]+)", names)}


def test_each_short_flag_means_one_option_and_each_option_has_one_short_flag() -> None:
    shorts: dict[str, set[str]] = {}
    for _, opt in _options():
        longs = [o for o in opt.opts if o.startswith("--")]
        for long in longs[:1]:
            shorts.setdefault(long, set()).add(next((o for o in opt.opts if not o.startswith("--")), ""))
    assert {long: s for long, s in shorts.items() if len(s) > 1} == {}
    by_short: dict[str, set[str]] = {}
    for long, s in shorts.items():
        for short in s - {""}:
            by_short.setdefault(short, set()).add(long)
    assert {short: longs for short, longs in by_short.items() if len(longs) > 1} == {}


def test_options_shared_by_commands_are_documented_with_their_one_meaning_and_short_flag() -> None:
    documented = _documented()
    assert {"--site", "--federation", "--he-params", "--config"} <= set(documented)  # the table is read
    used: dict[str, set[str]] = {}
    for command, opt in _options():
        long = next(o for o in opt.opts if o.startswith("--"))
        used.setdefault(long, set()).add(command)
        if long in documented:
            short = next((o for o in opt.opts if not o.startswith("--")), "")
            assert short == documented[long], f"{command} {long}: {short!r}, docs/cli.md: {documented[long]!r}"
    shared = {long for long, commands in used.items() if len(commands) > 1}
    assert shared - set(documented) == set(), "an option used by several commands is missing from docs/cli.md"


def test_config_is_only_a_commands_own_config_and_the_old_names_are_gone() -> None:
    used = {(command, o) for command, opt in _options() for o in opt.opts}
    assert {command for command, o in used if o == "--config"} == {"flame cohort synth", "flame study"}
    assert {o for _, o in used} & {"--params"} == set()
    assert {command for command, o in used if o == "--attacks"} == {"flame demo"}  # its --attacks/--no-attacks switch
    old = CliRunner().invoke(app, ["train", "local", "--site", str(SITE), "--config", str(FED)], env=WIDE)
    assert old.exit_code == 2 and "No such option" in old.output


# --------------------------------------------------------------------------- renamed options work


def test_federation_is_read_from_federation_and_its_short_flag(tmp_path: Path) -> None:
    """A bad federation file given with -f is read and refused naming it (status 3), before any training."""
    bad = tmp_path / "fed.yaml"
    bad.write_text("model: {unknown_field: 1}\n")
    for flag in ("--federation", "-f"):
        result = CliRunner().invoke(app, ["train", "local", "-s", str(SITE), flag, str(bad)], env=WIDE)
        assert result.exit_code == 3, result.output
        assert "fed.yaml" in result.output and "unknown_field" in result.output


def test_the_config_kinds_are_the_validators_kinds() -> None:
    from flame_private.cli import CONFIG_KINDS, ConfigKind

    assert [c.value for c in ConfigKind] == list(CONFIG_KINDS)
