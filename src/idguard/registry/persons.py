"""Citizen identity records (公民身份信息) and revocation of a person's registration."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from idguard.core import idnumber
from idguard.core.clock import today_cst
from idguard.core.errors import InvalidField, RuleViolation
from idguard.core.grants import Actor, Permission
from idguard.core.idnumber import Sex
from idguard.db.common import AuditEntry
from idguard.registry import ledger
from idguard.registry import lifecycle as rules
from idguard.registry.lifecycle import EventKind, RevocationReason
from idguard.registry.lookups import (
    acting_at,
    cards_of,
    lock_person,
    person_by_number,
    read_audited,
    view,
)
from idguard.registry.models import Card, Person


def register_person(
    session: Session,
    *,
    actor: Actor,
    now: dt.datetime,
    id_number: str,
    name: str,
    sex: Sex,
    ethnicity: str,
    birth_date: dt.date,
    address: str,
    hukou_office: str,
) -> Person:
    """Register a citizen. The number must be valid, and sex and birth date must agree with it."""
    acting_at(session, actor, hukou_office, field="hukou_office")
    number = idnumber.parse(id_number, today=today_cst(now))
    if sex != number.sex:
        raise InvalidField("sex", f"the id number's sequence digit says {number.sex.value}")
    if birth_date != number.birth_date:
        raise InvalidField("birth_date", "the birth date does not match the one in the id number")
    exists = session.scalar(sa.select(Person.id).where(Person.id_number == number.value))
    if exists is not None:
        raise RuleViolation(f"a person with id number {number} is already registered")
    person = Person(
        id_number=number.value,
        name=name,
        sex=sex,
        ethnicity=ethnicity,
        birth_date=birth_date,
        address=address,
        hukou_office=hukou_office,
        created_at=now,
    )
    session.add(person)
    session.flush()
    session.add(AuditEntry(at=now, staff_id=actor.staff_id, action="person.register", person_id=person.id))
    return person


@dataclass(frozen=True, slots=True)
class PersonRecord:
    person: Person
    cards: list[Card]


def read_person(
    session: Session, *, actor: Actor, now: dt.datetime, id_number: str, action: str
) -> PersonRecord:
    """The record and every card, for staff; the read is audited under `action`."""
    actor.require(Permission.REGISTRY_READ)
    person, cards = read_audited(session, actor, id_number=id_number, now=now, action=action)
    return PersonRecord(person=person, cards=cards)


def revoke_person(
    session: Session,
    *,
    actor: Actor,
    now: dt.datetime,
    id_number: str,
    reason: RevocationReason,
    office: str | None = None,
) -> PersonRecord:
    """Revoke a person's registration (deceased, nationality lost, fraud, hukou cancelled).

    Every valid card (regular and temporary) becomes REVOKED; cards already invalid keep their
    status. The person gets no new card afterwards. Done by the person's hukou office.
    """
    person = person_by_number(session, id_number, now=now)
    office = office or person.hukou_office
    actor.require_office(office)
    if office != person.hukou_office:  # before the lock: a wrong office waits for nothing
        rules.check_can_revoke(already_revoked=None, office=office, hukou_office=person.hukou_office)
    person = lock_person(session, person.id)
    rules.check_can_revoke(
        already_revoked=person.revoked_reason, office=office, hukou_office=person.hukou_office
    )
    person.revoked_reason = reason
    person.revoked_at = now
    cards = cards_of(session, person.id, lock=True)
    revoked = {c.card_id for c in rules.revoked_by_revocation([view(c) for c in cards])}
    for card in cards:
        if str(card.id) in revoked:
            ledger.record(
                session,
                card,
                event=EventKind.REVOKED,
                actor=actor,
                office=person.hukou_office,
                at=now,
                reason=reason.value,
            )
    session.add(
        AuditEntry(
            at=now,
            staff_id=actor.staff_id,
            action="person.revoke",
            person_id=person.id,
            detail=reason.value,
        )
    )
    session.flush()
    return PersonRecord(person=person, cards=cards)
