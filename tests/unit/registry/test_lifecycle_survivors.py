"""Card lifecycle rules (registry/lifecycle.py) that the mutants `make mutation` found untested,
written against the committed behaviour and docs/rules.md (docs/testing.md lists them). Offices
are compared for equality, never for order; the guardian rule holds at every age, not only at
the boundary."""

from __future__ import annotations

import datetime as dt

import pytest

from idguard.core.errors import RuleViolation
from idguard.registry import lifecycle as rules
from idguard.registry.lifecycle import CardStatus, CardView, FoundDisposition

TODAY = dt.date(2026, 6, 15)


def born(years: int, *, days: int = 0) -> dt.date:
    """The birth date of someone who completes `years` years `days` days after TODAY."""
    return dt.date(TODAY.year - years, TODAY.month, TODAY.day) + dt.timedelta(days=days)


def card(status: CardStatus = CardStatus.REPORTED_LOST, superseded_by: str | None = None) -> CardView:
    return CardView(
        card_id="c1",
        status=status,
        issued_on=dt.date(2020, 1, 1),
        expires_on=dt.date(2030, 1, 1),
        temporary=False,
        superseded_by=superseded_by,
    )


# ---- offices: the accepting office, and no other, whichever way its code sorts ------------------


@pytest.mark.parametrize("office", ["110104001", "110106001", "310101001"])
def test_a_loss_report_is_cancelled_at_no_other_office(office: str) -> None:
    with pytest.raises(RuleViolation, match="only at the office that accepted it"):
        rules.check_can_cancel_report(
            report_office="110105001",
            office=office,
            report_cancelled=False,
            card=card(),
            newer_card_exists=False,
        )


def test_a_loss_report_is_cancelled_at_its_office() -> None:
    rules.check_can_cancel_report(
        report_office="110105001",
        office="".join(["110105", "001"]),  # equal, not the same object (as read from a request)
        report_cancelled=False,
        card=card(),
        newer_card_exists=False,
    )


@pytest.mark.parametrize("office", ["110104001", "110106001"])
def test_a_held_card_is_returned_at_no_other_office(office: str) -> None:
    with pytest.raises(RuleViolation, match="held at another office"):
        rules.check_can_return(
            card(), disposition=FoundDisposition.HELD, owner_revoked=False, held_at="110105001", office=office
        )


def test_a_held_card_is_returned_at_its_office() -> None:
    rules.check_can_return(
        card(),
        disposition=FoundDisposition.HELD,
        owner_revoked=False,
        held_at="110105001",
        office="".join(["110105", "001"]),  # equal, not the same object (as read from a request)
    )


@pytest.mark.parametrize("office", ["110104", "110106"])
def test_a_revocation_is_recorded_by_no_other_office(office: str) -> None:
    with pytest.raises(RuleViolation, match="household-registration office"):
        rules.check_can_revoke(already_revoked=None, office=office, hukou_office="110105")


# ---- who may report: a guardian only for a holder under 16, at any age above --------------------


@pytest.mark.parametrize("age", [16, 17, 18, 30, 70])
def test_a_guardian_may_not_report_for_a_holder_aged_16_or_more(age: int) -> None:
    with pytest.raises(RuleViolation, match="only the holder"):
        rules.check_guardian_may_report(holder_birth_date=born(age), today=TODAY)


@pytest.mark.parametrize("age", [0, 1, 10, 15])
def test_a_guardian_may_report_for_a_holder_under_16(age: int) -> None:
    rules.check_guardian_may_report(holder_birth_date=born(age), today=TODAY)


@pytest.mark.parametrize("age", [18, 19, 40, 90])
def test_an_adult_guardian_may_report(age: int) -> None:
    rules.check_guardian(birth_date=born(age), revoked=False, today=TODAY)


@pytest.mark.parametrize("age", [0, 12, 16, 17])
def test_a_minor_may_not_be_the_guardian(age: int) -> None:
    with pytest.raises(RuleViolation, match="registered adult"):
        rules.check_guardian(birth_date=born(age), revoked=False, today=TODAY)


def test_a_revocation_is_recorded_by_the_hukou_office() -> None:
    rules.check_can_revoke(already_revoked=None, office="".join(["1101", "05"]), hukou_office="110105")


# ---- reissue: the client's previous_card_id is compared by value ---------------------------------


def test_a_reissue_names_the_newest_card_by_its_id() -> None:
    newest = CardView(
        card_id="9f0c2a4e-5b1d-4c3a-8e7f-123456789abc",
        status=CardStatus.VALID,
        issued_on=dt.date(2020, 1, 1),
        expires_on=dt.date(2030, 1, 1),
        temporary=False,
    )
    sent = "".join(["9f0c2a4e-5b1d-4c3a-8e7f-", "123456789abc"])  # as parsed from a request body
    assert (
        rules.check_can_issue(
            rules.IssueKind.RENEWAL, revoked=False, regular_cards=[newest], previous_card_id=sent
        )
        == newest
    )


# ---- a newer card supersedes every older one, a destroyed one too --------------------------------


@pytest.mark.parametrize("before", [s for s in CardStatus if s is not CardStatus.EXPIRED])
def test_superseding_is_recorded_on_a_card_of_any_stored_status(before: CardStatus) -> None:
    after = rules.transition(rules.EventKind.SUPERSEDED, before)
    assert after is (CardStatus.SUPERSEDED if before is CardStatus.VALID else before)


def test_a_destroyed_card_stays_destroyed_when_a_newer_card_is_issued() -> None:
    assert rules.transition(rules.EventKind.SUPERSEDED, CardStatus.DESTROYED) is CardStatus.DESTROYED
