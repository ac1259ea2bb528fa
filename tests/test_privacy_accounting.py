"""accounting.epsilon_for: the site's epsilon is exactly what Opacus's own accountants say."""

from __future__ import annotations

import pytest
from opacus.accountants import PRVAccountant, RDPAccountant

from flame_private.privacy.accounting import epsilon_for, merge_history

ACCOUNTANTS = {"prv": PRVAccountant, "rdp": RDPAccountant}
DELTA = 1e-5
Q_RESPONSE, Q_EVOLUTION = 4 / 60, 4 / 48

# Two tasks, three rounds, interleaved as the federation releases them; sigma changes in round 3.
MIXED = [
    (1.0, Q_RESPONSE, 15), (1.0, Q_EVOLUTION, 12),
    (1.0, Q_RESPONSE, 15), (1.0, Q_EVOLUTION, 12),
    (1.3, Q_RESPONSE, 15), (1.3, Q_EVOLUTION, 12),
]


def stepped(accountant: str, history: list[tuple[float, float, int]]):
    """A fresh Opacus accountant stepped one optimizer step at a time, as PrivacyEngine does."""
    acc = ACCOUNTANTS[accountant]()
    for sigma, q, steps in history:
        for _ in range(steps):
            acc.step(noise_multiplier=sigma, sample_rate=q)
    return acc


def test_reference_figures_of_opacus_are_reproduced() -> None:
    """docs/references.md 9: q=4/60, sigma=1, delta=1e-5, 15 steps: 2.85 (RDP), 2.33 (PRV)."""
    assert epsilon_for([(1.0, Q_RESPONSE, 15)], DELTA, "rdp") == pytest.approx(2.85, abs=0.005)
    assert epsilon_for([(1.0, Q_RESPONSE, 15)], DELTA, "prv") == pytest.approx(2.33, abs=0.005)
    assert epsilon_for([(1.0, Q_RESPONSE, 15)], DELTA) == epsilon_for([(1.0, Q_RESPONSE, 15)], DELTA, "prv")


@pytest.mark.parametrize("accountant", ["prv", "rdp"])
def test_one_release_equals_a_stepped_opacus_accountant(accountant: str) -> None:
    expected = stepped(accountant, [(1.1, 0.05, 20)]).get_epsilon(DELTA)
    assert epsilon_for([(1.1, 0.05, 20)], DELTA, accountant) == expected


@pytest.mark.parametrize("accountant", ["prv", "rdp"])
def test_mixed_history_of_two_tasks_and_several_rounds_equals_opacus(accountant: str) -> None:
    got = epsilon_for(MIXED, DELTA, accountant)
    # Exactly Opacus on the same releases grouped by (sigma, q), stepped one step at a time ...
    first_seen = {item[:2]: i for i, item in enumerate(merge_history(MIXED))}
    grouped = sorted(MIXED, key=lambda item: first_seen[item[:2]])
    assert got == stepped(accountant, grouped).get_epsilon(DELTA)
    # ... and Opacus stepped in release order (composition does not depend on order) to ~1e-12.
    assert got == pytest.approx(stepped(accountant, MIXED).get_epsilon(DELTA), rel=1e-9)


def test_merge_history_sums_steps_of_identical_mechanisms_in_first_seen_order() -> None:
    assert merge_history(MIXED) == [(1.0, Q_RESPONSE, 30), (1.0, Q_EVOLUTION, 24),
                                    (1.3, Q_RESPONSE, 15), (1.3, Q_EVOLUTION, 12)]


def test_empty_history_has_spent_nothing() -> None:
    assert epsilon_for([], DELTA, "prv") == 0.0
    assert epsilon_for([], DELTA, "rdp") == 0.0


@pytest.mark.parametrize("accountant", ["prv", "rdp"])
def test_composition_only_grows(accountant: str) -> None:
    eps = [epsilon_for(MIXED[:k], DELTA, accountant) for k in range(len(MIXED) + 1)]
    assert eps == sorted(eps) and len(set(eps)) == len(eps)


def test_prv_is_tighter_than_rdp() -> None:
    assert epsilon_for(MIXED, DELTA, "prv") < epsilon_for(MIXED, DELTA, "rdp")


@pytest.mark.parametrize(("history", "delta", "accountant", "match"), [
    ([(0.0, 0.1, 1)], DELTA, "prv", "noise_multiplier"),
    ([(1.0, 0.0, 1)], DELTA, "prv", "sample_rate"),
    ([(1.0, 1.5, 1)], DELTA, "prv", "sample_rate"),
    ([(1.0, 0.1, 0)], DELTA, "prv", "num_steps"),
    ([(1.0, 0.1, 1.5)], DELTA, "prv", "num_steps"),
    ([(1.0, 0.1)], DELTA, "prv", "history items"),
    ([(1.0, 0.1, 1)], 0.0, "prv", "delta"),
    ([(1.0, 0.1, 1)], DELTA, "gdp", "accountant"),
])
def test_nonsense_is_refused_not_computed(history, delta, accountant, match) -> None:
    with pytest.raises(ValueError, match=match):
        epsilon_for(history, delta, accountant)
