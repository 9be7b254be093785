"""Shared lookups for the registry services: persons, cards, offices, locks, audit."""

from __future__ import annotations

import datetime as dt
import secrets
import uuid

import sqlalchemy as sa
from sqlalchemy.orm import Session

from idguard.db.models import AuditEntry, Card, Office, Person
from idguard.domain import idnumber
from idguard.domain.cards import CardView
from idguard.domain.clock import today_cst
from idguard.domain.errors import InvalidField, NotFound
from idguard.domain.roles import Actor, Role


def new_reference(prefix: str) -> str:
    """A receipt number: prefix + 12 unguessable base-32 characters (it authorises a cancel)."""
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    return prefix + "".join(secrets.choice(alphabet) for _ in range(12))


def require_office(session: Session, code: str, *, field: str = "office") -> Office:
    office = session.get(Office, code)
    if office is None:
        raise InvalidField(field, f"unknown office code {code!r}")
    return office


def acting_at(session: Session, actor: Actor, office: str, *, field: str = "office") -> None:
    """Authorise a registry write at `office` (a clerk only at their own). A clerk's office exists
    by the staff table's foreign key, so only other roles cost a lookup."""
    actor.require_office(office)
    if actor.role is not Role.CLERK:
        require_office(session, office, field=field)


def person_by_number(session: Session, id_number: str, *, now: dt.datetime, lock: bool = False) -> Person:
    number = idnumber.parse(id_number, today=today_cst(now)).value
    stmt = sa.select(Person).where(Person.id_number == number)
    if lock:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    person = session.scalars(stmt).one_or_none()
    if person is None:
        raise NotFound(f"no person with id number {idnumber.mask(number)}")
    return person


def lock_person(session: Session, person_id: uuid.UUID) -> Person:
    """Take the per-person write lock (see services/__init__.py)."""
    stmt = (
        sa.select(Person)
        .where(Person.id == person_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return session.scalars(stmt).one()


def cards_of(session: Session, person_id: uuid.UUID) -> list[Card]:
    stmt = (
        sa.select(Card)
        .where(Card.person_id == person_id)
        .order_by(Card.issued_on, Card.created_at)
        .execution_options(populate_existing=True)
    )
    return list(session.scalars(stmt))


def lock_card(session: Session, card_id: str) -> tuple[Card, Person]:
    """Lock the card's holder, then read the card: two round trips (the loss report hot path).

    Locks are always taken person first (see services/__init__.py); the card is read by a new
    statement after the lock is held, so PostgreSQL shows it as the previous writer left it.
    """
    try:
        key = uuid.UUID(card_id)
    except ValueError:
        raise NotFound(f"no card {card_id}") from None
    holder_of = sa.select(Card.person_id).where(Card.id == key).scalar_subquery()
    person = session.scalars(
        sa.select(Person)
        .where(Person.id == holder_of)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one_or_none()
    if person is None:
        raise NotFound(f"no card {key}")
    return card_by_id(session, key), person


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
