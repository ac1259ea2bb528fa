"""`flame demo --out X` sets itself up in any folder, from any working directory, with the repository's configs.

The whole demo (minutes) is `make demo`; these tests run its set-up only (seconds).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from flame_private import demo
from flame_private.config import CohortConfig, FederationConfig, SiteConfig, load_config

REPO = Path(__file__).resolve().parents[1]


def test_demo_sets_up_under_any_folder_from_any_working_directory(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = tmp_path / "somewhere" / "else"
    elsewhere.mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    out = Path("../../my demo")  # relative to the working directory, as typed on the command line
    setup = demo.prepare_demo(out)
    root = (tmp_path / "my demo").resolve()
    assert [s.site_id for s in setup.sites] == demo.DEMO_SITES
    for site in setup.sites:
        for p in (site.data_dir, site.state_dir, site.privacy_policy, site.secret_context, site.he_params):
            assert p is not None and p.is_relative_to(root), p
        assert (site.state_dir / "privacy_ledger.head.json").is_file()  # initialised, ready to train
        assert site.privacy_policy.read_bytes() == (REPO / "privacy_budgets" / f"{site.site_id}.yaml").read_bytes()
    assert setup.federation == load_config(REPO / "configs/federation/demo.yaml", FederationConfig)
    assert setup.cohort == load_config(REPO / "configs/cohort/demo.yaml", CohortConfig)


def test_demo_set_up_twice_starts_clean(tmp_path: Path) -> None:
    first = demo.prepare_demo(tmp_path)
    (first.sites[0].state_dir / "stray.json").write_text("{}")
    second = demo.prepare_demo(tmp_path)
    assert not (second.sites[0].state_dir / "stray.json").exists()


def test_demo_site_configs_lay_out_the_folder_as_configs_sites_documents(tmp_path: Path) -> None:
    """configs/sites/ describes `make demo` (runs/demo); the demo's own site configs give the same layout."""
    setup = demo.prepare_demo(tmp_path)
    for site in setup.sites:
        documented = load_config(REPO / "configs" / "sites" / f"{site.site_id}.yaml", SiteConfig)
        for field in ("data_dir", "state_dir", "secret_context", "he_params"):
            ours, theirs = getattr(site, field), getattr(documented, field)
            assert ours.relative_to(tmp_path.resolve()) == theirs.relative_to(REPO / "runs" / "demo"), field
        assert site.layout == documented.layout
        assert site.privacy_policy.read_bytes() == documented.privacy_policy.read_bytes()


def test_the_wheel_carries_every_file_the_demo_reads() -> None:
    """setup.py copies into the wheel exactly what demo.DEMO_SOURCES reads from the repository."""
    tree = ast.parse((REPO / "setup.py").read_text(encoding="utf-8"))
    copied = next(ast.literal_eval(node.value) for node in tree.body
                  if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "DEMO_FILES")
    assert sorted(copied) == sorted(demo.DEMO_SOURCES.values())
    assert all((REPO / f).is_file() for f in copied)
    assert (REPO / "MANIFEST.in").read_text(encoding="utf-8").count("privacy_budgets/site-*.yaml") == 1


def test_an_installed_package_reads_its_packaged_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    packaged = tmp_path / "demo_configs"
    (packaged / "configs" / "cohort").mkdir(parents=True)
    (packaged / "configs" / "cohort" / "demo.yaml").write_text("name: packaged\n")
    monkeypatch.setattr(demo, "PACKAGED", packaged)
    assert demo.demo_source("configs/cohort/demo.yaml") == packaged / "configs" / "cohort" / "demo.yaml"
    assert demo.demo_source("configs/federation/demo.yaml") == REPO / "configs" / "federation" / "demo.yaml"


def test_a_missing_demo_file_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo, "PACKAGED", tmp_path / "none")
    monkeypatch.setattr(demo, "CHECKOUT", tmp_path / "none")
    with pytest.raises(FileNotFoundError, match="configs/cohort/demo.yaml"):
        demo.write_demo_configs(tmp_path / "out")
