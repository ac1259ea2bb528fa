"""Typed configuration for every part of flame-private.

Every YAML file a site, a researcher or a DPO edits is parsed into one of these
pydantic models.  Unknown keys are refused (a misspelt ``noise_multiplier`` must
not silently fall back to a default), and every error names the file and the
dotted path of the field, so the person who wrote the file can fix it.

One module per job (``base``: the shared vocabulary; ``cohort``: the synthetic
cohort; ``site``: a site's data and deployment; ``federation``: a federated run;
``loading``: YAML to model); every name is importable from ``flame_private.config``.
"""

from flame_private.config.base import (
    CANONICAL_LABELS,
    CLINICAL_TASKS,
    CONFIG_DIR,
    MODALITIES,
    MRI_SEQUENCES,
    TASKS,
    ConfigError,
    ConfigPath,
    Modality,
    PositiveFloat,
    Probability,
    StrictModel,
    Task,
)
from flame_private.config.cohort import (
    DEFAULT_TREATMENT_MIX,
    CohortConfig,
    CohortLayout,
    DayRange,
    DifficultyParams,
    FollowUpParams,
    PatientMix,
    ScannerProfile,
    SiteCohortConfig,
    TherapyParams,
    TumourParams,
)
from flame_private.config.federation import (
    HE_MAX_MODULUS_BITS,
    DPConfig,
    EvaluationConfig,
    FederationConfig,
    GradSampleMode,
    HEConfig,
    InitialWeights,
    ModelConfig,
    ServerOptimizerConfig,
)
from flame_private.config.loading import (
    load_config,
    parse_config,
    read_yaml_mapping,
)
from flame_private.config.site import (
    FIELD_OF_VIEW_MM,
    SITE_YAML_HELP,
    DataConfig,
    Layout,
    SiteConfig,
)

__all__ = [
    "CANONICAL_LABELS",
    "CONFIG_DIR",
    "CohortConfig",
    "CohortLayout",
    "ConfigError",
    "ConfigPath",
    "DEFAULT_TREATMENT_MIX",
    "DPConfig",
    "DataConfig",
    "DayRange",
    "DifficultyParams",
    "EvaluationConfig",
    "ServerOptimizerConfig",
    "FIELD_OF_VIEW_MM",
    "FederationConfig",
    "FollowUpParams",
    "GradSampleMode",
    "HEConfig",
    "InitialWeights",
    "HE_MAX_MODULUS_BITS",
    "Layout",
    "MODALITIES",
    "MRI_SEQUENCES",
    "Modality",
    "ModelConfig",
    "PatientMix",
    "PositiveFloat",
    "Probability",
    "SITE_YAML_HELP",
    "ScannerProfile",
    "SiteCohortConfig",
    "SiteConfig",
    "StrictModel",
    "CLINICAL_TASKS",
    "TASKS",
    "Task",
    "TherapyParams",
    "TumourParams",
    "load_config",
    "parse_config",
    "read_yaml_mapping",
]
