"""Each attack by name, imported only when asked for (torch, Flower and TenSEAL are slow to import)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

from flame_private.attacks.result import ATTACKS, AttackResult

_ENTRY_POINTS = {
    "curious-server": ("flame_private.attacks.curious_server", "run_curious_server"),
    "gradient-inversion": ("flame_private.attacks.gradient_inversion", "run_gradient_inversion"),
    "membership-inference": ("flame_private.attacks.membership", "run_membership_inference"),
    "dp-audit": ("flame_private.attacks.dp_audit", "run_dp_audit"),
    "noise-replay": ("flame_private.attacks.noise_replay", "run_noise_replay"),
}
assert tuple(_ENTRY_POINTS) == ATTACKS


def runner(name: str) -> Callable[..., AttackResult]:
    """``run_<attack>(out_dir, size, seed, ...)`` for an attack name of ``ATTACKS``."""
    if name not in _ENTRY_POINTS:
        raise ValueError(f"unknown attack {name!r}; expected one of {', '.join(ATTACKS)}")
    module, function = _ENTRY_POINTS[name]
    return getattr(importlib.import_module(module), function)


def run_attack(name: str, out: Path, size: str = "ci", seed: int = 0) -> tuple[AttackResult, Path]:
    """Run one attack and write ``<out>/<name>.json`` (figures go beside it)."""
    result = runner(name)(out, size, seed)
    return result, result.write(out / f"{name}.json")
