"""A seeded synthetic population for the demo: pure Python, no database.

Same seed, same citizens (a smaller population is a prefix of a larger one). Rows come out in
chunks of `CHUNK` citizens as plain tuples in `COLUMNS` order, holding the Python values the
ORM would bind (UUIDs, aware UTC datetimes, dates, bools, enum values as plain strings).

The model, roughly:
- Birth dates follow China's age pyramid (2020 census aged to today, 5-year groups): two bulges
  at 50-59 (the 1960s-70s baby boom) and 35-39 (the late-1980s echo), a waist at 40-49, a
  narrow base below 10 (falling births since 2017), a long thin top to 104.
- Hukou offices are weighted by their province's population (2020 census). The id number's region
  is the office's county when that code existed in the birth year (80 %), else another county
  of the same prefecture or province, or anywhere (weighted by population) for people who moved.
- Cards: a first card at 16 (after a short delay; 10 % of children get a voluntary card at 6-15
  from 2004), none before 1985 (adults then got theirs in the 1985-89 rollout); every
  first-generation card renewed in the 2004-12 switch to second-generation cards; renewals at
  expiry (85 % in the 3 months before, 15 % late, so some cards are simply expired today);
  damaged-card renewals at about 1.4 %/year.
- Losses at about 1.25 %/year while a card is valid, 15 % of them thefts; 10 % of reports are
  cancelled by the holder within a month, 3 % never lead to a replacement, the rest are replaced
  (补领) after a few weeks, with a temporary card meanwhile in 15 % of cases; 8 % of lost cards
  are handed in by a finder: held if the owner has no replacement yet, destroyed otherwise.
  Holders report their own losses (no guardian reports in the demo).
- About 3 % of persons are recorded deceased (more among the old) within the last 12 years;
  their still-valid cards are revoked.
- No card is flagged `fingerprints_registered`: a card has registered fingerprints only with its
  two fingers stored, so the loader enrols real synthetic fingers for a sample of persons after
  the bulk load (load.py, fingers.py). The random draw that used to flag 93 % of the cards
  issued from 2013 is still made (and ignored), so a seed gives the same citizens as before.
"""

from __future__ import annotations

import datetime as dt
import functools
import random
import re
import uuid
from array import array
from bisect import bisect
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from operator import attrgetter
from typing import TypeVar

from stdnum import numdb

from idguard.core.clock import today_cst
from idguard.core.idnumber import check_character
from idguard.registry.lifecycle import (
    CardStatus,
    IssueKind,
    LossReason,
    RevocationReason,
    add_years,
    expiry_date,
    temporary_expiry,
)

__all__ = ["CHUNK", "COLUMNS", "OFFICES", "Chunk", "DemoOffice", "Population"]

CHUNK = 10_000  # citizens per chunk; also the unit of the random streams, so it fixes the data

Row = tuple[object, ...]
T = TypeVar("T")
COLUMNS: dict[str, tuple[str, ...]] = {
    "persons": (
        "id", "id_number", "name", "sex", "ethnicity", "birth_date", "address",
        "hukou_office", "revoked_reason", "revoked_at", "created_at",
    ),
    "cards": (
        "id", "person_id", "id_number", "kind", "temporary", "status", "name", "sex", "ethnicity",
        "birth_date", "address", "issued_on", "expires_on", "issuing_office", "chip_serial",
        "fingerprints_registered", "superseded_by", "created_at", "updated_at",
    ),
    "loss_reports": (
        "report_no", "card_id", "reason", "office", "applicant_id_number", "by_guardian",
        "accepted_by", "accepted_at", "cancelled_at", "cancelled_by",
    ),
    "found_cards": (
        "found_no", "card_id", "office", "finder_name", "finder_phone", "received_by",
        "received_at", "disposition", "returned_at", "returned_by",
    ),
    "ledger_events": (
        "seq", "card_id", "person_id", "event", "status_before", "status_after", "office",
        "actor", "at", "reason", "reference",
    ),
}  # fmt: skip

_D = dt.date.toordinal
EPOCH = _D(dt.date(1985, 1, 1))  # 居民身份证条例: the first cards
ROLLOUT_END = _D(dt.date(1989, 12, 31))
VOLUNTARY_FROM = GEN2_START = _D(dt.date(2004, 1, 1))  # 居民身份证法: 2nd generation, under-16 cards
GEN2_END = _D(dt.date(2012, 12, 31))  # first-generation cards invalid from 2013
FINGERPRINTS_FROM = _D(dt.date(2013, 1, 1))  # only for the retired draw below (_person)
ELSEWHERE_FROM = _D(dt.date(2016, 1, 1))  # 异地受理: applying away from the hukou office

P_VOLUNTARY, FIRST_DELAY_MEAN = 0.10, 120
P_ON_TIME, LATE_MEAN = 0.85, 300
DAMAGE_RATE, LOSS_RATE = 1 / (70 * 365.25), 1 / (80 * 365.25)  # per day
P_STOLEN, P_CANCEL, P_NEVER_REPLACED, P_TEMPORARY = 0.15, 0.10, 0.03, 0.15
APPLY_DELAY_MEAN, P_FOUND, FOUND_DELAY_MEAN = 10, 0.08, 60
P_MALE, P_ELSEWHERE, DEATH_WINDOW = 0.512, 0.10, 12 * 365
P_LOCAL_BIRTH = 0.80
OFFICE_OPENS_UTC = dt.time(0, 30)  # 08:30 China time
OFFICE_HOURS_US = 9 * 3600 * 1_000_000
_REFERENCE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # as registry.lookups.new_reference
_UNSET = dt.datetime.min.replace(tzinfo=dt.UTC)

# Enum members as plain names: each `CardStatus.X` is a descriptor call, millions of them here.
_VALID, _SUPERSEDED, _DESTROYED, _REVOKED = (
    CardStatus.VALID,
    CardStatus.SUPERSEDED,
    CardStatus.DESTROYED,
    CardStatus.REVOKED,
)
_LOSS = {LossReason.LOST: CardStatus.REPORTED_LOST, LossReason.STOLEN: CardStatus.REPORTED_STOLEN}
_KEEPS_STATUS = frozenset(_LOSS.values())  # superseding a lost card keeps its reason


class _Random(random.Random):
    """random.Random with cheaper draws: the generator makes tens of millions of them, and the
    stdlib's exact-uniform integer and weighted choices cost several times a float draw (the
    float's tiny bias does not matter here)."""

    def rint(self, low: int, high: int) -> int:
        """An integer in low..high, both included."""
        return low + int(self.random() * (high - low + 1))

    def pick(self, items: Sequence[T]) -> T:
        return items[int(self.random() * len(items))]

    def weighted(self, items: Sequence[T], cum_weights: Sequence[float]) -> T:
        return items[bisect(cum_weights, self.random() * cum_weights[-1])]


@dataclass(slots=True)
class _Card:
    issued: int  # ordinal day
    expires: int | None
    kind: IssueKind
    superseded_by: int | None = None
    status: CardStatus = CardStatus.VALID


@dataclass(slots=True)
class _Event:
    day: int
    card: int
    name: str
    reason: str | None = None
    ref: int = -1  # a card, report or found index, by event name
    before: CardStatus | None = None
    after: CardStatus = CardStatus.VALID
    seq: int = 0
    at: dt.datetime = _UNSET


@dataclass(slots=True)
class _Life:
    """What happened to one citizen, in days."""

    birth: int
    death: int | None
    cards: list[_Card] = field(default_factory=list)
    events: list[_Event] = field(default_factory=list)
    reports: list[tuple[int, LossReason, _Event, _Event | None]] = field(default_factory=list)
    found: list[_Event] = field(default_factory=list)

    def emit(self, day: int, card: int, name: str, reason: str | None = None, ref: int = -1) -> _Event:
        event = _Event(day, card, name, reason, ref)
        self.events.append(event)
        return event

    def issue(self, day: int, kind: IssueKind, previous: int | None, reason: str | None = None) -> int:
        """A new card; the previous card of the same chain (regular or temporary) is superseded."""
        born, issued = dt.date.fromordinal(self.birth), dt.date.fromordinal(day)
        end = temporary_expiry(issued) if kind is IssueKind.TEMPORARY else expiry_date(born, issued)
        index = len(self.cards)
        self.cards.append(_Card(day, None if end is None else _D(end), kind))
        if previous is not None:
            self.cards[previous].superseded_by = index
            self.emit(day, previous, "superseded", kind.value, index)
        self.emit(day, index, f"issued:{kind.value}", reason, -1 if previous is None else previous)
        return index


class _Simulation:
    """Draws lives from one random stream. Only these draws decide the events and their days,
    so replaying the stream replays the ledger (the two passes of `Population.chunks`)."""

    def __init__(self, rng: _Random, today: int) -> None:
        self.rng, self.today = rng, today
        day = dt.date.fromordinal(today)
        self.years_ago = [_D(add_years(day, -n)) for n in range(110)]

    def life(self) -> _Life:
        rng, today = self.rng, self.today
        youngest = rng.weighted(_AGE_GROUPS, _AGE_CUM)  # ages youngest .. youngest + 4
        birth = rng.rint(self.years_ago[youngest + 5] + 1, min(self.years_ago[youngest], today - 1))
        end, death = today, None
        if rng.random() < _death_probability((today - birth) // 365) and birth + 2 <= today:
            end = death = rng.rint(max(birth + 1, today - DEATH_WINDOW), today - 1)
        life = _Life(birth, death)
        first = self._first_issue(birth)
        if first < end:
            self._cards(life, first, end)
        _settle(life)
        return life

    def _first_issue(self, birth: int) -> int:
        rng = self.rng
        born = dt.date.fromordinal(birth)
        sixteen = _D(add_years(born, 16))
        if rng.random() < P_VOLUNTARY:  # a guardian applies for a 5-year card
            earliest = max(_D(add_years(born, 6)), VOLUNTARY_FROM)
            if earliest < sixteen:
                return rng.rint(earliest, sixteen - 1)
        first = sixteen + int(rng.expovariate(1 / FIRST_DELAY_MEAN))
        return first if first >= EPOCH else rng.rint(EPOCH, ROLLOUT_END)

    def _cards(self, life: _Life, first: int, end: int) -> None:
        rng = self.rng
        card: int | None = life.issue(first, IssueKind.FIRST, None)
        while card is not None:
            current = life.cards[card]
            renew, why = self._renewal(current)
            # A card can be reported lost only while valid: not after its expiry date.
            horizon = min(renew, end, end if current.expires is None else current.expires + 1)
            since, lost = current.issued, None
            while lost is None:
                day = since + 1 + int(rng.expovariate(LOSS_RATE))
                if day >= horizon:
                    break
                reason = LossReason.STOLEN if rng.random() < P_STOLEN else LossReason.LOST
                reported = life.emit(day, card, f"reported_{reason.value}", reason.value, len(life.reports))
                back = day + rng.rint(1, 30)
                if rng.random() < P_CANCEL and back < horizon:  # the holder found it: 解除挂失
                    cancelled = life.emit(back, card, "loss_report_cancelled", None, len(life.reports))
                    life.reports.append((card, reason, reported, cancelled))
                    since = back
                else:
                    life.reports.append((card, reason, reported, None))
                    lost = day
            if lost is not None:
                card = self._replace(life, card, lost, end)
            elif renew < end:
                card = life.issue(renew, IssueKind.RENEWAL, card, why)
            else:
                card = None  # still held today: valid, or expired and not yet renewed

    def _renewal(self, card: _Card) -> tuple[int, str]:
        """The day this card is renewed unless it is lost first, and why."""
        rng = self.rng
        renew, why = 10**9, "expiry"
        if card.expires is not None:
            if rng.random() < P_ON_TIME:
                renew = max(card.expires - rng.rint(0, 90), card.issued + 1)
            else:
                renew = card.expires + 1 + int(rng.expovariate(1 / LATE_MEAN))
        if card.issued < GEN2_START:
            switch = rng.rint(GEN2_START, GEN2_END)
            if switch < renew:
                renew, why = switch, "new generation"
        damaged = card.issued + 1 + int(rng.expovariate(DAMAGE_RATE))
        return (damaged, "damaged") if damaged < renew else (renew, why)

    def _replace(self, life: _Life, card: int, lost: int, end: int) -> int | None:
        """补领 after a loss (maybe with a temporary card meanwhile); maybe a finder hands it in."""
        rng = self.rng
        replaced: int | None = None
        if rng.random() >= P_NEVER_REPLACED:
            applied = lost + int(rng.expovariate(1 / APPLY_DELAY_MEAN))
            if rng.random() < P_TEMPORARY and applied < end:
                temporary = [i for i, c in enumerate(life.cards) if c.kind is IssueKind.TEMPORARY]
                life.issue(applied, IssueKind.TEMPORARY, temporary[-1] if temporary else None)
            replaced = applied + rng.rint(7, 45)
        if rng.random() < P_FOUND:
            found = lost + 1 + int(rng.expovariate(1 / FOUND_DELAY_MEAN))
            found += found == replaced  # never on the replacement's day: the order decides the outcome
            if found < end:
                if replaced is not None and replaced < found:
                    event = life.emit(found, card, "destroyed", "found after replacement", len(life.found))
                else:
                    event = life.emit(found, card, "found", None, len(life.found))
                life.found.append(event)
        if replaced is None or replaced >= end:
            return None
        return life.issue(replaced, IssueKind.REPLACEMENT, card)


def _settle(life: _Life) -> None:
    """Put the events in time order, derive each status change, revoke what is valid at death."""
    life.events.sort(key=attrgetter("day"))  # stable: same-day events keep their causal order
    for event in life.events:
        card, name = life.cards[event.card], event.name
        before: CardStatus | None = card.status
        if name.startswith("issued:"):
            before, after = None, _VALID
        elif name == "loss_report_cancelled":
            after = _VALID
        elif name == "superseded":
            after = card.status if card.status in _KEEPS_STATUS else _SUPERSEDED
        elif name.startswith("reported_"):
            after = _LOSS[LossReason(name.removeprefix("reported_"))]
        elif name == "destroyed":
            after = _DESTROYED
        else:  # found and held: the status does not change
            after = card.status
        event.before, event.after, card.status = before, after, after
    if life.death is not None:
        for index, card in enumerate(life.cards):
            if card.status is _VALID:
                event = life.emit(life.death, index, "revoked", RevocationReason.DECEASED.value)
                event.before, event.after, card.status = _VALID, _REVOKED, _REVOKED


@dataclass(slots=True)
class Chunk:
    """Rows for each table, in `COLUMNS` order."""

    persons: list[Row] = field(default_factory=list)
    cards: list[Row] = field(default_factory=list)
    loss_reports: list[Row] = field(default_factory=list)
    found_cards: list[Row] = field(default_factory=list)
    ledger_events: list[Row] = field(default_factory=list)

    def tables(self) -> list[tuple[str, list[Row]]]:
        """In foreign-key order."""
        return [(table, getattr(self, table)) for table in COLUMNS]


class Population:
    """The demo citizens, generated chunk by chunk.

    The ledger's seq is global and must follow time, but citizens are generated one after the
    other. So `chunks` makes two passes over the same random streams: the first only counts the
    events of each day; the second gives the k-th event of day d (in generation order)
    seq = first_seq + (events before day d) + k and the time k/n of the way through that day's
    office hours (08:30-17:30 China time). Nothing is kept between chunks but those day counts
    and a set of the id numbers used (about 60 bytes a citizen).
    """

    def __init__(
        self,
        *,
        seed: int,
        citizens: int,
        now: dt.datetime,
        clerks: Mapping[str, uuid.UUID],
        first_seq: int = 1,
    ) -> None:
        if now.tzinfo is None:
            raise ValueError("now must be an aware datetime")
        missing = {office.code for office in OFFICES} - clerks.keys()
        if missing:
            raise ValueError(f"no clerk for demo offices {sorted(missing)}")
        self.seed, self.citizens, self.clerks, self.first_seq = seed, citizens, clerks, first_seq
        self.today = _D(today_cst(now))  # events happen on days before today
        self._numbers: set[int] = set()
        self._opening: dict[int, dt.datetime] = {}
        self._per_day: array[int] | None = None

    @property
    def chunk_count(self) -> int:
        return -(-self.citizens // CHUNK)

    def _stream(self, chunk: int, purpose: str) -> _Random:
        return _Random(f"idguard-demo:{self.seed}:{chunk}:{purpose}")

    def _lives(self, chunk: int) -> Iterator[_Life]:
        simulation = _Simulation(self._stream(chunk, "life"), self.today)
        for _ in range(min(CHUNK, self.citizens - chunk * CHUNK)):
            yield simulation.life()

    def plan(self) -> int:
        """The first pass (run once): count each day's events. Returns the number of events."""
        return sum(self._day_counts())

    def _day_counts(self) -> array[int]:
        if self._per_day is None:
            self._per_day = array("q", bytes(8 * (self.today - EPOCH)))
            for chunk in range(self.chunk_count):
                for life in self._lives(chunk):
                    for event in life.events:
                        self._per_day[event.day - EPOCH] += 1
        return self._per_day

    def chunks(self) -> Iterator[Chunk]:
        """The second pass: the rows, chunk by chunk."""
        per_day = self._day_counts()
        first = array("q", accumulate(per_day, initial=self.first_seq))
        placed = array("q", bytes(len(per_day) * 8))
        self._numbers.clear()
        for chunk in range(self.chunk_count):
            rng = self._stream(chunk, "person")
            out = Chunk()
            for life in self._lives(chunk):
                for event in life.events:
                    day = event.day - EPOCH
                    k = placed[day]
                    placed[day] = k + 1
                    event.seq = first[day] + k
                    event.at = self._opens(event.day) + dt.timedelta(
                        microseconds=k * OFFICE_HOURS_US // per_day[day]
                    )
                self._person(rng, life, out)
            yield out

    def _opens(self, day: int) -> dt.datetime:
        opening = self._opening.get(day)
        if opening is None:
            opening = dt.datetime.combine(dt.date.fromordinal(day), OFFICE_OPENS_UTC, tzinfo=dt.UTC)
            self._opening[day] = opening
        return opening

    def _number(self, rng: _Random, office: DemoOffice, born: dt.date, male: bool) -> str:
        """A GB 11643 number not yet used: the serial's parity gives the sex (odd = male)."""
        code = _region(rng, office, born.year)
        prefix = f"{code}{born.year:04d}{born.month:02d}{born.day:02d}"
        for _ in range(500):
            body = f"{prefix}{2 * int(rng.random() * 500) + male:03d}"
            if int(body) not in self._numbers:
                self._numbers.add(int(body))
                return body + check_character(body)
        raise RuntimeError(f"no free serial for region {code} and birth date {born}")  # pragma: no cover

    def _person(self, rng: _Random, life: _Life, out: Chunk) -> None:
        office = rng.weighted(OFFICES, OFFICE_CUM_WEIGHTS)
        male = rng.random() < P_MALE
        born = dt.date.fromordinal(life.birth)
        number = self._number(rng, office, born, male)
        folk = _ethnicity(rng, office)
        full_name, home = _name(rng, folk, male, born.year), _address(rng, office)
        sex = "male" if male else "female"
        person_id = _uuid(rng)
        registered = min(life.birth + rng.rint(0, 60), self.today - 1)  # 出生登记
        created_at = self._opens(registered) + dt.timedelta(microseconds=int(rng.random() * OFFICE_HOURS_US))
        card_ids = [_uuid(rng) for _ in life.cards]
        where_issued = [
            office.code if c.issued < ELSEWHERE_FROM or rng.random() >= P_ELSEWHERE else _any_office(rng)
            for c in life.cards
        ]
        report_nos = [_reference(rng, "LR") for _ in life.reports]
        where_reported = [office.code if rng.random() < 0.8 else _any_office(rng) for _ in life.reports]
        found_nos = [_reference(rng, "FC") for _ in life.found]
        where_found = [office.code if rng.random() < 0.5 else _any_office(rng) for _ in life.found]

        created: list[dt.datetime] = [_UNSET] * len(life.cards)
        updated: list[dt.datetime] = [_UNSET] * len(life.cards)
        revoked_at: dt.datetime | None = None
        for event in life.events:
            name_, ref, reference = event.name, event.ref, None
            if name_ == "superseded":
                where, reference = where_issued[ref], str(card_ids[ref])
            elif name_.startswith("issued:"):
                where = where_issued[event.card]
                reference = None if ref < 0 or name_ == "issued:temporary" else str(card_ids[ref])
                created[event.card] = event.at
            elif name_ in ("found", "destroyed"):
                where, reference = where_found[ref], found_nos[ref]
            elif name_ == "revoked":
                where = office.code
                revoked_at = revoked_at or event.at
            else:  # reported_* and loss_report_cancelled
                where, reference = where_reported[ref], report_nos[ref]
            updated[event.card] = event.at
            before = None if event.before is None else event.before.value
            out.ledger_events.append(
                (event.seq, card_ids[event.card], person_id, name_, before, event.after.value,
                 where, self.clerks[where], event.at, event.reason, reference)
            )  # fmt: skip
        if life.death is not None and revoked_at is None:  # no valid card left to revoke
            revoked_at = self._opens(life.death) + dt.timedelta(hours=1)
        out.persons.append(
            (person_id, number, full_name, sex, folk, born, home, office.code,
             None if life.death is None else RevocationReason.DECEASED.value, revoked_at, created_at)
        )  # fmt: skip
        # Newest first: superseded_by then names a row already written, so a database checking
        # foreign keys row by row (SQLite) never holds a dangling reference.
        for i in reversed(range(len(life.cards))):
            card = life.cards[i]
            temporary = card.kind is IssueKind.TEMPORARY
            if not temporary and card.issued >= FINGERPRINTS_FROM:
                rng.random()  # the retired fingerprint draw: kept so the stream, and the data, stay
            expires = None if card.expires is None else dt.date.fromordinal(card.expires)
            newer = None if card.superseded_by is None else card_ids[card.superseded_by]
            out.cards.append(
                (card_ids[i], person_id, number, card.kind.value, temporary, card.status.value, full_name,
                 sex, folk, born, home, dt.date.fromordinal(card.issued), expires, where_issued[i],
                 f"{rng.getrandbits(128):032X}", False, newer, created[i], updated[i])
            )  # fmt: skip
        for j, (card_index, reason, reported, cancelled) in enumerate(life.reports):
            where = where_reported[j]
            clerk = self.clerks[where]
            out.loss_reports.append(
                (report_nos[j], card_ids[card_index], reason.value, where, number, False, clerk,
                 reported.at, cancelled and cancelled.at, cancelled and clerk)
            )  # fmt: skip
        for j, event in enumerate(life.found):
            where = where_found[j]
            phone = f"1{rng.pick('3456789')}{int(rng.random() * 10**9):09d}" if rng.random() < 0.7 else None
            out.found_cards.append(
                (found_nos[j], card_ids[event.card], where, _han_name(rng, rng.random() < 0.5, 1980), phone,
                 self.clerks[where], event.at, "destroyed" if event.name == "destroyed" else "held", None, None)
            )  # fmt: skip


def _uuid(rng: _Random) -> uuid.UUID:
    return uuid.UUID(int=rng.getrandbits(128), version=4)


def _reference(rng: _Random, prefix: str) -> str:
    return prefix + "".join(rng.choices(_REFERENCE_ALPHABET, k=12))


def _any_office(rng: _Random) -> str:
    return rng.pick(OFFICES).code


# --- the synthetic world: offices, places, names ----------------------------------------------


@dataclass(frozen=True, slots=True)
class DemoOffice:
    """A demo household-registration office; its code starts with its county's GB/T 2260 code."""

    code: str
    name: str
    address_prefix: str  # province, city and county, as an address starts

    @property
    def region(self) -> str:
        return self.code[:6]

    @property
    def rural(self) -> bool:  # a county or county-level city: villages as well as streets
        return self.address_prefix.endswith(("县", "市"))


OFFICES = tuple(
    DemoOffice(*line.split())
    for line in """
    110105101 朝阳区建外派出所 北京市朝阳区
    110108101 海淀区中关村派出所 北京市海淀区
    120101101 和平区南市派出所 天津市和平区
    130102101 长安区建北派出所 河北省石家庄市长安区
    130984101 河间市城关派出所 河北省沧州市河间市
    140105101 小店区坞城派出所 山西省太原市小店区
    150102101 新城区东街派出所 内蒙古自治区呼和浩特市新城区
    152502101 锡林浩特市宝力根派出所 内蒙古自治区锡林郭勒盟锡林浩特市
    210102101 和平区太原街派出所 辽宁省沈阳市和平区
    220102101 南关区自由大路派出所 吉林省长春市南关区
    230103101 南岗区革新街派出所 黑龙江省哈尔滨市南岗区
    310101101 黄浦区南京东路派出所 上海市黄浦区
    310115101 浦东新区陆家嘴派出所 上海市浦东新区
    320102101 玄武区玄武门派出所 江苏省南京市玄武区
    330106101 西湖区北山派出所 浙江省杭州市西湖区
    340104101 蜀山区三里庵派出所 安徽省合肥市蜀山区
    350102101 鼓楼区东街派出所 福建省福州市鼓楼区
    360102101 东湖区八一桥派出所 江西省南昌市东湖区
    370102101 历下区泉城路派出所 山东省济南市历下区
    371721101 曹县城关派出所 山东省菏泽市曹县
    410105101 金水区花园路派出所 河南省郑州市金水区
    411625101 郸城县城关派出所 河南省周口市郸城县
    420106101 武昌区中南路派出所 湖北省武汉市武昌区
    430102101 芙蓉区五里牌派出所 湖南省长沙市芙蓉区
    433101101 吉首市峒河派出所 湖南省湘西土家族苗族自治州吉首市
    440106101 天河区石牌派出所 广东省广州市天河区
    440304101 福田区华富派出所 广东省深圳市福田区
    450103101 青秀区新竹派出所 广西壮族自治区南宁市青秀区
    460106101 龙华区中山派出所 海南省海口市龙华区
    500103101 渝中区解放碑派出所 重庆市渝中区
    510104101 锦江区春熙路派出所 四川省成都市锦江区
    510722101 三台县潼川派出所 四川省绵阳市三台县
    520102101 南明区花果园派出所 贵州省贵阳市南明区
    522601101 凯里市大十字派出所 贵州省黔东南苗族侗族自治州凯里市
    530102101 五华区护国派出所 云南省昆明市五华区
    540102101 城关区八廓街派出所 西藏自治区拉萨市城关区
    610103101 碑林区南院门派出所 陕西省西安市碑林区
    620102101 城关区张掖路派出所 甘肃省兰州市城关区
    630102101 城东区八一路派出所 青海省西宁市城东区
    640104101 兴庆区鼓楼派出所 宁夏回族自治区银川市兴庆区
    650102101 天山区解放南路派出所 新疆维吾尔自治区乌鲁木齐市天山区
    654002101 伊宁市解放路派出所 新疆维吾尔自治区伊犁哈萨克自治州伊宁市
    """.strip().splitlines()
)

# 2020 census, millions. 71 (Taiwan), 81 and 82 (Hong Kong, Macao) issue other documents.
PROVINCE_POPULATION = {
    "11": 21.9, "12": 13.9, "13": 74.6, "14": 34.9, "15": 24.0, "21": 42.6, "22": 24.1,
    "23": 31.9, "31": 24.9, "32": 84.7, "33": 64.6, "34": 61.0, "35": 41.5, "36": 45.2,
    "37": 101.5, "41": 99.4, "42": 57.8, "43": 66.4, "44": 126.0, "45": 50.1, "46": 10.1,
    "50": 32.1, "51": 83.7, "52": 38.6, "53": 47.2, "54": 3.6, "61": 39.5, "62": 25.0,
    "63": 5.9, "64": 7.2, "65": 25.9,
}  # fmt: skip
# An office stands for its province's share, split among the province's demo offices.
OFFICE_CUM_WEIGHTS = tuple(
    accumulate(
        PROVINCE_POPULATION[o.region[:2]] / sum(p.region[:2] == o.region[:2] for p in OFFICES)
        for o in OFFICES
    )
)


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


def _table(spec: str) -> tuple[tuple[str, ...], tuple[float, ...]]:
    """'汉64 回35' -> (('汉', '回'), cumulative weights (64, 99)) for random.choices."""
    pairs = re.findall(r"(\D+?)([\d.]+)", spec.replace(" ", ""))
    return tuple(k for k, _ in pairs), tuple(accumulate(float(w) for _, w in pairs))


# Share (%) of the living population by 5-year age group, youngest first: 0-4 ... 100-104.
_AGE_GROUPS = tuple(range(0, 105, 5))
_AGE_CUM = tuple(
    accumulate(
        (
            3.6,
            5.4,
            6.3,
            5.9,
            5.3,
            5.4,
            6.9,
            8.4,
            7.0,
            6.6,
            8.0,
            8.4,
            6.5,
            5.5,
            5.3,
            3.4,
            2.0,
            1.1,
            0.4,
            0.1,
            0.02,
        )
    )
)


def _death_probability(age: int) -> float:
    """Chance that a person of this age (today, had they lived) is recorded deceased."""
    for below, chance in ((40, 0.003), (60, 0.015), (70, 0.04), (80, 0.10), (90, 0.22)):
        if age < below:
            return chance
    return 0.40


# Surnames weighted by their share (‰) of the population, the most common 100 and a few compound ones.
_SURNAMES = _table(
    "王74 李74 张70 刘54 陈45 杨31 黄22 赵23 吴21 周19 徐17 孙15 马15 朱14 胡13 郭12 何12 林11 罗11 "
    "高11 郑10 梁10 谢8.5 宋8 唐8 许7.6 韩7.5 邓7.3 冯7.2 曹6.8 彭6.6 曾6.4 肖6.3 田6.1 董5.6 潘5.5 "
    "袁5.5 蔡5.3 蒋5.2 余5.1 于5.1 杜5 叶5 程4.8 魏4.6 苏4.6 吕4.6 丁4.5 任4.4 卢4.2 姚4.1 沈4.1 "
    "钟4 姜4 崔3.9 谭3.8 陆3.7 范3.5 汪3.5 廖3.4 石3.4 金3.3 韦3.2 贾3.2 夏3.1 付3.1 方3 邹2.9 熊2.9 "
    "白2.9 孟2.8 秦2.8 邱2.7 侯2.7 江2.6 尹2.6 薛2.5 闫2.5 段2.4 雷2.4 龙2.3 黎2.3 史2.3 陶2.2 贺2.2 "
    "毛2.1 郝2.1 顾2 龚2 邵2 万1.9 覃1.9 武1.9 钱1.8 戴1.8 严1.8 莫1.7 孔1.7 向1.7 常1.6 汤1.6 康1.6 "
    "易1.5 乔1.5 赖1.5 文1.5 欧阳0.5 司马0.1 上官0.1 诸葛0.05 东方0.05"
)
# Given-name characters by birth era (before 1960, 1960-89, from 1990): (male, female, P(one character)).
_GIVEN = (
    (
        "国建华明文德福志永春海金玉树荣山林忠祥生胜民军兴富贵宝庆成清",
        "秀英兰玉桂珍凤淑芳华琴素梅春荣云霞丽翠金莲花娥香",
        0.15,
    ),
    (
        "伟勇军磊涛斌强鹏杰峰超波辉刚健亮俊明林海宁东平华飞鑫洋龙",
        "丽娟敏静燕艳红霞玲婷芳丹萍莉颖雪琳慧梅晶倩洁蕾",
        0.30,
    ),
    (
        "浩宇轩子梓涵晨博俊一泽睿铭航然辰豪逸宸昊阳文瑞天",
        "欣怡萱雨诗佳梦可思琪涵子梓悦彤妍语馨婉依紫若晴瑶",
        0.10,
    ),
)
_TURKIC = (  # 维吾尔, 哈萨克, 柯尔克孜: given name · father's name
    _words("买买提 艾力 阿不都 吐尔逊 艾买提 努尔兰 热合曼 伊力 亚森 阿迪力 叶尔兰 别克"),
    _words("古丽 阿依古丽 热依拉 迪丽拜尔 帕提古丽 米娜 再努尔 阿依努尔 古丽娜 祖丽菲亚"),
)
_TIBETAN = (  # two names, the second often marks the sex
    _words("扎西 次仁 格桑 达瓦 尼玛 丹增 索朗 白玛 洛桑 强巴"),
    _words("多吉 顿珠 罗布 平措 巴桑 旺堆 加措 贡布"),
    _words("卓玛 央金 拉姆 德吉 曲珍 卓嘎 措姆 央宗"),
)
_MONGOLIAN = (
    _words("巴特尔 苏和 宝音 朝鲁 额尔敦 那顺 巴图 孟和"),
    _words("其其格 乌云 萨仁 娜仁 托娅 高娃 斯琴 塔娜"),
)
# Ethnic groups (%) by the office's province; elsewhere the national mix outside those provinces.
_ETHNICITIES = {
    "default": _table("汉97 回1 满0.8 蒙古0.3 土家0.3 苗0.3 壮0.3"),
    "15": _table("汉79 蒙古17 满2 回0.8 达斡尔0.3"),
    "21": _table("汉84 满12 蒙古1.6 回0.6 朝鲜0.5 锡伯0.3"),
    "22": _table("汉91 朝鲜3.8 满3.6 蒙古0.6 回0.4"),
    "42": _table("汉95 土家3.6 苗0.4"),
    "43": _table("汉90 土家4 苗3 侗1.3 瑶1"),
    "45": _table("汉62 壮32 瑶3 苗1 侗0.8"),
    "46": _table("汉84 黎15 苗0.8"),
    "50": _table("汉94 土家4.8 苗1.6"),
    "51": _table("汉94.5 彝3.3 藏1.8"),
    "52": _table("汉63 苗12 布依7 侗4.5 土家4 彝2.5 仡佬1.4"),
    "53": _table("汉67 彝11 哈尼3.5 白3.5 傣2.8 壮2.8 苗2.6 回1.5"),
    "54": _table("藏86 汉12 门巴0.3 回0.3"),
    "62": _table("汉91 回5 藏2 东乡2"),
    "63": _table("汉51 藏25 回15 土3.6 撒拉2 蒙古1.7"),
    "64": _table("汉64 回35"),
    "65": _table("汉42 维吾尔45 哈萨克6.5 回4 柯尔克孜0.8 蒙古0.7"),
}
_STREETS = _words(
    "人民路 解放路 中山路 建设路 和平路 新华路 胜利路 文化路 朝阳路 光明路 友谊路 团结路 幸福路 青年路 "
    "东风路 红旗路 长江路 黄河路 迎宾大道 滨河路 工农路 复兴路 育才路 学府路 金桥路 花园路 健康路 振兴路"
)
_TOWNS = _words(
    "城关镇 新华镇 红星镇 太平镇 永安镇 东风镇 长乐镇 新集镇 王庄镇 李集镇 清河镇 石桥镇 龙泉镇 白沙镇"
)


def _ethnicity(rng: _Random, office: DemoOffice) -> str:
    groups, weights = _ETHNICITIES.get(office.region[:2], _ETHNICITIES["default"])
    return rng.weighted(groups, weights)


def _name(rng: _Random, ethnicity: str, male: bool, year: int) -> str:
    if ethnicity in ("维吾尔", "哈萨克", "柯尔克孜"):
        return f"{rng.pick(_TURKIC[0 if male else 1])}·{rng.pick(_TURKIC[0])}"
    if ethnicity in ("藏", "门巴"):
        return rng.pick(_TIBETAN[0]) + rng.pick(_TIBETAN[1 if male else 2])
    if ethnicity == "蒙古" and rng.random() < 0.5:
        return rng.pick(_MONGOLIAN[0 if male else 1])
    return _han_name(rng, male, year)


def _han_name(rng: _Random, male: bool, year: int) -> str:
    surname = rng.weighted(_SURNAMES[0], _SURNAMES[1])
    men, women, one = _GIVEN[0 if year < 1960 else 1 if year < 1990 else 2]
    chars = men if male else women
    if rng.random() < one:
        return surname + rng.pick(chars)
    return surname + rng.pick(chars) + rng.pick(chars)


def _address(rng: _Random, office: DemoOffice) -> str:
    if office.rural and rng.random() < 0.6:
        village = rng.pick(_SURNAMES[0][:30]) + rng.pick(("家村", "庄村", "营村", "寨村"))
        return f"{office.address_prefix}{rng.pick(_TOWNS)}{village}{rng.rint(1, 12)}组{rng.rint(1, 80)}号"
    street = f"{office.address_prefix}{rng.pick(_STREETS)}{rng.rint(1, 300)}号"
    if rng.random() < 0.3:
        return street
    return f"{street}{rng.rint(1, 30)}栋{rng.rint(1, 6)}单元{rng.rint(1, 33)}{rng.rint(1, 4):02d}室"


# --- regions (GB/T 2260, from python-stdnum's cn/loc table) ------------------------------------

_SPAN = re.compile(r"\[(\d*)-(\d*)\](.*)")


@functools.cache
def _county_spans() -> dict[tuple[int, int], tuple[str, ...]]:
    """County-level codes by the span of years (first, last) each was in use.

    stdnum's `ric.validate` accepts a region only for a birth year inside one of its spans (a
    county that did not exist that year is refused), so these spans decide which codes a person
    born in a given year may carry. Provinces and prefectures (…00) and 市辖区 are left out.
    """
    spans: dict[tuple[int, int], list[str]] = {}
    for _length, province, _high, _props, children in numdb.get("cn/loc").prefixes:
        if province not in PROVINCE_POPULATION:
            continue
        for _clength, low, high, props, _children in children:
            for number in range(int(low), int(high) + 1):
                code = f"{province}{number:04d}"
                for alternative in props.get("county", "").split(","):
                    match = _SPAN.fullmatch(alternative)
                    first, last, county = (
                        (int(match[1] or 0), int(match[2] or 9999), match[3])
                        if match
                        else (0, 9999, alternative)
                    )
                    if not code.endswith("00") and county != "市辖区":
                        spans.setdefault((first, last), []).append(code)
    return {span: tuple(codes) for span, codes in spans.items()}


@dataclass(frozen=True, slots=True)
class _Regions:
    codes: frozenset[str]
    by_prefecture: dict[str, tuple[str, ...]]
    by_province: dict[str, tuple[str, ...]]
    provinces: tuple[str, ...]
    cum_weights: tuple[float, ...]


@functools.cache
def _regions(year: int) -> _Regions:
    """The county codes a person born in `year` may carry, grouped for `_region`."""
    spans = _county_spans()
    codes = sorted(
        {code for (first, last), group in spans.items() if first <= year <= last for code in group}
    )
    by_prefecture: dict[str, list[str]] = {}
    by_province: dict[str, list[str]] = {}
    for code in codes:
        by_prefecture.setdefault(code[:4], []).append(code)
        by_province.setdefault(code[:2], []).append(code)
    provinces = tuple(p for p in PROVINCE_POPULATION if p in by_province)
    return _Regions(
        frozenset(codes),
        {k: tuple(v) for k, v in by_prefecture.items()},
        {k: tuple(v) for k, v in by_province.items()},
        provinces,
        tuple(accumulate(PROVINCE_POPULATION[p] for p in provinces)),
    )


def _region(rng: _Random, office: DemoOffice, year: int) -> str:
    """Born where registered (the office's county, or nearby if it did not exist yet), or moved."""
    regions = _regions(year)
    if rng.random() < P_LOCAL_BIRTH:
        if office.region in regions.codes:
            return office.region
        nearby = regions.by_prefecture.get(office.region[:4]) or regions.by_province.get(office.region[:2])
        if nearby:
            return rng.pick(nearby)
    province = rng.weighted(regions.provinces, regions.cum_weights)
    return rng.pick(regions.by_province[province])
