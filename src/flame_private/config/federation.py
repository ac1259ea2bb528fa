"""One federated run: model sizes, DP-SGD, CKKS parameters, federated evaluation."""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from flame_private.config.base import CLINICAL_TASKS, ConfigPath, StrictModel, Task
from flame_private.config.site import DataConfig


class ModelConfig(StrictModel):
    """Sizes of the networks: the two treatment-conditioned ones and the baseline segmentation model."""

    # Inputs are fixed by the data pipeline: T1, T1ce, T2, FLAIR + one-hot baseline tumour labels (7 channels).
    response_channels: tuple[Annotated[int, Field(ge=1, le=512)], ...] = (16, 32, 64, 128)
    evolution_channels: tuple[Annotated[int, Field(ge=1, le=512)], ...] = (16, 32, 64, 128)
    segmentation_channels: tuple[Annotated[int, Field(ge=1, le=512)], ...] = (8, 16, 32, 64)
    """The baseline segmentation U-Net (T1, T1ce, T2, FLAIR in, the canonical labels out).  Narrower than the
    clinical models: outlining a tumour that contrasts with the brain needs less than predicting its course, and
    a quarter of the parameters halves the step and quarters what DP noise and encryption act on."""
    norm_groups: Annotated[int, Field(ge=1, le=64)] = 8
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.1
    max_parameters: Annotated[int, Field(ge=1000)] = 1_500_000
    response_trainable: Literal["all", "wide"] = "all"
    """Which of the response network's parameters train: all, or only its linear ("wide") part.

    "wide" trains 27 parameters (the clinical features and the tumour's first-order
    intensities) and leaves the rest at their initial values: under DP-SGD the
    noise is spread over 27 coordinates instead of ~0.9 M, which is what lets a
    federation of sites with tens of patients each learn without public data
    (docs/results.md).  Its weights outgrow the default HE weight bound: set
    ``he.weight_bound`` (e.g. 16) and a larger ``learning_rate`` (e.g. 0.03).
    """


GradSampleMode = Literal["ew", "hooks", "functorch", "ghost"]


class DPConfig(StrictModel):
    """DP-SGD settings for one site's local training."""

    enabled: bool = True
    noise_multiplier: Annotated[float, Field(gt=0.0, le=100.0)] | None = None
    """Noise standard deviation relative to the clipping norm; 1.0 when neither this nor target_epsilon is set."""
    target_epsilon: Annotated[float, Field(gt=0.0, le=100.0)] | None = None
    """The noise at which one local training (one round of one task) spends this epsilon."""
    run_epsilon: Annotated[float, Field(gt=0.0, le=100.0)] | None = None
    """The epsilon the whole run may spend at each site: every round of every task and the run's evaluations.

    Each site solves for its own noise multiplier (``privacy.dp.noise_for_run``): a site with fewer
    patients samples a larger fraction of them at each step and needs more noise for the same epsilon.
    What an ethics committee approves is a budget per run; this spends exactly that, at most.
    """
    max_grad_norm: Annotated[float, Field(gt=0.0, le=100.0)] = 1.0
    delta: Annotated[float, Field(gt=0.0, lt=1.0)] = 1e-5
    grad_sample_mode: GradSampleMode | None = None
    """None picks the fastest mode that is correct for the model."""
    accountant: Literal["prv", "rdp"] = "prv"

    @model_validator(mode="before")
    @classmethod
    def _default_sigma(cls, data: object) -> object:
        # Only an absent noise_multiplier gets the default; an explicit null is a choice to be checked.
        if (isinstance(data, dict) and "noise_multiplier" not in data and data.get("target_epsilon") is None
                and data.get("run_epsilon") is None):
            return {**data, "noise_multiplier": 1.0}
        return data

    @model_validator(mode="after")
    def _one_of_sigma_or_eps(self) -> DPConfig:
        chosen = [k for k in ("noise_multiplier", "target_epsilon", "run_epsilon") if getattr(self, k) is not None]
        if self.enabled and len(chosen) != 1:
            raise ValueError("set exactly one of noise_multiplier, target_epsilon and run_epsilon"
                             + (f", not {' and '.join(chosen)}" if chosen else ""))
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


class ServerOptimizerConfig(StrictModel):
    """The server optimiser step, applied identically at every site to the decrypted average (docs/training.md).

    The server only adds ciphertexts and never sees a model, so FedAvgM and FedAdam keep their state at the
    sites.  ``fedavg`` (the default): the decrypted average is the next global model, as without this step.
    """

    name: Literal["fedavg", "fedavgm", "fedadam"] = "fedavg"
    lr: Annotated[float, Field(gt=0.0, le=10.0)] | None = None
    """Server learning rate; None: 1.0 for fedavg and fedavgm, 0.01 for fedadam (Reddi et al. 2021)."""
    momentum: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.9
    """FedAvgM's server momentum."""
    beta1: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.9
    beta2: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.99
    tau: Annotated[float, Field(gt=0.0, le=1.0)] = 1e-3
    """FedAdam's adaptivity: the floor under the square root of the second moment (its initial value is tau^2)."""

    @property
    def server_lr(self) -> float:
        if self.lr is not None:
            return self.lr
        return 0.01 if self.name == "fedadam" else 1.0


class InitialWeights(StrictModel):
    """A checkpoint every site starts round 1 from instead of the seeded random model, pinned by its SHA-256.

    For weights learnt without privacy cost: on a public cohort (``flame train
    central`` over its sites, or ``--start-from-regression`` for the response
    model's linear part).  The hash makes every site start from the same bytes
    and lets a DPO check which weights a run started from; a site whose file
    differs refuses to train.  Never weights trained on a site's own patients:
    those would leave the site outside the DP guarantee.
    """

    path: ConfigPath
    """The ``.pt`` checkpoint (``models.io.save_model``); a relative path resolves against this YAML's folder."""
    sha256: Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$")]
    """Hex SHA-256 of the file's bytes (``sha256sum``; ``flame train central`` prints it); kept in lowercase."""

    @field_validator("sha256")
    @classmethod
    def _lowercase(cls, value: str) -> str:
        return value.lower()


class FederationConfig(StrictModel):
    """One federated run: rounds, tasks, who must take part."""

    run_name: str = "run"
    seed: int = 0
    tasks: Annotated[list[Task], Field(min_length=1)] = Field(default_factory=lambda: list(CLINICAL_TASKS))
    rounds: Annotated[int, Field(ge=1, le=10_000)] = 3
    local_epochs: Annotated[int, Field(ge=1, le=100)] = 1
    batch_size: Annotated[int, Field(ge=1, le=1024)] = 4
    learning_rate: Annotated[float, Field(gt=0.0, le=10.0)] = 1e-3
    lr_schedule: Literal["constant", "cosine"] = "constant"
    """``cosine``: the rate falls along a half cosine over the run, so the last updates (under DP, as noisy as
    the first) move the model less. Federated, round r trains at ``learning_rate x (1 + cos(pi (r - 1) /
    rounds)) / 2`` at every site alike (public); trained in one go (central, local), it falls over the steps."""

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
    server_optimizer: ServerOptimizerConfig = ServerOptimizerConfig()
    """The server optimiser step the sites apply after decryption (default fedavg: the average itself)."""
    initial_weights: dict[Task, InitialWeights] = Field(default_factory=dict)
    """Per task, the public checkpoint round 1 starts from (default: the seeded random model)."""

    def round_learning_rate(self, round_: int) -> float:
        """The learning rate of round ``round_`` (1-based) of a federated run; a cosine has none past the run."""
        if self.lr_schedule == "constant":
            return self.learning_rate
        if not 1 <= round_ <= self.rounds:
            raise ValueError(f"round {round_} is outside the run's {self.rounds} rounds")
        return self.learning_rate * (1.0 + math.cos(math.pi * (round_ - 1) / self.rounds)) / 2.0

    def model_start(self, task: Task) -> str:
        """Round 1's model of ``task``: ``sha256:<hex>`` of the pinned public checkpoint, else ``seed:<seed>``.

        The server sends it with every instruction; a site whose own config gives another declines to train.
        """
        pinned = self.initial_weights.get(task)
        return f"sha256:{pinned.sha256}" if pinned is not None else f"seed:{self.seed}"

    @model_validator(mode="after")
    def _wide_training_has_a_weight_bound(self) -> FederationConfig:
        if "response" in self.tasks and self.model.response_trainable == "wide" and self.he.weight_bound is None:
            raise ValueError("model.response_trainable 'wide' needs he.weight_bound: the linear weights outgrow the "
                             "bound derived from the round-1 model, and a site refuses a weight beyond it")
        return self
