"""Site-side encryption and decryption, and the range analysis that keeps the sum exact.

SITE-ONLY: uses the shared secret key.  Encryption is seeded symmetric
(``Encryptor(ctx, secret_key).encrypt_symmetric``): the saved ciphertext is one
polynomial plus a seed, half the size of a public-key ciphertext, and fresher
(smaller noise).  Anyone who can encrypt this way can also decrypt; every site
holds the key anyway (docs/design.md 1).

Range analysis (docs/encryption.md has the derivation): CKKS stores
``round(scale * m)`` in polynomial coefficients modulo the data modulus ``q``
(the primes but the last, special one).  With complex packing each coefficient
is bounded by ``scale * max|slot| <= scale * sqrt(2) * B`` for real values
``|x| <= B``.  Adding K sites' ciphertexts adds the coefficients, and decryption
is only right while the sum stays below ``q / 2``.  ``max_safe_magnitude`` is the
largest B for which K sites' worst case, plus encryption noise, fits with a
safety factor of 2; a site refuses to encrypt anything bigger (n_k * w_k and
the count n_k alike), instead of letting the sum wrap silently.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import tenseal.sealapi as sa
import torch

from flame_private.config import HEConfig
from flame_private.secure._sealio import save_bytes, scratch
from flame_private.secure.errors import HEConfigError, OverflowRisk
from flame_private.secure.packing import ParamLayout, from_slots, to_slots, update_vector, weighted_mean
from flame_private.secure.params import (
    CiphertextEnvelope,
    ParamsContext,
    check_contributors,
    he_summary,
    load_ciphertexts,
    make_envelope,
    parse_envelope,
    validate_envelope,
)

if TYPE_CHECKING:
    from flame_private.secure.keys import SecretContext

log = logging.getLogger(__name__)

DEFAULT_MAX_SITES = HEConfig.model_fields["max_sites"].default
"""Most sites a federation may sum (``HEConfig.max_sites``); the headroom is sized for this many."""
DEFAULT_REQUIRED_MAGNITUDE = 1000.0
"""Smallest per-site value range a config must allow to pass the ceremony (e.g. 500 patients x |w| <= 2)."""
SAFETY_FACTOR = 2.0
NOISE_ALLOWANCE = 64.0
"""Per-site bound on fresh symmetric-encryption noise plus encoding rounding, in coefficient units (6 sigma = 19.2)."""


def max_safe_magnitude(he_config: HEConfig, max_sites: int = DEFAULT_MAX_SITES) -> float:
    """Largest |value| a site may encrypt so that the sum over ``max_sites`` sites cannot overflow."""
    if max_sites < 1:
        raise HEConfigError(f"max_sites must be >= 1, got {max_sites}")
    q = ParamsContext.from_config(he_config).data_modulus
    budget = q / 2 / SAFETY_FACTOR - NOISE_ALLOWANCE * max_sites
    return max(0.0, budget / (max_sites * math.sqrt(2) * 2.0**he_config.scale_bits))


def check_headroom(he_config: HEConfig, max_sites: int = DEFAULT_MAX_SITES,
                   required: float = DEFAULT_REQUIRED_MAGNITUDE) -> float:
    """Refuse parameters whose sum over ``max_sites`` could not hold values of ``required`` magnitude."""
    limit = max_safe_magnitude(he_config, max_sites)
    if limit < required:
        raise HEConfigError(
            f"{he_summary(he_config)}: with {max_sites} sites a site may only encrypt |values| <= {limit:.3g}, "
            f"below the required {required:g} (n_k * w_k); use a larger data prime or a smaller scale")
    return limit


def _check_range(values: np.ndarray, he_config: HEConfig, max_sites: int) -> None:
    if not np.all(np.isfinite(values)):
        raise OverflowRisk("values contain NaN or infinity; refusing to encrypt them")
    peak = float(np.max(np.abs(values))) if values.size else 0.0
    limit = max_safe_magnitude(he_config, max_sites)
    if peak > limit:
        raise OverflowRisk(
            f"largest |value| {peak:.6g} exceeds {limit:.6g}, the most {max_sites} sites can add under "
            f"{he_summary(he_config)} without the sum wrapping around the modulus")


def encrypt_vector(secret: SecretContext, values: np.ndarray, *, max_sites: int | None = None) -> bytes:
    """Encrypt a real vector (complex-packed, seeded symmetric); the payload the server can add.

    ``max_sites`` defaults to the context's ``HEConfig.max_sites``.
    """
    ctx = secret.params
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    _check_range(values, ctx.he, max_sites or ctx.he.max_sites)
    encoder = sa.CKKSEncoder(ctx.seal)
    encryptor = sa.Encryptor(ctx.seal, secret.secret_key)
    parts = []
    with scratch() as f:
        for slots in to_slots(values, ctx.values_per_chunk):
            pt = sa.Plaintext()
            encoder.encode(slots.tolist(), ctx.scale, pt)
            parts.append(save_bytes(encryptor.encrypt_symmetric(pt).save, f))
    return b"".join(parts)


def decrypt_ciphertexts(secret: SecretContext, cts: list[sa.Ciphertext], n_values: int) -> np.ndarray:
    """Decrypt already-parsed ciphertexts into the first ``n_values`` reals."""
    encoder = sa.CKKSEncoder(secret.params.seal)
    decryptor = sa.Decryptor(secret.params.seal, secret.secret_key)
    chunks = []
    for ct in cts:
        pt = sa.Plaintext()
        decryptor.decrypt(ct, pt)
        chunks.append(np.asarray(encoder.decode_complex(pt), dtype=np.complex128))
    return from_slots(chunks, n_values)


def decrypt_vector(secret: SecretContext, payload: bytes, n_values: int) -> np.ndarray:
    """Decrypt a payload (an update or a sum) into ``n_values`` reals; malformed bytes are refused."""
    n_chunks = secret.params.n_chunks(n_values)
    return decrypt_ciphertexts(secret, load_ciphertexts(payload, secret.params, n_chunks), n_values)


def encrypt_update(secret: SecretContext, state_dict: Mapping[str, torch.Tensor], count: int, *, site_id: str,
                   run_id: str, task: str, round: int, model: str, layout: ParamLayout | None = None,
                   max_sites: int | None = None) -> tuple[CiphertextEnvelope, bytes]:
    """A site's reply: Enc([n_k * w_k | n_k]) and its header, which names the site (``contributor_ids``)."""
    layout = layout or ParamLayout.from_state_dict(state_dict)
    payload = encrypt_vector(secret, update_vector(state_dict, layout, count), max_sites=max_sites)
    env = make_envelope(kind="update", run_id=run_id, task=task, round=round, model=model,
                        layout_sha256=layout.sha256, n_params=layout.n_params, ctx=secret.params, payload=payload,
                        contributor_ids=[site_id])
    log.info("encrypted %s update (%s round %d): %d params -> %d bytes (%.2f B/param)", model, task, round,
             layout.n_params, len(payload), len(payload) / layout.n_params)
    return env, payload


def decrypt_aggregate(secret: SecretContext, envelope: CiphertextEnvelope | dict | str | bytes, payload: bytes,
                      layout: ParamLayout, *, run_id: str, task: str, round: int, model: str | None = None,
                      min_sites: int = 3, max_sites: int | None = None) -> tuple[dict[str, torch.Tensor], int]:
    """Check and decrypt the server's sum; returns the FedAvg model and the total patient count.

    Before anything is decrypted: the header must be an aggregate of this run,
    task, ``round`` and model under the agreed parameters (a stale, replayed or
    foreign sum is refused), summing ``min_sites`` to ``max_sites`` (default: the
    parameters' ``max_sites``) distinct, named sites.
    """
    env = parse_envelope(envelope)
    check_contributors(env, min_sites, secret.params.he.max_sites if max_sites is None else max_sites)
    cts = validate_envelope(env, payload, secret.params, run_id=run_id, task=task, round=round,
                            kind="aggregate", model=model, n_params=layout.n_params, layout_sha256=layout.sha256,
                            source="server")
    state, total = weighted_mean(decrypt_ciphertexts(secret, cts, layout.n_params + 1), layout)
    log.info("decrypted %s aggregate round %d: %d patients", task, round, total)
    return state, total
