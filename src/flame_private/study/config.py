"""The study's configuration: which cohort, which training settings, which arms, sites and epsilons."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from flame_private.config.base import CLINICAL_TASKS, ConfigError, ConfigPath, StrictModel, Task
from flame_private.config.loading import parse_config, read_yaml_mapping
from flame_private.errors import FlameError

Arm = Literal["central", "single-site", "fedavg", "federated"]
ARMS: tuple[Arm, ...] = ("central", "single-site", "fedavg", "federated")
"""``central``: pooled training sites, no DP (the upper reference).  ``single-site``: one site's model, with and
without DP.  ``fedavg``: plain federated averaging, no DP, no encryption.  ``federated``: DP-SGD + CKKS, the real
ServerApp and ClientApps, ledgers and all."""


class StudyError(FlameError, ValueError):
    """A study that cannot run as configured, or cannot resume from its folder (the message says which)."""


class PublicStart(StrictModel):
    """Every arm starts from each model trained without DP on a public cohort: no site's patient is in it, so
    it costs no site any privacy, and a private arm spends its epsilon on what the sites add."""

    cohort: ConfigPath
    """The public cohort's YAML (e.g. cohort/public.yaml); synthesised under ``<out>/public-cohort`` unless
    ``cohort_dir`` already holds it."""
    cohort_dir: ConfigPath | None = None
    epochs: Annotated[int, Field(ge=1, le=200)] = 10
    """Passes over the public patients, with the federation config's batch size, learning rate and schedule."""


class StudyConfig(StrictModel):
    """``flame study --config``: one leave-one-site-out study."""

    name: str = "study"
    cohort: ConfigPath
    """The cohort YAML; synthesised under ``<out>/cohort`` unless ``cohort_dir`` already holds it."""
    cohort_dir: ConfigPath | None = None
    """An already synthesised copy of ``cohort`` (checked against it), to share one cohort between studies."""
    federation: ConfigPath
    """Training settings of every arm: model, data split, rounds, local epochs, batch, learning rate, HE, clipping.
    Its ``dp`` noise setting is replaced by each arm's epsilon."""
    tasks: Annotated[list[Task], Field(min_length=1)] = Field(default_factory=lambda: list(CLINICAL_TASKS))
    held_out: list[str] | None = None
    """The sites held out in turn (default: every site); each needs at least ``min_sites`` others to train on."""
    epsilons: Annotated[list[Annotated[float, Field(gt=0.0, le=100.0)]], Field(min_length=1)] = Field(
        default_factory=lambda: [1.0, 4.0, 8.0])
    """Per-site epsilon of a whole run (both models, every round, the final evaluations) for the private arms."""
    arms: Annotated[list[Arm], Field(min_length=1)] = Field(default_factory=lambda: list(ARMS))
    repeats: Annotated[int, Field(ge=1, le=100)] = 1
    """Runs of every cell, each with the next seed: one DP training is one draw of its noise, and one run per
    cell cannot tell an epsilon's effect from run-to-run spread."""
    engine: Literal["simulation", "inprocess"] = "simulation"
    """How the ``federated`` arm runs the real apps: Flower's simulation engine (Ray), or the in-process grid
    (the same ServerApp and ClientApp code, no Ray start-up: for the small sizes)."""
    public_start: PublicStart | None = None
    """Start every arm from models trained on a public cohort (saved under ``<out>/public-start`` and pinned by
    their SHA-256 as the federation's ``initial_weights``); default: the seeded random models."""
    sizes: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Named variants (``flame study --size NAME``): keys of this config to replace, e.g. a tiny ``ci`` size."""

    @model_validator(mode="after")
    def _no_repeats(self) -> StudyConfig:
        for field in ("tasks", "epsilons", "arms"):
            values = getattr(self, field)
            if len(set(values)) != len(values):
                raise ValueError(f"{field} lists a value twice: {values}")
        if self.held_out is not None and len(set(self.held_out)) != len(self.held_out):
            raise ValueError(f"held_out lists a site twice: {self.held_out}")
        return self


def load_study_config(path: Path | str, size: str | None = None) -> StudyConfig:
    """Read ``path``; with ``size``, its ``sizes[size]`` replaces the keys it names (an unknown size is an error)."""
    path = Path(path)
    data = read_yaml_mapping(path)
    if size is not None:
        sizes = data.get("sizes") or {}
        if size not in sizes:
            raise ConfigError(f"{path}: no size {size!r} under sizes (it has: {', '.join(sorted(sizes)) or 'none'})")
        variant = sizes[size]
        if not isinstance(variant, dict) or "sizes" in variant:
            raise ConfigError(f"{path}: sizes.{size} must be a mapping of the keys it replaces (not sizes)")
        data = {**data, **variant}
    return parse_config(data, StudyConfig, path, config_dir=path.parent)
