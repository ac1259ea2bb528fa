"""Typed configuration for every part of flame-private.

Every YAML file a site, a researcher or a DPO edits is parsed into one of these
pydantic models.  Unknown keys are refused (a misspelt ``noise_multiplier`` must
not silently fall back to a default), and every error names the file and the
dotted path of the field, so the person who wrote the file can fix it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, TypeVar

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

Modality = Literal["photon", "proton", "carbon"]
MODALITIES: tuple[Modality, ...] = ("photon", "proton", "carbon")
"""Radiotherapy modalities, in the fixed order used for one-hot encodings."""

Task = Literal["response", "evolution"]
TASKS: tuple[Task, ...] = ("response", "evolution")

CANONICAL_LABELS: dict[int, str] = {0: "background", 1: "necrotic_core", 2: "oedema", 3: "enhancing"}
MRI_SEQUENCES: tuple[str, ...] = ("t1", "t1ce", "t2", "flair")


class ConfigError(ValueError):
    """A configuration file could not be read or did not validate."""


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


def _check_range(v: tuple[float, float], name: str) -> tuple[float, float]:
    lo, hi = v
    if not lo <= hi:
        raise ValueError(f"{name} must be [low, high] with low <= high, got {list(v)}")
    return v


# --------------------------------------------------------------------------- cohort


class ScannerProfile(StrictModel):
    """How one centre's scanner and protocol distort the same anatomy."""

    intensity_scale: Annotated[float, Field(gt=0.0, le=1e4)] = 1000.0
    bias_field: Annotated[float, Field(ge=0.0, le=0.6)] = 0.15
    """Peak amplitude of the smooth multiplicative log bias field (0 = none)."""
    noise_sd: Annotated[float, Field(ge=0.0, le=0.3)] = 0.03
    """Rician noise sigma relative to white-matter intensity."""
    contrast_gamma: Annotated[float, Field(ge=0.5, le=2.0)] = 1.0
    """Gamma applied to normalised intensities: changes grey/white contrast."""
    spacing_factor: tuple[
        Annotated[float, Field(ge=0.5, le=3.0)],
        Annotated[float, Field(ge=0.5, le=3.0)],
        Annotated[float, Field(ge=0.5, le=3.0)],
    ] = (1.0, 1.0, 1.0)
    """Voxel size of the written images relative to the simulation grid (e.g. thick slices)."""
    orientation: str = "RAS"
    """Axis codes of the written images (e.g. LPS for DICOM-derived exports)."""

    @field_validator("orientation")
    @classmethod
    def _valid_axcodes(cls, v: str) -> str:
        v = v.upper()
        pairs = [{"L", "R"}, {"A", "P"}, {"S", "I"}]
        if len(v) != 3 or any(sum(c in p for c in v) != 1 for p in pairs):
            raise ValueError(f"orientation must be 3 axis codes, one of each L/R, A/P, S/I (got {v!r})")
        return v


class PatientMix(StrictModel):
    """Who a centre treats: demographics and tumour biology of its referral population."""

    age_mean: Annotated[float, Field(ge=18, le=90)] = 62.0
    age_sd: Annotated[float, Field(ge=0, le=30)] = 11.0
    female_fraction: Probability = 0.4
    mgmt_methylated_fraction: Probability = 0.45
    resection_probs: tuple[Probability, Probability, Probability] = (0.45, 0.35, 0.20)
    """Probabilities of gross-total, subtotal resection and biopsy only, before location effects."""

    @field_validator("resection_probs")
    @classmethod
    def _sums_to_one(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if abs(sum(v) - 1.0) > 1e-6:
            raise ValueError(f"resection_probs must sum to 1, got {sum(v):.4f}")
        return v


DEFAULT_TREATMENT_MIX: dict[Modality, float] = {"photon": 0.7, "proton": 0.3}


class SiteCohortConfig(StrictModel):
    """One simulated centre."""

    site_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]
    n_patients: Annotated[int, Field(ge=1, le=5000)]
    treatment_mix: dict[Modality, Annotated[float, Field(ge=0.0)]] = Field(default_factory=DEFAULT_TREATMENT_MIX.copy)
    """Relative share of each modality the centre offers; missing = not offered."""
    scanner: ScannerProfile = ScannerProfile()
    patients: PatientMix = PatientMix()

    @field_validator("treatment_mix")
    @classmethod
    def _offers_something(cls, v: dict[str, float]) -> dict[str, float]:
        if not v or sum(v.values()) <= 0:
            raise ValueError("treatment_mix must offer at least one modality with a positive share")
        return v


class TumourParams(StrictModel):
    """Fisher-KPP growth parameters (docs/references.md 4)."""

    velocity_range: tuple[PositiveFloat, PositiveFloat] = (0.03, 0.16)
    """Radial front speed v = 2 sqrt(D rho) in white matter, mm/day, sampled log-uniformly."""
    invasiveness_range: tuple[PositiveFloat, PositiveFloat] = (1.0, 20.0)
    """D_white / rho in mm^2 (diffuse vs nodular tumours), sampled log-uniformly."""
    d_white_range: tuple[PositiveFloat, PositiveFloat] = (0.05, 1.5)
    """Bounds on the white-matter diffusivity implied by (v, D/rho), mm^2/day."""
    white_grey_ratio_range: tuple[PositiveFloat, PositiveFloat] = (5.0, 10.0)
    rho_range: tuple[PositiveFloat, PositiveFloat] = (0.01, 0.1)
    """Bounds on the proliferation rate implied by (v, D/rho), 1/day."""
    detection_flair_ml_range: tuple[PositiveFloat, PositiveFloat] = (20.0, 90.0)
    """Volume of FLAIR abnormality at which the tumour is diagnosed."""
    enhancing_threshold: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.45
    flair_threshold: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.16
    necrosis_threshold: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.5

    @model_validator(mode="after")
    def _ordered_ranges(self) -> TumourParams:
        for name in ("velocity_range", "invasiveness_range", "d_white_range", "white_grey_ratio_range",
                     "rho_range", "detection_flair_ml_range"):
            _check_range(getattr(self, name), name)
        return self


class TherapyParams(StrictModel):
    """Surgery, radiotherapy and temozolomide (docs/references.md 5)."""

    prescription_gy: Annotated[float, Field(gt=0, le=100)] = 60.0
    fractions: Annotated[int, Field(ge=1, le=60)] = 30
    ctv_margin_mm: Annotated[float, Field(ge=0, le=40)] = 15.0
    alpha_mean: Annotated[float, Field(gt=0, le=1)] = 0.05
    """Tumour LQ alpha (1/Gy), population mean; alpha/beta fixed by alpha_beta_tumour.

    In-vitro glioblastoma alpha is ~0.12/Gy, but with that value every simulated
    tumour vanishes on the first follow-up MRI; patient-level fits of
    proliferation-invasion-radiotherapy models are several-fold lower (docs/cohort.md).
    """
    alpha_beta_tumour: PositiveFloat = 10.0
    alpha_beta_brain: PositiveFloat = 2.0
    rbe_proton: Annotated[float, Field(ge=1.0, le=2.0)] = 1.1
    rbe_carbon: Annotated[float, Field(ge=1.0, le=6.0)] = 3.0
    oer_low_let: Annotated[float, Field(ge=1.0, le=4.0)] = 2.8
    """Oxygen enhancement ratio at full hypoxia for photons and protons."""
    oer_carbon: Annotated[float, Field(ge=1.0, le=4.0)] = 1.5
    tmz_daily_kill_methylated: Annotated[float, Field(ge=0, le=0.2)] = 0.02
    tmz_daily_kill_unmethylated: Annotated[float, Field(ge=0, le=0.2)] = 0.004
    repopulation_kickoff_day: Annotated[float, Field(ge=0)] = 37.0
    repopulation_doubling_days: PositiveFloat = 15.0
    dead_cell_clearance_days: Annotated[float, Field(gt=0, le=365)] = 40.0
    """Half-life of lethally damaged cells on imaging (modelling choice: MRI response lags cell kill)."""


class DifficultyParams(StrictModel):
    """Knobs that set how much of the outcome is learnable from the images.

    Outcome depends on observable factors (tumour extent, covariates, dose) and on
    hidden per-patient biology that no image shows; the ratio sets the ceiling on
    achievable AUC and Dice.
    """

    radiosensitivity_cv: Annotated[float, Field(ge=0.0, le=1.0)] = 0.2
    """Coefficient of variation of the hidden per-patient alpha."""
    proliferation_jitter: Annotated[float, Field(ge=0.0, le=1.0)] = 0.25
    """Hidden log-normal change of rho after treatment (resistant clones)."""
    pseudoprogression_base: Probability = 0.15
    """Pseudoprogression probability for an unmethylated patient at the first evaluation."""
    pseudoprogression_methylated: Probability = 0.3


DayRange = tuple[Annotated[int, Field(ge=7, le=365)], Annotated[int, Field(ge=7, le=365)]]


class FollowUpParams(StrictModel):
    """When the follow-up MRIs are taken (RANO 2.0 schedule for newly diagnosed glioblastoma).

    Each range is sampled uniformly per patient, in days after the previous event.
    """

    reference_days: DayRange = (21, 42)
    """Post-radiotherapy MRI after the last fraction: RANO 2.0's reference scan."""
    evaluation_days: DayRange = (56, 84)
    """First evaluation after the reference scan: the response label is scored here."""
    confirmation_days: DayRange = (56, 84)
    """Confirmation scan after the first evaluation: separates progression from pseudoprogression."""

    @model_validator(mode="after")
    def _ordered(self) -> FollowUpParams:
        for name in ("reference_days", "evaluation_days", "confirmation_days"):
            _check_range(getattr(self, name), name)
        return self


CohortLayout = Literal["flame", "lumiere", "brats2021"]
"""Layouts the cohort writer can write a site in (a subset of ``Layout``: each has a reader)."""


class CohortConfig(StrictModel):
    """A synthetic multi-centre cohort."""

    name: str = "cohort"
    seed: Annotated[int, Field(ge=0)] = 0
    grid: Annotated[int, Field(ge=16, le=256)] = 64
    """Voxels per axis of the simulation grid over the brain's bounding box."""
    layout: CohortLayout = "flame"
    """How every site folder is written: the project's manifest, or a public dataset's file naming."""
    sites: Annotated[list[SiteCohortConfig], Field(min_length=1)]
    tumour: TumourParams = TumourParams()
    therapy: TherapyParams = TherapyParams()
    difficulty: DifficultyParams = DifficultyParams()
    followup: FollowUpParams = FollowUpParams()

    @field_validator("sites")
    @classmethod
    def _unique_sites(cls, v: list[SiteCohortConfig]) -> list[SiteCohortConfig]:
        ids = [s.site_id for s in v]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate site_id: {', '.join(dupes)}")
        return v


# --------------------------------------------------------------------------- data / model

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


class ModelConfig(StrictModel):
    """Sizes of the two treatment-conditioned networks."""

    # Inputs are fixed by the data pipeline: T1, T1ce, T2, FLAIR + one-hot baseline tumour labels (7 channels).
    response_channels: tuple[Annotated[int, Field(ge=1, le=512)], ...] = (16, 32, 64, 128)
    evolution_channels: tuple[Annotated[int, Field(ge=1, le=512)], ...] = (16, 32, 64, 128)
    norm_groups: Annotated[int, Field(ge=1, le=64)] = 8
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.1
    max_parameters: Annotated[int, Field(ge=1000)] = 1_500_000


GradSampleMode = Literal["ew", "hooks", "functorch", "ghost"]


class DPConfig(StrictModel):
    """DP-SGD settings for one site's local training."""

    enabled: bool = True
    noise_multiplier: Annotated[float, Field(gt=0.0, le=100.0)] | None = None
    """Noise standard deviation relative to the clipping norm; 1.0 when neither this nor target_epsilon is set."""
    target_epsilon: Annotated[float, Field(gt=0.0, le=100.0)] | None = None
    max_grad_norm: Annotated[float, Field(gt=0.0, le=100.0)] = 1.0
    delta: Annotated[float, Field(gt=0.0, lt=1.0)] = 1e-5
    grad_sample_mode: GradSampleMode | None = None
    """None picks the fastest mode that is correct for the model."""
    accountant: Literal["prv", "rdp"] = "prv"

    @model_validator(mode="before")
    @classmethod
    def _default_sigma(cls, data: object) -> object:
        # Only an absent noise_multiplier gets the default; an explicit null is a choice to be checked.
        if isinstance(data, dict) and "noise_multiplier" not in data and data.get("target_epsilon") is None:
            return {**data, "noise_multiplier": 1.0}
        return data

    @model_validator(mode="after")
    def _one_of_sigma_or_eps(self) -> DPConfig:
        if self.enabled and self.noise_multiplier is not None and self.target_epsilon is not None:
            raise ValueError("set exactly one of noise_multiplier and target_epsilon, not both")
        if self.enabled and self.noise_multiplier is None and self.target_epsilon is None:
            raise ValueError("set exactly one of noise_multiplier and target_epsilon")
        return self


HE_MAX_MODULUS_BITS: dict[int, int] = {2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}
"""Largest total coefficient-modulus bits for 128-bit security (HomomorphicEncryption.org standard)."""


class HEConfig(StrictModel):
    """CKKS parameters shared by every site and the server, and the public bounds the packing relies on.

    Default: N=4096, one 32-bit prime, scale 2^30 (~4.2 B/param up, ~8.3 down).  The former default,
    N=8192 [60, 60] 2^40 (~8.1 / 16.1 B/param, far more headroom), stays selectable
    (docs/encryption.md, "Choosing parameters").
    """

    poly_modulus_degree: Literal[4096, 8192, 16384] = 4096
    coeff_mod_bit_sizes: Annotated[list[Annotated[int, Field(ge=20, le=60)]], Field(min_length=1, max_length=8)] = (
        Field(default_factory=lambda: [32])
    )
    scale_bits: Annotated[int, Field(ge=20, le=58)] = 30
    max_sites: Annotated[int, Field(ge=3, le=1000)] = 16
    """Most sites whose updates may be added: sets the headroom the sum needs (docs/encryption.md)."""
    max_patients: Annotated[int, Field(ge=1, le=1_000_000)] = 1000
    """Public bound on the training patients of all the sites summed in one round (sum of n_k).  A site packs
    n_k * w_k / max_patients, so the sum stays bounded; the aggregate's precision is best when the real total is
    close to this bound (docs/encryption.md)."""
    weight_bound: Annotated[float, Field(gt=0.0, le=1e6)] | None = None
    """Public bound on |w| of every packed weight; None: twice the largest |weight| of the round-1 model (built
    identically at every site), rounded up to a power of two.  A site refuses to send a weight beyond it."""

    @model_validator(mode="after")
    def _secure_and_fits(self) -> HEConfig:
        total = sum(self.coeff_mod_bit_sizes)
        bound = HE_MAX_MODULUS_BITS[self.poly_modulus_degree]
        if total > bound:
            raise ValueError(
                f"coefficient modulus of {total} bits exceeds the 128-bit security bound "
                f"of {bound} bits for N={self.poly_modulus_degree}"
            )
        if self.scale_bits > min(self.coeff_mod_bit_sizes) - 2:
            raise ValueError(
                f"scale 2^{self.scale_bits} leaves no headroom in a {min(self.coeff_mod_bit_sizes)}-bit prime "
                "(need scale_bits <= prime bits - 2)"
            )
        return self


class EvaluationConfig(StrictModel):
    """Federated evaluation: sites release DP-noised metric sums of their validation patients."""

    noise_multiplier: Annotated[float, Field(gt=0.0, le=1000.0)] = 3.0
    """Gaussian noise (times the per-patient sensitivity) on each site's metric sums; spent like a round."""
    every_round: bool = False
    """Evaluate after every round (costs budget each time) or only the final global models."""


class FederationConfig(StrictModel):
    """One federated run: rounds, tasks, who must take part."""

    run_name: str = "run"
    seed: int = 0
    tasks: Annotated[list[Task], Field(min_length=1)] = Field(default_factory=lambda: list(TASKS))
    rounds: Annotated[int, Field(ge=1, le=10_000)] = 3
    local_epochs: Annotated[int, Field(ge=1, le=100)] = 1
    batch_size: Annotated[int, Field(ge=1, le=1024)] = 4
    learning_rate: Annotated[float, Field(gt=0.0, le=10.0)] = 1e-3
    response_positive_weight: Annotated[float, Field(gt=0.0, le=100.0)] = 1.0
    """Weight of responders in the response loss; below 1 where most respond (e.g. 0.4 at ~70 % responders).
    Part of the public config, set from published or public-cohort rates, never from a site's own labels."""
    min_sites: Annotated[int, Field(ge=3)] = 3
    """Fewer contributors than this and the round is refused: with 2, each learns the other's update."""
    reply_timeout_s: Annotated[float, Field(gt=0.0)] = 600.0
    model: ModelConfig = ModelConfig()
    dp: DPConfig = DPConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    he: HEConfig = HEConfig()
    data: DataConfig = DataConfig()


# --------------------------------------------------------------------------- loading

M = TypeVar("M", bound=BaseModel)


def _format_validation_error(path: Path, err: ValidationError) -> str:
    lines = [f"{path}: {err.error_count()} invalid field(s)"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "<top level>"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling)"
        got = e.get("input")
        shown = "" if e["type"] in ("missing", "extra_forbidden") or isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"  {loc}: {msg}{shown}")
    return "\n".join(lines)


def parse_config(data: object, model: type[M], source: Path | str = "<memory>",
                 config_dir: Path | None = None) -> M:
    """Validate an already-parsed mapping, with errors that name ``source`` and the field.

    ``config_dir``: the folder relative ``ConfigPath`` fields resolve against (the YAML file's).
    """
    try:
        return model.model_validate(data, context={CONFIG_DIR: config_dir} if config_dir is not None else None)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(Path(source), err)) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """Safe YAML loading that refuses a key given twice (the second would silently win)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[object] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml_mapping(path: Path | str) -> dict:
    """The top-level mapping of one YAML file, unvalidated; ConfigError naming the file otherwise."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read ({exc})") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values at the top level")
    return data


def load_config(path: Path | str, model: type[M]) -> M:
    """Read one YAML file into ``model``; every failure names the file, and the field where there is one.

    Relative paths in the file (``ConfigPath`` fields) are resolved against the file's folder.
    """
    path = Path(path)
    return parse_config(read_yaml_mapping(path), model, path, config_dir=path.parent)
