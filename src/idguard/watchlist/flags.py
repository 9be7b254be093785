"""The alert flags of a person (verification.models.PersonFlags), changed only here: the row,
and a watchlist event on each of the person's cards in the ledger, so every worker's index
re-reads the cards with their new flags (within the bound of a loss report)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy.orm import Session

from idguard.core.grants import Actor
from idguard.registry import ledger, lookups
from idguard.registry.lifecycle import EventKind
from idguard.registry.models import Person
from idguard.verification.models import PersonFlags


def flags_of(session: Session, person: Person) -> PersonFlags:
    """The person's flags row (created, all clear, when there is none)."""
    flags = session.get(PersonFlags, person.id, populate_existing=True)
    if flags is None:
        flags = PersonFlags(
            person_id=person.id,
            blacklisted=False,
            blacklisted_until=None,
            person_check_required=False,
            updated_at=person.created_at,
        )
        session.add(flags)
    return flags


def announce(
    session: Session,
    person: Person,
    *,
    event: EventKind,
    actor: Actor | None,
    at: dt.datetime,
    reason: str | None,
    reference: str | None,
) -> None:
    """The ledger event on each of the person's cards (locked after the person, the registry's
    lock order). The flags row must be flushed first: the follower reads it with the cards."""
    session.flush()
    cards = lookups.cards_of(session, person.id, lock=True)
    office = actor.office if actor is not None else None
    ledger.record_on_cards(
        session,
        cards,
        event=event,
        actor=actor,
        office=office,
        at=at,
        reason=None if reason is None else reason[:200],
        reference=reference,
    )
