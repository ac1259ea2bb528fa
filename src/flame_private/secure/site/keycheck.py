"""Key check value (KCV): a short value that identifies the shared CKKS secret key without revealing it.

SITE-ONLY (and key custodian): it is computed from a loaded secret key, so the
server never imports this module.

The HE fingerprint (``secure.public.params.he_fingerprint``) is a hash of the *parameters*:
every key made with the same settings has the same one, so comparing it proves
nothing about which key a site holds.  The KCV is a hash of the *key*:

    sha256( "flame-private/he-kcv/1" NUL
            || the 32 bytes of the parameter fingerprint
            || coefficient count (8 bytes, little-endian)
            || every coefficient of the key, in SEAL's order (8 bytes each, little-endian) )

SEAL keeps a secret key as one polynomial in NTT form, reduced modulo each key
prime; its coefficients are the same whichever way the key was serialised
(compressed or not) and however often it was saved and loaded, so the value is
deterministic.  The domain tag keeps it from colliding with any other hash of
these bytes; the fingerprint binds it to the parameters.  The coefficients are
read from the key already in memory: nothing is written anywhere.  A key has far
more than 128 bits of entropy, so the hash reveals nothing usable about it.

People compare the first 96 bits, written as six groups of four hexadecimal
digits (``3F2A-9C01-77BE-0D45-A1C2-9E30``), short enough to read aloud on the
telephone; files keep the whole hash.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import struct
from pathlib import Path
from typing import Final, Literal

import numpy as np
import tenseal.sealapi as sa
from pydantic import ValidationError

from flame_private.config import StrictModel
from flame_private.errors import ExitCode
from flame_private.secure.public.errors import ContextFileError, HEError
from flame_private.secure.public.params import HexDigest

KCV_DOMAIN = b"flame-private/he-kcv/1\x00"
KCV_FORMAT: Final = "flame-private/he-key-check"
SHORT_HEX_DIGITS = 24
"""Hex digits people compare (96 bits); a value given for verification must have at least these."""
_GROUP = 4
_SEPARATORS = re.compile(r"[\s:\-]+")


class KeyCheckMismatch(HEError):
    """The secret key (or its parameters) is not the one the key ceremony made."""

    exit_code = ExitCode.CHECK_FAILED


class KeyCheckFormatError(HEError):
    """A key check value given to compare with is not one (wrong length, not hexadecimal)."""

    exit_code = ExitCode.INPUT


class KeyCheck(StrictModel):
    """``he-key-check.json``: what the ceremony hands the sites, apart from the secret context itself."""

    format: Literal["flame-private/he-key-check"] = KCV_FORMAT
    version: Literal[1] = 1
    key_check_value: HexDigest
    """The whole sha256 (see the module docstring)."""
    key_check_short: str
    """The part people compare, grouped for reading aloud."""
    he_fingerprint: HexDigest
    """The parameters' fingerprint: the same for every key made with these parameters."""
    parameters: str
    created_at: str


def key_check_value(secret_key: sa.SecretKey, fingerprint: str) -> str:
    """The KCV (64 hex digits) of ``secret_key`` under the parameters whose fingerprint is ``fingerprint``."""
    plain = secret_key.data()
    n = plain.coeff_count()
    if n <= 0:
        raise HEError("the secret key holds no coefficients")
    coeffs = np.fromiter((plain[i] for i in range(n)), dtype="<u8", count=n)
    try:
        digest = hashlib.sha256(KCV_DOMAIN)
        digest.update(bytes.fromhex(fingerprint))
        digest.update(struct.pack("<Q", n))
        digest.update(coeffs.tobytes())
        return digest.hexdigest()
    finally:
        coeffs.fill(0)  # do not leave a copy of the key in freed memory longer than needed


def short_kcv(kcv: str) -> str:
    """The grouped form people read aloud: ``3F2A-9C01-77BE-0D45-A1C2-9E30``."""
    head = kcv[:SHORT_HEX_DIGITS].upper()
    return "-".join(head[i:i + _GROUP] for i in range(0, len(head), _GROUP))


def normalise_kcv(text: str) -> str:
    """Lower-case hex digits of a KCV as typed (any case, grouped with spaces, dashes or colons)."""
    digits = _SEPARATORS.sub("", text).lower()
    if not digits or any(c not in "0123456789abcdef" for c in digits):
        raise KeyCheckFormatError(f"{text!r} is not a key check value: expected hexadecimal digits, "
                                  "like 3F2A-9C01-77BE-0D45-A1C2-9E30")
    if not SHORT_HEX_DIGITS <= len(digits) <= 64:
        raise KeyCheckFormatError(f"{text!r} has {len(digits)} hex digits; give at least the {SHORT_HEX_DIGITS} of "
                                  "the grouped form (six groups of four), at most the 64 of the whole value")
    return digits


def matches(kcv: str, expected: str) -> bool:
    """Whether ``expected`` (grouped or whole, as typed) is ``kcv`` or its leading part."""
    want = normalise_kcv(expected)
    return hmac.compare_digest(kcv[: len(want)], want)


def check_key(kcv: str, fingerprint: str, expected: str, *, expected_fingerprint: str | None = None,
              what: str = "the secret context") -> None:
    """Raise KeyCheckMismatch, saying what differs, unless the key (and parameters) are the expected ones."""
    if expected_fingerprint is not None and expected_fingerprint != fingerprint:
        raise KeyCheckMismatch(f"{what} was made with other HE parameters (fingerprint {fingerprint[:16]}..., "
                               f"the ceremony's {expected_fingerprint[:16]}...): it is not the federation's key")
    if not matches(kcv, expected):
        raise KeyCheckMismatch(f"{what} holds another key: its key check value is {short_kcv(kcv)}, the key "
                               f"ceremony's is {short_kcv(normalise_kcv(expected))}. Do not use it; ask the key "
                               "custodian for the federation's secret context")


def make_key_check(kcv: str, fingerprint: str, parameters: str, created_at: str) -> KeyCheck:
    return KeyCheck(key_check_value=kcv, key_check_short=short_kcv(kcv), he_fingerprint=fingerprint,
                    parameters=parameters, created_at=created_at)


def key_check_bytes(check: KeyCheck) -> bytes:
    return (json.dumps(check.model_dump(), indent=2) + "\n").encode()


def read_key_check(path: Path | str) -> KeyCheck:
    """Read ``he-key-check.json``; a ContextFileError names the file and what is wrong with it."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ContextFileError(path, "key check file not found") from None
    except OSError as exc:
        raise ContextFileError(path, f"cannot read ({exc.strerror or exc})") from None
    try:
        check = KeyCheck.model_validate(json.loads(raw))
    except (ValueError, ValidationError) as exc:
        raise ContextFileError(path, f"not a key check file ({exc.__class__.__name__})") from None
    if check.key_check_short != short_kcv(check.key_check_value):
        raise ContextFileError(path, "key_check_short does not match key_check_value")
    return check

