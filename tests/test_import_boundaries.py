"""Layers that must not depend on others, checked at import time.

Real-data code does not depend on the synthetic-cohort simulator (flame_private.cohort); the reports read the
site's records (flame_private.records), never the federation code that writes them (flame_private.federation).
Each check runs in a fresh interpreter, so a module imported by another test cannot hide the dependency.
"""

from __future__ import annotations

import importlib.util
import json
import pkgutil
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

FEDERATION_USER = "flame_private.cli"
"""Positive control for the reports, imported last: the CLI wires in the federation's commands."""

_PROBE = """
import importlib, json, sys
package, modules = sys.argv[1], sys.argv[2:]
found, seen = {}, set()
for module in modules:
    importlib.import_module(module)
    inside = {m for m in sys.modules if m == package or m.startswith(package + ".")}
    found[module] = sorted(inside - seen)
    seen |= inside
print(json.dumps(found))
"""


def _imported(package: str, modules: list[str]) -> dict[str, list[str]]:
    """Import ``modules`` in turn in one fresh interpreter; for each, the modules of ``package`` it brought in."""
    run = subprocess.run([sys.executable, "-c", _PROBE, package, *modules], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_real_data_modules_do_not_import_the_simulator_and_the_check_would_see_it() -> None:
    """One fresh interpreter imports each module in turn and notes the simulator modules each one brought in."""
    found = _imported("flame_private.cohort", [*REAL_DATA_MODULES, SIMULATOR])
    assert {m: cohort for m, cohort in found.items() if cohort and m != SIMULATOR} == {}
    assert SIMULATOR in found[SIMULATOR]  # the positive control is caught


def _report_modules() -> list[str]:
    """Every module of flame_private.reports, found on disk, so a new one is checked too."""
    spec = importlib.util.find_spec("flame_private.reports")
    assert spec is not None and spec.submodule_search_locations
    names = [f"flame_private.reports.{m.name}" for m in pkgutil.iter_modules(spec.submodule_search_locations)]
    return ["flame_private.reports", *sorted(names)]


def test_reports_import_nothing_from_the_federation_and_the_check_would_see_it() -> None:
    """Reports take the audit, the egress log and the ledger from records/ and privacy/, not from federation/."""
    reports = _report_modules()
    assert "flame_private.reports.content" in reports and len(reports) > 10
    found = _imported("flame_private.federation", [*reports, FEDERATION_USER])
    assert {m: fed for m, fed in found.items() if fed and m != FEDERATION_USER} == {}
    assert found[FEDERATION_USER]  # the positive control is caught
