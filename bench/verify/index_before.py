"""Part 1's reference: `CardIndex` as it was before the holder's alert flags (issue 10), frozen
from commit e341529 (src/idguard/verification/index.py), so that part 1 measures the index with
flags against the index without them in the same run, on the same queries. Not used by the
service; do not edit (it is the baseline)."""

# ruff: noqa

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from idguard.registry.lifecycle import CardStatus


class Result(StrEnum):
    VALID = "valid"
    INVALID = "invalid"
    MISMATCH = "mismatch"


class Reason(StrEnum):
    REPORTED_LOST = "reported_lost"
    REPORTED_STOLEN = "reported_stolen"
    SUPERSEDED = "superseded"
    EXPIRED = "expired"
    REVOKED = "revoked"


# Stored statuses, in packing order. DESTROYED answers "superseded": a destroyed card is one whose
# owner already had a newer card, and the unit needs nothing finer.
STATUS_CODES: tuple[CardStatus, ...] = (
    CardStatus.VALID,
    CardStatus.REPORTED_LOST,
    CardStatus.REPORTED_STOLEN,
    CardStatus.SUPERSEDED,
    CardStatus.REVOKED,
    CardStatus.DESTROYED,
)
_CODE = {s: i for i, s in enumerate(STATUS_CODES)}
_ANSWERS: tuple[tuple[Result, Reason | None], ...] = (
    (Result.VALID, None),
    (Result.INVALID, Reason.REPORTED_LOST),
    (Result.INVALID, Reason.REPORTED_STOLEN),
    (Result.INVALID, Reason.SUPERSEDED),
    (Result.INVALID, Reason.REVOKED),
    (Result.INVALID, Reason.SUPERSEDED),
)
_EXPIRED = (Result.INVALID, Reason.EXPIRED)
_MISMATCH = (Result.MISMATCH, None)

_EPOCH = dt.date(1900, 1, 1).toordinal()
_DAY_BITS = 20
_DAY_MASK = (1 << _DAY_BITS) - 1
_NAME_SHIFT = 43
_CHIP_SHIFT = 107
_H64 = (1 << 64) - 1
_H32 = (1 << 32) - 1
_DATES_MASK = (1 << _NAME_SHIFT) - 8  # bits 3-42: both dates
_MATCH_MASK = (1 << _CHIP_SHIFT) - 8  # bits 3-106: dates and name


def _day(day: dt.date | None) -> int:
    return 0 if day is None else day.toordinal() - _EPOCH


@dataclass(frozen=True, slots=True)
class CardFacts:
    """What the index keeps of one card (from the registry; the name is hashed on packing)."""

    id_number: str
    name: str
    issued_on: dt.date
    expires_on: dt.date | None
    chip_serial: str
    status: CardStatus


def pack(card: CardFacts) -> int:
    status = card.status if card.status is not CardStatus.EXPIRED else CardStatus.VALID
    return (
        _CODE[status]
        | _day(card.issued_on) << 3
        | _day(card.expires_on) << 23
        | (hash(card.name) & _H64) << _NAME_SHIFT
        | (hash(card.chip_serial) & _H32) << _CHIP_SHIFT
    )


class CardIndex:
    """id number → packed cards. Not thread-safe for writers: one follower thread applies
    changes; readers see either the old or the new value of an entry (a single dict store)."""

    __slots__ = ("_entries", "cards")

    def __init__(self) -> None:
        self._entries: dict[str, int | tuple[int, ...]] = {}
        self.cards = 0

    def __len__(self) -> int:
        return self.cards

    def load(self, cards: Iterable[CardFacts]) -> None:
        for card in cards:
            self.upsert(card)

    def upsert(self, card: CardFacts) -> None:
        """Add a card or replace the same card (same number, issue and expiry dates, name, chip)."""
        packed = pack(card)
        identity = packed >> 3
        current = self._entries.get(card.id_number)
        if current is None:
            self._entries[card.id_number] = packed
            self.cards += 1
            return
        existing = (current,) if isinstance(current, int) else current
        kept = tuple(p for p in existing if p >> 3 != identity)
        if len(kept) == len(existing):
            self.cards += 1
        merged = (*kept, packed)
        self._entries[card.id_number] = merged[0] if len(merged) == 1 else merged

    def check(
        self,
        id_number: str,
        name: str,
        issued_on: dt.date,
        expires_on: dt.date | None,
        today: dt.date,
        chip_serial: str | None = None,
    ) -> tuple[Result, Reason | None]:
        """The hot path. `today` is the date in China Standard Time."""
        entry = self._entries.get(id_number)
        if entry is None:
            return _MISMATCH
        want = (
            (issued_on.toordinal() - _EPOCH) << 3
            | (0 if expires_on is None else expires_on.toordinal() - _EPOCH) << 23
            | (hash(name) & _H64) << _NAME_SHIFT
        )
        if isinstance(entry, int):  # one card: the common case, inlined (this is the hot path)
            if entry & _MATCH_MASK != want:
                return _MISMATCH
            if chip_serial is not None and entry >> _CHIP_SHIFT != hash(chip_serial) & _H32:
                return _MISMATCH
            code = entry & 7
            if code == 0:
                expires = (entry >> 23) & _DAY_MASK
                if expires and today.toordinal() - _EPOCH > expires:
                    return _EXPIRED
            return _ANSWERS[code]
        # Several cards of one number: two can print the same dates (a card replaced the day it
        # was issued). Without the chip serial to tell them apart, any invalid match wins —
        # when in doubt, the card is invalid. (Inlined like the one-card case: most numbers have
        # had several cards, so this loop is hot too.)
        chip = None if chip_serial is None else hash(chip_serial) & _H32
        answer: tuple[Result, Reason | None] = _MISMATCH
        for packed in entry:
            if packed & _MATCH_MASK != want or (chip is not None and packed >> _CHIP_SHIFT != chip):
                continue
            code = packed & 7
            if code:
                return _ANSWERS[code]  # every code but 0 is invalid
            expires = (packed >> 23) & _DAY_MASK
            if expires and today.toordinal() - _EPOCH > expires:
                return _EXPIRED
            answer = _ANSWERS[0]
        return answer

    def bare_lookup(self, id_number: str) -> bool:
        """The benchmark's baseline: the dict lookup alone."""
        return id_number in self._entries
