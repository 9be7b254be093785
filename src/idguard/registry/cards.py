"""Issuing cards: first issue, renewal, replacement, corrected re-issue, temporary cards."""

from __future__ import annotations

import datetime as dt
import secrets
import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.orm import Session

from idguard.biometrics import fingerprints as fingerprint_service
from idguard.biometrics.fingerprints import Biometrics
from idguard.core.clock import today_cst
from idguard.core.errors import Forbidden, InvalidField, RuleViolation
from idguard.core.grants import Actor, Permission
from idguard.registry import ledger
from idguard.registry import lifecycle as rules
from idguard.registry.lifecycle import CardStatus, EventKind, IssueKind
from idguard.registry.lookups import (
    acting_at,
    audit_read,
    card_by_id,
    cards_of,
    lock_person,
    person_by_number,
    view,
)
from idguard.registry.models import Card, LedgerEvent, Person


def _new_card(
    person: Person,
    *,
    kind: IssueKind,
    office: str,
    issued_on: dt.date,
    expires_on: dt.date | None,
    now: dt.datetime,
) -> Card:
    return Card(
        id=uuid.uuid4(),
        person_id=person.id,
        id_number=person.id_number,
        kind=kind,
        temporary=kind is IssueKind.TEMPORARY,
        status=CardStatus.VALID,
        name=person.name,
        sex=person.sex,
        ethnicity=person.ethnicity,
        birth_date=person.birth_date,
        address=person.address,
        issued_on=issued_on,
        expires_on=expires_on,
        issuing_office=office,
        chip_serial=secrets.token_hex(16).upper(),
        fingerprints_registered=False,  # set by enrolment, with the fingers stored
        created_at=now,
        updated_at=now,
    )


def _replace(
    session: Session,
    old: Card | None,
    card: Card,
    *,
    actor: Actor,
    office: str,
    now: dt.datetime,
    reason: str,
) -> None:
    """Add `card`, superseding `old` (the person's previous card of the same sort) if there is one.

    The old card leaves the one-valid-card slot before the new card takes it (the partial unique
    index is checked row by row). A lost or stolen card keeps its reason (invalid either way, and
    the reason is what a verifier sees), but the event is recorded all the same: from now on its
    loss report can no longer be cancelled.
    """
    if old is not None:
        ledger.record(
            session,
            old,
            event=EventKind.SUPERSEDED,
            actor=actor,
            office=office,
            at=now,
            reason=reason,
            reference=str(card.id),
        )
        session.flush()
    session.add(card)
    ledger.record(
        session,
        card,
        event=EventKind.issued(card.kind),
        actor=actor,
        office=office,
        at=now,
        reference=str(old.id) if old else None,
    )
    session.flush()
    if old is not None:
        old.superseded_by = card.id  # after the insert: it is a foreign key to the new card
        session.flush()


def issue_card(
    session: Session,
    *,
    actor: Actor,
    now: dt.datetime,
    id_number: str,
    kind: IssueKind,
    office: str,
    issued_on: dt.date | None = None,
    previous_card_id: uuid.UUID | None = None,
    fingerprints: Sequence[tuple[int, str]] | None = None,
    biometrics: Biometrics | None = None,
) -> Card:
    """Issue a regular card; the person's previous card (if any) becomes SUPERSEDED.

    `fingerprints`: (ISO finger position, base64 ISO/IEC 19794-2 record) for the two fingers
    registered on this card, checked by the quality gate and stored sealed; without them the card
    has no registered fingerprints. `issued_on` is for the admin role importing existing cards;
    everyone else issues today.
    """
    if kind is IssueKind.TEMPORARY:
        raise InvalidField("kind", "temporary cards are issued at /temporary-cards")
    # Templates are built first: CPU work stays outside the locks taken below.
    enrolments = fingerprint_service.prepare_enrolment(fingerprints) if fingerprints is not None else []
    if enrolments and biometrics is None:
        raise ValueError("fingerprints given without the biometrics configuration")
    acting_at(session, actor, office)
    if issued_on is not None:
        try:
            actor.require(Permission.IMPORT)
        except Forbidden:
            raise Forbidden("only the admin role may set issued_on (imports)") from None
    today = today_cst(now)
    issued_on = issued_on or today
    if issued_on > today:
        raise InvalidField("issued_on", "a card cannot be issued in the future")
    person = person_by_number(session, id_number, now=now)
    if issued_on < person.birth_date:
        raise InvalidField("issued_on", "a card cannot be issued before the holder's birth")
    person = lock_person(session, person.id)
    existing = [c for c in cards_of(session, person.id, lock=True) if not c.temporary]
    previous = rules.check_can_issue(
        kind,
        revoked=person.revoked_reason is not None,
        regular_cards=[view(c) for c in existing],
        previous_card_id=str(previous_card_id) if previous_card_id else None,
    )
    if previous is not None and issued_on < previous.issued_on:
        raise RuleViolation("the person holds a card issued later than issued_on")
    card = _new_card(
        person,
        kind=kind,
        office=office,
        issued_on=issued_on,
        expires_on=rules.expiry_date(person.birth_date, issued_on),
        now=now,
    )
    card.fingerprints_registered = bool(enrolments)  # in the insert; the fingers follow it
    old = next((c for c in existing if previous and str(c.id) == previous.card_id), None)
    _replace(session, old, card, actor=actor, office=office, now=now, reason=kind.value)
    if enrolments:
        assert biometrics is not None  # noqa: S101 - checked above, before any lock
        fingerprint_service.enrol(session, biometrics, card.id, enrolments, actor=actor, now=now)
        session.flush()
    return card


def issue_temporary_card(
    session: Session, *, actor: Actor, now: dt.datetime, id_number: str, office: str
) -> Card:
    """临时居民身份证: valid 3 months; a newer temporary card supersedes the previous one."""
    acting_at(session, actor, office)
    person = person_by_number(session, id_number, now=now)
    person = lock_person(session, person.id)
    if person.revoked_reason is not None:
        raise RuleViolation("the person's registration is revoked; no card can be issued")
    today = today_cst(now)
    card = _new_card(
        person,
        kind=IssueKind.TEMPORARY,
        office=office,
        issued_on=today,
        expires_on=rules.temporary_expiry(today),
        now=now,
    )
    old = next(
        (
            c
            for c in reversed(cards_of(session, person.id, lock=True))
            if c.temporary and c.superseded_by is None
        ),
        None,
    )
    _replace(session, old, card, actor=actor, office=office, now=now, reason="temporary")
    return card


def card_events(session: Session, *, actor: Actor, now: dt.datetime, card_id: str) -> list[LedgerEvent]:
    """The card's ledger, oldest first (an audited read)."""
    actor.require(Permission.REGISTRY_READ)
    card = card_by_id(session, card_id)
    person = session.get(Person, card.person_id)
    assert person is not None  # noqa: S101 - foreign key guarantees it
    audit_read(session, actor, action="card.events", person=person, at=now, detail=str(card.id))
    stmt = sa.select(LedgerEvent).where(LedgerEvent.card_id == card.id).order_by(LedgerEvent.seq)
    return list(session.scalars(stmt))
