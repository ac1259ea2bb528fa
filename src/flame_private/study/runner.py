"""Run a study unit by unit into ``<out>/study.json``; a killed study restarts where it stopped.

Each finished unit is written whole to ``<out>/units/<key>.json`` (temp file,
fsync, rename), so a unit is either done and never rerun, or redone from
scratch (a federated cell with fresh site states).  ``study.json`` is rewritten
after every unit with the rows so far.  A restart with another study, federation
or cohort config than the one the folder was started with is refused: its rows
would not be comparable.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from flame_private import __version__
from flame_private.config import CohortConfig, FederationConfig, Task, load_config
from flame_private.federation.server.checkpoint import write_atomic
from flame_private.study import arms
from flame_private.study.config import StudyConfig, StudyError
from flame_private.study.data import StudyData, prepare_cohort
from flame_private.study.plan import Unit, plan_units
from flame_private.study.scoring import Scorer

log = logging.getLogger(__name__)

OnUnit = Callable[[int, int, Unit, str], None]
"""(index, total, unit, state) with state one of "done" (from an earlier run), "running", "finished"."""


def _finite(obj: Any) -> Any:
    """NaN and infinities (an AUC with one class, an empty interval) become null: strict JSON for any reader."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def _dump(obj: Any) -> bytes:
    return (json.dumps(_finite(obj), indent=1, allow_nan=False) + "\n").encode()


def _shown(path: Path) -> str:
    """A path as the results show it: relative to the working directory when under it (``configs/...``)."""
    path = Path(path).resolve()
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def study_federation(fed: FederationConfig, total_patients: int, n_sites: int) -> FederationConfig:
    """The study's run config: the HE bounds widened to the cohort (public: its size and number of sites)."""
    he = fed.he.model_copy(update={"max_patients": max(fed.he.max_patients, total_patients),
                                   "max_sites": max(fed.he.max_sites, n_sites)})
    return fed.model_copy(update={"he": he})


def _with_paths_shown(federation: dict[str, Any]) -> dict[str, Any]:
    """The federation settings as results show them: a pinned checkpoint's path as ``_shown`` gives it."""
    pinned = {task: {**w, "path": _shown(Path(w["path"]))} for task, w in federation.get("initial_weights", {}).items()}
    return {**federation, "initial_weights": pinned}


class StudyRunner:
    def __init__(self, study: StudyConfig, out: Path, command: str = "", workers: int = 1) -> None:
        # Absolute: the site configs a federated cell writes are read from their own folders.
        self.study, self.out, self.command, self.workers = study, Path(out).resolve(), command, workers
        cohort_cfg = load_config(study.cohort, CohortConfig)
        self.layout = cohort_cfg.layout
        self.cohort_dir = prepare_cohort(cohort_cfg, Path(study.cohort_dir or self.out / "cohort").resolve(), workers)
        index = (self.cohort_dir / "cohort.json").read_bytes()
        self.cohort_sha256 = hashlib.sha256(index).hexdigest()
        fed = load_config(study.federation, FederationConfig)
        n_patients = sum(s["patients"] for s in json.loads(index)["sites"])
        self.fed = study_federation(fed, n_patients, len(cohort_cfg.sites))
        self.data = StudyData.load(self.cohort_dir, self.fed, self.layout)
        self.units = plan_units(study, self.data.sites, self.fed.min_sites)
        self.scorer = Scorer(self.data)

    @property
    def units_dir(self) -> Path:
        return self.out / "units"

    def identity(self) -> dict[str, Any]:
        """What the rows depend on, by content (the federation settings, the cohort's hash), not by where the files
        are: a restart must match it."""
        study = self.study.model_dump(mode="json", exclude={"sizes", "cohort_dir", "cohort", "federation"})
        start = self.study.public_start
        if start is not None:  # the public cohort by its config's content: its path may hold an edited config
            study["public_start"] = {"epochs": start.epochs,
                                     "cohort": load_config(start.cohort, CohortConfig).model_dump(mode="json")}
        return {"study": study, "federation": self.fed.model_dump(mode="json"), "cohort_sha256": self.cohort_sha256}

    @staticmethod
    def _stored_identity(path: Path) -> dict[str, Any]:
        """The identity a study folder was started with, its federation settings read as this version reads
        them: a setting added since, at its default, is no change of configuration."""
        theirs: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        try:
            theirs["federation"] = FederationConfig.model_validate(theirs["federation"]).model_dump(mode="json")
        except (KeyError, TypeError, ValueError):
            pass  # not a federation config this version reads: the comparison names it as changed
        start = theirs.get("study", {}).get("public_start")
        if isinstance(start, dict) and isinstance(start.get("cohort"), str):
            raise StudyError(f"{path}: written by an earlier version, which recorded the public start's cohort by "
                             "its path, not its content: resume with that version, or give another --out")
        return theirs

    def _check_identity(self) -> None:
        path = self.out / "study-identity.json"
        mine = json.loads(_dump(self.identity()))
        if path.is_file():
            theirs = self._stored_identity(path)
            if theirs != mine:
                changed = sorted(k for k in mine if mine[k] != theirs.get(k))
                raise StudyError(f"{self.out} holds a study started with another configuration ({', '.join(changed)} "
                                 "changed): resume it with the same configs, or give another --out")
        else:
            self.out.mkdir(parents=True, exist_ok=True)
            write_atomic(path, _dump(mine))

    def run(self, on_unit: OnUnit | None = None) -> dict[str, Any]:
        self._check_identity()
        self.units_dir.mkdir(parents=True, exist_ok=True)
        start = self.study.public_start
        if start is not None:  # after the identity check: the pinned files are outputs, not configuration
            public = load_config(start.cohort, CohortConfig)
            public_dir = prepare_cohort(public, Path(start.cohort_dir or self.out / "public-cohort").resolve(),
                                        self.workers)
            pinned = arms.train_public_start(self.fed, self.study.tasks, public, public_dir, start.epochs,
                                             self.out / "public-start")
            self.fed = self.fed.model_copy(update={"initial_weights": {**self.fed.initial_weights, **pinned}})
        keys = (arms.make_keys(self.fed, self.out / "keys")
                if any(u.arm == "federated" for u in self.units) else None)
        done: list[dict[str, Any]] = []
        for i, unit in enumerate(self.units):
            path = self.units_dir / f"{unit.key}.json"
            if path.is_file():
                result = json.loads(path.read_text(encoding="utf-8"))
                if result.get("unit") != unit.model_dump(mode="json"):
                    raise StudyError(f"{path}: written for another unit than the plan's {unit.key}; remove it")
                if on_unit:
                    on_unit(i, len(self.units), unit, "done")
            else:
                if on_unit:
                    on_unit(i, len(self.units), unit, "running")
                result = self.run_unit(unit, keys)
                write_atomic(path, _dump(result))
                if on_unit:
                    on_unit(i, len(self.units), unit, "finished")
            done.append(result)
            self.write_results(done)
        return self.write_results(done)

    def run_unit(self, unit: Unit, keys: arms.Keys | None) -> dict[str, Any]:
        log.info("study unit %s: %s trained at %s", unit.key, unit.arm, ", ".join(unit.trained_at))
        t0 = time.perf_counter()
        seed = self.fed.seed + unit.repeat
        data = dataclasses.replace(self.data, fed=self.fed.model_copy(update={"seed": seed}))  # same datasets
        models: dict[Task, torch.nn.Module | None]
        if unit.arm in ("central", "single-site"):
            task = unit.tasks[0]
            pooled, info = arms.train_pooled(data, task, unit.trained_at, unit.epsilon, len(self.study.tasks))
            models = {task: pooled}
        elif unit.arm == "fedavg":
            trained, info = arms.train_fedavg(data, unit.tasks, unit.trained_at)
            models = {task: m for task, m in trained.items()}
        else:
            assert keys is not None and unit.epsilon is not None
            fed_models, info = arms.train_federated(data, unit.tasks, unit.trained_at, unit.epsilon, keys,
                                                    self.out / "cells" / unit.key, f"{self.study.name}-{unit.key}",
                                                    self.study.engine, self.layout)
            models = fed_models
        trained_s = time.perf_counter() - t0
        rows = []
        for task, trained_model in models.items():
            for held in unit.held_out:
                row: dict[str, Any] = {
                    "arm": unit.arm, "epsilon": unit.epsilon, "he": unit.he, "held_out_site": held, "task": task,
                    "trained_at": unit.trained_at, "seed": seed, "repeat": unit.repeat, "unit": unit.key,
                    "train_wall_s": round(trained_s, 2), "training": info}
                if trained_model is None:
                    why = sorted({r for reasons in info.get("declined", {}).values() for r in reasons})
                    row.update({"status": "no model",
                                "reason": "; ".join([str(info.get("exports", {}).get(task, "no global model")),
                                                     *why])})
                else:
                    t = time.perf_counter()
                    row.update({"status": "ok", **self.scorer.score(trained_model, task, held)})
                    row["score_wall_s"] = round(time.perf_counter() - t, 2)
                eps = info.get("epsilon_spent")
                row["epsilon_spent"] = max(eps.values()) if isinstance(eps, dict) else eps
                rows.append(row)
        return {"unit": unit.model_dump(mode="json"), "wall_s": round(time.perf_counter() - t0, 2), "rows": rows}

    def write_results(self, done: list[dict[str, Any]]) -> dict[str, Any]:
        results = {
            "name": self.study.name, "command": self.command, "flame_private_version": __version__,
            "cohort": {"config": _shown(self.study.cohort), "dir": _shown(self.cohort_dir),
                       "sha256": self.cohort_sha256, "sites": {
                s: {"patients": self.data.patients(s), "train": self.data.patients(s, "train")}
                for s in self.data.sites}},
            "config": {**self.identity()["study"], "federation_config": _shown(self.study.federation)},
            "federation": _with_paths_shown(self.identity()["federation"]),
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
                        "torch": torch.__version__, "threads": torch.get_num_threads()},
            "units": {"done": len(done), "planned": len(self.units)},
            "wall_s": round(sum(u["wall_s"] for u in done), 1),
            "rows": [row for u in done for row in u["rows"]],
        }
        write_atomic(self.out / "study.json", _dump(results))
        return results
