"""What every simulated attack writes: one JSON document a report can include as evidence.

An attack runs in *arms*: the same attack against the same data, once with a
protection off (the positive control: the attack must succeed there, or the
test proves nothing) and once or more with it on (the attack must fail).  The
verdict is computed from the arms, never typed in.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from flame_private import __version__
from flame_private.config import StrictModel

AttackName = Literal["curious-server", "gradient-inversion", "membership-inference", "dp-audit", "noise-replay"]
ATTACKS: tuple[AttackName, ...] = ("curious-server", "gradient-inversion", "membership-inference", "dp-audit",
                                   "noise-replay")


Metric = float | int | bool | str | None
"""One figure an attack arm reports (None: not measured in this setting)."""


class AttackArm(StrictModel):
    """One condition of an attack: which protection was on and what the attacker achieved."""

    name: str
    """Short label, e.g. 'no DP, plaintext update'."""
    protection: Literal["none", "dp", "he", "dp+he", "broken-dp"]
    is_control: bool
    """True for the positive control: the protection is off, so the attack is expected to succeed."""
    attack_succeeded: bool
    metrics: dict[str, Metric] = Field(default_factory=dict)
    detail: str = ""
    """One or two plain sentences on what happened in this arm."""


class AttackResult(StrictModel):
    """A finished attack: settings, arms, figures and the verdict derived from them."""

    attack: AttackName
    title: str
    summary: str
    """Plain-language paragraph for a DPO or ethics committee."""
    flame_version: str = __version__
    created_utc: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    seed: int
    size: str
    """The size preset the attack ran at ('ci' or 'full')."""
    seconds: float
    settings: dict[str, Any] = Field(default_factory=dict)
    arms: list[AttackArm]
    figures: list[str] = Field(default_factory=list)
    """PNG files written beside the JSON (file names relative to it)."""
    accounted_epsilon: float | None = None
    """The epsilon the DP accountant claims for the protected arm(s), where DP is involved."""

    @property
    def positive_control_ok(self) -> bool:
        """Every control arm was broken by the attack (so the attack is strong enough to mean something)."""
        controls = [a for a in self.arms if a.is_control]
        return bool(controls) and all(a.attack_succeeded for a in controls)

    @property
    def protection_held(self) -> bool:
        """The attack failed in every arm where the protection was on."""
        protected = [a for a in self.arms if not a.is_control]
        return bool(protected) and not any(a.attack_succeeded for a in protected)

    @property
    def passed(self) -> bool:
        return self.positive_control_ok and self.protection_held

    def to_json(self) -> str:
        doc = self.model_dump(mode="json")
        doc["verdict"] = {"positive_control_ok": self.positive_control_ok,
                          "protection_held": self.protection_held, "passed": self.passed}
        return json.dumps(doc, indent=2, sort_keys=False) + "\n"

    def write(self, path: Path) -> Path:
        """Write atomically (a report never reads half a result)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.to_json(), encoding="utf-8")
        os.replace(tmp, path)
        return path


def load_result(path: Path) -> AttackResult:
    """Read a result written by ``AttackResult.write``; the stored verdict is recomputed, not trusted."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable attack result ({exc})") from exc
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: not a readable attack result (top level is not an object)")  # noqa: TRY004
    doc.pop("verdict", None)
    try:
        return AttackResult.model_validate(doc)
    except ValueError as exc:
        raise ValueError(f"{path}: not a valid attack result: {exc}") from exc
