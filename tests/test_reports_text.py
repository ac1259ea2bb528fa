"""What the reports say, independent of any site: the membership bound and the two languages.

Specification (reports/meaning.py, reports/i18n.py):

* under (epsilon, delta)-DP no attacker identifies more than
  min(e^eps * FPR + delta, 1 - e^-eps * (1 - delta - FPR)) of participants at a
  false-accusation rate FPR; the reports round that *up*, never understating it;
* every text exists in English and French with the same fields, and the French
  is French (accents, French words, non-breaking space before ";" and ":");
* numbers and dates are written as each language writes them.
"""

from __future__ import annotations

import math
from datetime import date

import pytest

from flame_private.reports.i18n import (
    TEXTS,
    day,
    factor,
    fields,
    integer,
    num,
    percent,
    small,
    t,
)
from flame_private.reports.meaning import (
    is_weak,
    max_true_positive_rate,
    odds_factor,
    per_hundred,
)


@pytest.mark.parametrize(("eps", "delta", "fpr", "expected"), [
    (0.0, 0.0, 0.01, 0.01),                                  # no information: TPR = FPR
    (1.0, 1e-5, 0.01, math.e * 0.01 + 1e-5),                 # the first inequality binds
    (math.log(2), 0.0, 0.6, 1 - 0.4 / 2),                    # the second binds at large FPR
    (10.0, 1e-5, 0.01, 1 - (1 - 1e-5 - 0.01) / math.exp(10)),  # almost no protection left at this FPR
    (1.0, 0.5, 0.0, 0.5),                                    # delta alone
])
def test_the_membership_bound_is_the_dp_hypothesis_testing_region(eps, delta, fpr, expected) -> None:
    assert max_true_positive_rate(eps, delta, fpr) == pytest.approx(expected)


def test_the_bound_grows_with_epsilon_and_with_the_false_accusation_rate() -> None:
    rates = [max_true_positive_rate(e, 1e-5, 0.01) for e in (0.5, 1, 2, 4)]
    assert rates == sorted(rates)
    assert max_true_positive_rate(2, 1e-5, 0.001) < max_true_positive_rate(2, 1e-5, 0.01)


def test_per_hundred_rounds_up_so_a_bound_is_never_understated() -> None:
    assert per_hundred(0.32101) == 32.2
    assert per_hundred(0.0271) == 2.8
    assert per_hundred(0.05) == 5.0
    assert per_hundred(1.0) == 100.0


def test_weak_and_odds() -> None:
    assert odds_factor(math.log(20)) == pytest.approx(20)
    assert is_weak(5.77, 1e-5) and not is_weak(1.0, 1e-5)


@pytest.mark.parametrize("bad", [(-1, 1e-5, 0.1), (1, 1.0, 0.1), (1, 1e-5, 1.5)])
def test_nonsense_inputs_are_refused(bad) -> None:
    with pytest.raises(ValueError):
        max_true_positive_rate(*bad)


def test_every_text_has_both_languages_with_the_same_fields() -> None:
    for key, (en, fr) in TEXTS.items():
        assert en.strip() and fr.strip(), key
        assert fields(en) == fields(fr), key


def test_the_french_texts_are_french() -> None:
    french = " ".join(fr for _, fr in TEXTS.values())
    for word in ("confidentialité", "patient", "chiffré", "registre", "comité d'éthique", "délégué", "à", "é"):
        assert word in french
    assert t("egress.title", "fr") == "Ce qui a quitté le site"
    assert t("threat.title", "fr") == "Le modèle de menace et ses limites déclarées"
    # French typography: the space before ";" and ":" never starts a line.
    assert " ;" not in t("policy.intro", "fr") and "\u00a0;" in t("policy.intro", "fr")
    assert t("sign.role_of", "fr", role="Fonction", name="DPO") == "Fonction\u00a0: DPO"


def test_unknown_text_keys_are_an_error() -> None:
    with pytest.raises(KeyError, match="no report text"):
        t("no.such.key", "en")


def test_numbers_and_dates_in_each_language() -> None:
    assert num(5.7714, "en") == "5.77" and num(5.7714, "fr") == "5,77"
    assert integer(57325280, "en") == "57,325,280" and integer(57325280, "fr") == "57\u00a0325\u00a0280"
    assert percent(0.7214, "en") == "72%" and percent(0.7214, "fr") == "72\u00a0%"
    assert small(1e-5, "en") == "10⁻⁵" and small(2.5e-6, "fr") == "2,5 × 10⁻⁶"
    assert factor(320.6, "en") == "321" and factor(1.83, "fr") == "1,8" and factor(2.9e4, "en") == "2.9 × 10⁴"
    assert day(date(2025, 9, 15), "en") == "15 September 2025"
    assert day(date(2028, 8, 1), "fr") == "1 août 2028"
