"""The synthetic multi-centre cohort: sites, scanners, tumour growth, therapy, follow-up (``flame cohort``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from flame_private.config.base import Modality, PositiveFloat, Probability, StrictModel


def _check_range(v: tuple[float, float], name: str) -> tuple[float, float]:
    lo, hi = v
    if not lo <= hi:
        raise ValueError(f"{name} must be [low, high] with low <= high, got {list(v)}")
    return v


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
    hypoxia_shift_range: tuple[Annotated[float, Field(ge=-0.3, le=0.3)], Annotated[float, Field(ge=-0.3, le=0.3)]] = (
        -0.25, 0.1)
    """Per-patient shift of the tumour density above which oxygen runs out (hidden perfusion), uniform.

    Negative: a poorly vascularised tumour, hypoxic and necrotic at lower density;
    positive: a well-perfused one. It moves both the radiobiological hypoxia
    (oxygen effect) and the formation of necrosis (docs/cohort.md).
    """
    enhancing_threshold: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.45
    flair_threshold: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.16
    necrosis_threshold: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.5

    @model_validator(mode="after")
    def _ordered_ranges(self) -> TumourParams:
        for name in ("velocity_range", "invasiveness_range", "d_white_range", "white_grey_ratio_range",
                     "rho_range", "detection_flair_ml_range", "hypoxia_shift_range"):
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
    carbon_brain_rbe_factor: Annotated[float, Field(ge=1.0, le=2.0)] = 1.25
    """Carbon's RBE in late-reacting normal brain relative to the tumour RBE the plan is weighted with.

    RBE rises as alpha/beta falls (brain ~2 Gy, tumour ~10 Gy), so a plan weighted for
    the tumour under-states the biological dose to normal brain: the radionecrosis
    risk is computed on the carbon dose times this factor (modelling choice, docs/cohort.md).
    """
    oer_low_let: Annotated[float, Field(ge=1.0, le=4.0)] = 2.8
    """Oxygen enhancement ratio at full hypoxia for photons and protons."""
    oer_carbon: Annotated[float, Field(ge=1.0, le=4.0)] = 1.5
    tmz_daily_kill_methylated: Annotated[float, Field(ge=0, le=0.2)] = 0.02
    tmz_daily_kill_unmethylated: Annotated[float, Field(ge=0, le=0.2)] = 0.004
    repopulation_kickoff_day: Annotated[float, Field(ge=0)] = 37.0
    repopulation_doubling_days: PositiveFloat = 15.0
    dead_cell_clearance_days: Annotated[float, Field(gt=0, le=365)] = 40.0
    """Half-life of lethally damaged cells on imaging (modelling choice: MRI response lags cell kill)."""
    lymphopenia_proliferation_gain: Annotated[float, Field(ge=0, le=3)] = 0.75
    """Relative increase of post-treatment proliferation after grade 3+ radiation-induced lymphopenia
    (weaker immune control of the residual tumour; size a modelling choice, docs/cohort.md)."""


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
