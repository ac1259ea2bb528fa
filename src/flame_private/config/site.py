"""One site's data on the model grid and its deployment (where its data, state and policy live)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from flame_private.config.base import ConfigPath, StrictModel

Layout = Literal["flame", "brats2021", "brats2023", "lumiere", "upenn"]
FIELD_OF_VIEW_MM = 192.0


class DataConfig(StrictModel):
    """How any site's scans are brought onto the model grid."""

    grid: Annotated[int, Field(ge=16, le=256)] = 64
    spacing_mm: Annotated[float, Field(gt=0.2, le=16.0)] | None = None
    """Isotropic voxel size of the model grid; default: a 192 mm field of view (a whole adult brain)."""
    split_seed: int = 0
    val_fraction: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.2
    test_fraction: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.2

    @property
    def voxel_mm(self) -> float:
        return self.spacing_mm if self.spacing_mm is not None else FIELD_OF_VIEW_MM / self.grid

    @model_validator(mode="after")
    def _split_fractions(self) -> DataConfig:
        if self.val_fraction + self.test_fraction >= 1.0:
            raise ValueError("val_fraction + test_fraction must leave patients for training")
        return self


class SiteConfig(StrictModel):
    """One site's deployment: where its data, state and policy live.

    Read from a YAML file, relative paths are relative to that file's folder
    (``ConfigPath``), never to the directory a command happens to run in.
    """

    site_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]
    data_dir: ConfigPath
    layout: Layout = "flame"
    state_dir: ConfigPath
    privacy_policy: ConfigPath
    secret_context: ConfigPath | None = None
    he_params: ConfigPath | None = None
    """The key ceremony's params-only context (server-params.ctx), received from the key custodian: the agreed
    HE parameters ``flame audit`` checks the site's ciphertexts and secret context against."""


SITE_YAML_HELP = ("The site's YAML (see configs/sites/); relative paths in it are relative to that file's folder, "
                  "whatever the current directory.")
"""Help text of every ``--site`` option: states where the site's paths resolve."""
