"""The impersonator blacklist (冒用身份证人员黑名单): a supervisor lists a person found using
someone else's card, with a case number, a reason and an optional last day; lifts it with a
reason; an entry also ends by itself after its last day. One active entry per person. The
history (BlacklistEvent) is append-only and every step is audited. While an entry holds, every
check of the person's own cards carries the alert `blacklisted` and the person's registered
fingers are searched when someone else's finger fails a check (`known_impersonator`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from idguard.core.clock import today_cst
from idguard.core.errors import NotFound
from idguard.core.grants import Actor
from idguard.db.common import AuditEntry
from idguard.db.paging import Page, newest_first
from idguard.registry import lookups
from idguard.registry.lifecycle import EventKind
from idguard.registry.models import Person
from idguard.watchlist import rules
from idguard.watchlist.flags import announce, flags_of
from idguard.watchlist.models import BlacklistEntry, BlacklistEvent
from idguard.watchlist.rules import BlacklistAction, BlacklistReason, EntryStatus


@dataclass(frozen=True, slots=True)
class Listed:
    entry: BlacklistEntry
    person: Person
    history: list[BlacklistEvent]
    status: EntryStatus  # as of today (an entry past its last day has ended)


def list_person(
    session: Session,
    *,
    actor: Actor,
    now: dt.datetime,
    id_number: str,
    reason: BlacklistReason,
    case_no: str,
    until: dt.date | None,
    note: str | None,
) -> Listed:
    rules.require_manage_blacklist(actor)
    person = lookups.person_by_number(session, id_number, now=now)
    person = lookups.lock_person(session, person.id)
    today = today_cst(now)
    _end_if_due(session, person, now=now)
    active = session.scalar(
        sa.select(BlacklistEntry.entry_no).where(
            BlacklistEntry.person_id == person.id, BlacklistEntry.status == EntryStatus.ACTIVE
        )
    )
    rules.check_can_list(until=until, today=today, active=active is not None)
    entry = BlacklistEntry(
        entry_no=lookups.new_reference("BL"),
        person_id=person.id,
        reason=reason,
        case_no=case_no,
        note=note,
        listed_on=today,
        until=until,
        status=EntryStatus.ACTIVE,
        listed_by=actor.staff_id,
        listed_at=now,
        ended_at=None,
    )
    session.add(entry)
    session.flush()
    event = BlacklistEvent(
        entry_no=entry.entry_no,
        action=BlacklistAction.LISTED,
        at=now,
        staff_id=actor.staff_id,
        reason=f"{reason.value}; case {case_no}"[:500],
    )
    session.add(event)
    flags = flags_of(session, person)
    flags.blacklisted = True
    flags.blacklisted_until = until
    flags.updated_at = now
    announce(
        session,
        person,
        event=EventKind.BLACKLISTED,
        actor=actor,
        at=now,
        reason=f"{reason.value}; case {case_no}",
        reference=entry.entry_no,
    )
    session.add(
        AuditEntry(
            at=now,
            staff_id=actor.staff_id,
            action="blacklist.listed",
            person_id=person.id,
            detail=f"{entry.entry_no} case {case_no}"[:200],
        )
    )
    session.flush()
    return Listed(entry, person, [event], EntryStatus.ACTIVE)


def lift(session: Session, *, actor: Actor, now: dt.datetime, entry_no: str, reason: str) -> Listed:
    rules.require_manage_blacklist(actor)
    entry = session.get(BlacklistEntry, entry_no)
    if entry is None:
        raise NotFound(f"no blacklist entry {entry_no}")
    person = lookups.lock_person(session, entry.person_id)
    session.refresh(entry)
    rules.check_can_lift(rules.entry_status(entry.status, entry.until, today_cst(now)))
    _end(session, entry, person, action=BlacklistAction.LIFTED, actor=actor, now=now, reason=reason)
    session.add(
        AuditEntry(
            at=now,
            staff_id=actor.staff_id,
            action="blacklist.lifted",
            person_id=person.id,
            # The entry only: the reason is free text, sealed in the entry's history, never
            # copied into the chained audit log (docs/operations.md, sealed free text).
            detail=entry.entry_no,
        )
    )
    session.flush()
    return Listed(entry, person, _history(session, [entry.entry_no])[entry.entry_no], entry.status)


def expire_due(session: Session, *, now: dt.datetime, limit: int = 500) -> int:
    """End the active entries whose last day has passed (each worker runs this now and then; the
    index already stopped answering `blacklisted` at midnight, China Standard Time). Safe to run
    concurrently: each entry is re-read under its person's lock."""
    today = today_cst(now)
    due = session.execute(
        sa.select(BlacklistEntry.entry_no, BlacklistEntry.person_id)
        .where(BlacklistEntry.status == EntryStatus.ACTIVE, BlacklistEntry.until < today)
        .limit(limit)
    ).all()
    ended = 0
    for _, person_id in due:
        person = lookups.lock_person(session, person_id)
        ended += _end_if_due(session, person, now=now)
    return ended


def _end_if_due(session: Session, person: Person, *, now: dt.datetime) -> int:
    """With the person locked: end their active entry if its last day has passed."""
    entry = session.scalars(
        sa.select(BlacklistEntry)
        .where(BlacklistEntry.person_id == person.id, BlacklistEntry.status == EntryStatus.ACTIVE)
        .execution_options(populate_existing=True)
    ).one_or_none()
    if entry is None or rules.entry_status(entry.status, entry.until, today_cst(now)) is EntryStatus.ACTIVE:
        return 0
    _end(
        session,
        entry,
        person,
        action=BlacklistAction.EXPIRED,
        actor=None,
        now=now,
        reason=f"ended after {entry.until}",
    )
    session.add(
        AuditEntry(
            at=now, staff_id=None, action="blacklist.expired", person_id=person.id, detail=entry.entry_no
        )
    )
    return 1


def _end(
    session: Session,
    entry: BlacklistEntry,
    person: Person,
    *,
    action: BlacklistAction,
    actor: Actor | None,
    now: dt.datetime,
    reason: str,
) -> None:
    entry.status = EntryStatus.LIFTED if action is BlacklistAction.LIFTED else EntryStatus.EXPIRED
    entry.ended_at = now
    session.add(
        BlacklistEvent(
            entry_no=entry.entry_no,
            action=action,
            at=now,
            staff_id=actor.staff_id if actor else None,
            reason=reason[:500],
        )
    )
    flags = flags_of(session, person)
    flags.blacklisted = False
    flags.blacklisted_until = None
    flags.updated_at = now
    announce(
        session,
        person,
        event=EventKind.BLACKLIST_ENDED,
        actor=actor,
        at=now,
        # A lifting reason is staff free text: sealed in the BlacklistEvent, and never copied
        # into the chained ledger (which cannot be sealed: docs/operations.md). An expiry's is ours.
        reason=action.value if action is BlacklistAction.LIFTED else f"{action.value}: {reason}",
        reference=entry.entry_no,
    )


def _history(session: Session, entry_nos: Sequence[str]) -> dict[str, list[BlacklistEvent]]:
    history: dict[str, list[BlacklistEvent]] = {no: [] for no in entry_nos}
    if entry_nos:
        for event in session.scalars(
            sa.select(BlacklistEvent)
            .where(BlacklistEvent.entry_no.in_(list(entry_nos)))
            .order_by(BlacklistEvent.id)
        ):
            history[event.entry_no].append(event)
    return history


def entries(
    session: Session,
    *,
    actor: Actor,
    now: dt.datetime,
    status: EntryStatus | None,
    after: tuple[dt.datetime, str] | None,
    limit: int,
) -> tuple[list[Listed], bool]:
    """Entries newest first with their history, by status as of today; each person shown is an
    audited read."""
    rules.require_read_blacklist(actor)
    today = today_cst(now)
    stmt = sa.select(BlacklistEntry)
    holds = sa.or_(BlacklistEntry.until.is_(None), BlacklistEntry.until >= today)
    if status is EntryStatus.ACTIVE:
        stmt = stmt.where(BlacklistEntry.status == EntryStatus.ACTIVE, holds)
    elif status is EntryStatus.EXPIRED:
        stmt = stmt.where(
            sa.or_(
                BlacklistEntry.status == EntryStatus.EXPIRED,
                sa.and_(BlacklistEntry.status == EntryStatus.ACTIVE, sa.not_(holds)),
            )
        )
    elif status is EntryStatus.LIFTED:
        stmt = stmt.where(BlacklistEntry.status == EntryStatus.LIFTED)
    page: Page[BlacklistEntry] = newest_first(
        session, stmt, keys=(BlacklistEntry.listed_at, BlacklistEntry.entry_no), after=after, limit=limit
    )
    persons = {
        p.id: p
        for p in session.scalars(sa.select(Person).where(Person.id.in_({e.person_id for e in page.rows})))
    }
    history = _history(session, [e.entry_no for e in page.rows])
    out = []
    for entry in page.rows:
        person = persons[entry.person_id]
        lookups.audit_read(
            session, actor, action="blacklist.read", person=person, at=now, detail=entry.entry_no
        )
        out.append(
            Listed(
                entry, person, history[entry.entry_no], rules.entry_status(entry.status, entry.until, today)
            )
        )
    return out, page.more
