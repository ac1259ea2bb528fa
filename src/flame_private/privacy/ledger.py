"""The site's privacy ledger: an append-only, hash-chained record of every release.

``<state_dir>/privacy_ledger.jsonl`` holds one JSON object per line, one line per
release of a model update trained on the site's patients.  The entries *are* the
accountant's history, as in Opacus: replaying the ledger is handing its
``(noise_multiplier, sample_rate, steps)`` to Opacus, nothing else.

Tamper evidence
    Each entry carries ``prev_hash`` (the previous entry's hash; 64 zeros for the
    first) and ``hash``: sha256 of the entry's canonical JSON without ``hash``
    (sorted keys, no spaces, ASCII).  A line must be byte-for-byte that canonical
    form.  ``<state_dir>/privacy_ledger.head.json`` holds ``{count, last_hash}``
    and catches what a chain alone cannot: entries cut off its end.

Crash safety (spend is never under-counted)
    An append writes the line, flushes and fsyncs the file (and the directory when
    the file is new); only then does it update the head (write a temporary file,
    fsync, rename, fsync the directory); only then does ``append`` return and may
    the update leave the site.  On open:

    * a final line without its newline that is not a valid next entry is a write
      that never completed, so nothing was released under it: it is moved to
      ``privacy_ledger.torn-<time>.txt`` and a warning logged;
    * one complete entry more than the head counts: the crash fell between the two
      writes; the head is advanced;
    * fewer entries than the head counts, more than one extra, or a different hash
      at the head's count: truncation, rollback or tampering.  ``LedgerError``; a
      human must act.  Less spend is never accepted silently.

Appends from several processes of one site are serialised by an advisory lock on
``privacy_ledger.lock``; each append first re-reads what others appended.

The chain, head, lock and crash mechanics live in :mod:`flame_private.records.hashchain`
(the format in ``records/chain.py``, the checks on open in ``records/chain_verify.py``;
shared with the egress log); this module adds the entries and the epsilon checks.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field

from flame_private.config import StrictModel, Task
from flame_private.errors import ExitCode, FlameError
from flame_private.privacy.accounting import HistoryItem, epsilon_for
from flame_private.privacy.policy import PolicyStamp

# canonical_json, entry_hash and GENESIS_HASH are re-exported: they are part of the ledger's public API.
from flame_private.records.chain import (
    GENESIS_HASH,  # noqa: F401
    canonical_json,  # noqa: F401
    entry_hash,  # noqa: F401
)
from flame_private.records.durable import utc_now
from flame_private.records.hashchain import HashChainLog

log = logging.getLogger(__name__)

LEDGER_NAME = "privacy_ledger.jsonl"
HEAD_NAME = "privacy_ledger.head.json"
LOCK_NAME = "privacy_ledger.lock"
EPSILON_RTOL = 1e-9
"""Recorded and recomputed epsilon must agree this closely (same Opacus, same history)."""

_HEX64 = r"^[0-9a-f]{64}$"
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"


class LedgerError(FlameError):
    """The ledger cannot be trusted (broken chain, truncation, tampering) or cannot be written."""

    exit_code = ExitCode.CHECK_FAILED


class PlannedSpend(StrictModel):
    """One release about to be trained: what the accountant needs, and which round of which run it is."""

    run_id: Annotated[str, Field(pattern=_NAME)]
    round: Annotated[int, Field(ge=1)]
    task: Task
    noise_multiplier: Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
    sample_rate: Annotated[float, Field(gt=0.0, le=1.0)]
    """Poisson sampling probability q (expected batch size / training patients)."""
    steps: Annotated[int, Field(ge=1)]
    """Optimizer steps (noisy gradient releases) in this round."""
    max_grad_norm: Annotated[float, Field(gt=0.0, allow_inf_nan=False)]

    def history_item(self) -> HistoryItem:
        """This release as Opacus history: ``(noise_multiplier, sample_rate, num_steps)``."""
        return (self.noise_multiplier, self.sample_rate, self.steps)


class LedgerEntry(PlannedSpend):
    """One line of the ledger: a release, where it came from, and the site's epsilon after it."""

    seq: Annotated[int, Field(ge=1)]
    time: Annotated[str, Field(pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z$")]
    """UTC, when the entry was written."""
    site_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]
    delta: Annotated[float, Field(gt=0.0, lt=1.0)]
    accountant: Literal["prv", "rdp"]
    epsilon_after: Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
    """The site's total epsilon at ``delta`` after composing this entry with all earlier ones."""
    policy_sha256: Annotated[str, Field(pattern=_HEX64)] | None = None
    """sha256 of the policy file's bytes in force when this was recorded.  The three policy fields are
    absent from entries written before the policy was recorded (they hash without the keys)."""
    epsilon_cap: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] | None = None
    """The approved cap in force when this was recorded."""
    approval_reference: Annotated[str, Field(min_length=1)] | None = None
    """The approval reference of that policy."""
    prev_hash: Annotated[str, Field(pattern=_HEX64)]
    hash: Annotated[str, Field(pattern=_HEX64)]

    @property
    def policy(self) -> PolicyStamp | None:
        """The policy this entry recorded; None for entries written before policies were recorded."""
        if self.epsilon_cap is None or self.approval_reference is None:
            return None
        return PolicyStamp(policy_sha256=self.policy_sha256, epsilon_cap=self.epsilon_cap,
                           approval_reference=self.approval_reference)


class Ledger(HashChainLog[LedgerEntry]):
    """A site's verified ledger.  Get one with :meth:`Ledger.open`."""

    entry_model = LedgerEntry
    error = LedgerError
    stem = "privacy_ledger"
    logger = log
    noun = short = holder = "ledger"
    entry_noun = "a ledger entry"
    released = "released"
    kept = "counted"
    lag_note = "the entry is counted"
    less_note = "; refusing to accept less spend"
    """Spend is never under-counted: less spend than the head records is never accepted silently."""

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, state_dir: Path | str, site_id: str, *, readonly: bool = False,
             recompute: Literal["last", "all"] = "last") -> Ledger:
        """Open and verify the ledger of ``site_id`` in ``state_dir``; raise LedgerError on any break.

        Every line's hash, seq, prev_hash and site are checked, and the head is
        reconciled.  ``recompute`` says whose ``epsilon_after`` is recomputed with
        Opacus: the last entry's (the site's total; the default) or every entry's
        (what ``flame budget verify`` does; one accountant run per entry).
        ``readonly`` changes nothing on disk: a torn final line or a lagging head is
        reported in ``notices`` instead of repaired, and appending is refused.
        A missing state directory, ledger or head is refused in both modes: the site's
        onboarding creates them (:meth:`initialise`), so their absence is lost or deleted
        state, never "nothing spent yet".
        """
        ledger = cls(Path(state_dir), site_id, readonly=readonly)
        ledger._require_state()
        with ledger._locked():
            ledger._load(recompute=recompute)
        return ledger

    @staticmethod
    def _error_loc(error: Any) -> str:
        return str(error["loc"][0])

    def _verify_entries(self, entries: list[LedgerEntry], recompute: Literal["last", "all"] = "last",
                        **_: Any) -> None:
        to_check = range(len(entries)) if recompute == "all" else range(max(0, len(entries) - 1), len(entries))
        for i in to_check:
            e = entries[i]
            expected = epsilon_for([x.history_item() for x in entries[: i + 1]], e.delta, e.accountant)
            if not math.isclose(e.epsilon_after, expected, rel_tol=EPSILON_RTOL, abs_tol=1e-12):
                raise self._fail(i + 1, f"epsilon_after={e.epsilon_after!r} but Opacus ({e.accountant}, "
                                        f"delta={e.delta:g}) gives {expected!r} for the history up to this entry")

    # ------------------------------------------------------------------ writing

    def append(self, spend: PlannedSpend, *, delta: float, accountant: Literal["prv", "rdp"],
               check: Callable[[float], None] | None = None, policy: PolicyStamp | None = None) -> LedgerEntry:
        """Record ``spend`` durably and return its entry; only after this returns may the update leave.

        ``policy``: the approved policy in force (file hash, cap, reference), recorded in the entry
        so that a policy edited after spending shows (``BudgetGuard.record`` always gives it).

        Under the lock: re-verify what other processes appended, compute the site's
        epsilon with this release composed in, call ``check(epsilon_after)`` (which
        may raise to refuse: then nothing is written), write + fsync the line, then
        the head.
        """
        if self.readonly:
            raise LedgerError(f"{self.path}: opened read-only; cannot record a release")

        def make_fields() -> dict[str, Any]:
            eps = epsilon_for([*self.history(), spend.history_item()], delta, accountant)
            if check is not None:
                check(eps)
            fields = {
                **spend.model_dump(),
                "seq": len(self._entries) + 1,
                "time": utc_now(),
                "site_id": self.site_id,
                "delta": float(delta),
                "accountant": accountant,
                "epsilon_after": eps,
                "prev_hash": self.head_hash,
            }
            if policy is not None:  # keys absent, not null, otherwise (as in entries written before)
                fields.update({k: v for k, v in policy.model_dump().items() if v is not None})
                fields["epsilon_cap"] = float(policy.epsilon_cap)
            return fields

        return self._append_entry(make_fields, cannot_record="release",
                                  invalid=lambda exc: f"{self.path}: refusing to write an invalid entry ({exc})")

    # ------------------------------------------------------------------ reading

    def history(self) -> list[HistoryItem]:
        """The Opacus accountant history: one ``(noise_multiplier, sample_rate, steps)`` per entry."""
        return [e.history_item() for e in self._entries]

    def epsilon(self, delta: float | None = None, accountant: Literal["prv", "rdp"] | None = None) -> float:
        """The site's total epsilon; by default at the last entry's delta and accountant (0.0 when empty)."""
        last = self._entries[-1] if self._entries else None
        if delta is None:
            if last is None:
                return 0.0
            delta = last.delta
        return epsilon_for(self.history(), delta, accountant or (last.accountant if last else "prv"))
