"""Typed errors of the HE layer.

Every refusal names what was wrong in words a site operator or DPO can act on;
the server logs the reason and drops the reply instead of crashing the round.
Server-safe: imports nothing that touches keys.
"""

from __future__ import annotations

from typing import Literal

from flame_private.errors import ExitCode, FlameError

RejectReason = Literal[
    "header", "fingerprint", "params", "run", "task", "round", "model", "layout", "length",
    "chunk_count", "oversized", "checksum", "truncated", "garbage", "kind",
]
"""Why a ciphertext was refused; stable codes for logs, tests and egress reports."""


class HEError(FlameError, ValueError):
    """Base class: homomorphic-encryption material or parameters cannot be used as they are."""

    exit_code = ExitCode.CRYPTO


class HEConfigError(HEError):
    """The CKKS parameters are insecure, inconsistent, or leave no room for the sum."""


class ContextFileError(HEError):
    """A context or fingerprint file is missing, malformed, of the wrong kind, or too open."""

    def __init__(self, path: object, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class CiphertextRejected(HEError):
    """A ciphertext payload or its header failed validation; ``reason`` is a stable code."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(f"ciphertext rejected ({reason}): {detail}")
        self.reason: RejectReason = reason
        self.detail = detail


class OverflowRisk(HEError):
    """Values to encrypt are so large that the sum over the sites could wrap around the modulus."""


class PackingError(HEError):
    """A state dict cannot be flattened, or a vector does not match the expected layout."""
