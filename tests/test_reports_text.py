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


def test_french_speaks_of_transmissions_not_publications() -> None:
    french = " ".join(fr for _, fr in TEXTS.values()).lower()
    assert "publication" not in french and "publiée" not in french
    assert t("glance.releases", "fr") == "Transmissions enregistrées" and t("col.releases", "fr") == "Transmissions"


def test_counts_take_proper_plurals_and_no_text_hedges_with_parentheses() -> None:
    from flame_private.reports.i18n import tn

    assert tn("cons.sign_intro", "en", 4).endswith("privacy budgets of 4 sites.")
    assert tn("cons.sign_intro", "en", 1).endswith("privacy budget of 1 site.")
    assert tn("cons.sign_intro", "fr", 1).endswith("de 1 site.") and tn("cons.sign_intro", "fr", 4).endswith("4 sites.")
    assert tn("messages", "fr", 0) == "0 message" and tn("messages", "en", 0) == "0 messages"
    for key, (en, fr) in TEXTS.items():
        for text in (en, fr):
            assert "(s)" not in text and "(nt)" not in text, key
            assert "site {site}" not in text and "site site" not in text, key  # ids are "site-a": no doubled word


def test_audit_check_names_are_given_in_the_readers_language() -> None:
    from flame_private.reports.doc_parts import reason_text
    from flame_private.reports.facts import Reason

    reason = Reason(code="audit_failed", detail="ledger agreement, ciphertext only")
    assert reason_text(reason, "fr") == ("Des contrôles d'audit sont en échec\u00a0: concordance avec le registre "
                                         "(chaque transmission face à son entrée du registre) [ledger agreement], "
                                         "uniquement des chiffrés [ciphertext only].")
    assert reason_text(Reason(code="audit_failed", detail="budget"), "en") == "An audit check failed: budget."
    assert reason_text(Reason(code="audit_warnings", detail="1"), "fr").startswith("1 avertissement d'audit")
    disagree = reason_text(Reason(code="records_disagree", detail="recomputed=3.2, egress=4.25"), "fr")
    assert "recalculé à partir du registre 3,200, inscrit au journal des envois avec une transmission 4,250" in disagree


def test_breach_guidance_cites_gdpr_article_33_accurately_in_both_languages() -> None:
    en = " ".join(t(f"breach.{i}", "en") for i in (1, 2, 3))
    fr = " ".join(t(f"breach.{i}", "fr") for i in (1, 2, 3))
    assert "without undue delay and, where feasible, within 72 hours of becoming aware of it" in en
    assert "unless it is unlikely to result in a risk to the rights and freedoms" in en
    assert "controller" in en and "advised by the data-protection officer" in en and "may be" in en
    assert "dans les meilleurs délais et, si possible, 72 heures au plus tard après en avoir pris connaissance" in fr
    assert "responsable du traitement" in fr and "RGPD (article 33)" in fr


def test_a_hash_is_read_aloud_as_five_groups_of_four() -> None:
    from flame_private.reports.i18n import grouped

    h = "3f9a1c0788b2e4105d3c" + "0" * 44
    assert grouped(h) == "3f9a 1c07 88b2 e410 5d3c"


# --------------------------------------------------------------------------- the spend plot


def _spend(lang: str, epsilons=(0.8, 1.1, 1.9, 2.2, 2.6), cap: float = 3.0):
    from flame_private.reports.figures import spend_figure

    times = ["2026-01-15T10:00:00.000000Z", "2026-01-15T10:01:00.000000Z", "2026-01-15T10:05:00.000000Z",
             "2026-01-15T10:06:00.000000Z", "2026-02-02T09:00:00.000000Z"]
    return spend_figure(times, [1, 1, 2, 2, 1], ["run-1", "run-1", "run-1", "run-1", "run-2"], list(epsilons),
                        ["training", "training", "training", "evaluation", "training"], cap, lang)  # type: ignore


@pytest.mark.parametrize(("lang", "axis", "tick", "remaining"), [
    ("en", "federated round (date, UTC)", "round 1\n2026-01-15", "remaining budget"),
    ("fr", "tour fédéré (date, UTC)", "tour 1\n2026-01-15", "budget restant")])
def test_the_spend_plot_is_by_round_and_date_with_the_remaining_budget_shaded(lang, axis, tick, remaining) -> None:
    ax = _spend(lang).axes[0]
    assert ax.get_xlabel() == axis and "entr" not in ax.get_xlabel()
    ticks = [x.get_text() for x in ax.get_xticklabels()]
    assert ticks[0] == tick and len(ticks) == 3  # rounds 1 and 2 of run-1, round 1 of run-2
    assert ticks[2].endswith("2026-02-02")
    legend = [x.get_text() for x in ax.get_legend().get_texts()]
    assert remaining in legend and not any("cap" in x and "above" in x for x in legend)
    shaded = next(c for c in ax.collections if c.get_label() == remaining)
    top = max(v[1] for path in shaded.get_paths() for v in path.vertices)
    assert top == pytest.approx(3.0)  # shaded up to the cap


def test_spend_above_the_cap_is_shaded_red_and_named() -> None:
    ax = _spend("en", epsilons=(0.8, 1.1, 1.9, 3.4, 3.6)).axes[0]
    assert "above the cap" in [x.get_text() for x in ax.get_legend().get_texts()]


def test_every_model_a_ledger_can_name_has_a_name_in_every_report_language() -> None:
    from flame_private.config import TASKS
    from flame_private.reports.i18n import LANGS, task_name

    for task in TASKS:
        names = {lang: task_name(task, lang) for lang in LANGS}
        assert all(name != task for name in names.values()), names
