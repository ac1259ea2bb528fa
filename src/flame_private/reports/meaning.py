"""What an (epsilon, delta) guarantee means for one patient, as numbers a committee can read.

Differential privacy bounds any test of "was this patient's data used?"
(Kairouz, Oh and Viswanath, 2015): for every attacker, with TPR the share of
participants it correctly identifies and FPR the share of non-participants it
wrongly accuses,

    TPR <= e^eps * FPR + delta      and      1 - FPR <= e^eps * (1 - TPR) + delta.

The second inequality matters only at large FPR; both are used so that no
figure overstates what the guarantee allows.  Pure functions, no I/O.
"""

from __future__ import annotations

import math

FALSE_ACCUSATION_RATES: tuple[float, ...] = (0.1, 0.01, 0.001, 0.0001)
"""The FPRs the reports tabulate: 1 in 10, 100, 1 000 and 10 000 non-participants wrongly accused."""

WEAK_BOUND = 0.5
"""At FPR 1 in 100, a bound at or above this share of participants is called weak in the reports."""


def max_true_positive_rate(epsilon: float, delta: float, false_positive_rate: float) -> float:
    """Largest share of participants any attacker can identify at ``false_positive_rate``, under (eps, delta)-DP."""
    if epsilon < 0 or not 0 <= delta < 1 or not 0 <= false_positive_rate <= 1:
        raise ValueError(f"need epsilon >= 0, 0 <= delta < 1, 0 <= FPR <= 1; got {epsilon}, {delta}, "
                         f"{false_positive_rate}")
    factor = math.exp(min(epsilon, 700.0))  # e^700 is finite; anything above is "unbounded" anyway
    first = factor * false_positive_rate + delta
    second = 1.0 - (1.0 - delta - false_positive_rate) / factor
    return max(0.0, min(1.0, first, second))


def odds_factor(epsilon: float) -> float:
    """e^eps: the most the odds of "this patient took part" can be multiplied by seeing every release."""
    return math.exp(min(epsilon, 700.0))


def per_hundred(rate: float) -> float:
    """A share as "X in 100", rounded *up* to one decimal so a bound is never understated."""
    return min(100.0, math.ceil(rate * 1000.0 - 1e-9) / 10.0)


def is_weak(epsilon: float, delta: float) -> bool:
    """Whether the bound leaves an attacker accepting 1 false accusation in 100 able to find most participants."""
    return max_true_positive_rate(epsilon, delta, 0.01) >= WEAK_BOUND
