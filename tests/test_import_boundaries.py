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


SIMULATOR = "flame_private.cohort.simulate"
"""Positive control, imported last: a module that does use the simulator must be caught."""

_PROBE = """
import importlib, json, sys
found, seen = {}, set()
for module in sys.argv[1:]:
    importlib.import_module(module)
    cohort = {m for m in sys.modules if m == "flame_private.cohort" or m.startswith("flame_private.cohort.")}
    found[module] = sorted(cohort - seen)
    seen |= cohort
print(json.dumps(found))
"""


def test_real_data_modules_do_not_import_the_simulator_and_the_check_would_see_it() -> None:
    """One fresh interpreter imports each module in turn and notes the simulator modules each one brought in."""
    run = subprocess.run([sys.executable, "-c", _PROBE, *REAL_DATA_MODULES, SIMULATOR], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    found = json.loads(run.stdout.strip().splitlines()[-1])
    assert {m: cohort for m, cohort in found.items() if cohort and m != SIMULATOR} == {}
    assert SIMULATOR in found[SIMULATOR]  # the positive control is caught
