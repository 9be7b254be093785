"""What a unit hears for each stored status, written out by hand (DOMAIN.md, docs/rules.md,
API.md's `result` / `reason` values), against the in-memory index alone."""

from __future__ import annotations

import datetime as dt

import pytest

from idguard.registry.lifecycle import CardStatus
from idguard.verification.index import CardFacts, CardIndex

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
    result, reason = index.check(**query)  # type: ignore[arg-type]
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
