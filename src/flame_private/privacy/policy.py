"""A site's approved privacy policy: ``privacy_budgets/<site>.yaml``.

The policy is what an ethics committee approved for one site: the total epsilon
that may ever be spent on its patients (all models, all rounds, all runs), at which
delta, by which accountant, approved by whom, under which reference, and for which
period.  Without a valid policy the site trains nothing.
"""

from __future__ import annotations

import hashlib
from datetime import date
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, field_validator

from flame_private.config import ConfigError, StrictModel, parse_config, read_yaml_mapping
from flame_private.errors import ExitCode

MAX_DELTA = 1e-3
"""Largest delta a policy may state.  delta should be well below 1/n_patients; n is
not known to the policy, so this only refuses values that are surely too large."""


TEMPLATE_MARKER = "UNFILLED_TEMPLATE"
"""First key of the template ``flame site init`` writes: not a policy field, so the template is refused until the
committee has filled it in and the line is deleted, whatever else is filled in."""
TEMPLATE_ACTION = f"delete the {TEMPLATE_MARKER} line once the committee has filled it"


class PolicyError(ConfigError):
    """No valid approved policy for this site: missing, malformed, another site's, not yet valid or expired."""

    exit_code = ExitCode.PRIVACY_REFUSED


class PrivacyPolicy(StrictModel):
    """The approved privacy budget of one site."""

    site_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]
    epsilon_cap: Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
    """Total epsilon that may ever be spent on this site's patients, over every release."""
    delta: Annotated[float, Field(gt=0.0, lt=MAX_DELTA)]
    unit_of_privacy: Literal["patient"]
    """All timepoints of one patient form one record."""
    accountant: Literal["prv", "rdp"] = "prv"
    approved_by: Annotated[str, Field(min_length=3)]
    """The approving committee."""
    approval_reference: Annotated[str, Field(min_length=1)]
    approved_on: date
    """First day the policy applies."""
    expires_on: date
    """First day the policy no longer applies."""
    notes: str | None = None

    @field_validator("approved_by", "approval_reference")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be blank")
        return v

    @field_validator("expires_on")
    @classmethod
    def _after_approval(cls, v: date, info: ValidationInfo) -> date:
        approved = info.data.get("approved_on")
        if approved is not None and v <= approved:
            raise ValueError(f"must be after approved_on ({approved.isoformat()})")
        return v

    def describe(self) -> str:
        """One line for messages: cap, delta, accountant and the approval it rests on."""
        return (f"epsilon cap {self.epsilon_cap:.2f} at delta={self.delta:g}, {self.accountant.upper()} accountant, "
                f"approved by {self.approved_by} ({self.approval_reference}) on {self.approved_on.isoformat()}, "
                f"expires {self.expires_on.isoformat()}")


def load_policy(path: Path | str) -> PrivacyPolicy:
    """Read a policy YAML; every failure is a PolicyError naming the file, and the field where there is one.

    The unfilled template of ``flame site init`` is named as such, with what to do (once), and the
    fields still to fill in; its marker line is not reported as a misspelt key.
    """
    path = Path(path)
    template = False
    try:
        data = read_yaml_mapping(path)
        template = TEMPLATE_MARKER in data
        policy = parse_config({k: v for k, v in data.items() if k != TEMPLATE_MARKER}, PrivacyPolicy, path)
    except ConfigError as exc:
        if not template:
            raise PolicyError(f"no valid privacy policy: {exc}") from None
        # parse_config's message: a "<file>: N invalid field(s)" line, then one line per field.
        fields = str(exc).splitlines()[1:]
        raise PolicyError(f"no valid privacy policy: {path} is still the unfilled template: {TEMPLATE_ACTION} "
                          f"(every FILL IN field). Fields not yet valid ({len(fields)}):\n"
                          + "\n".join(fields)) from None
    if template:
        raise PolicyError(f"no valid privacy policy: {path} is still marked as the unfilled template: "
                          f"{TEMPLATE_ACTION}")
    return policy


class PolicyStamp(StrictModel):
    """The policy in force when a release was recorded: what each ledger entry carries.

    Lets the audit show the cap's history and catch a policy file edited after spending.
    """

    policy_sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None
    """sha256 of the policy file's bytes; None when the policy was not read from a file."""
    epsilon_cap: Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
    approval_reference: Annotated[str, Field(min_length=1)]

    @classmethod
    def of(cls, policy: PrivacyPolicy, sha256: str | None) -> PolicyStamp:
        return cls(policy_sha256=sha256, epsilon_cap=policy.epsilon_cap,
                   approval_reference=policy.approval_reference)


def file_sha256(path: Path | str) -> str:
    """sha256 (hex) of a file's bytes; PolicyError naming the file if it cannot be read."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read the privacy policy ({exc})") from None


def load_policy_with_sha(path: Path | str) -> tuple[PrivacyPolicy, str]:
    """The policy and the sha256 of the very bytes it was read from (PolicyError if they changed meanwhile)."""
    policy = load_policy(path)  # a missing or malformed file: its usual error
    before = file_sha256(path)
    if load_policy(path) != policy or file_sha256(path) != before:
        raise PolicyError(f"{path}: the privacy policy changed while it was being read; try again")
    return policy, before


def check_policy_valid(policy: PrivacyPolicy, site_id: str, today: date | None = None) -> None:
    """Raise PolicyError saying why ``policy`` does not authorise spending at ``site_id`` on ``today``."""
    today = today or date.today()
    if policy.site_id != site_id:
        raise PolicyError(f"{site_id}: the privacy policy given is for site {policy.site_id!r}, not {site_id!r}")
    if today < policy.approved_on:
        raise PolicyError(f"{site_id}: privacy policy {policy.approval_reference} is not yet valid: "
                          f"it applies from {policy.approved_on.isoformat()} (today is {today.isoformat()})")
    if today >= policy.expires_on:
        raise PolicyError(f"{site_id}: privacy policy {policy.approval_reference} expired on "
                          f"{policy.expires_on.isoformat()} (today is {today.isoformat()}); "
                          "a renewed approval is needed before any further training")
