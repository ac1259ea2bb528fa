"""Range analysis: how large a sum the CKKS parameters can carry exactly, and the checks that enforce it.

SERVER-SAFE (``secure/public``): public arithmetic on public parameters and
bounds, used by the key ceremony, by sites before they encrypt, and by anyone
(the server included) who wants to check that a federation's sum cannot wrap.

Range analysis (docs/encryption.md has the derivation): CKKS stores
``round(scale * m)`` in polynomial coefficients modulo the data modulus ``q``
(the primes but the last, special one).  With complex packing each coefficient
is bounded by ``scale * max|slot| <= scale * sqrt(2) * B`` for real values
``|x| <= B``.  Adding K sites' ciphertexts adds the coefficients, and decryption
is only right while the sum stays below ``q / 2``.  ``max_sum_magnitude`` is the
largest B the sum of up to K fresh ciphertexts may hold (worst case, plus
encryption noise, with a safety factor); the packing (``packing``) keeps every
sum of model updates at most 1, and the key ceremony refuses parameters below
that.  Raw vectors (``site.codec.encrypt_vector``) are held to ``max_safe_magnitude``, the
same bound shared among ``max_sites`` sites.
"""

from __future__ import annotations

import math

import numpy as np

from flame_private.config import HEConfig
from flame_private.secure.public.errors import HEConfigError, OverflowRisk
from flame_private.secure.public.packing import COUNT_TOLERANCE, ParamLayout
from flame_private.secure.public.params import ParamsContext, he_summary

DEFAULT_MAX_SITES = HEConfig.model_fields["max_sites"].default
"""Most sites a federation may sum (``HEConfig.max_sites``); the headroom is sized for this many."""
DEFAULT_REQUIRED_MAGNITUDE = 1.0
"""Largest |value| of a sum the parameters must hold: the packing keeps every sum of updates within 1."""
SAFETY_FACTOR = 1.25
"""Margin on top of a worst-case bound (a slot vector aligned with one coefficient; honest updates stay far below)."""
NOISE_ALLOWANCE = 64.0
"""Per-site bound on fresh symmetric-encryption noise plus encoding rounding, in coefficient units (SEAL's
centred binomial noise is at most 21)."""


def max_sum_magnitude(he_config: HEConfig, max_sites: int = DEFAULT_MAX_SITES) -> float:
    """Largest |value| the sum of up to ``max_sites`` fresh ciphertexts may hold without wrapping."""
    if max_sites < 1:
        raise HEConfigError(f"max_sites must be >= 1, got {max_sites}")
    q = ParamsContext.from_config(he_config).data_modulus
    budget = q / 2 - NOISE_ALLOWANCE * max_sites
    return max(0.0, budget / (SAFETY_FACTOR * math.sqrt(2) * 2.0**he_config.scale_bits))


def max_safe_magnitude(he_config: HEConfig, max_sites: int = DEFAULT_MAX_SITES) -> float:
    """Largest |value| a site may put in a raw vector so that the sum over ``max_sites`` sites cannot overflow."""
    return max_sum_magnitude(he_config, max_sites) / max_sites


def check_headroom(he_config: HEConfig, max_sites: int = DEFAULT_MAX_SITES,
                   required: float = DEFAULT_REQUIRED_MAGNITUDE) -> float:
    """Refuse parameters whose sum over ``max_sites`` could not hold values of ``required`` magnitude."""
    limit = max_sum_magnitude(he_config, max_sites)
    if limit < required:
        raise HEConfigError(
            f"{he_summary(he_config)}: the sum of {max_sites} sites may only hold |values| <= {limit:.3g}, "
            f"below the required {required:g} (packed updates sum to at most 1); use a larger data prime or a "
            "smaller scale")
    return limit


def check_packing(ctx: ParamsContext, layout: ParamLayout) -> None:
    """Refuse bounds these parameters cannot carry: the summed count must decrypt to within COUNT_TOLERANCE.

    The count chunk is a constant polynomial, so its error is one coefficient's
    noise, at most ``NOISE_ALLOWANCE`` per site, times C * M / scale in patients.
    """
    worst = NOISE_ALLOWANCE * layout.max_sites * layout.count_scale / ctx.scale
    if worst > COUNT_TOLERANCE / 2:
        raise HEConfigError(f"{he_summary(ctx.he)}: a count bound of {layout.count_bound} patients with "
                            f"{layout.max_sites} sites is too large for scale 2^{ctx.he.scale_bits} (the summed count "
                            f"could be off by {worst:.2g}); lower he.max_patients or he.max_sites, or use a larger "
                            "scale")


def check_range(values: np.ndarray, limit: float, he_config: HEConfig, max_sites: int) -> None:
    if not np.all(np.isfinite(values)):
        raise OverflowRisk("values contain NaN or infinity; refusing to encrypt them")
    peak = float(np.max(np.abs(values))) if values.size else 0.0
    if peak > limit:
        raise OverflowRisk(
            f"largest |value| {peak:.6g} exceeds {limit:.6g}, the most {max_sites} sites can add under "
            f"{he_summary(he_config)} without the sum wrapping around the modulus")

