"""Build hook: the wheel carries the demo's configs, copied from the repository (their one source).

``flame demo`` reads them from ``flame_private/demo_configs/`` when installed from a wheel, and straight from
``configs/`` and ``privacy_budgets/`` in a source checkout (flame_private.demo.DEMO_SOURCES lists them).
Everything else about the package is in pyproject.toml.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
DEMO_FILES = ["configs/cohort/demo.yaml", "configs/federation/demo.yaml", "privacy_budgets/site-a.yaml",
              "privacy_budgets/site-b.yaml", "privacy_budgets/site-c.yaml", "privacy_budgets/site-d.yaml"]


class BuildWithDemoConfigs(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:  # an editable install reads the checkout itself
            return
        for relative in DEMO_FILES:
            target = Path(self.build_lib) / "flame_private" / "demo_configs" / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ROOT / relative, target)


setup(cmdclass={"build_py": BuildWithDemoConfigs})
