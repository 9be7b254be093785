"""Incidents (冒用线索): opened automatically from the signals of impersonation, never by a unit's
answer alone — a lost or stolen card presented, a failed person-card check, a listed person's own
card checked, a live finger matching a listed person, a check the holder disputes, a unit whose
checks look like harvesting. Owned by the holder's hukou office; one per (card, kind, unit, day)
with a count; closed once as confirmed or dismissed with a note; never deleted.

The checks' signals reach `record_signals` off the request path (watchlist/runtime.py, fed by the
check log once the checks are durable): an incident costs a check nothing.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from idguard.core.clock import today_cst
from idguard.core.errors import InvalidField, NotFound, RuleViolation
from idguard.core.grants import Actor
from idguard.core.idnumber import mask
from idguard.db.common import AuditEntry
from idguard.db.paging import newest_first
from idguard.registry import lookups
from idguard.registry.models import Card, LossReport, Person
from idguard.verification import units
from idguard.verification.models import Unit
from idguard.verification.runtime.checklog import Signal
from idguard.watchlist import rules
from idguard.watchlist.models import BlacklistEntry, BlacklistEvent, Incident
from idguard.watchlist.rules import UNIT_KINDS, BlacklistAction, IncidentKind, IncidentStatus, Outcome

_incidents = cast(sa.Table, Incident.__table__)


def _new_incident_no() -> str:
    return lookups.new_reference("INC")


def _row(
    *,
    kind: IncidentKind,
    subject: str,
    person_id: uuid.UUID | None,
    card_id: uuid.UUID | None,
    office: str | None,
    unit_code: str | None,
    check_id: str | None,
    at: dt.datetime,
    matched_card_id: uuid.UUID | None = None,
    detail: str | None = None,
    count: int = 1,
    last_at: dt.datetime | None = None,
) -> dict[str, Any]:
    """The incidents row that opens the incident: `count` signals, the last at `last_at` (else
    `at`)."""
    return {
        "incident_no": _new_incident_no(),
        "kind": kind,
        "status": IncidentStatus.OPEN,
        "dedup_key": rules.dedup_key(kind=kind, subject=subject, unit_code=unit_code, day=today_cst(at)),
        "person_id": person_id,
        "card_id": card_id,
        "office": office,
        "unit_code": unit_code,
        "check_id": check_id,
        "matched_card_id": matched_card_id,
        "detail": None if detail is None else detail[:200],
        "count": count,
        "opened_at": at,
        "last_at": last_at or at,
    }


def _upsert_statement(session: Session) -> Any:
    """Open a row's incident, or count its signals on the day's incident of the same (card,
    kind, unit) (its dedup key): one statement, so two workers seeing the same signal make one
    incident. Executed with the rows as its parameters (rows of one call: distinct dedup keys)."""
    postgres = session.connection().dialect.name == "postgresql"
    stmt = (postgresql.insert if postgres else sqlite.insert)(_incidents)
    later = sa.func.greatest if postgres else sa.func.max  # SQLite's two-argument max
    return stmt.on_conflict_do_update(
        index_elements=[_incidents.c.dedup_key],
        set_={
            "count": _incidents.c.count + stmt.excluded.count,
            "last_at": later(_incidents.c.last_at, stmt.excluded.last_at),
        },
    )


def _upsert(session: Session, **incident: Any) -> str:
    """Open the incident, or count on the day's one (`_upsert_statement`); its incident_no."""
    stmt = _upsert_statement(session).returning(_incidents.c.incident_no)
    return str(session.execute(stmt, _row(**incident)).scalar_one())


def _upsert_many(session: Session, incidents: list[dict[str, Any]]) -> None:
    """`_upsert` for a round's incidents (distinct dedup keys): one statement, compiled once and
    cached, executed for all of them at once (the driver's executemany)."""
    if incidents:
        session.execute(_upsert_statement(session), [_row(**incident) for incident in incidents])


def open_incident(
    session: Session,
    *,
    kind: str,
    id_number: str,
    unit_code: str | None,
    check_id: str | None,
    at: dt.datetime,
) -> str:
    """Open an incident about the holder of `id_number` (the citizens' dispute uses it); returns
    its incident_no. One per (person, kind, unit, day): a repeat counts on the same incident."""
    try:
        incident_kind = IncidentKind(kind)
    except ValueError:
        raise InvalidField("kind", f"unknown incident kind {kind!r}") from None
    person = lookups.person_by_number(session, id_number, now=at)
    return _upsert(
        session,
        kind=incident_kind,
        subject=str(person.id),
        person_id=person.id,
        card_id=None,
        office=person.hukou_office,
        unit_code=unit_code,
        check_id=check_id,
        at=at,
    )


def record_signals(session: Session, signals: Iterable[Signal]) -> int:
    """The incidents of checks' signals (the watchlist's writer thread); returns how many signals
    were counted (an incident each, or one more on the day's incident).

    The signals of one round that fall on the same incident (card, kind, unit, day: a bank
    retrying a lost card) are counted in one statement: the incident as the first of them opens
    it (its check, time and detail), the count and the last time of them all."""
    counted = 0
    signals = list(signals)
    cards = _signalled_cards(session, {(s[3], s[4]) for s in signals})
    groups: dict[tuple[str, uuid.UUID, str, dt.date], dict[str, Any]] = {}
    for check_id, unit_code, at, id_number, issued_on, kinds, detail in signals:
        card = cards.get((id_number, issued_on))
        if card is None:  # cannot happen for a matching check; nothing to own it
            continue
        card_id, person_id, office = card
        for kind in kinds:
            counted += 1
            group = groups.get((kind, card_id, unit_code, today_cst(at)))
            if group is not None:
                group["count"] += 1
                group["last_at"] = max(group["last_at"], at)
                continue
            groups[(kind, card_id, unit_code, today_cst(at))] = {
                "kind": IncidentKind(kind),
                "subject": str(card_id),
                "person_id": person_id,
                "card_id": card_id,
                "office": office,
                "unit_code": unit_code,
                "check_id": check_id,
                "at": at,
                "last_at": at,
                "count": 1,
                "matched_card_id": uuid.UUID(detail)
                if detail and kind == IncidentKind.KNOWN_IMPERSONATOR
                else None,
            }
    _upsert_many(session, list(groups.values()))
    return counted


_CARDS_PER_STATEMENT = 500


def _signalled_cards(
    session: Session, keys: set[tuple[str, dt.date]]
) -> dict[tuple[str, dt.date], tuple[uuid.UUID, uuid.UUID, str]]:
    """The card each (id number, issue date) names, with its holder and hukou office, read in one
    statement per _CARDS_PER_STATEMENT numbers (a round's worth, not one per signal): the
    permanent card where a temporary one shares its number and date."""
    found: dict[tuple[str, dt.date], tuple[bool, uuid.UUID, uuid.UUID, str]] = {}
    numbers = sorted({number for number, _ in keys})
    for start in range(0, len(numbers), _CARDS_PER_STATEMENT):
        rows = session.execute(
            sa.select(
                Card.id_number, Card.issued_on, Card.temporary, Card.id, Card.person_id, Person.hukou_office
            )
            .join(Person, Person.id == Card.person_id)
            .where(Card.id_number.in_(numbers[start : start + _CARDS_PER_STATEMENT]))
        ).all()
        for number, issued_on, temporary, card_id, person_id, office in rows:
            key = (number, issued_on)
            if key in keys and (key not in found or (found[key][0] and not temporary)):
                found[key] = (bool(temporary), card_id, person_id, office)
    return {key: (card_id, person_id, office) for key, (_, card_id, person_id, office) in found.items()}


OfflineCheck = tuple[str, str, dt.datetime, str, str | None, str]
"""An uploaded offline check: (check_id, unit_code, at, id_number, chip_serial or None, result)."""


def offline_signals(session: Session, checks: Sequence[OfflineCheck]) -> list[Signal]:
    """The signals of checks a unit made offline and uploads later (offline/uploads.py), judged
    as the online check would have been at the check's own time, so `record_signals` opens the
    same incidents with the same dedup rule (card, kind, unit, day):

    - the card: the one with this id number and chip serial (the reader read the serial from the
      chip). An older reader that uploads no serial identifies a card only by a `valid` answer:
      the holder's latest regular card issued by that day. Otherwise (a serial no card of that
      number has, an `invalid` answer without a serial) there is no card — an online `mismatch`,
      which signals nothing either;
    - `lost_card_presented`: a loss report on that card was standing at the check's time
      (accepted before it, not cancelled by then), whatever the reader answered: a set that was
      stale at the gate is exactly when this incident matters;
    - `blacklisted_holder_checked`: the holder was listed at the check's time (listed before it,
      not ended by then, its last day not past)."""
    signals: list[Signal] = []
    for check_id, unit_code, at, id_number, chip_serial, result in checks:
        card = _offline_card(session, id_number, chip_serial, result, at)
        if card is None:
            continue
        card_id, person_id, issued_on = card
        kinds: list[str] = []
        standing = session.scalar(
            sa.select(LossReport.report_no)
            .where(
                LossReport.card_id == card_id,
                LossReport.accepted_at <= at,
                sa.or_(LossReport.cancelled_at.is_(None), LossReport.cancelled_at > at),
            )
            .limit(1)
        )
        if standing is not None:
            kinds.append(IncidentKind.LOST_CARD_PRESENTED.value)
        if _listed_at(session, person_id, at):
            kinds.append(IncidentKind.BLACKLISTED_HOLDER_CHECKED.value)
        if kinds:
            signals.append((check_id, unit_code, at, id_number, issued_on, tuple(kinds), None))
    return signals


def _offline_card(
    session: Session, id_number: str, chip_serial: str | None, result: str, at: dt.datetime
) -> tuple[uuid.UUID, uuid.UUID, dt.date] | None:
    stmt = sa.select(Card.id, Card.person_id, Card.issued_on).where(Card.id_number == id_number)
    if chip_serial is not None:
        stmt = stmt.where(Card.chip_serial == chip_serial)
    elif result == "valid":
        stmt = stmt.where(Card.issued_on <= today_cst(at), sa.not_(Card.temporary)).order_by(
            Card.issued_on.desc()
        )
    else:
        return None
    row = session.execute(stmt.limit(1)).one_or_none()
    return None if row is None else (row[0], row[1], row[2])


def _listed_at(session: Session, person_id: uuid.UUID, at: dt.datetime) -> bool:
    """Whether the person was on the blacklist at `at` (by the entries' own history)."""
    day = today_cst(at)
    ended = (
        sa.select(BlacklistEvent.id)
        .where(
            BlacklistEvent.entry_no == BlacklistEntry.entry_no,
            BlacklistEvent.action != BlacklistAction.LISTED,
            BlacklistEvent.at <= at,
        )
        .exists()
    )
    listed = (
        sa.select(BlacklistEvent.id)
        .where(
            BlacklistEvent.entry_no == BlacklistEntry.entry_no,
            BlacklistEvent.action == BlacklistAction.LISTED,
            BlacklistEvent.at <= at,
        )
        .exists()
    )
    found = session.scalar(
        sa.select(BlacklistEntry.entry_no)
        .where(
            BlacklistEntry.person_id == person_id,
            BlacklistEntry.listed_on <= day,
            sa.or_(BlacklistEntry.until.is_(None), BlacklistEntry.until >= day),
            listed,
            sa.not_(ended),
        )
        .limit(1)
    )
    return found is not None


def harvesting_suspected(session: Session, *, unit_code: str, reason: str, at: dt.datetime) -> str:
    """A unit's checks look like harvesting (verification/harvesting.py): an incident for the
    supervisors; closing it clears the unit's throttle."""
    return _upsert(
        session,
        kind=IncidentKind.HARVESTING_SUSPECTED,
        subject=unit_code,
        person_id=None,
        card_id=None,
        office=None,
        unit_code=unit_code,
        check_id=None,
        at=at,
        detail=reason,
    )


# --- reading ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Shown:
    """An incident as one member of staff may see it."""

    incident: Incident
    id_number: str | None  # full or masked, per rules.sees_number; None for a unit's incident


_Select = sa.Select[*tuple[Any, ...]]


def _visible(actor: Actor, stmt: _Select, office: str | None) -> _Select:
    """Supervisors and auditors: every incident (`office` filters). A clerk: their own office's
    holders' by default; another office's when asked (`office`), with masked numbers; never a
    unit's harvesting."""
    rules.require_read_incidents(actor)
    if rules.reads_every_office(actor):
        return stmt if office is None else stmt.where(Incident.office == office)
    return stmt.where(Incident.office == (office or actor.office), Incident.kind.not_in(list(UNIT_KINDS)))


def _show(
    session: Session, actor: Actor, rows: Sequence[tuple[Incident, str | None]], now: dt.datetime
) -> list[Shown]:
    shown = []
    audited: set[uuid.UUID] = set()
    for incident, number in rows:
        if number is not None and rules.sees_number(actor, incident.office):
            if incident.person_id is not None and incident.person_id not in audited:
                audited.add(incident.person_id)
                session.add(
                    AuditEntry(
                        at=now,
                        staff_id=actor.staff_id,
                        action="incident.read",
                        person_id=incident.person_id,
                        detail=incident.incident_no,
                    )
                )
            shown.append(Shown(incident, number))
        else:
            shown.append(Shown(incident, None if number is None else mask(number)))
    return shown


def list_incidents(
    session: Session,
    *,
    actor: Actor,
    now: dt.datetime,
    status: IncidentStatus | None,
    kind: IncidentKind | None,
    office: str | None,
    after: tuple[dt.datetime, int] | None,
    limit: int,
) -> tuple[list[Shown], bool]:
    stmt: _Select = sa.select(Incident, Person.id_number).outerjoin(Person, Person.id == Incident.person_id)
    stmt = _visible(actor, stmt, office)
    if status is not None:
        stmt = stmt.where(Incident.status == status)
    if kind is not None:
        stmt = stmt.where(Incident.kind == kind)
    page = newest_first(
        session, stmt, keys=(Incident.opened_at, Incident.seq), after=after, limit=limit, scalars=False
    )
    return _show(session, actor, [(row[0], row[1]) for row in page.rows], now), page.more


def new_since(
    session: Session, *, actor: Actor, now: dt.datetime, floor: int, sent: set[int], limit: int = 100
) -> list[Shown]:
    """Incidents after `floor` (by seq) not in `sent`, oldest first (the event stream)."""
    stmt = sa.select(Incident, Person.id_number).outerjoin(Person, Person.id == Incident.person_id)
    stmt = (
        _visible(actor, stmt, None)
        .where(Incident.seq > floor)
        .order_by(Incident.seq)
        .limit(limit + len(sent))
    )
    rows = [(row[0], row[1]) for row in session.execute(stmt) if row[0].seq not in sent][:limit]
    return _show(session, actor, rows, now)


def latest_seq(session: Session) -> int:
    return int(session.scalar(sa.select(sa.func.max(Incident.seq))) or 0)


def close(
    session: Session, *, actor: Actor, now: dt.datetime, incident_no: str, outcome: Outcome, note: str
) -> Shown:
    row = session.execute(
        sa.select(Incident, Person.id_number)
        .outerjoin(Person, Person.id == Incident.person_id)
        .where(Incident.incident_no == incident_no)
        .with_for_update(of=Incident)
    ).one_or_none()
    if row is None:
        raise NotFound(f"no incident {incident_no}")
    incident, number = row[0], row[1]
    rules.require_close(actor, kind=incident.kind, office=incident.office)
    if incident.status is not IncidentStatus.OPEN:
        raise RuleViolation(f"the incident is already closed ({incident.status.value})")
    incident.status = IncidentStatus(outcome.value)
    incident.closed_at = now
    incident.closed_by = actor.staff_id
    incident.note = note[:500]
    session.add(
        AuditEntry(
            at=now,
            staff_id=actor.staff_id,
            action="incident.closed",
            person_id=incident.person_id,
            detail=f"{incident_no}: {outcome.value}"[:200],
        )
    )
    if incident.kind is IncidentKind.HARVESTING_SUSPECTED and incident.unit_code is not None:
        unit = session.get(Unit, incident.unit_code)
        if unit is not None and unit.harvesting_suspected_at is not None:
            # The unit is throttled until a supervisor closes its incident (API.md part 2).
            units.clear_harvesting(session, actor=actor, now=now, code=incident.unit_code)
    session.flush()
    return _show(session, actor, [(incident, number)], now)[0]


def for_person(session: Session, *, id_number: str) -> list[dict[str, object]]:
    """The holder's own incidents (the citizens' view): incident_no, kind, status, opened_at,
    unit_code, check_id, count; newest first."""
    person = session.scalar(sa.select(Person).where(Person.id_number == id_number))
    if person is None:
        return []
    rows = session.scalars(
        sa.select(Incident)
        .where(Incident.person_id == person.id)
        .order_by(Incident.opened_at.desc(), Incident.seq.desc())
    )
    return [
        {
            "incident_no": i.incident_no,
            "kind": i.kind.value,
            "status": i.status.value,
            "opened_at": i.opened_at,
            "unit_code": i.unit_code,
            "check_id": i.check_id,
            "count": i.count,
        }
        for i in rows
    ]
