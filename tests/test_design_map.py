"""docs/design.md's folder map is the package as it is: every folder and module it names exists, and every
folder and top-level module of the package is in it (a map that drifts from ``ls`` misleads a newcomer)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "flame_private"
MAP_HEADING = "### Folder map"


def _map_entries() -> set[str]:
    """The paths the map names, relative to src/flame_private (folders end with '/')."""
    text = (ROOT / "docs" / "design.md").read_text(encoding="utf-8")
    section = text[text.index(MAP_HEADING):]
    block = section[section.index("```"):].split("```")[1]
    lines = [line for line in block.splitlines()[1:] if line.strip()]
    assert lines[0] == "src/flame_private/", "the map starts at the package folder"
    entries: set[str] = set()
    stack: list[str] = []
    for line in lines[1:]:
        indent = (len(line) - len(line.lstrip(" "))) // 2 - 1  # two spaces a level, below the package folder
        names = re.split(r",\s*", line.strip().split("  ")[0])
        stack = stack[:indent]
        for name in names:
            entries.add("".join(stack) + name)
        if names[-1].endswith("/"):
            stack.append(names[-1])
    return entries


def _package_entries() -> set[str]:
    """Every folder (with an __init__.py) and every top-level module of the package, and each folder's modules."""
    found = set()
    for path in PACKAGE.rglob("*"):
        rel = path.relative_to(PACKAGE)
        if "__pycache__" in rel.parts or path.name == "__init__.py":
            continue
        if path.is_dir() and (path / "__init__.py").exists():
            found.add(f"{rel.as_posix()}/")
        elif path.suffix == ".py":
            found.add(rel.as_posix())
    return found


def _missing(mapped: set[str]) -> set[str]:
    """Folders and top-level modules of the package that the map does not name."""
    must = {p for p in _package_entries() if p.endswith("/") or "/" not in p}
    return must - mapped


def test_the_design_map_matches_the_folders() -> None:
    mapped = _map_entries()
    assert _missing(mapped) == set(), "folders or top-level modules missing from the map in docs/design.md"
    assert mapped - _package_entries() == set(), "the map in docs/design.md names what does not exist"


def test_the_check_reads_nested_folders_so_a_missing_one_would_be_reported() -> None:
    """Positive control: nested entries are read with their folder, and a folder the map lacks is noticed."""
    mapped = _map_entries()
    assert {"secure/public/", "federation/server/", "records/", "cli.py", "config/base.py"} <= mapped
    assert _missing(mapped - {"secure/site/"}) == {"secure/site/"}
