"""The pure card rules: validity periods, derived expiry, temporary cards, lifecycle decisions.

Expected values are written out by hand (dates) or derived from an independent statement of the
rule (the anniversary definition of age), never by calling the function under test twice.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from idguard.core.errors import RuleViolation
from idguard.registry import lifecycle as rules
from idguard.registry.lifecycle import CardStatus, CardView, FoundDisposition, IssueKind

# No example database: a run must not write .hypothesis/ into the checkout.
PROPERTY = settings(database=None, max_examples=400, deadline=None)

NON_VALID = [s for s in CardStatus if s is not CardStatus.VALID]
STORED_NON_VALID = [s for s in NON_VALID if s is not CardStatus.EXPIRED]  # EXPIRED is never stored
REPORTED = [CardStatus.REPORTED_LOST, CardStatus.REPORTED_STOLEN]

births = st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2030, 12, 31))


def card(
    status: CardStatus = CardStatus.VALID,
    *,
    card_id: str = "c1",
    issued_on: dt.date = dt.date(2020, 1, 1),
    expires_on: dt.date | None = dt.date(2030, 1, 1),
    temporary: bool = False,
    superseded_by: str | None = None,
) -> CardView:
    return CardView(
        card_id=card_id,
        status=status,
        issued_on=issued_on,
        expires_on=expires_on,
        temporary=temporary,
        superseded_by=superseded_by,
    )


def anniversary(birth: dt.date, years: int) -> dt.date:
    """The day a person born on `birth` completes `years` years.

    Stated independently of age_on: someone born on 29 February completes a year on 1 March in a
    common year (the convention age_on's "completed years" follows).
    """
    try:
        return birth.replace(year=birth.year + years)
    except ValueError:
        return dt.date(birth.year + years, 3, 1)


# --- validity period table (居民身份证法 art. 5) -------------------------------------------------


@pytest.mark.parametrize(
    ("age", "period_before", "period_from"),
    [
        (16, 5, 10),  # under 16: 5 years; 16-25: 10 years
        (26, 10, 20),  # 26-45: 20 years
        (46, 20, None),  # 46 and over: long-term
    ],
)
@pytest.mark.parametrize("birth", [dt.date(1980, 7, 15), dt.date(1990, 1, 1), dt.date(1979, 12, 31)])
def test_period_changes_exactly_on_the_birthday(
    birth: dt.date, age: int, period_before: int, period_from: int | None
) -> None:
    birthday = anniversary(birth, age)
    day_before = birthday - dt.timedelta(days=1)
    day_after = birthday + dt.timedelta(days=1)
    assert rules.validity_years(birth, day_before) == period_before
    assert rules.validity_years(birth, birthday) == period_from
    assert rules.validity_years(birth, day_after) == period_from


def test_period_table_at_representative_ages() -> None:
    birth = dt.date(1980, 3, 10)
    on_birthday = {age: anniversary(birth, age) for age in (0, 15, 16, 25, 26, 45, 46, 90)}
    assert {age: rules.validity_years(birth, day) for age, day in on_birthday.items()} == {
        0: 5,
        15: 5,
        16: 10,
        25: 10,
        26: 20,
        45: 20,
        46: None,
        90: None,
    }


@pytest.mark.parametrize(
    ("birth", "issued_on", "expires_on"),
    [
        (dt.date(1990, 5, 4), dt.date(2024, 2, 29), dt.date(2044, 2, 29)),  # 20 y: leap to leap
        (dt.date(2004, 5, 4), dt.date(2024, 2, 29), dt.date(2034, 2, 28)),  # 10 y: falls back
        (dt.date(2014, 5, 4), dt.date(2024, 2, 29), dt.date(2029, 2, 28)),  # 5 y: falls back
        (dt.date(1960, 5, 4), dt.date(2024, 2, 29), None),  # long-term
        (dt.date(2000, 2, 29), dt.date(2016, 2, 28), dt.date(2021, 2, 28)),  # 15 until 29 Feb
        (dt.date(2000, 2, 29), dt.date(2016, 2, 29), dt.date(2026, 2, 28)),  # 16 on 29 Feb
        (dt.date(2000, 2, 29), dt.date(2017, 2, 28), dt.date(2027, 2, 28)),  # 16 still on 28 Feb
    ],
)
def test_expiry_on_29_february(birth: dt.date, issued_on: dt.date, expires_on: dt.date | None) -> None:
    assert rules.expiry_date(birth, issued_on) == expires_on


def test_age_of_a_leap_day_baby_in_common_years() -> None:
    birth = dt.date(2000, 2, 29)
    assert rules.age_on(birth, dt.date(2016, 2, 28)) == 15
    assert rules.age_on(birth, dt.date(2016, 2, 29)) == 16
    assert rules.age_on(birth, dt.date(2017, 2, 28)) == 16
    assert rules.age_on(birth, dt.date(2017, 3, 1)) == 17


@given(birth=births, age_days=st.integers(0, 120 * 366))
@PROPERTY
def test_expiry_minus_issue_is_the_tables_period(birth: dt.date, age_days: int) -> None:
    issued_on = birth + dt.timedelta(days=age_days)
    age = next(a for a in range(130) if anniversary(birth, a + 1) > issued_on)
    expected_years = 5 if age < 16 else 10 if age <= 25 else 20 if age <= 45 else None
    expiry = rules.expiry_date(birth, issued_on)
    if expected_years is None:
        assert expiry is None
        return
    assert expiry is not None
    assert expiry.year - issued_on.year == expected_years
    # Same calendar day, except 29 February which falls back to 28 February in a common year.
    if (issued_on.month, issued_on.day) == (2, 29) and not calendar.isleap(expiry.year):
        assert (expiry.month, expiry.day) == (2, 28)
    else:
        assert (expiry.month, expiry.day) == (issued_on.month, issued_on.day)


@given(birth=births, a=st.integers(0, 130 * 366), b=st.integers(0, 130 * 366))
@PROPERTY
def test_age_is_monotone_and_counts_anniversaries(birth: dt.date, a: int, b: int) -> None:
    first, second = sorted((birth + dt.timedelta(days=a), birth + dt.timedelta(days=b)))
    assert rules.age_on(birth, first) <= rules.age_on(birth, second)
    age = rules.age_on(birth, first)
    assert anniversary(birth, age) <= first < anniversary(birth, age + 1)


# --- effective status ----------------------------------------------------------------------------


def test_valid_through_the_expiry_day_and_expired_the_day_after() -> None:
    expiry = dt.date(2030, 1, 1)
    assert rules.effective_status(CardStatus.VALID, expiry, dt.date(2029, 12, 31)) is CardStatus.VALID
    assert rules.effective_status(CardStatus.VALID, expiry, expiry) is CardStatus.VALID
    assert rules.effective_status(CardStatus.VALID, expiry, dt.date(2030, 1, 2)) is CardStatus.EXPIRED


@given(today=st.dates())
@PROPERTY
def test_long_term_card_never_expires(today: dt.date) -> None:
    assert rules.effective_status(CardStatus.VALID, None, today) is CardStatus.VALID


@given(
    stored=st.sampled_from(STORED_NON_VALID),
    expires_on=st.none() | st.dates(),
    today=st.dates(),
)
@PROPERTY
def test_invalid_cards_keep_their_reason_and_never_become_expired(
    stored: CardStatus, expires_on: dt.date | None, today: dt.date
) -> None:
    # A verifier must see "reported_lost" on a stolen card, not "expired", however old it is.
    assert rules.effective_status(stored, expires_on, today) is stored


@given(expires_on=st.dates(), today=st.dates())
@PROPERTY
def test_valid_card_is_expired_exactly_when_today_is_after_expiry(
    expires_on: dt.date, today: dt.date
) -> None:
    status = rules.effective_status(CardStatus.VALID, expires_on, today)
    assert status is (CardStatus.EXPIRED if today > expires_on else CardStatus.VALID)


# --- temporary cards -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("issued_on", "expires_on"),
    [
        (dt.date(2026, 6, 15), dt.date(2026, 9, 15)),
        (dt.date(2026, 11, 30), dt.date(2027, 2, 28)),  # clamped to a common February
        (dt.date(2027, 11, 30), dt.date(2028, 2, 29)),  # clamped to a leap February
        (dt.date(2026, 3, 31), dt.date(2026, 6, 30)),  # 30-day month
        (dt.date(2026, 5, 31), dt.date(2026, 8, 31)),
        (dt.date(2026, 10, 31), dt.date(2027, 1, 31)),  # across the year end
        (dt.date(2026, 12, 31), dt.date(2027, 3, 31)),
        (dt.date(2027, 11, 29), dt.date(2028, 2, 29)),
    ],
)
def test_temporary_card_is_valid_three_months(issued_on: dt.date, expires_on: dt.date) -> None:
    assert rules.temporary_expiry(issued_on) == expires_on


@given(st.dates(max_value=dt.date(9999, 9, 30)))
@PROPERTY
def test_temporary_expiry_is_three_calendar_months_later_clamped(issued_on: dt.date) -> None:
    expiry = rules.temporary_expiry(issued_on)
    year, month0 = divmod(issued_on.year * 12 + issued_on.month - 1 + 3, 12)
    assert (expiry.year, expiry.month) == (year, month0 + 1)
    assert expiry.day <= issued_on.day
    # Only clamped when the target month is too short; then it is that month's last day.
    if expiry.day < issued_on.day:
        assert (expiry + dt.timedelta(days=1)).day == 1
    assert 89 <= (expiry - issued_on).days <= 92


# --- may a card be issued? -----------------------------------------------------------------------


OLD = card(CardStatus.SUPERSEDED, card_id="old", issued_on=dt.date(2010, 1, 1), superseded_by="new")
NEWEST = card(CardStatus.VALID, card_id="new", issued_on=dt.date(2020, 1, 1))


def test_first_card_for_a_person_without_cards() -> None:
    assert (
        rules.check_can_issue(IssueKind.FIRST, revoked=False, regular_cards=[], previous_card_id=None) is None
    )


@pytest.mark.parametrize(
    "regular_cards",
    [
        [OLD, NEWEST],
        # A lost or long-expired card still counts: the person is past their first issue.
        [card(CardStatus.REPORTED_STOLEN)],
        [card(CardStatus.VALID, expires_on=dt.date(2001, 1, 1))],
    ],
)
def test_first_card_refused_when_the_person_already_had_one(regular_cards: list[CardView]) -> None:
    with pytest.raises(RuleViolation, match="already holds a card"):
        rules.check_can_issue(
            IssueKind.FIRST, revoked=False, regular_cards=regular_cards, previous_card_id=None
        )


@pytest.mark.parametrize("kind", [IssueKind.RENEWAL, IssueKind.REPLACEMENT, IssueKind.CORRECTION])
def test_reissue_needs_a_previous_card(kind: IssueKind) -> None:
    with pytest.raises(RuleViolation, match="no card to"):
        rules.check_can_issue(kind, revoked=False, regular_cards=[], previous_card_id=None)


@pytest.mark.parametrize("kind", [IssueKind.RENEWAL, IssueKind.REPLACEMENT, IssueKind.CORRECTION])
@pytest.mark.parametrize("newest_status", [CardStatus.VALID, *REPORTED])
def test_reissue_supersedes_the_newest_card(kind: IssueKind, newest_status: CardStatus) -> None:
    newest = card(newest_status, card_id="new", issued_on=dt.date(2020, 1, 1))
    # The list order is deliberately not issue order: the rule must pick by issue date.
    chosen = rules.check_can_issue(kind, revoked=False, regular_cards=[newest, OLD], previous_card_id=None)
    assert chosen == newest
    assert (
        rules.check_can_issue(kind, revoked=False, regular_cards=[OLD, newest], previous_card_id="new")
        == newest
    )


@pytest.mark.parametrize("newest_id", ["0-sorts-first", "z-sorts-last"])
@pytest.mark.parametrize("newest_status", [CardStatus.VALID, *REPORTED])
def test_same_day_reissue_supersedes_the_card_nobody_superseded(
    newest_id: str, newest_status: CardStatus
) -> None:
    # A card corrected on the day it was issued: both share the issue date, and neither the list
    # order nor the (random) card id may decide which one is current.
    day = dt.date(2026, 6, 15)
    older = card(CardStatus.SUPERSEDED, card_id="m-older", issued_on=day, superseded_by=newest_id)
    newest = card(newest_status, card_id=newest_id, issued_on=day)
    for regular_cards in ([older, newest], [newest, older]):
        chosen = rules.check_can_issue(
            IssueKind.CORRECTION, revoked=False, regular_cards=regular_cards, previous_card_id=None
        )
        assert chosen == newest
    with pytest.raises(RuleViolation, match="newer card exists"):
        rules.check_can_issue(
            IssueKind.CORRECTION, revoked=False, regular_cards=[older, newest], previous_card_id="m-older"
        )


def test_reissue_with_a_stale_previous_card_id_is_refused() -> None:
    # Two clerks on one person: the one who saw the older card gets a conflict, not a second card.
    with pytest.raises(RuleViolation, match="newer card exists"):
        rules.check_can_issue(
            IssueKind.REPLACEMENT, revoked=False, regular_cards=[OLD, NEWEST], previous_card_id="old"
        )


@pytest.mark.parametrize("kind", list(IssueKind))
def test_revoked_person_gets_no_card(kind: IssueKind) -> None:
    for regular_cards in ([], [NEWEST]):
        with pytest.raises(RuleViolation, match="revoked"):
            rules.check_can_issue(kind, revoked=True, regular_cards=regular_cards, previous_card_id=None)


# --- may a loss be reported? ---------------------------------------------------------------------


def test_valid_card_can_be_reported_lost_up_to_its_expiry_day() -> None:
    valid = card(CardStatus.VALID, expires_on=dt.date(2030, 1, 1))
    rules.check_can_report_loss(valid, dt.date(2029, 12, 31))
    rules.check_can_report_loss(valid, dt.date(2030, 1, 1))
    with pytest.raises(RuleViolation, match="expired"):
        rules.check_can_report_loss(valid, dt.date(2030, 1, 2))


def test_long_term_card_can_be_reported_lost_any_time() -> None:
    rules.check_can_report_loss(card(CardStatus.VALID, expires_on=None), dt.date(2099, 1, 1))


@pytest.mark.parametrize("status", STORED_NON_VALID)
def test_only_a_valid_card_can_be_reported_lost(status: CardStatus) -> None:
    with pytest.raises(RuleViolation, match=status.value):
        rules.check_can_report_loss(card(status), dt.date(2021, 1, 1))


# --- may a loss report be cancelled? -------------------------------------------------------------


REPORTED_CARD = card(CardStatus.REPORTED_LOST)


def cancel(
    *,
    report_office: str = "A",
    office: str = "A",
    report_cancelled: bool = False,
    view: CardView = REPORTED_CARD,
    newer_card_exists: bool = False,
) -> None:
    rules.check_can_cancel_report(
        report_office=report_office,
        office=office,
        report_cancelled=report_cancelled,
        card=view,
        newer_card_exists=newer_card_exists,
    )


@pytest.mark.parametrize("status", REPORTED)
def test_cancel_at_the_accepting_office_while_no_newer_card(status: CardStatus) -> None:
    cancel(view=card(status))


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"report_cancelled": True}, "the loss report is already cancelled"),
        ({"office": "B"}, "a loss report can be cancelled only at the office that accepted it"),
        # A replaced card: a lost one keeps its reason, a valid one became superseded. The newer
        # card is what the clerk is told about, whatever the status.
        ({"newer_card_exists": True}, "a newer card has been issued"),
        (
            {"newer_card_exists": True, "view": card(CardStatus.SUPERSEDED, superseded_by="c2")},
            "a newer card has been issued",
        ),
        # The card is no longer reported (cancelled and re-validated, revoked, destroyed, or
        # superseded with no newer card known to the caller): there is nothing to cancel.
        (
            {"view": card(CardStatus.VALID)},
            "the card is valid, not reported lost: there is nothing to cancel",
        ),
        ({"view": card(CardStatus.REVOKED)}, "the card is revoked, not reported lost"),
        ({"view": card(CardStatus.DESTROYED)}, "the card is destroyed, not reported lost"),
        ({"view": card(CardStatus.SUPERSEDED)}, "the card is superseded, not reported lost"),
    ],
)
def test_cancel_refused(overrides: dict[str, Any], words: str) -> None:
    with pytest.raises(RuleViolation, match=f"^{re.escape(words)}"):
        cancel(**overrides)


@given(
    report_cancelled=st.booleans(),
    same_office=st.booleans(),
    newer_card_exists=st.booleans(),
    status=st.sampled_from([*STORED_NON_VALID, CardStatus.VALID]),
)
@PROPERTY
def test_cancel_allowed_exactly_in_one_case(
    report_cancelled: bool, same_office: bool, newer_card_exists: bool, status: CardStatus
) -> None:
    allowed = not report_cancelled and same_office and not newer_card_exists and status in REPORTED
    arguments: dict[str, Any] = {
        "report_cancelled": report_cancelled,
        "office": "A" if same_office else "B",
        "newer_card_exists": newer_card_exists,
        "view": card(status),
    }
    if allowed:
        cancel(**arguments)
    else:
        with pytest.raises(RuleViolation):
            cancel(**arguments)


# --- found cards ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "newer", "disposition"),
    [
        (CardStatus.VALID, False, FoundDisposition.HELD),
        (CardStatus.REPORTED_LOST, False, FoundDisposition.HELD),
        (CardStatus.REPORTED_STOLEN, False, FoundDisposition.HELD),
        (CardStatus.SUPERSEDED, False, FoundDisposition.DESTROYED),
        (CardStatus.REVOKED, False, FoundDisposition.DESTROYED),
        # A lost card keeps its reason when replaced; the newer card is what makes it waste.
        (CardStatus.REPORTED_LOST, True, FoundDisposition.DESTROYED),
        (CardStatus.REPORTED_STOLEN, True, FoundDisposition.DESTROYED),
    ],
)
def test_found_disposition(status: CardStatus, newer: bool, disposition: FoundDisposition) -> None:
    assert rules.found_disposition(card(status), newer_card_exists=newer) is disposition


@given(status=st.sampled_from(list(CardStatus)))
@PROPERTY
def test_found_card_with_a_newer_card_is_always_destroyed(status: CardStatus) -> None:
    assert rules.found_disposition(card(status), newer_card_exists=True) is FoundDisposition.DESTROYED


@pytest.mark.parametrize("status", [CardStatus.VALID, *STORED_NON_VALID])
def test_found_card_of_a_revoked_person_is_destroyed(status: CardStatus) -> None:
    # Revocation leaves a lost or stolen card as it is: the owner's revocation is what decides.
    assert (
        rules.found_disposition(card(status), newer_card_exists=False, owner_revoked=True)
        is FoundDisposition.DESTROYED
    )
