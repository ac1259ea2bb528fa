"""Import boundaries that the folders promise, checked in a fresh interpreter.

* Real-data code does not depend on the synthetic-cohort simulator (flame_private.cohort).
* The reports read the site's records (flame_private.records), never the federation code that writes them
  (flame_private.federation).
* The server side (``federation/server``, ``secure/public`` and the shared wire format) never imports key
  handling (``secure/site``) nor the site's code (``federation/site``): the ServerApp the FAB loads holds
  no key code (docs/design.md, "Trust boundary in the folders").

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
    "flame_private.data.dicom.importer",
    "flame_private.data.dicom.cli",
    "flame_private.data.datasets",
    "flame_private.data.nifti",
    "flame_private.data.records",
    "flame_private.data.splits",
    "flame_private.data.transforms",
    "flame_private.data.layouts",
    "flame_private.federation.site.site",
    "flame_private.federation.site.client_app",
    "flame_private.federation.server.server_app",
    "flame_private.federation.server.strategy",
]


SIMULATOR = "flame_private.cohort.simulate"
"""Positive control, imported last: a module that does use the simulator must be caught."""

FEDERATION_USER = "flame_private.cli"
"""Positive control for the reports, imported last: the CLI wires in the federation's commands."""

_PROBE = """
import importlib, json, sys
forbidden = sys.argv[1].split(",")
found, seen = {}, set()
for module in sys.argv[2:]:
    importlib.import_module(module)
    hit = {m for m in sys.modules if any(m == p or m.startswith(p + ".") for p in forbidden)}
    found[module] = sorted(hit - seen)
    seen |= hit
print(json.dumps(found))
"""


def _imported(forbidden: list[str], modules: list[str]) -> dict[str, list[str]]:
    """Import ``modules`` in turn in one fresh interpreter; for each, the ``forbidden`` packages' modules it brought in.

    A module already brought in by an earlier one is not charged again; the positive control goes last.
    """
    run = subprocess.run([sys.executable, "-c", _PROBE, ",".join(forbidden), *modules], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_real_data_modules_do_not_import_the_simulator_and_the_check_would_see_it() -> None:
    """One fresh interpreter imports each module in turn and notes the simulator modules each one brought in."""
    found = _imported(["flame_private.cohort"], [*REAL_DATA_MODULES, SIMULATOR])
    assert {m: cohort for m, cohort in found.items() if cohort and m != SIMULATOR} == {}
    assert SIMULATOR in found[SIMULATOR]  # the positive control is caught


SERVER_PACKAGES = ["flame_private.federation.server", "flame_private.secure.public"]
"""Everything the aggregation server may run; every module in them is checked, new ones included."""
SERVER_SHARED = ["flame_private.federation.protocol"]
"""The wire format both sides use (the server imports it)."""
KEY_PACKAGES = ["flame_private.secure.site", "flame_private.federation.site"]
"""Key handling and the site's code: never in the server's process."""
KEY_CONTROL = "flame_private.secure.site.keys"
"""Positive control, imported last: the module that loads the secret key must be caught."""


def _modules_of(package: str) -> list[str]:
    """The package and every module under it, found on disk (nothing is imported here)."""
    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.submodule_search_locations, package
    return [package, *sorted(f"{package}.{m.name}" for m in pkgutil.iter_modules(spec.submodule_search_locations))]


def test_the_server_side_never_imports_key_handling_and_the_check_would_see_it() -> None:
    server = [m for p in SERVER_PACKAGES for m in _modules_of(p)] + SERVER_SHARED
    assert "flame_private.federation.server.server_app" in server and "flame_private.secure.public.envelope" in server
    found = _imported(KEY_PACKAGES, [*server, KEY_CONTROL])
    assert {m: keys for m, keys in found.items() if keys and m != KEY_CONTROL} == {}
    assert KEY_CONTROL in found[KEY_CONTROL]  # the positive control is caught


def test_reports_and_records_import_nothing_from_the_federation_and_the_check_would_see_it() -> None:
    """Reports take the audit, the logs and the ledger from records/ and privacy/, not from federation/; and the
    records (the audit included) need no federation code either, so building a report never loads it."""
    reports = _modules_of("flame_private.reports")  # found on disk: a new one is checked too
    records = _modules_of("flame_private.records")
    assert "flame_private.reports.content" in reports and "flame_private.records.audit" in records
    found = _imported(["flame_private.federation"], [*reports, *records, FEDERATION_USER])
    assert {m: fed for m, fed in found.items() if fed and m != FEDERATION_USER} == {}
    assert found[FEDERATION_USER]  # the positive control is caught
