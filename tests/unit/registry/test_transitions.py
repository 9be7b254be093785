"""The lifecycle table and the rules moved out of the services, tested without a database."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from idguard.core.errors import RuleViolation
from idguard.registry import lifecycle as rules
from idguard.registry.lifecycle import CardStatus, CardView, EventKind, FoundDisposition, RevocationReason

TODAY = dt.date(2026, 11, 28)
STORED = [s for s in CardStatus if s is not CardStatus.EXPIRED]
INVALID = [s for s in STORED if s is not CardStatus.VALID]


def card(status: CardStatus = CardStatus.VALID, superseded_by: str | None = None) -> CardView:
    return CardView(
        card_id="c1",
        status=status,
        issued_on=dt.date(2020, 1, 1),
        expires_on=dt.date(2030, 1, 1),
        temporary=False,
        superseded_by=superseded_by,
    )


def born(years_ago: int, days: int = 0) -> dt.date:
    """A birth date making someone exactly `years_ago` today, `days` short of a birthday."""
    return rules.add_years(TODAY, -years_ago) + dt.timedelta(days=days)


# ---- the table ---------------------------------------------------------------------------------
def test_every_event_has_a_row_and_none_writes_expired() -> None:
    assert set(rules.TRANSITIONS) == set(EventKind)
    for row in rules.TRANSITIONS.values():
        assert CardStatus.EXPIRED not in row
        assert CardStatus.EXPIRED not in row.values()


def test_only_issue_events_start_a_card() -> None:
    for event in EventKind:
        assert (None in rules.TRANSITIONS[event]) is event.is_issue


@pytest.mark.parametrize(
    ("event", "before", "after"),
    [
        (EventKind.ISSUED_FIRST, None, CardStatus.VALID),
        (EventKind.REPORTED_LOST, CardStatus.VALID, CardStatus.REPORTED_LOST),
        (EventKind.REPORTED_STOLEN, CardStatus.VALID, CardStatus.REPORTED_STOLEN),
        (EventKind.LOSS_REPORT_CANCELLED, CardStatus.REPORTED_LOST, CardStatus.VALID),
        (EventKind.LOSS_REPORT_CANCELLED, CardStatus.REPORTED_STOLEN, CardStatus.VALID),
        (EventKind.SUPERSEDED, CardStatus.VALID, CardStatus.SUPERSEDED),
        (EventKind.SUPERSEDED, CardStatus.REPORTED_LOST, CardStatus.REPORTED_LOST),
        (EventKind.REVOKED, CardStatus.VALID, CardStatus.REVOKED),
        (EventKind.FOUND, CardStatus.REPORTED_STOLEN, CardStatus.REPORTED_STOLEN),
        (EventKind.RETURNED, CardStatus.VALID, CardStatus.VALID),
        (EventKind.DESTROYED, CardStatus.SUPERSEDED, CardStatus.DESTROYED),
    ],
)
def test_transitions(event: EventKind, before: CardStatus | None, after: CardStatus) -> None:
    assert rules.transition(event, before) is after


@pytest.mark.parametrize(
    ("event", "before"),
    [
        (EventKind.REPORTED_LOST, CardStatus.REPORTED_LOST),  # lost twice
        (EventKind.REPORTED_STOLEN, CardStatus.SUPERSEDED),
        (EventKind.LOSS_REPORT_CANCELLED, CardStatus.VALID),
        (EventKind.LOSS_REPORT_CANCELLED, CardStatus.SUPERSEDED),
        (EventKind.REVOKED, CardStatus.REPORTED_LOST),  # keeps its reason
        (EventKind.FOUND, CardStatus.DESTROYED),
        (EventKind.RETURNED, CardStatus.REVOKED),
        (EventKind.DESTROYED, CardStatus.DESTROYED),
        (EventKind.ISSUED_RENEWAL, CardStatus.VALID),  # a card is issued once
    ],
)
def test_forbidden_transitions_are_refused(event: EventKind, before: CardStatus | None) -> None:
    with pytest.raises(RuleViolation, match="cannot be"):
        rules.transition(event, before)


@given(st.sampled_from(list(EventKind)), st.sampled_from([None, *STORED]))
def test_no_event_makes_an_invalid_card_valid_except_cancelling_a_report(
    event: EventKind, before: CardStatus | None
) -> None:
    try:
        after = rules.transition(event, before)
    except RuleViolation:
        return
    if before in INVALID and after is CardStatus.VALID:
        assert event is EventKind.LOSS_REPORT_CANCELLED
        assert before in (CardStatus.REPORTED_LOST, CardStatus.REPORTED_STOLEN)
    if before is CardStatus.DESTROYED:
        assert after is CardStatus.DESTROYED  # the end: nothing brings a destroyed card back


def test_event_names_are_the_stored_strings() -> None:
    assert EventKind.issued(rules.IssueKind.TEMPORARY) == "issued:temporary"
    assert EventKind.reported(rules.LossReason.STOLEN) is EventKind.REPORTED_STOLEN


# ---- who may report a loss ----------------------------------------------------------------------
def test_a_guardian_may_report_for_a_holder_up_to_the_day_before_16() -> None:
    rules.check_guardian_may_report(holder_birth_date=born(16, days=1), today=TODAY)
    with pytest.raises(RuleViolation, match="only the holder"):
        rules.check_guardian_may_report(holder_birth_date=born(16), today=TODAY)


def test_a_guardian_is_an_adult_from_the_18th_birthday() -> None:
    rules.check_guardian(birth_date=born(18), revoked=False, today=TODAY)
    with pytest.raises(RuleViolation, match="registered adult"):
        rules.check_guardian(birth_date=born(18, days=1), revoked=False, today=TODAY)


def test_a_revoked_guardian_may_not_report() -> None:
    with pytest.raises(RuleViolation, match="registered adult"):
        rules.check_guardian(birth_date=born(40), revoked=True, today=TODAY)


# ---- returning a found card --------------------------------------------------------------------
def held(status: CardStatus = CardStatus.REPORTED_LOST, **kwargs: object) -> None:
    args: dict[str, object] = {
        "disposition": FoundDisposition.HELD,
        "owner_revoked": False,
        "held_at": "110105001",
        "office": "110105001",
    }
    args.update(kwargs)
    rules.check_can_return(card(status, superseded_by=args.pop("superseded_by", None)), **args)  # type: ignore[arg-type]


def test_a_held_card_goes_back_at_its_office() -> None:
    held()
    held(CardStatus.VALID)


@pytest.mark.parametrize(
    ("kwargs", "why"),
    [
        ({"disposition": FoundDisposition.RETURNED}, "not held"),
        ({"disposition": FoundDisposition.DESTROYED}, "not held"),
        ({"owner_revoked": True}, "revoked"),
        ({"superseded_by": "c2"}, "newer card"),
        ({"office": "110105002"}, "another office"),
    ],
)
def test_a_card_that_cannot_go_back_is_refused(kwargs: dict[str, object], why: str) -> None:
    with pytest.raises(RuleViolation, match=why):
        held(**kwargs)


@pytest.mark.parametrize("status", [CardStatus.REVOKED, CardStatus.DESTROYED])
def test_a_revoked_or_destroyed_card_is_not_returned(status: CardStatus) -> None:
    with pytest.raises(RuleViolation, match="newer card"):
        held(status)


# ---- revocation --------------------------------------------------------------------------------
def test_revocation_is_recorded_once_by_the_hukou_office() -> None:
    rules.check_can_revoke(already_revoked=None, office="110105001", hukou_office="110105001")
    with pytest.raises(RuleViolation, match="household-registration office"):
        rules.check_can_revoke(already_revoked=None, office="110105002", hukou_office="110105001")
    with pytest.raises(RuleViolation, match="already revoked"):
        rules.check_can_revoke(
            already_revoked=RevocationReason.DECEASED, office="110105001", hukou_office="110105001"
        )


def test_revocation_revokes_every_valid_card_and_only_those() -> None:
    cards = [card(s) for s in STORED]
    assert [c.status for c in rules.revoked_by_revocation(cards)] == [CardStatus.VALID]
