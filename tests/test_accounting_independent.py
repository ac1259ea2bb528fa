"""An independent check of the ledger's arithmetic: Google's dp-accounting PLD accountant agrees within 1 %.

The ledger's epsilon comes from Opacus (PRV by default).  An auditor who trusts
neither Opacus nor us recomputes it from the ledger's own (sigma, q, steps)
entries with another library: a mistake in how we compose releases (a release
left out, the metric releases counted wrongly, the tasks' histories mixed up)
would show here.
"""

from __future__ import annotations

from pathlib import Path

import dp_accounting
import pytest

from flame_private.privacy.ledger import Ledger, PlannedSpend

DELTA = 1e-5

# One federated run of both models over four rounds with metric releases after rounds 2 and 4,
# then a second run: what a site's ledger holds after a study.
HISTORY = [
    *[(run, r, task, sigma, q, steps)
      for run in ("run-1", "run-2")
      for r in range(1, 5)
      for task, sigma, q, steps in (("response", 1.5, 0.25, 12), ("evolution", 1.2, 1 / 6, 18))],
    *[(run, r, task, 3.0, 1.0, 1)  # the Gaussian mechanism on validation metric sums: q = 1, one step
      for run in ("run-1", "run-2") for r in (2, 4) for task in ("response", "evolution")],
]


def _pld_epsilon(entries) -> float:
    acc = dp_accounting.pld.PLDAccountant(value_discretization_interval=1e-3)
    for e in entries:
        gaussian = dp_accounting.GaussianDpEvent(e.noise_multiplier)
        step = gaussian if e.sample_rate >= 1.0 else dp_accounting.PoissonSampledDpEvent(e.sample_rate, gaussian)
        acc.compose(dp_accounting.SelfComposedDpEvent(step, e.steps))
    return acc.get_epsilon(DELTA)


@pytest.mark.slow
def test_the_ledgers_epsilon_matches_the_pld_accountant_within_one_percent(tmp_path: Path) -> None:
    Ledger.initialise(tmp_path, "site-a")
    ledger = Ledger.open(tmp_path, "site-a")
    for run, r, task, sigma, q, steps in HISTORY:
        ledger.append(PlannedSpend(run_id=run, round=r, task=task, noise_multiplier=sigma, sample_rate=q,
                                   steps=steps, max_grad_norm=1.0), delta=DELTA, accountant="prv")
    reopened = Ledger.open(tmp_path, "site-a")
    assert len(reopened) == len(HISTORY) == 24
    ours, independent = reopened.entries[-1].epsilon_after, _pld_epsilon(reopened.entries)
    assert ours == pytest.approx(independent, rel=0.01), (ours, independent)
    # after the first run's training alone, too: the check is not only of the total
    first = reopened.entries[:8]
    assert {e.run_id for e in first} == {"run-1"}
    assert first[-1].epsilon_after == pytest.approx(_pld_epsilon(first), rel=0.01)


def test_leaving_out_the_metric_releases_would_be_caught() -> None:
    """Positive control: the comparison is sharp enough to see a forgotten release kind."""
    from types import SimpleNamespace

    entries = [SimpleNamespace(noise_multiplier=s, sample_rate=q, steps=n) for *_, s, q, n in HISTORY]
    without_metrics = [e for e in entries if e.sample_rate < 1.0]
    assert _pld_epsilon(entries) > 1.01 * _pld_epsilon(without_metrics)
