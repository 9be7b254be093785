"""Shared lookups for the registry services: persons, cards, offices, locks, audit."""

from __future__ import annotations

import datetime as dt
import secrets
import uuid
from typing import cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from idguard.core import idnumber
from idguard.core.clock import today_cst
from idguard.core.errors import InvalidField, NotFound
from idguard.core.grants import Actor, Permission
from idguard.db.common import AuditEntry
from idguard.registry.lifecycle import CardView
from idguard.registry.models import Card, Office, Person

_REFERENCE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


def new_reference(prefix: str) -> str:
    """A receipt number: prefix + 12 unguessable base-32 characters (it authorises a cancel):
    60 random bits, 5 to a character (as 12 `secrets.choice` of the 32, in one call)."""
    bits = secrets.randbits(60)
    return prefix + "".join(_REFERENCE_ALPHABET[(bits >> shift) & 31] for shift in range(0, 60, 5))


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
    """The person with this id number: InvalidField for a number that is not valid (as
    `idnumber.parse` says), NotFound for a valid one nobody has."""
    number = idnumber.normalise(id_number)
    person = session.scalars(_PERSON_BY_NUMBER, {"number": number}).one_or_none()
    _check_number(person is not None, id_number, number, now)
    assert person is not None  # noqa: S101 - _check_number raised otherwise
    return person


_PERSON_BY_NUMBER = sa.select(Person).where(Person.id_number == sa.bindparam("number"))


def _check_number(found: bool, id_number: str, number: str, now: dt.datetime) -> None:
    """What `idnumber.parse` before the lookup would have raised, at the cost of a parse only
    when no one was found. A registered person's number was parsed at registration, and its
    region and past birth date stay valid (a birth date after `now` is parsed again, to refuse
    it as before); so the common case, the number of a registered person, skips the parse."""
    today = today_cst(now)
    if found and number[6:14] <= f"{today:%Y%m%d}":
        return
    valid = idnumber.parse(id_number, today=today).value  # InvalidField for an invalid number
    if not found:
        raise NotFound(f"no person with id number {idnumber.mask(valid)}")


_audit = cast(sa.Table, AuditEntry.__table__)
_PERSON_WITH_CARDS = (
    sa.select(Person, Card)
    .outerjoin(Card, Card.person_id == Person.id)
    .where(Person.id_number == sa.bindparam("number"))
    .order_by(Card.issued_on, Card.created_at, Card.id)
    .execution_options(populate_existing=True)
)
_AUDIT_VALUES = {
    name: sa.bindparam(f"audit_{name}", type_=_audit.c[name].type)
    for name in ("at", "staff_id", "action", "detail")
}
_INSERT_AUDIT = sa.insert(_audit).values(
    person_id=sa.bindparam("audit_person_id", type_=_audit.c.person_id.type), **_AUDIT_VALUES
)
# PostgreSQL: the audit row of the read is inserted by the read's own statement, one round trip.
_PG_PERSON_WITH_CARDS = _PERSON_WITH_CARDS.add_cte(
    sa.insert(_audit)
    .from_select(
        ["person_id", *_AUDIT_VALUES],
        sa.select(Person.id, *_AUDIT_VALUES.values()).where(Person.id_number == sa.bindparam("number")),
    )
    .cte("audit")
)


def read_audited(
    session: Session,
    actor: Actor,
    *,
    id_number: str,
    now: dt.datetime,
    action: str,
    detail: str | None = None,
) -> tuple[Person, list[Card]]:
    """A staff read of a person's record: the person (`person_by_number`'s errors), every card
    oldest first (`cards_of`), and the read recorded in the audit log (`audit_read`). One
    statement on PostgreSQL (the audit row inserted by a CTE of the read), two on SQLite."""
    number = idnumber.normalise(id_number)
    audit = {
        "audit_at": now,
        "audit_staff_id": actor.staff_id,
        "audit_action": action,
        "audit_detail": detail,
    }
    postgres = session.get_bind().dialect.name == "postgresql"
    stmt = _PG_PERSON_WITH_CARDS if postgres else _PERSON_WITH_CARDS
    rows = session.execute(stmt, {"number": number, **audit} if postgres else {"number": number}).all()
    _check_number(bool(rows), id_number, number, now)
    person = rows[0][0]
    if not postgres:
        session.execute(_INSERT_AUDIT, {"audit_person_id": person.id, **audit})
    return person, [card for _, card in rows if card is not None]


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
    row = session.execute(_LOCK_CARD, {"card_key": key}).one_or_none()
    if row is None:
        raise NotFound(f"no card {key}")
    return row[0], row[1]


# Built once (the loss report's hot path): building the statement anew cost more than its
# compiled form, which SQLAlchemy caches either way.
_LOCK_CARD = (
    sa.select(Card, Person)
    .join(Person, Person.id == Card.person_id)
    .where(Card.id == sa.bindparam("card_key"))
    .with_for_update(of=Card, key_share=True)
    .execution_options(populate_existing=True)
)


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
