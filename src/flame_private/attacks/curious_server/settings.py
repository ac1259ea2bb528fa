"""The curious-server attack's size presets, thresholds and fixed names."""

from __future__ import annotations

from dataclasses import dataclass

RUN_ID = "curious-server"
WORK_NAME = "curious-server-work"

CORRELATION_FOUND = 0.9
"""A tensor counts as found when some window of the bytes correlates this well with it (controls: ~1.0)."""
EXACT_FOUND = 0.5
"""... or when this fraction of its distinct values appears bit for bit (controls: ~1.0)."""
MIN_EXACT_VALUES = 8
DECRYPT_CORRELATION = 0.1
"""A 'decryption' whose values correlate this well with the truth, pooled over every ciphertext, counts as a
success (chance stays below 0.02 over tens of thousands of values; the key holder gets 1.0)."""
DECRYPT_REL_ERROR = 0.5
"""... as does one whose RMS error is below this fraction of the truth's RMS on any ciphertext."""
KEY_HOLDER_MAX_ERROR = 1e-4
KEY_WORDS_AT = 1000
KEY_WORDS = 8
"""The key's signature: 8 consecutive 64-bit NTT coefficients (512 random bits) from index 1000."""
SERIALISED_SIGNATURE_BYTES = 64
MAX_ABS_FLOAT = 1e4
"""Interpreted floats beyond this (or non-finite) are set to 0 before correlating: weights are far smaller."""


@dataclass(frozen=True)
class CuriousServerSettings:
    """One size preset of the attack."""

    site_patients: tuple[int, ...]
    """Patients per simulated site; sizes differ, as hospitals' do."""
    tasks: tuple[str, ...] = ("response", "evolution")
    rounds: int = 1
    grid: int = 24
    channels: tuple[int, ...] = (4, 8)
    norm_groups: int = 2
    reencryptions: int = 3
    """Fresh encryptions of each site's update by the site's own code, added to the distinguisher's sample."""
    block_bytes: int = 512
    """One distinguisher sample: a block of this many bytes."""
    folds: int = 5
    confidence: float = 0.999
    """Of the binomial (Clopper-Pearson) interval on the distinguisher's accuracy."""
    templates_per_tensor_set: int = 2
    """Largest tensors of each model used as correlation templates."""


SIZES: dict[str, CuriousServerSettings] = {
    "ci": CuriousServerSettings(site_patients=(4, 8, 4)),
    "full": CuriousServerSettings(site_patients=(6, 12, 8, 10), rounds=2, channels=(8, 16), norm_groups=4,
                                  reencryptions=4),
}
