"""Per-site privacy accounting: approved policies, the hash-chained ledger, budget enforcement.

One accountant per site composes every release from that site's data (both models,
all rounds, all runs).  The ledger is its history; Opacus does the arithmetic.
See docs/privacy-accounting.md.
"""

from flame_private.privacy.accounting import epsilon_for, merge_history
from flame_private.privacy.budget import (
    REFUSALS,
    BudgetExceeded,
    BudgetGuard,
    BudgetPreview,
    Spent,
    open_site_budget,
)
from flame_private.privacy.ledger import GENESIS_HASH, Ledger, LedgerEntry, LedgerError, PlannedSpend
from flame_private.privacy.policy import PolicyError, PrivacyPolicy, check_policy_valid, load_policy

__all__ = [
    "GENESIS_HASH",
    "REFUSALS",
    "BudgetExceeded",
    "BudgetGuard",
    "BudgetPreview",
    "Ledger",
    "LedgerEntry",
    "LedgerError",
    "PlannedSpend",
    "PolicyError",
    "PrivacyPolicy",
    "Spent",
    "check_policy_valid",
    "epsilon_for",
    "load_policy",
    "merge_history",
    "open_site_budget",
]
