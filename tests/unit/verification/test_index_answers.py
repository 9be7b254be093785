"""What a unit hears for each stored status, written out by hand (DOMAIN.md, docs/rules.md,
API.md's `result` / `reason` values), against the in-memory index alone."""

from __future__ import annotations

import datetime as dt

import pytest

from idguard.registry.lifecycle import CardStatus
from idguard.verification.index import BLACKLISTED, CHECK_REQUIRED, CardFacts, CardIndex, Result

NUMBER = "110105199005040014"
NAME = "张三"
ISSUED = dt.date(2016, 6, 15)
EXPIRES = dt.date(2036, 6, 15)
CHIP = "0123456789ABCDEF0123456789ABCDEF"
TODAY = dt.date(2026, 6, 15)


def index_with(status: CardStatus, expires_on: dt.date | None = EXPIRES) -> CardIndex:
    index = CardIndex()
    index.upsert(CardFacts(NUMBER, NAME, ISSUED, expires_on, CHIP, status))
    return index


def answer(index: CardIndex, **over: object) -> tuple[str, str | None]:
    query: dict[str, object] = {
        "id_number": NUMBER,
        "name": NAME,
        "issued_on": ISSUED,
        "expires_on": EXPIRES,
        "today": TODAY,
        **over,
    }
    result, reason, flags = index.check(**query)  # type: ignore[arg-type]
    assert flags == 0 or result is not Result.MISMATCH
    return str(result), None if reason is None else str(reason)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (CardStatus.VALID, ("valid", None)),
        (CardStatus.REPORTED_LOST, ("invalid", "reported_lost")),
        (CardStatus.REPORTED_STOLEN, ("invalid", "reported_stolen")),
        (CardStatus.SUPERSEDED, ("invalid", "superseded")),
        (CardStatus.REVOKED, ("invalid", "revoked")),
        # A destroyed card is one whose owner already had a newer card (docs/rules.md).
        (CardStatus.DESTROYED, ("invalid", "superseded")),
    ],
)
def test_each_stored_status_answers(status: CardStatus, expected: tuple[str, str | None]) -> None:
    index = index_with(status)
    assert answer(index) == expected
    assert answer(index, chip_serial=CHIP) == expected


def test_a_valid_card_is_valid_through_its_expiry_day_then_expired() -> None:
    index = index_with(CardStatus.VALID)
    assert answer(index, today=EXPIRES) == ("valid", None)
    assert answer(index, today=EXPIRES + dt.timedelta(days=1)) == ("invalid", "expired")


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (CardStatus.REPORTED_LOST, ("invalid", "reported_lost")),
        (CardStatus.REPORTED_STOLEN, ("invalid", "reported_stolen")),
        (CardStatus.SUPERSEDED, ("invalid", "superseded")),
        (CardStatus.REVOKED, ("invalid", "revoked")),
        (CardStatus.DESTROYED, ("invalid", "superseded")),
    ],
)
def test_an_invalid_card_keeps_its_reason_after_its_expiry(
    status: CardStatus, expected: tuple[str, str | None]
) -> None:
    assert answer(index_with(status), today=dt.date(2040, 1, 1)) == expected


def test_a_long_term_card_never_expires() -> None:
    index = index_with(CardStatus.VALID, expires_on=None)
    assert answer(index, expires_on=None, today=dt.date(2099, 12, 31)) == ("valid", None)
    assert answer(index, expires_on=EXPIRES) == ("mismatch", None)


@pytest.mark.parametrize("status", [CardStatus.VALID, CardStatus.REPORTED_LOST, CardStatus.DESTROYED])
@pytest.mark.parametrize(
    "wrong",
    [
        {"name": "李四"},
        {"issued_on": dt.date(2016, 6, 16)},
        {"expires_on": dt.date(2036, 6, 16)},
        {"expires_on": None},
        {"chip_serial": "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF"},
        {"id_number": "11010519491231002X"},
    ],
    ids=["name", "issued_on", "expires_on", "long_term", "chip_serial", "other_number"],
)
def test_any_printed_field_that_differs_is_a_mismatch(status: CardStatus, wrong: dict[str, object]) -> None:
    # Whatever the card's status: a mismatch says nothing about the card, nor which field failed.
    assert answer(index_with(status), **wrong) == ("mismatch", None)


def test_without_the_chip_serial_any_invalid_card_of_the_same_dates_wins() -> None:
    # A card replaced the day it was issued: two cards print the same number, name and dates.
    index = CardIndex()
    index.upsert(CardFacts(NUMBER, NAME, ISSUED, EXPIRES, "A" * 32, CardStatus.VALID))
    index.upsert(CardFacts(NUMBER, NAME, ISSUED, EXPIRES, "B" * 32, CardStatus.REPORTED_LOST))
    assert answer(index) == ("invalid", "reported_lost")
    assert answer(index, chip_serial="A" * 32) == ("valid", None)
    assert answer(index, chip_serial="B" * 32) == ("invalid", "reported_lost")
    assert answer(index, chip_serial="C" * 32) == ("mismatch", None)


def test_a_newer_status_of_the_same_card_replaces_the_old_one() -> None:
    index = index_with(CardStatus.VALID)
    index.upsert(CardFacts(NUMBER, NAME, ISSUED, EXPIRES, CHIP, CardStatus.REPORTED_STOLEN))
    assert answer(index) == ("invalid", "reported_stolen")
    index.upsert(CardFacts(NUMBER, NAME, ISSUED, EXPIRES, CHIP, CardStatus.VALID))  # report cancelled
    assert answer(index) == ("valid", None)
    assert len(index) == 1


# -- the holder's alert flags (watchlist) ----------------------------------------------------------


def flagged(status: CardStatus, flags: int, until: dt.date | None = None) -> CardIndex:
    index = CardIndex()
    index.upsert(CardFacts(NUMBER, NAME, ISSUED, EXPIRES, CHIP, status, flags, until))
    return index


def full(index: CardIndex, **over: object) -> tuple[object, ...]:
    query: dict[str, object] = {
        "id_number": NUMBER,
        "name": NAME,
        "issued_on": ISSUED,
        "expires_on": EXPIRES,
        "today": TODAY,
        **over,
    }
    return tuple(index.check(**query))  # type: ignore[arg-type]


@pytest.mark.parametrize("flags", [BLACKLISTED, CHECK_REQUIRED, BLACKLISTED | CHECK_REQUIRED])
@pytest.mark.parametrize("status", list(CardStatus))
def test_flags_come_with_a_matching_card_whatever_its_status(status: CardStatus, flags: int) -> None:
    result, reason, got = full(flagged(status, flags))
    assert got == flags
    # The flags change nothing of the answer itself.
    assert (result, reason) == full(flagged(status, 0))[:2]


def test_flags_come_with_an_expired_card() -> None:
    assert full(flagged(CardStatus.VALID, BLACKLISTED), today=EXPIRES + dt.timedelta(days=1)) == (
        Result.INVALID,
        "expired",
        BLACKLISTED,
    )


def test_a_mismatch_carries_no_flags() -> None:
    """Nothing says whose card it is: a made-up check must not learn that a number is listed."""
    index = flagged(CardStatus.VALID, BLACKLISTED | CHECK_REQUIRED)
    assert full(index, name="李四") == (Result.MISMATCH, None, 0)
    assert full(index, chip_serial="X" * 32) == (Result.MISMATCH, None, 0)


def test_flags_follow_the_card_when_it_is_upserted_again() -> None:
    index = flagged(CardStatus.VALID, BLACKLISTED)
    index.upsert(CardFacts(NUMBER, NAME, ISSUED, EXPIRES, CHIP, CardStatus.VALID, 0))
    assert full(index)[2] == 0
    assert len(index) == 1


def test_a_listing_holds_through_its_last_day() -> None:
    last = TODAY + dt.timedelta(days=3)
    index = flagged(CardStatus.VALID, BLACKLISTED, last)
    assert index.blacklisted(NUMBER, last)
    assert not index.blacklisted(NUMBER, last + dt.timedelta(days=1))
    index.upsert(CardFacts(NUMBER, NAME, ISSUED, EXPIRES, CHIP, CardStatus.VALID, BLACKLISTED, None))
    assert index.blacklisted(NUMBER, last + dt.timedelta(days=400))  # listed again, until lifted
