"""CKKS parameters, their fingerprint and the params-only context: what anyone may hold.

SERVER-SAFE (``secure/public``): nothing here loads, makes or accepts a secret key.
Parameters are complex-packed: a chunk carries ``poly_modulus_degree`` reals in
``poly_modulus_degree / 2`` slots; an update or aggregate ends with one more chunk
holding the count (``ParamsContext.update_chunks``; ``packing`` says what the values mean).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Annotated

import tenseal.sealapi as sa
from pydantic import Field

from flame_private.config import HEConfig
from flame_private.secure.public.errors import HEConfigError

PACKING = "flame-complex2-scaled-countchunk/2"
"""Packing scheme, part of the fingerprint: two reals per complex slot, values scaled by the public bounds
(n_k * w_k / (W * C)), the count in a chunk of its own (packing.py)."""

HexDigest = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


def he_summary(he: HEConfig) -> str:
    """Human-readable one-liner of the parameters, for logs and the fingerprint file."""
    return f"CKKS N={he.poly_modulus_degree} coeff={list(he.coeff_mod_bit_sizes)} scale=2^{he.scale_bits}"


def check_he_config(he: HEConfig) -> None:
    """Re-check the 128-bit bound and the scale headroom (HEConfig does too; this guards copies built otherwise)."""
    from flame_private.config import HE_MAX_MODULUS_BITS

    bound = HE_MAX_MODULUS_BITS.get(he.poly_modulus_degree)
    total = sum(he.coeff_mod_bit_sizes)
    if bound is None or total > bound:
        raise HEConfigError(f"{he_summary(he)}: {total} modulus bits break the 128-bit security bound "
                            f"({bound} bits for N={he.poly_modulus_degree})")
    if he.scale_bits > min(he.coeff_mod_bit_sizes) - 2:
        raise HEConfigError(f"{he_summary(he)}: scale must be <= 2^(smallest prime bits - 2)")


def build_encryption_parameters(he: HEConfig) -> sa.EncryptionParameters:
    """SEAL CKKS parameters from the config; the primes are chosen deterministically by SEAL."""
    check_he_config(he)
    parms = sa.EncryptionParameters(sa.SCHEME_TYPE.CKKS)
    parms.set_poly_modulus_degree(he.poly_modulus_degree)
    try:
        parms.set_coeff_modulus(sa.CoeffModulus.Create(he.poly_modulus_degree, list(he.coeff_mod_bit_sizes)))
    except (RuntimeError, ValueError) as exc:
        raise HEConfigError(f"{he_summary(he)}: SEAL cannot make these primes ({exc})") from None
    return parms


def he_fingerprint(he: HEConfig) -> str:
    """sha256 of the canonical parameters: the actual primes, N, the scale and the packing scheme.

    Everyone (custodian, sites, server) computes it independently and compares it
    out of band; a ciphertext whose header carries another fingerprint is refused.
    """
    primes = [m.value() for m in build_encryption_parameters(he).coeff_modulus()]
    canonical = {"scheme": "ckks", "poly_modulus_degree": he.poly_modulus_degree, "coeff_modulus": primes,
                 "scale_bits": he.scale_bits, "packing": PACKING}
    return hashlib.sha256(json.dumps(canonical, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True, eq=False)
class ParamsContext:
    """Everything needed to deserialise, check and add ciphertexts; holds no key."""

    he: HEConfig
    parms: sa.EncryptionParameters = field(repr=False)
    seal: sa.SEALContext = field(repr=False)
    fingerprint: str

    @classmethod
    def from_config(cls, he: HEConfig) -> ParamsContext:
        parms = build_encryption_parameters(he)
        seal = sa.SEALContext(parms, True, sa.SEC_LEVEL_TYPE.TC128)
        if not seal.parameters_set():
            raise HEConfigError(f"{he_summary(he)}: SEAL refuses these parameters "
                                f"({seal.parameters_error_message()})")
        return cls(he=he, parms=parms, seal=seal, fingerprint=he_fingerprint(he))

    @property
    def slots(self) -> int:
        """Complex slots per ciphertext (N / 2)."""
        return self.he.poly_modulus_degree // 2

    @property
    def values_per_chunk(self) -> int:
        """Reals per ciphertext with complex packing (N)."""
        return self.he.poly_modulus_degree

    @property
    def scale(self) -> float:
        return float(2**self.he.scale_bits)

    @property
    def data_modulus(self) -> int:
        """Product of the primes ciphertexts live under (all but the special prime when there are several)."""
        return math.prod(m.value() for m in self.seal.first_context_data().parms().coeff_modulus())

    def n_chunks(self, n_values: int) -> int:
        """Ciphertexts needed for ``n_values`` reals."""
        return max(1, math.ceil(n_values / self.values_per_chunk))

    def update_chunks(self, n_params: int) -> int:
        """Ciphertexts of an update or aggregate of ``n_params`` values: theirs, then the count chunk."""
        return self.n_chunks(n_params) + 1

    def max_chunk_bytes(self) -> int:
        """Upper bound on one serialised chunk: two full polynomials plus generous metadata."""
        n_primes = len(self.seal.first_context_data().parms().coeff_modulus())
        raw = 2 * self.he.poly_modulus_degree * n_primes * 8
        return raw + raw // 64 + 1024
