"""The study's units of work: each trains one model (or one federation) and scores it on held-out sites.

A unit is the step a killed study restarts from: its result is written whole
(``units/<key>.json``) when it finishes, and a finished unit is never run again.
A single-site model is trained once per site and scored on every held-out site
it did not see; every other arm trains once per held-out site, on all the others.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from flame_private.config.base import StrictModel, Task
from flame_private.study.config import Arm, StudyConfig, StudyError


class Unit(StrictModel):
    key: str
    arm: Arm
    tasks: Annotated[list[Task], Field(min_length=1)]
    trained_at: Annotated[list[str], Field(min_length=1)]
    held_out: Annotated[list[str], Field(min_length=1)]
    epsilon: float | None = None
    """Per-site epsilon of the whole run (DP arms); None without DP."""
    he: bool = False
    repeat: int = 0
    """Which repetition of the cell: the run's seed is the federation's plus this (the DP noise is always fresh)."""


def _eps(e: float) -> str:
    return f"eps{e:g}"


def plan_units(study: StudyConfig, sites: list[str], min_sites: int) -> list[Unit]:
    """Every unit of the study, cheapest arms first (so a short run already has the references)."""
    held = study.held_out if study.held_out is not None else list(sites)
    unknown = [s for s in held if s not in sites]
    if unknown:
        raise StudyError(f"held_out names site(s) the cohort does not have: {unknown} (it has {sites})")
    if len(sites) - 1 < min_sites:
        raise StudyError(f"leave-one-site-out needs min_sites ({min_sites}) sites to train on when one is held out; "
                         f"the cohort has {len(sites)}")
    units: list[Unit] = []
    others = {h: [s for s in sites if s != h] for h in held}
    if "central" in study.arms:
        units += [Unit(key=f"central-{task}-without-{h}", arm="central", tasks=[task], trained_at=others[h],
                       held_out=[h]) for h in held for task in study.tasks]
    if "fedavg" in study.arms:
        units += [Unit(key=f"fedavg-without-{h}", arm="fedavg", tasks=list(study.tasks), trained_at=others[h],
                       held_out=[h]) for h in held]
    if "single-site" in study.arms:
        for site in sites:
            scored_on = [h for h in held if h != site]
            if not scored_on:
                continue
            for eps in [None, *study.epsilons]:
                for task in study.tasks:
                    units.append(Unit(key=f"single-{task}-{site}-{_eps(eps) if eps else 'nodp'}", arm="single-site",
                                      tasks=[task], trained_at=[site], held_out=scored_on, epsilon=eps))
    if "federated" in study.arms:
        units += [Unit(key=f"federated-{_eps(e)}-without-{h}", arm="federated", tasks=list(study.tasks),
                       trained_at=others[h], held_out=[h], epsilon=e, he=True)
                  for e in sorted(study.epsilons, reverse=True) for h in held]
    # Repeats after every first run: a study cut short has each cell once before any cell twice.
    return units + [u.model_copy(update={"key": f"{u.key}-r{r}", "repeat": r})
                    for r in range(1, study.repeats) for u in units]
