"""Shared fixtures for the simulator, config and CLI tests.

The small cohort of ``configs/cohort/test.yaml`` (3 sites x 4 patients on a 24^3
grid, ~5 s) is synthesised once per session and shared read-only: a test that
needs to damage a file copies the site first.

``make test`` runs the suite on two pytest-xdist workers, a test module per worker at a time
(``--dist loadscope``: module-scoped fixtures are built once); the longest modules are handed
out first so that neither worker is left with one at the end.
"""

from __future__ import annotations

import copy
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from flame_private.config import CohortConfig, parse_config

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = REPO_ROOT / "configs"
TEST_COHORT_YAML = CONFIGS / "cohort" / "test.yaml"

LONGEST_FIRST = ("test_attack_membership.py", "test_app_pinning_deploy.py", "test_study.py")
"""The modules that take minutes (their slow tests first): each starts on a worker of its own at once."""

if os.environ.get("PYTEST_XDIST_WORKER"):
    # One process per core: torch's thread pool (and that of the processes a test starts) would make the two
    # workers fight over both cores, which costs far more than it gains on these small tensors.
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> tuple[int, int]:
        name = item.path.name
        if name not in LONGEST_FIRST:
            return (len(LONGEST_FIRST), 0)
        return (LONGEST_FIRST.index(name), 0 if item.get_closest_marker("slow") else 1)

    items.sort(key=rank)  # stable: every other test keeps its place


@pytest.fixture(scope="session")
def _cohort_raw() -> dict[str, Any]:
    return yaml.safe_load(TEST_COHORT_YAML.read_text(encoding="utf-8"))


@pytest.fixture
def cohort_raw(_cohort_raw: dict[str, Any]) -> dict[str, Any]:
    """The test cohort YAML as a plain dict, a fresh copy per test (safe to edit)."""
    return copy.deepcopy(_cohort_raw)


@pytest.fixture(scope="session")
def cohort_cfg(_cohort_raw: dict[str, Any]) -> CohortConfig:
    return parse_config(_cohort_raw, CohortConfig, TEST_COHORT_YAML)


@pytest.fixture(scope="session")
def make_cohort_cfg(_cohort_raw: dict[str, Any]) -> Callable[..., CohortConfig]:
    """Build the test cohort config with top-level sections replaced or merged.

    ``make_cohort_cfg(seed=8, therapy={"prescription_gy": 80})``: scalars replace,
    mappings are merged into the test config's section of that name.
    """

    def build(**changes: Any) -> CohortConfig:
        raw = copy.deepcopy(_cohort_raw)
        for key, value in changes.items():
            if isinstance(value, dict) and isinstance(raw.get(key), dict):
                raw[key] = {**raw[key], **value}
            else:
                raw[key] = value
        return parse_config(raw, CohortConfig, "<test>")

    return build


@pytest.fixture(scope="session")
def anatomy24():
    from flame_private.cohort.anatomy import load_anatomy

    return load_anatomy(24)


@pytest.fixture(scope="session")
def cohort_dir(tmp_path_factory: pytest.TempPathFactory, cohort_cfg: CohortConfig) -> Path:
    """The test cohort written once (workers=1). Read-only by convention: copy before damaging."""
    from flame_private.cohort.writer import synthesise_cohort

    out = tmp_path_factory.mktemp("cohort") / "test-cohort"
    synthesise_cohort(cohort_cfg, out, workers=1)
    return out


def tree_digests(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``, keyed by its POSIX path relative to ``root``."""
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def digests() -> Callable[[Path], dict[str, str]]:
    return tree_digests
