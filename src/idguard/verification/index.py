"""The verification index (联网核查): what every check is answered from, in memory.

One entry per id number; its value is one packed int per card (a tuple when the number has had
several cards). A card is packed as

    bits 0-2    status (STATUS_CODES)
    bits 3-4    the holder's alert flags (BLACKLISTED, CHECK_REQUIRED), usually 0
    bits 5-24   issue date, days since 1900-01-01
    bits 25-44  expiry date, days since 1900-01-01 (0 = long-term)
    bits 45-108 hash(name)      ─ Python's per-process keyed SipHash: no name is kept, and the
    bits 109-140 hash(chip)     ─ hashes mean nothing outside this process

so a million cards cost about 150 bytes each (key string, one int, the dict slot), and a check
is a dict lookup and a few integer operations. The answer never says which field failed.

The flags sit next to the status so that one mask (`& 31`) reads both and one table lookup
answers both: a check of a flagged card costs what any check costs (bench/verify part 1). They
follow the ledger like statuses do (a listing appends an event on each of the person's cards).
A listing with an end date keeps that date in `blacklisted_until` (a few entries, read only
for a flagged card), so the flag ends by itself the day after.
"""

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


class Alert(StrEnum):
    """What a verify answer warns about (`alerts`), besides its result (API.md part 2)."""

    BLACKLISTED = "blacklisted"  # the holder of the checked card is on the blacklist
    PERSON_CHECK_REQUIRED = "person_check_required"  # protection: no matching finger was sent
    KNOWN_IMPERSONATOR = "known_impersonator"  # the live finger is a blacklisted person's


ALERT_ORDER: tuple[Alert, ...] = tuple(Alert)  # the order in an answer and in checks.alerts


def alerts(*, blacklisted: bool, check_required: bool, impersonator: bool) -> tuple[Alert, ...]:
    """The alerts of one check, in ALERT_ORDER. `check_required`: the holder requires the
    person-card check and this check had no matching finger."""
    found = []
    if blacklisted:
        found.append(Alert.BLACKLISTED)
    if check_required:
        found.append(Alert.PERSON_CHECK_REQUIRED)
    if impersonator:
        found.append(Alert.KNOWN_IMPERSONATOR)
    return tuple(found)


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
_BY_STATUS: tuple[tuple[Result, Reason | None], ...] = (
    (Result.VALID, None),
    (Result.INVALID, Reason.REPORTED_LOST),
    (Result.INVALID, Reason.REPORTED_STOLEN),
    (Result.INVALID, Reason.SUPERSEDED),
    (Result.INVALID, Reason.REVOKED),
    (Result.INVALID, Reason.SUPERSEDED),
)
# The holder's alert flags (bits 3-4 of a packed card; the third element of `check`'s answer).
BLACKLISTED = 8  # on the impersonator blacklist (冒用身份证人员黑名单)
CHECK_REQUIRED = 16  # every check needs the holder's finger (victim protection)
_FLAG_SHIFT = 3
_CODE_MASK = 31  # status and flags

# Answers by status code and flags (`packed & 31`): (result, reason, flags). A mismatch carries
# no flags: nothing says whose card it is.
_ANSWERS: tuple[tuple[Result, Reason | None, int], ...] = tuple(
    (*_BY_STATUS[code & 7], code & 24) if code & 7 < len(_BY_STATUS) else (Result.MISMATCH, None, 0)
    for code in range(32)
)
_EXPIRED: tuple[tuple[Result, Reason | None, int], ...] = tuple(
    (Result.INVALID, Reason.EXPIRED, flags << _FLAG_SHIFT) for flags in range(4)
)
_MISMATCH = (Result.MISMATCH, None, 0)

_EPOCH = dt.date(1900, 1, 1).toordinal()
_DAY_BITS = 20
_DAY_MASK = (1 << _DAY_BITS) - 1
_ISSUE_SHIFT = 5
_EXPIRY_SHIFT = 25
_NAME_SHIFT = 45
_CHIP_SHIFT = 109
_H64 = (1 << 64) - 1
_H32 = (1 << 32) - 1
_MATCH_MASK = (1 << _CHIP_SHIFT) - 32  # bits 5-108: dates and name


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
    flags: int = 0  # BLACKLISTED | CHECK_REQUIRED: the holder's, from verification.models.PersonFlags
    blacklisted_until: dt.date | None = None  # the listing's last day, with BLACKLISTED


def pack(card: CardFacts) -> int:
    status = card.status if card.status is not CardStatus.EXPIRED else CardStatus.VALID
    return (
        _CODE[status]
        | (card.flags & (BLACKLISTED | CHECK_REQUIRED))
        | _day(card.issued_on) << _ISSUE_SHIFT
        | _day(card.expires_on) << _EXPIRY_SHIFT
        | (hash(card.name) & _H64) << _NAME_SHIFT
        | (hash(card.chip_serial) & _H32) << _CHIP_SHIFT
    )


class CardIndex:
    """id number → packed cards. Not thread-safe for writers: one follower thread applies
    changes; readers see either the old or the new value of an entry (a single dict store)."""

    __slots__ = ("_entries", "_until", "cards")

    def __init__(self) -> None:
        self._entries: dict[str, int | tuple[int, ...]] = {}
        self._until: dict[str, int] = {}  # id number -> last day of a listing with an end date
        self.cards = 0

    def __len__(self) -> int:
        return self.cards

    def load(self, cards: Iterable[CardFacts]) -> None:
        for card in cards:
            self.upsert(card)

    def upsert(self, card: CardFacts) -> None:
        """Add a card or replace the same card (same number, issue and expiry dates, name, chip)."""
        packed = pack(card)
        identity = packed >> _ISSUE_SHIFT
        if card.flags & BLACKLISTED and card.blacklisted_until is not None:
            self._until[card.id_number] = _day(card.blacklisted_until)
        elif self._until:
            self._until.pop(card.id_number, None)
        current = self._entries.get(card.id_number)
        if current is None:
            self._entries[card.id_number] = packed
            self.cards += 1
            return
        existing = (current,) if isinstance(current, int) else current
        kept = tuple(p for p in existing if p >> _ISSUE_SHIFT != identity)
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
    ) -> tuple[Result, Reason | None, int]:
        """The hot path: (result, reason, the holder's flags). `today` is the date in China
        Standard Time. Flags come with a matching card only (valid or invalid), never with a
        mismatch; BLACKLISTED is as stored: `blacklisted(id_number, today)` says whether the
        listing still holds today (read it only when the flag is set)."""
        entry = self._entries.get(id_number)
        if entry is None:
            return _MISMATCH
        want = (
            (issued_on.toordinal() - _EPOCH) << _ISSUE_SHIFT
            | (0 if expires_on is None else expires_on.toordinal() - _EPOCH) << _EXPIRY_SHIFT
            | (hash(name) & _H64) << _NAME_SHIFT
        )
        if isinstance(entry, int):  # one card: the common case, inlined (this is the hot path)
            if entry & _MATCH_MASK != want:
                return _MISMATCH
            if chip_serial is not None and entry >> _CHIP_SHIFT != hash(chip_serial) & _H32:
                return _MISMATCH
            code = entry & _CODE_MASK
            if not code & 7:
                expires = (entry >> _EXPIRY_SHIFT) & _DAY_MASK
                if expires and today.toordinal() - _EPOCH > expires:
                    return _EXPIRED[code >> _FLAG_SHIFT]
            return _ANSWERS[code]
        # Several cards of one number: two can print the same dates (a card replaced the day it
        # was issued). Without the chip serial to tell them apart, any invalid match wins —
        # when in doubt, the card is invalid. (Inlined like the one-card case: most numbers have
        # had several cards, so this loop is hot too.) The flags are the holder's: every card of
        # the number carries the same.
        chip = None if chip_serial is None else hash(chip_serial) & _H32
        answer: tuple[Result, Reason | None, int] = _MISMATCH
        for packed in entry:
            if packed & _MATCH_MASK != want or (chip is not None and packed >> _CHIP_SHIFT != chip):
                continue
            code = packed & _CODE_MASK
            if code & 7:
                return _ANSWERS[code]  # every status code but 0 is invalid
            expires = (packed >> _EXPIRY_SHIFT) & _DAY_MASK
            if expires and today.toordinal() - _EPOCH > expires:
                return _EXPIRED[code >> _FLAG_SHIFT]
            answer = _ANSWERS[code]
        return answer

    def blacklisted(self, id_number: str, today: dt.date) -> bool:
        """Whether the holder's listing (their cards carry BLACKLISTED) still holds `today`."""
        until = self._until.get(id_number)
        return until is None or today.toordinal() - _EPOCH <= until

    def bare_lookup(self, id_number: str) -> bool:
        """The benchmark's baseline: the dict lookup alone."""
        return id_number in self._entries
