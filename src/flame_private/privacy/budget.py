"""Budget enforcement: what training and the federation call before and after each round.

The privacy rule of a site, written once (``BudgetGuard.spend``)::

    guard = open_site_budget(site)               # PolicyError / LedgerError: refuse, say why
    spent = guard.spend(planned, lambda: train(...))
        # 1. authorise: policy + cap, BEFORE training (refused: nothing trained, nothing recorded)
        # 2. train (an exception here records nothing: nothing was released)
        # 3. record: durable (fsync), policy and cap re-checked (refused: the update is discarded)
    ... encrypt spent.value, log it in the egress log with ledger_entry=spent.entry, send ...

``record`` re-checks the policy and the cap under the ledger lock against what is
on disk then, so two rounds authorised side by side (both tasks, or two
processes) can never together pass the cap: if it raises, the update is
discarded, nothing was recorded, and nothing may be sent.  ``spend`` hands the
trained update out only together with the ledger entry that covers it, so what
leaves the site is always recorded first.  Catch ``REFUSALS``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Generic, TypeVar

from flame_private.config import SiteConfig
from flame_private.errors import ExitCode, FlameError
from flame_private.privacy.accounting import epsilon_for
from flame_private.privacy.ledger import Ledger, LedgerEntry, LedgerError, PlannedSpend
from flame_private.privacy.policy import (
    PolicyError,
    PolicyStamp,
    PrivacyPolicy,
    check_policy_valid,
    load_policy_with_sha,
)
from flame_private.privacy.policy_history import last_recorded, policy_change


class BudgetExceeded(FlameError):
    """The planned release would take the site's epsilon above its approved cap."""

    exit_code = ExitCode.PRIVACY_REFUSED

    def __init__(self, message: str, preview: BudgetPreview) -> None:
        super().__init__(message)
        self.preview = preview


REFUSALS: tuple[type[Exception], ...] = (PolicyError, LedgerError, BudgetExceeded)
"""Every reason a site refuses a round; ``str(exc)`` says why."""


@dataclass(frozen=True)
class BudgetPreview:
    """Where the site stands, and where the planned release would take it."""

    site_id: str
    planned: PlannedSpend
    releases: int
    """Releases recorded so far."""
    spent: float
    would_be: float
    cap: float
    delta: float
    accountant: str

    @property
    def allowed(self) -> bool:
        return self.would_be <= self.cap

    @property
    def remaining(self) -> float:
        """Budget left before the planned release."""
        return max(0.0, self.cap - self.spent)

    @property
    def cost(self) -> float:
        """What the planned release adds (composition is not additive: this is would_be - spent)."""
        return self.would_be - self.spent

    def describe(self) -> str:
        p = self.planned
        return (f"{self.site_id}: round {p.round} of run {p.run_id} ({p.task}) would bring epsilon from "
                f"{self.spent:.2f} to {self.would_be:.2f}")


T = TypeVar("T")


@dataclass(frozen=True)
class Spent(Generic[T]):
    """A release computed under an authorised budget, and the ledger entry, already on disk, that covers it.

    Only ``BudgetGuard.spend`` makes one: the update and its entry travel together, and
    the egress log takes ``entry`` (``ledger_entry=``) for the message that carries ``value``.
    """

    value: T
    entry: LedgerEntry


class BudgetGuard:
    """Enforces one site's approved policy against its ledger."""

    def __init__(self, policy: PrivacyPolicy, ledger: Ledger, today: date | None = None,
                 policy_sha256: str | None = None) -> None:
        self.policy = policy
        self.ledger = ledger
        self._today = today
        """Fixed date for tests; None: the calendar date at each check."""
        self.policy_sha256 = policy_sha256
        """sha256 of the policy file's bytes, recorded in every entry (None: the policy came from no file)."""

    @property
    def site_id(self) -> str:
        return self.ledger.site_id

    def today(self) -> date:
        return self._today or date.today()

    def check_policy(self) -> None:
        """Raise PolicyError unless the policy authorises spending at this site today.

        Also refuses a policy changed since the last recorded spend under the same approval
        reference (e.g. the cap raised in the file): what ``flame audit`` fails, the site does not spend.
        """
        check_policy_valid(self.policy, self.site_id, self.today())
        self.ledger.refresh()
        last = last_recorded(self.ledger.entries)
        if last is not None and last.policy is not None:
            change = policy_change(last.policy, PolicyStamp.of(self.policy, self.policy_sha256),
                                   f"{self.site_id}: the privacy policy differs from what ledger entry {last.seq} "
                                   "recorded")
            if change is not None and change.severity == "fail":
                raise PolicyError(f"{change.detail}. Refusing to spend until the committee's decision is in the "
                                  "file under a new approval reference, or the approved file is put back "
                                  "(docs/privacy-accounting.md, 'The cap's history')")

    def spent(self) -> float:
        """The site's epsilon so far, at the policy's delta and by its accountant."""
        self.ledger.refresh()
        return epsilon_for(self.ledger.history(), self.policy.delta, self.policy.accountant)

    def preview(self, planned: PlannedSpend) -> BudgetPreview:
        """Spend so far, cap and would-be total, from the ledger as it is on disk now.  Checks nothing."""
        spent = self.spent()
        would_be = epsilon_for([*self.ledger.history(), planned.history_item()], self.policy.delta,
                               self.policy.accountant)
        return BudgetPreview(site_id=self.site_id, planned=planned, releases=len(self.ledger), spent=spent,
                             would_be=would_be, cap=self.policy.epsilon_cap, delta=self.policy.delta,
                             accountant=self.policy.accountant)

    def authorise(self, planned: PlannedSpend) -> BudgetPreview:
        """Call BEFORE training.  Returns the preview, or raises PolicyError, LedgerError or BudgetExceeded."""
        self.check_policy()
        preview = self.preview(planned)
        if not preview.allowed:
            raise BudgetExceeded(self._refusal(preview, "Refused before training; nothing was recorded."), preview)
        return preview

    def record(self, planned: PlannedSpend) -> LedgerEntry:
        """Call after training and BEFORE sending: durably record the release, re-checking policy and cap.

        Raises like ``authorise``; then nothing was recorded and the update must not leave the site.
        """
        self.check_policy()

        def within_cap(would_be: float) -> None:
            if would_be > self.policy.epsilon_cap:
                spent = epsilon_for(self.ledger.history(), self.policy.delta, self.policy.accountant)
                preview = BudgetPreview(site_id=self.site_id, planned=planned, releases=len(self.ledger),
                                        spent=spent, would_be=would_be, cap=self.policy.epsilon_cap,
                                        delta=self.policy.delta, accountant=self.policy.accountant)
                raise BudgetExceeded(self._refusal(preview, "Nothing was recorded: the update must not leave "
                                                            "the site."), preview)

        return self.ledger.append(planned, delta=self.policy.delta, accountant=self.policy.accountant,
                                  check=within_cap, policy=PolicyStamp.of(self.policy, self.policy_sha256))

    def spend(self, planned: PlannedSpend, compute: Callable[[], T]) -> Spent[T]:
        """The privacy rule, once: authorise ``planned``, run ``compute`` (the training), record the release.

        Raises PolicyError, LedgerError or BudgetExceeded (``REFUSALS``) before ``compute``
        runs (nothing computed, nothing recorded) or after it (nothing recorded, and what
        ``compute`` returned is dropped, never handed out: the update cannot leave).  An
        exception raised by ``compute`` propagates and records nothing: the update did not
        exist yet, so nothing was released.  On success the entry is durable (fsync) before
        the result is returned, so anything sent from it is covered by the ledger.
        """
        self.authorise(planned)
        value = compute()
        entry = self.record(planned)  # durable before anything leaves; may still refuse
        return Spent(value=value, entry=entry)

    def _refusal(self, preview: BudgetPreview, outcome: str) -> str:
        pol = self.policy
        return (f"{preview.describe()}, above the approved cap of {pol.epsilon_cap:.2f} "
                f"(delta={pol.delta:g}, {pol.accountant.upper()} accountant; policy {pol.approval_reference} "
                f"approved by {pol.approved_by}; {preview.releases} release(s) recorded, "
                f"{preview.remaining:.2f} remaining). {outcome}")


def open_site_budget(site: SiteConfig, today: date | None = None) -> BudgetGuard:
    """The guard of one site: its policy (``site.privacy_policy``) and ledger (``site.state_dir``).

    Raises PolicyError when the policy file is missing or malformed and LedgerError when the
    ledger does not verify or the site's state is missing (``flame site init-state``); whether
    the policy is valid today is checked at each authorise/record.
    """
    policy, sha = load_policy_with_sha(site.privacy_policy)
    ledger = Ledger.open(site.state_dir, site.site_id)
    return BudgetGuard(policy, ledger, today=today, policy_sha256=sha)
