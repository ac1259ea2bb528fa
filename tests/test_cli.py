"""The ``flame`` command (cli.py), driven through typer's CliRunner."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
import typer.main
import yaml
from typer.testing import CliRunner

from flame_private import __version__
from flame_private.cli import app

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TEST_YAML = CONFIGS / "cohort" / "test.yaml"
WIDE = {"COLUMNS": "240"}  # rich wraps at 80 columns otherwise; keep paths and field names on one line


def _command_paths() -> Iterator[list[str]]:
    """Every command and sub-command of the app, found by walking the click tree (new ones are covered too)."""

    def walk(cmd: click.Command, path: list[str]) -> Iterator[list[str]]:
        yield path
        if isinstance(cmd, click.Group):
            for name, sub in sorted(cmd.commands.items()):
                yield from walk(sub, [*path, name])

    yield from walk(typer.main.get_command(app), [])


COMMAND_PATHS = list(_command_paths())


def invoke(*args: str | Path):
    return CliRunner().invoke(app, [str(a) for a in args], env=WIDE)


def test_the_command_tree_is_found() -> None:
    names = {" ".join(p) for p in COMMAND_PATHS}
    assert {"", "cohort", "cohort synth", "data", "data check", "config", "config validate", "version"} <= names


@pytest.mark.parametrize("path", COMMAND_PATHS, ids=lambda p: " ".join(["flame", *p]))
def test_help_works_on_every_command(path: list[str]) -> None:
    result = invoke(*path, "--help")
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    usage = next(line for line in result.output.splitlines() if "Usage:" in line)
    assert " ".join(path) in usage


def test_version_prints_the_package_version() -> None:
    result = invoke("version")
    assert result.exit_code == 0
    assert result.output.strip() == __version__


# --------------------------------------------------------------------------- config validate


@pytest.mark.parametrize(
    ("path", "kind"),
    [pytest.param(p, k, id=f"{d}/{p.name}") for d, k in (("cohort", "cohort"), ("federation", "federation"),
                                                        ("sites", "site"))
     for p in sorted((CONFIGS / d).glob("*.yaml"))],
)
def test_config_validate_accepts_every_shipped_file(path: Path, kind: str) -> None:
    result = invoke("config", "validate", path, "--kind", kind)
    assert result.exit_code == 0, result.output
    assert f"valid {kind} config" in result.output


def test_config_validate_names_the_file_and_the_field_of_a_bad_config(tmp_path: Path) -> None:
    raw = yaml.safe_load(TEST_YAML.read_text(encoding="utf-8"))
    raw["sites"][1]["scanner"]["noise_sd"] = 0.9
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw), encoding="utf-8")
    result = invoke("config", "validate", bad)
    assert result.exit_code != 0
    assert "sites.1.scanner.noise_sd" in result.output
    assert "bad.yaml" in result.output
    assert "valid cohort config" not in result.output


def test_config_validate_checks_against_the_requested_kind() -> None:
    # a cohort file is not a federation config: its keys are unknown there
    result = invoke("config", "validate", TEST_YAML, "--kind", "federation")
    assert result.exit_code != 0
    assert "sites" in result.output and "unknown key" in result.output


def test_config_validate_refuses_an_unknown_kind() -> None:
    result = invoke("config", "validate", TEST_YAML, "--kind", "banana")
    assert result.exit_code == 2
    assert "'banana' is not one of" in " ".join(result.output.split())


def test_config_validate_reports_a_missing_file(tmp_path: Path) -> None:
    result = invoke("config", "validate", tmp_path / "absent.yaml")
    assert result.exit_code != 0
    assert "absent.yaml" in result.output and "not found" in result.output


# --------------------------------------------------------------------------- cohort synth


@pytest.mark.slow  # about 5 s: synthesises a cohort
def test_cohort_synth_writes_the_cohort_and_refuses_to_overwrite_it(tmp_path: Path, digests) -> None:
    out = tmp_path / "cohort"
    result = invoke("cohort", "synth", "--config", TEST_YAML, "--out", out, "--workers", "1")
    assert result.exit_code == 0, result.output
    for site in ("site-a", "site-b", "site-c"):
        manifest = json.loads((out / site / "manifest.json").read_text(encoding="utf-8"))
        assert len(manifest["patients"]) == 4
        assert site in result.output
    assert (out / "truth" / "counterfactuals.json").is_file()
    before = digests(out)

    again = invoke("cohort", "synth", "--config", TEST_YAML, "--out", out, "--workers", "1")
    assert again.exit_code != 0
    assert "--overwrite" in again.output
    assert digests(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cohort"]


def test_cohort_synth_overwrites_when_asked(tmp_path: Path) -> None:
    raw = yaml.safe_load(TEST_YAML.read_text(encoding="utf-8"))
    raw["sites"] = [dict(raw["sites"][0], n_patients=1)]
    cfg = tmp_path / "one.yaml"
    cfg.write_text(yaml.safe_dump(raw), encoding="utf-8")
    out = tmp_path / "cohort"
    out.mkdir()
    (out / "stale.txt").write_text("old", encoding="utf-8")
    result = invoke("cohort", "synth", "-c", cfg, "-o", out, "--workers", "1", "--overwrite")
    assert result.exit_code == 0, result.output
    assert not (out / "stale.txt").exists()
    assert (out / "site-a" / "site-a-000" / "baseline" / "seg.nii.gz").is_file()


def test_cohort_synth_with_a_bad_config_names_the_field_and_writes_nothing(tmp_path: Path) -> None:
    raw = yaml.safe_load(TEST_YAML.read_text(encoding="utf-8"))
    raw["grid"] = 4
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump(raw), encoding="utf-8")
    result = invoke("cohort", "synth", "--config", cfg, "--out", tmp_path / "cohort", "--workers", "1")
    assert result.exit_code != 0
    assert "grid" in result.output
    assert not (tmp_path / "cohort").exists()


# --------------------------------------------------------------------------- data check


def test_data_check_passes_a_synthesised_site(cohort_dir: Path) -> None:
    result = invoke("data", "check", cohort_dir / "site-b")
    assert result.exit_code == 0, result.output
    assert "0 invalid" in result.output


def test_data_check_fails_a_site_with_a_truncated_file_and_names_it(tmp_path: Path, cohort_dir: Path) -> None:
    site = shutil.copytree(cohort_dir / "site-b", tmp_path / "site-b")
    victim = site / "site-b-001" / "evaluation" / "t2.nii.gz"
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    result = invoke("data", "check", site)
    assert result.exit_code == 1, result.output
    assert "t2.nii.gz" in result.output
    assert "site-b-001" in result.output
    assert "1 invalid" in result.output


def test_data_check_fails_an_empty_folder_naming_it_and_the_layout(tmp_path: Path) -> None:
    result = invoke("data", "check", "--layout", "brats2021", tmp_path)
    assert result.exit_code == 1, result.output
    text = " ".join(result.output.split())
    assert "no cases found" in text and str(tmp_path) in text and "brats2021 layout" in text
    assert "0 case(s), 0 invalid, 1 site-level problem(s): INVALID" in text


# --------------------------------------------------------------------------- train


@pytest.mark.parametrize("command", [["train", "local", "--site"], ["train", "central", "--sites"]])
def test_training_requires_the_federation_config_and_says_which(command: list[str]) -> None:
    """No default that only resolves from the repository root: the settings that spend a site's budget are chosen."""
    site = CONFIGS / "sites" / "site-a.yaml"
    result = invoke(*command, site)
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "--federation is required" in text and "docs/site-setup.md" in text


def test_data_check_refuses_something_that_is_not_a_folder(tmp_path: Path) -> None:
    result = invoke("data", "check", tmp_path / "missing")
    assert result.exit_code != 0
    assert "not a folder" in result.output
