"""Shared lookups for the registry services: persons, cards, offices, locks, audit."""

from __future__ import annotations

import datetime as dt
import secrets
import uuid

import sqlalchemy as sa
from sqlalchemy.orm import Session

from idguard.core import idnumber
from idguard.core.clock import today_cst
from idguard.core.errors import InvalidField, NotFound
from idguard.core.grants import Actor, Permission
from idguard.db.common import AuditEntry
from idguard.registry.lifecycle import CardView
from idguard.registry.models import Card, Office, Person


def new_reference(prefix: str) -> str:
    """A receipt number: prefix + 12 unguessable base-32 characters (it authorises a cancel)."""
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    return prefix + "".join(secrets.choice(alphabet) for _ in range(12))


def require_office(session: Session, code: str, *, field: str = "office") -> Office:
    office = session.get(Office, code)
    if office is None:
        raise InvalidField(field, f"unknown office code {code!r}", code="unknown_office")
    return office


def acting_at(session: Session, actor: Actor, office: str, *, field: str = "office") -> None:
    """Authorise a registry write at `office` (a clerk only at their own). A clerk's office exists
    by the staff table's foreign key, so only other roles cost a lookup."""
    actor.require_office(office)
    if actor.may(Permission.ALL_OFFICES):
        require_office(session, office, field=field)


def person_by_number(session: Session, id_number: str, *, now: dt.datetime) -> Person:
    number = idnumber.parse(id_number, today=today_cst(now)).value
    stmt = sa.select(Person).where(Person.id_number == number)
    person = session.scalars(stmt).one_or_none()
    if person is None:
        raise NotFound(f"no person with id number {idnumber.mask(number)}")
    return person


def lock_person(session: Session, person_id: uuid.UUID) -> Person:
    """Take the person-level lock (the top of the lock hierarchy, see registry/__init__.py).

    FOR NO KEY UPDATE (`key_share=True`) everywhere: inserting a ledger event or a report takes a
    KEY SHARE lock on the rows it references, which plain FOR UPDATE would block — a deadlock
    between a loss report (card locked, inserting an event that references the person) and an
    issue (person locked, waiting for the card).
    """
    stmt = (
        sa.select(Person)
        .where(Person.id == person_id)
        .with_for_update(key_share=True)
        .execution_options(populate_existing=True)
    )
    return session.scalars(stmt).one()


def cards_of(session: Session, person_id: uuid.UUID, *, lock: bool = False) -> list[Card]:
    """The person's cards, oldest first; `lock` takes every card's lock (after the person's)."""
    stmt = (
        sa.select(Card)
        .where(Card.person_id == person_id)
        .order_by(Card.issued_on, Card.created_at, Card.id)
        .execution_options(populate_existing=True)
    )
    if lock:
        stmt = stmt.with_for_update(key_share=True)
    return list(session.scalars(stmt))


def lock_card(session: Session, card_id: uuid.UUID | str) -> tuple[Card, Person]:
    """Lock one card and read it with its holder, in one round trip (the loss-report hot path).

    Only the card row is locked: operations on a single card need nothing more, and operations
    on several cards take the person lock first and then these same card locks, so the order
    is always person → card and no two transactions can wait on each other in a cycle.
    PostgreSQL re-reads a locked row after a lock wait, so the card comes back as the previous
    writer left it. The holder's fields used here (number, birth date, name) do not change.
    """
    try:
        key = card_id if isinstance(card_id, uuid.UUID) else uuid.UUID(str(card_id))
    except ValueError:
        raise NotFound(f"no card {card_id}") from None
    stmt = (
        sa.select(Card, Person)
        .join(Person, Person.id == Card.person_id)
        .where(Card.id == key)
        .with_for_update(of=Card, key_share=True)
        .execution_options(populate_existing=True)
    )
    row = session.execute(stmt).one_or_none()
    if row is None:
        raise NotFound(f"no card {key}")
    return row[0], row[1]


def card_by_id(session: Session, card_id: uuid.UUID | str, *, field: str = "card_id") -> Card:
    try:
        key = card_id if isinstance(card_id, uuid.UUID) else uuid.UUID(str(card_id))
    except ValueError:
        raise NotFound(f"no card {card_id}") from None
    card = session.get(Card, key, populate_existing=True)
    if card is None:
        raise NotFound(f"no card {key}")
    return card


def view(card: Card) -> CardView:
    return CardView(
        card_id=str(card.id),
        status=card.status,
        issued_on=card.issued_on,
        expires_on=card.expires_on,
        temporary=card.temporary,
        fingerprints_registered=card.fingerprints_registered,
        superseded_by=str(card.superseded_by) if card.superseded_by else None,
    )


def audit_read(
    session: Session,
    actor: Actor,
    *,
    action: str,
    person: Person,
    at: dt.datetime,
    detail: str | None = None,
) -> None:
    """Every staff read of personal data is itself recorded."""
    session.add(AuditEntry(at=at, staff_id=actor.staff_id, action=action, person_id=person.id, detail=detail))
