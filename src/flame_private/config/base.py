"""The vocabulary every config shares: modalities, tasks, labels, the strict base model, path fields."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo

from flame_private.errors import ExitCode, FlameError

Modality = Literal["photon", "proton", "carbon"]
MODALITIES: tuple[Modality, ...] = ("photon", "proton", "carbon")
"""Radiotherapy modalities, in the fixed order used for one-hot encodings."""

Task = Literal["response", "evolution", "segmentation"]
TASKS: tuple[Task, ...] = ("response", "evolution", "segmentation")
CLINICAL_TASKS: tuple[Task, ...] = ("response", "evolution")
"""The two treatment-conditioned models a run trains unless its config names its tasks.  The third task,
``segmentation``, draws the baseline tumour segmentation those two need, for sites whose scans have none."""

CANONICAL_LABELS: dict[int, str] = {0: "background", 1: "necrotic_core", 2: "oedema", 3: "enhancing"}
MRI_SEQUENCES: tuple[str, ...] = ("t1", "t1ce", "t2", "flair")


class ConfigError(FlameError, ValueError):
    """A configuration file could not be read or did not validate."""

    exit_code = ExitCode.INPUT


class StrictModel(BaseModel):
    """Base for every config and message: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


CONFIG_DIR = "config_dir"
"""Validation-context key: the folder of the YAML file being read (set by ``load_config``)."""


def _from_config_dir(value: Path, info: ValidationInfo) -> Path:
    """A relative path written in a YAML file means relative to that file's folder.

    Then a command gives the same answer from whichever directory it is run in
    (read from the current directory, a ledger path could silently name an empty
    folder).  ``~`` is expanded; absolute paths are kept as written; a config
    built in Python (no file, no context) keeps its paths as given.
    """
    value = value.expanduser()
    base = info.context.get(CONFIG_DIR) if isinstance(info.context, dict) else None
    if value.is_absolute() or base is None:
        return value
    return (Path(base) / value).resolve()


ConfigPath = Annotated[Path, AfterValidator(_from_config_dir)]
"""A path field of a config file: relative paths resolve against the file's folder (``load_config``)."""

Probability = Annotated[float, Field(ge=0.0, le=1.0)]
PositiveFloat = Annotated[float, Field(gt=0.0)]

