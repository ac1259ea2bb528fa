"""Volumetric RANO 2.0 response (rano.py, docs/references.md 1): PR at -65 %, PD at +40 %."""

from __future__ import annotations

import pytest

from flame_private.rano import (
    MEASURABLE_ML,
    PD_RATIO,
    PR_RATIO,
    VISIBLE_ML,
    classify,
    confirmed_response,
    is_responder,
)

REF = 20.0  # mL, measurable


def test_thresholds_are_the_rano_2_volumetric_ones() -> None:
    assert PR_RATIO == pytest.approx(0.35)
    assert PD_RATIO == pytest.approx(1.40)


@pytest.mark.parametrize(
    ("current", "expected"),
    [
        (0.0, "CR"),
        (VISIBLE_ML / 2, "CR"),
        (REF * 0.35, "PR"),  # exactly -65 %
        (REF * 0.10, "PR"),
        (REF * 0.35 + 0.01, "SD"),  # just short of -65 %
        (REF, "SD"),
        (REF * 1.40 - 0.01, "SD"),  # just short of +40 %
        (REF * 1.40, "PD"),  # exactly +40 %
        (REF * 3.0, "PD"),
    ],
)
def test_classification_thresholds_against_a_measurable_reference(current: float, expected: str) -> None:
    assert classify(REF, current) == expected


def test_progression_is_measured_from_the_nadir_not_the_reference() -> None:
    # shrank to 10 mL (nadir), now 14.5 mL: +45 % over nadir but smaller than the reference
    assert classify(REF, 14.5, nadir_ml=10.0) == "PD"
    assert classify(REF, 13.5, nadir_ml=10.0) == "SD"
    # partial response is still measured against the reference
    assert classify(REF, 6.0, nadir_ml=5.0) == "PR"


def test_a_nadir_above_the_reference_does_not_raise_the_progression_bar() -> None:
    assert classify(REF, REF * 1.40, nadir_ml=REF * 2) == "PD"


@pytest.mark.parametrize(
    ("current", "expected"),
    [(0.0, "CR"), (MEASURABLE_ML * 0.5, "SD"), (MEASURABLE_ML, "PD"), (MEASURABLE_ML * 5, "PD")],
)
def test_non_measurable_reference_progresses_only_with_a_new_measurable_lesion(current: float, expected: str) -> None:
    reference = MEASURABLE_ML * 0.4  # residual enhancement too small to measure
    assert classify(reference, current) == expected


def test_large_relative_growth_of_non_measurable_disease_is_not_progression() -> None:
    # 0.2 -> 0.8 mL is +300 % but still below the measurable size
    assert classify(0.2, 0.8) == "SD"


def test_unconfirmed_progression_is_pseudoprogression_scored_as_stable_disease() -> None:
    rano, unconfirmed = confirmed_response(REF, REF * 1.6, REF * 1.1)
    assert (rano, unconfirmed) == ("SD", True)


def test_confirmed_progression_stays_progression() -> None:
    assert confirmed_response(REF, REF * 1.6, REF * 2.0) == ("PD", False)


@pytest.mark.parametrize(("first", "expected"), [(0.0, "CR"), (REF * 0.2, "PR"), (REF * 1.1, "SD")])
def test_non_progression_at_first_evaluation_needs_no_confirmation(first: float, expected: str) -> None:
    # whatever the confirmation scan shows
    assert confirmed_response(REF, first, REF * 5) == (expected, False)


@pytest.mark.parametrize(("rano", "responder"), [("CR", True), ("PR", True), ("SD", True), ("PD", False)])
def test_responder_is_cr_pr_or_sd(rano: str, responder: bool) -> None:
    assert is_responder(rano) is responder  # type: ignore[arg-type]
