"""The verification index (verification/index.py) beyond one card per number, written out by
hand from docs/rules.md: a person's several cards (old and new, regular and temporary), expiry
inside that loop, how the index counts cards, and a stored EXPIRED status. Kills the mutants
`make mutation` found (docs/testing.md); test_index_answers.py has the one-card answers."""

from __future__ import annotations

import datetime as dt

import pytest

from idguard.registry.lifecycle import CardStatus
from idguard.verification.index import CardFacts, CardIndex

NUMBER = "110105199005040014"
NAME = "张三"
TODAY = dt.date(2026, 6, 15)
# The person's first card, superseded by a renewal; the renewal; a temporary card.
OLD = CardFacts(NUMBER, NAME, dt.date(2006, 3, 1), dt.date(2016, 3, 1), "A" * 32, CardStatus.SUPERSEDED)
NEW = CardFacts(NUMBER, NAME, dt.date(2016, 2, 20), dt.date(2036, 2, 20), "B" * 32, CardStatus.VALID)
TEMPORARY = CardFacts(NUMBER, NAME, dt.date(2026, 5, 1), dt.date(2026, 8, 1), "C" * 32, CardStatus.VALID)


def ask(
    index: CardIndex, card: CardFacts, *, today: dt.date = TODAY, chip: str | None = None, **over: object
) -> tuple[str, str | None]:
    """(result, reason) for a check of `card`'s printed fields (the answer's flags, where the
    index has them, are not the subject here)."""
    query: dict[str, object] = {
        "id_number": card.id_number,
        "name": card.name,
        "issued_on": card.issued_on,
        "expires_on": card.expires_on,
        "today": today,
        "chip_serial": chip,
        **over,
    }
    result, reason = tuple(index.check(**query))[:2]  # type: ignore[arg-type]
    return str(result), None if reason is None else str(reason)


def person(*cards: CardFacts) -> CardIndex:
    index = CardIndex()
    index.load(cards)
    return index


def test_each_of_a_persons_cards_answers_for_itself() -> None:
    index = person(OLD, NEW, TEMPORARY)
    assert len(index) == 3
    assert ask(index, NEW) == ("valid", None)
    assert ask(index, OLD) == ("invalid", "superseded")
    assert ask(index, TEMPORARY) == ("valid", None)
    assert ask(index, NEW, chip="B" * 32) == ("valid", None)
    assert ask(index, OLD, chip="A" * 32) == ("invalid", "superseded")


def test_with_several_cards_a_card_that_matches_none_is_a_mismatch() -> None:
    index = person(OLD, NEW)
    assert ask(index, NEW, name="李四") == ("mismatch", None)
    assert ask(index, NEW, issued_on=dt.date(2016, 2, 21)) == ("mismatch", None)
    assert ask(index, NEW, expires_on=dt.date(2036, 2, 21)) == ("mismatch", None)
    assert ask(index, NEW, expires_on=OLD.expires_on) == ("mismatch", None)  # fields of two cards
    assert ask(index, NEW, chip="A" * 32) == ("mismatch", None)  # the old card's chip
    assert ask(index, NEW, chip="D" * 32) == ("mismatch", None)


def test_with_several_cards_a_valid_card_is_valid_through_its_expiry_day_then_expired() -> None:
    index = person(OLD, NEW, TEMPORARY)
    last = TEMPORARY.expires_on
    assert last is not None
    assert ask(index, TEMPORARY, today=last) == ("valid", None)
    assert ask(index, TEMPORARY, today=last + dt.timedelta(days=1)) == ("invalid", "expired")
    assert ask(index, TEMPORARY, today=last + dt.timedelta(days=1), chip="C" * 32) == ("invalid", "expired")
    # The other valid card is not expired by the temporary card's date.
    assert ask(index, NEW, today=last + dt.timedelta(days=1)) == ("valid", None)


def test_with_several_cards_an_invalid_card_keeps_its_reason_after_expiry() -> None:
    index = person(OLD, NEW)
    assert ask(index, OLD, today=dt.date(2030, 1, 1)) == ("invalid", "superseded")


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
def test_with_several_cards_each_invalid_status_answers_its_reason(
    status: CardStatus, expected: tuple[str, str | None]
) -> None:
    lost = CardFacts(NUMBER, NAME, NEW.issued_on, NEW.expires_on, NEW.chip_serial, status)
    index = person(OLD, lost)
    assert ask(index, lost) == expected
    assert ask(index, lost, chip="B" * 32) == expected


def test_with_several_cards_a_long_term_card_never_expires() -> None:
    forever = CardFacts(NUMBER, NAME, dt.date(2020, 1, 1), None, "E" * 32, CardStatus.VALID)
    index = person(OLD, forever)
    assert ask(index, forever, today=dt.date(2099, 12, 31)) == ("valid", None)


def test_a_valid_match_does_not_hide_an_invalid_one_of_the_same_dates_in_either_order() -> None:
    # A card replaced the day it was issued; without the chip serial, invalid wins (docs/rules.md).
    valid = CardFacts(NUMBER, NAME, NEW.issued_on, NEW.expires_on, "B" * 32, CardStatus.VALID)
    lost = CardFacts(NUMBER, NAME, NEW.issued_on, NEW.expires_on, "F" * 32, CardStatus.REPORTED_LOST)
    for cards in ((valid, lost), (lost, valid), (OLD, valid, lost), (lost, valid, OLD)):
        index = person(*cards)
        assert ask(index, valid) == ("invalid", "reported_lost")
        assert ask(index, valid, chip="B" * 32) == ("valid", None)


def test_an_expired_match_is_not_hidden_by_a_later_valid_one_of_the_same_dates() -> None:
    expired_day = dt.date(2036, 2, 21)
    valid = CardFacts(NUMBER, NAME, NEW.issued_on, NEW.expires_on, "B" * 32, CardStatus.VALID)
    twin = CardFacts(NUMBER, NAME, NEW.issued_on, NEW.expires_on, "G" * 32, CardStatus.VALID)
    assert ask(person(valid, twin), valid, today=expired_day) == ("invalid", "expired")


def test_the_index_counts_cards_not_numbers_nor_updates() -> None:
    index = CardIndex()
    assert len(index) == 0
    index.upsert(OLD)
    index.upsert(NEW)
    assert len(index) == 2
    index.upsert(
        CardFacts(NUMBER, NAME, OLD.issued_on, OLD.expires_on, OLD.chip_serial, CardStatus.DESTROYED)
    )
    assert len(index) == 2  # the same card, a new status
    assert ask(index, OLD) == ("invalid", "superseded")
    assert ask(index, NEW) == ("valid", None)
    index.upsert(TEMPORARY)
    index.upsert(CardFacts("11010519491231002X", "李四", NEW.issued_on, None, "H" * 32, CardStatus.VALID))
    assert len(index) == 4


def test_a_status_change_of_one_of_several_cards_leaves_the_others() -> None:
    index = person(OLD, NEW, TEMPORARY)
    index.upsert(
        CardFacts(NUMBER, NAME, NEW.issued_on, NEW.expires_on, NEW.chip_serial, CardStatus.REPORTED_LOST)
    )
    assert len(index) == 3
    assert ask(index, NEW) == ("invalid", "reported_lost")
    assert ask(index, TEMPORARY) == ("valid", None)
    assert ask(index, OLD) == ("invalid", "superseded")


def test_a_card_stored_as_expired_is_judged_by_its_date() -> None:
    # EXPIRED is derived, never stored; given it, the index answers from the expiry date.
    card = CardFacts(NUMBER, NAME, dt.date(2006, 3, 1), dt.date(2016, 3, 1), "A" * 32, CardStatus.EXPIRED)
    index = person(card)
    assert ask(index, card, today=dt.date(2016, 3, 1)) == ("valid", None)
    assert ask(index, card, today=dt.date(2016, 3, 2)) == ("invalid", "expired")


def test_dates_far_apart_and_at_the_ends_of_the_range_are_told_apart() -> None:
    early = CardFacts(NUMBER, NAME, dt.date(1900, 1, 2), dt.date(1900, 1, 3), "A" * 32, CardStatus.VALID)
    late = CardFacts(NUMBER, NAME, dt.date(2999, 12, 30), dt.date(2999, 12, 31), "B" * 32, CardStatus.VALID)
    index = person(early, late)
    assert ask(index, early, today=dt.date(1900, 1, 3)) == ("valid", None)
    assert ask(index, early, today=dt.date(1900, 1, 4)) == ("invalid", "expired")
    assert ask(index, late, today=dt.date(2999, 12, 31)) == ("valid", None)
    assert ask(index, early, issued_on=late.issued_on) == ("mismatch", None)
    assert ask(index, early, expires_on=late.expires_on) == ("mismatch", None)
    # Issue and expiry dates swapped are another card.
    assert ask(person(NEW), NEW, issued_on=NEW.expires_on, expires_on=NEW.issued_on) == ("mismatch", None)


def test_the_baseline_lookup_knows_only_registered_numbers() -> None:
    index = person(NEW)
    assert index.bare_lookup(NUMBER)
    assert not index.bare_lookup("11010519491231002X")


@pytest.mark.parametrize("printed", [dt.date(1900, 1, 2), dt.date(1984, 1, 1), dt.date(2036, 2, 20)])
def test_a_long_term_card_checked_with_a_printed_expiry_date_is_a_mismatch(printed: dt.date) -> None:
    # "Long-term" is sent as no expiry date (null); any date, however early, is another card.
    forever = CardFacts(NUMBER, NAME, dt.date(2020, 1, 1), None, "E" * 32, CardStatus.VALID)
    assert ask(person(forever), forever, expires_on=printed) == ("mismatch", None)
    assert ask(person(OLD, forever), forever, expires_on=printed) == ("mismatch", None)


def test_every_card_answers_for_itself_whatever_its_name_and_chip_serial() -> None:
    # Many people, each with one card: the name's and the chip's hashes sit side by side in the
    # packed card (per-process random hashes, so many of them), and neither may spill into the
    # other, nor let another person's name or chip pass.
    cards = [
        CardFacts(
            f"1101051990050{i:04d}1", f"张{i}", NEW.issued_on, NEW.expires_on, f"{i:032X}", CardStatus.VALID
        )
        for i in range(64)
    ]
    index = person(*cards)
    assert len(index) == 64
    for i, card in enumerate(cards):
        other = cards[(i + 1) % len(cards)]
        assert ask(index, card) == ("valid", None)
        assert ask(index, card, chip=card.chip_serial) == ("valid", None)
        assert ask(index, card, name=other.name) == ("mismatch", None)
        assert ask(index, card, chip=other.chip_serial) == ("mismatch", None)
    several = person(
        OLD,
        *[CardFacts(NUMBER, c.name, c.issued_on, c.expires_on, c.chip_serial, c.status) for c in cards[:8]],
    )
    for card in cards[:8]:
        assert ask(several, card, id_number=NUMBER, chip=card.chip_serial) == ("valid", None)
        assert ask(several, card, id_number=NUMBER, name="李四") == ("mismatch", None)
