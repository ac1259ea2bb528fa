"""Real-data code does not depend on the synthetic-cohort simulator (flame_private.cohort).

Each check runs in a fresh interpreter, so a module imported by another test cannot hide the dependency.
"""

from __future__ import annotations

import json
import subprocess
import sys

REAL_DATA_MODULES = [
    "flame_private.metrics",
    "flame_private.rano",
    "flame_private.data.checks",
    "flame_private.data.datasets",
    "flame_private.data.nifti",
    "flame_private.data.records",
    "flame_private.data.splits",
    "flame_private.data.transforms",
    "flame_private.data.layouts",
    "flame_private.federation.site",
    "flame_private.federation.client_app",
    "flame_private.federation.server_app",
    "flame_private.federation.strategy",
]


_PROBE = """
import importlib, json, sys
found = {}
for module in sys.argv[1:]:
    importlib.import_module(module)
    cohort = sorted(m for m in sys.modules if m == "flame_private.cohort" or m.startswith("flame_private.cohort."))
    if cohort:
        found[module] = cohort
        break
print(json.dumps(found))
"""


def _simulator_imports(modules: list[str]) -> dict[str, list[str]]:
    """The first of ``modules`` (imported in order, in a fresh interpreter) that pulls in the simulator."""
    run = subprocess.run([sys.executable, "-c", _PROBE, *modules], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_real_data_modules_do_not_import_the_simulator() -> None:
    assert _simulator_imports(REAL_DATA_MODULES) == {}


def test_the_check_sees_a_simulator_import() -> None:
    """Positive control: a module that does use the simulator is caught and named."""
    found = _simulator_imports(["flame_private.metrics", "flame_private.cohort.simulate"])
    assert list(found) == ["flame_private.cohort.simulate"] and "flame_private.cohort.simulate" in found[
        "flame_private.cohort.simulate"]
