"""Victim protection: the holder (or the police) requires the person-card check on every check of
the holder's cards; from then on a check without the holder's matching finger carries the alert
`person_check_required` (API.md part 2). Every change is a ProtectionEvent (append-only) and a
ledger event on each card."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session

from idguard.core.grants import Actor
from idguard.db.common import AuditEntry
from idguard.registry import lookups
from idguard.registry.lifecycle import EventKind
from idguard.registry.models import Person
from idguard.watchlist import rules
from idguard.watchlist.flags import announce, flags_of
from idguard.watchlist.models import ProtectionEvent

HOLDER = "holder"


def set_protection(
    session: Session, *, id_number: str, required: bool, reason: str, by: str, at: dt.datetime
) -> None:
    """Require (or release) the person-card check on the holder's cards; `by` is "holder" or
    the member of staff's username (the caller has authorised them). Writes the ledger, so every
    worker's answers change within the bound of a loss report. Setting what is already set is
    recorded and changes nothing else."""
    person = lookups.person_by_number(session, id_number, now=at)
    _set(session, person, required=required, reason=reason, by=by, actor=None, at=at)


def protect(
    session: Session, *, actor: Actor, now: dt.datetime, id_number: str, required: bool, reason: str
) -> tuple[Person, bool]:
    """The staff route's use-case: a clerk of the holder's hukou office, or a supervisor."""
    person = lookups.person_by_number(session, id_number, now=now)
    rules.require_protect(actor, hukou_office=person.hukou_office)
    _set(session, person, required=required, reason=reason, by=actor.username, actor=actor, at=now)
    session.add(
        AuditEntry(
            at=now,
            staff_id=actor.staff_id,
            action="protection.set" if required else "protection.cleared",
            person_id=person.id,
            # No reason: it is free text, sealed in the ProtectionEvent, never copied into the
            # chained audit log (docs/operations.md, sealed free text).
            detail=None,
        )
    )
    return person, required


def _set(
    session: Session,
    person: Person,
    *,
    required: bool,
    reason: str,
    by: str,
    actor: Actor | None,
    at: dt.datetime,
) -> None:
    person = lookups.lock_person(session, person.id)
    flags = flags_of(session, person)
    changed = flags.person_check_required != required
    session.add(
        ProtectionEvent(person_id=person.id, required=required, reason=reason[:500], by=by[:64], at=at)
    )
    if not changed:
        return
    flags.person_check_required = required
    flags.updated_at = at
    announce(
        session,
        person,
        event=EventKind.PROTECTION_SET if required else EventKind.PROTECTION_CLEARED,
        actor=actor,
        at=at,
        reason=by,  # who; the why is free text, sealed in the ProtectionEvent, not in the ledger
        reference=None,
    )
