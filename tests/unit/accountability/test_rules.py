"""The level ladder, months and the case rules (accountability/rules.py), without a database."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from idguard.accountability.rules import (
    DEFAULT_LADDER,
    CaseStatus,
    Decision,
    Level,
    check_can_decide,
    check_can_respond,
    closable_at,
    month_bounds,
    month_of,
    parse_ladder,
    parse_month,
    violation_rate,
)
from idguard.core.errors import InvalidField, RuleViolation

ORDER = [Level.OK, Level.EARLY_WARNING, Level.STANDARD, Level.EXCESSIVE]


def reference(transactions: int, violations: int) -> Level:
    """DOMAIN.md's ladder, written out with exact fractions."""
    from fractions import Fraction

    if transactions == 0:
        return Level.OK
    rate = Fraction(violations, transactions) * 100
    if rate >= Fraction("1.8") and violations >= 1000:
        return Level.EXCESSIVE
    if rate >= Fraction("0.9") and violations >= 100:
        return Level.STANDARD
    if rate >= Fraction("0.65") and violations >= 75:
        return Level.EARLY_WARNING
    return Level.OK


@given(st.integers(0, 10_000_000), st.data())
def test_ladder_matches_the_domain_rules(transactions: int, data: st.DataObject) -> None:
    violations = data.draw(st.integers(0, transactions))
    assert DEFAULT_LADDER.level(transactions, violations) is reference(transactions, violations)


@given(st.integers(1, 1_000_000), st.data())
def test_more_violations_never_lower_the_level(transactions: int, data: st.DataObject) -> None:
    a = data.draw(st.integers(0, transactions))
    b = data.draw(st.integers(a, transactions))
    assert ORDER.index(DEFAULT_LADDER.level(transactions, b)) >= ORDER.index(
        DEFAULT_LADDER.level(transactions, a)
    )


@pytest.mark.parametrize(
    ("transactions", "violations", "level"),
    [
        (10_000, 64, Level.OK),  # 0.64 %
        (10_000, 65, Level.OK),  # 0.65 % but fewer than 75 violations
        (20_000, 130, Level.EARLY_WARNING),  # exactly 0.65 % and >= 75
        (20_000, 129, Level.OK),  # just below 0.65 %
        (20_000, 180, Level.STANDARD),  # exactly 0.9 %
        (100_000, 1_799, Level.STANDARD),  # just below 1.8 %
        (100_000, 1_800, Level.EXCESSIVE),  # exactly 1.8 % and >= 1,000
        (50_000, 900, Level.STANDARD),  # 1.8 % but fewer than 1,000 violations
        (100, 100, Level.STANDARD),  # 100 %, 100 violations: not enough for excessive
        (0, 0, Level.OK),
    ],
)
def test_boundaries(transactions: int, violations: int, level: Level) -> None:
    assert DEFAULT_LADDER.level(transactions, violations) is level


def test_thresholds_are_configurable() -> None:
    strict = parse_ladder("early_warning:0.1:1,standard:0.2:2,excessive:0.3:3")
    assert strict.level(1000, 1) is Level.EARLY_WARNING
    assert strict.level(1000, 3) is Level.EXCESSIVE


@pytest.mark.parametrize(
    "text",
    [
        "early_warning:0.65:75,standard:0.9:100",  # a level missing
        "standard:0.9:100,early_warning:0.65:75,excessive:1.8:1000",  # out of order
        "early_warning:0.65:75,standard:0.5:100,excessive:1.8:1000",  # a lower rate above
        "early_warning:x:75,standard:0.9:100,excessive:1.8:1000",
        "early_warning:0.65,standard:0.9:100,excessive:1.8:1000",
        "early_warning:0:75,standard:0.9:100,excessive:1.8:1000",
    ],
)
def test_bad_ladders_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="compliance level"):
        parse_ladder(text)


def test_violation_rate() -> None:
    assert violation_rate(0, 0) == 0.0
    assert violation_rate(400, 3) == 0.0075


def test_months_are_china_time() -> None:
    # 2026-05-31 16:30 UTC is 2026-06-01 00:30 in Beijing.
    assert month_of(dt.datetime(2026, 5, 31, 16, 30, tzinfo=dt.UTC)) == "2026-06"
    assert month_of(dt.datetime(2026, 5, 31, 15, 59, tzinfo=dt.UTC)) == "2026-05"
    start, end = month_bounds("2026-12")
    assert start == dt.datetime(2026, 11, 30, 16, tzinfo=dt.UTC)
    assert end == dt.datetime(2026, 12, 31, 16, tzinfo=dt.UTC)
    assert closable_at("2026-05", dt.timedelta(hours=24)) == dt.datetime(2026, 6, 1, 16, tzinfo=dt.UTC)


@pytest.mark.parametrize("text", ["2026-13", "2026-5", "26-05", "2026/05", "", "1969-12"])
def test_bad_months_name_the_field(text: str) -> None:
    with pytest.raises(InvalidField) as exc:
        parse_month(text)
    assert exc.value.field == "month"


def test_a_sanction_needs_a_hearing_or_the_period_gone() -> None:
    opened = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    with pytest.raises(RuleViolation, match="not been heard"):
        check_can_decide(
            CaseStatus.OPEN, responses=0, decision=Decision.WARNING, opened_at=opened, now=opened
        )
    check_can_decide(CaseStatus.OPEN, responses=1, decision=Decision.SUSPENSION, opened_at=opened, now=opened)
    check_can_decide(CaseStatus.OPEN, responses=0, decision=Decision.DISMISSED, opened_at=opened, now=opened)
    later = opened + dt.timedelta(days=7)
    check_can_decide(CaseStatus.OPEN, responses=0, decision=Decision.WARNING, opened_at=opened, now=later)
    with pytest.raises(RuleViolation, match="already decided"):
        check_can_decide(
            CaseStatus.DECIDED, responses=1, decision=Decision.WARNING, opened_at=opened, now=later
        )
    with pytest.raises(RuleViolation, match="hearing is over"):
        check_can_respond(CaseStatus.DECIDED)
