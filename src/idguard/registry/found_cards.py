"""Lost and found (丢失招领): found cards handed in, destroyed or held, returned to the owner."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from idguard.biometrics import fingerprints
from idguard.biometrics.fingerprints import Biometrics
from idguard.core import idnumber
from idguard.core.clock import today_cst
from idguard.core.errors import NotFound, RuleViolation
from idguard.core.grants import Actor
from idguard.registry import ledger
from idguard.registry import lifecycle as rules
from idguard.registry.lifecycle import CardStatus, EventKind, FoundDisposition
from idguard.registry.lookups import acting_at, lock_card, new_reference, view
from idguard.registry.models import Card, FoundCard, Office, Person


def hand_in(
    session: Session,
    *,
    actor: Actor,
    now: dt.datetime,
    id_number: str,
    issued_on: dt.date,
    office: str,
    finder_name: str,
    finder_phone: str | None,
    chip_serial: str | None = None,
) -> tuple[FoundCard, Card]:
    """Record a card handed in by a finder; destroy it if the owner already has a newer card."""
    acting_at(session, actor, office)
    number = idnumber.parse(id_number, today=today_cst(now)).value
    candidates = session.scalars(
        sa.select(Card)
        .where(Card.id_number == number, Card.issued_on == issued_on)
        .where(Card.chip_serial == chip_serial if chip_serial else sa.true())
        # Two cards of one date are rare (a card replaced the day it was issued): prefer a regular
        # card, then one not yet destroyed, then the older. The chip serial, when read, settles it.
        .order_by(Card.temporary, Card.status == CardStatus.DESTROYED, Card.created_at)
    ).all()
    if not candidates:
        raise NotFound("no card with this id number and issue date is registered: treat the card as suspect")
    card, owner = lock_card(session, candidates[0].id)
    open_claim = session.scalar(
        sa.select(FoundCard.found_no).where(
            FoundCard.card_id == card.id, FoundCard.disposition == FoundDisposition.HELD
        )
    )
    if open_claim is not None:
        raise RuleViolation(f"this card is already held as found card {open_claim}")
    if card.status is CardStatus.DESTROYED:
        raise RuleViolation("this card has already been destroyed")
    disposition = rules.found_disposition(
        view(card),
        newer_card_exists=card.superseded_by is not None,
        owner_revoked=owner.revoked_reason is not None,
    )
    found = FoundCard(
        found_no=new_reference("FC"),
        card_id=card.id,
        office=office,
        finder_name=finder_name,
        finder_phone=finder_phone,
        received_by=actor.staff_id,
        received_at=now,
        disposition=disposition,
    )
    session.add(found)
    if disposition is FoundDisposition.DESTROYED:
        _destroy(session, card, found, actor=actor, now=now, why="found after replacement")
    else:
        ledger.record(
            session, card, event=EventKind.FOUND, actor=actor, office=office, at=now, reference=found.found_no
        )
    session.flush()
    return found, card


def return_to_owner(
    session: Session,
    *,
    actor: Actor,
    now: dt.datetime,
    found_no: str,
    office: str,
    claimant_id_number: str,
    claimant_name: str | None = None,
    photo_ref: str | None = None,
    fingerprint: str | None = None,
    biometrics: Biometrics | None = None,
) -> tuple[FoundCard, Card]:
    """Hand a held card back to its verified owner, at the office that holds it. A card with
    registered fingerprints goes back only to a claimant whose live finger matches one of them
    (the comparison is recorded either way)."""
    live = fingerprints.live_template(fingerprint) if fingerprint is not None else None  # before locks
    acting_at(session, actor, office)
    found = session.get(FoundCard, found_no)
    if found is None:
        raise NotFound(f"no found card {found_no}")
    card, owner = lock_card(session, found.card_id)
    session.refresh(found)  # re-read under the card lock: another clerk may have returned it
    rules.check_can_return(
        view(card),
        disposition=found.disposition,
        owner_revoked=owner.revoked_reason is not None,
        held_at=found.office,
        office=office,
    )
    claimant = idnumber.parse(claimant_id_number, today=today_cst(now), field="claimant_id_number").value
    if claimant != card.id_number:
        raise RuleViolation("the claimant is not the card's owner")
    if claimant_name is not None and claimant_name != card.name:
        raise RuleViolation("the claimant's name does not match the card")
    fingerprints.compare_at_counter(
        session,
        biometrics,
        card.id,
        live,
        registered=card.fingerprints_registered,
        purpose=fingerprints.Purpose.FOUND_CARD_RETURN,
        actor=actor,
        office=office,
        now=now,
    )
    found.disposition = FoundDisposition.RETURNED
    found.returned_at = now
    found.returned_by = actor.staff_id
    ledger.record(
        session,
        card,
        event=EventKind.RETURNED,
        actor=actor,
        office=office,
        at=now,
        reason=f"photo {photo_ref}" if photo_ref else None,
        reference=found.found_no,
    )
    session.flush()
    return found, card


def destroy_unreturnable(
    session: Session, *, actor: Actor, now: dt.datetime, found_no: str, office: str
) -> tuple[FoundCard, Card]:
    """Record the destruction (销毁) of a held card that can no longer be returned: its owner got a
    newer card, or the card or the owner's registration was revoked, since it was handed in. The
    same rule as at hand-in (`rules.found_disposition`) decides; only the holding office does it.
    A card its owner may still collect is not destroyed."""
    acting_at(session, actor, office)
    found = session.get(FoundCard, found_no)
    if found is None:
        raise NotFound(f"no found card {found_no}")
    card, owner = lock_card(session, found.card_id)
    session.refresh(found)  # re-read under the card lock: another clerk may have acted on it
    if found.disposition is not FoundDisposition.HELD:
        raise RuleViolation(f"the found card is {found.disposition.value}, not held")
    if office != found.office:
        raise RuleViolation("the card is held at another office; it is destroyed there")
    disposition = rules.found_disposition(
        view(card),
        newer_card_exists=card.superseded_by is not None,
        owner_revoked=owner.revoked_reason is not None,
    )
    if disposition is not FoundDisposition.DESTROYED:
        raise RuleViolation("the card can still be returned to its owner: it is kept until collected")
    found.disposition = FoundDisposition.DESTROYED
    _destroy(session, card, found, actor=actor, now=now, why="held card no longer returnable")
    session.flush()
    return found, card


def _destroy(
    session: Session, card: Card, found: FoundCard, *, actor: Actor, now: dt.datetime, why: str
) -> None:
    """Record the destruction (销毁) of a found card at the office that holds it."""
    ledger.record(
        session,
        card,
        event=EventKind.DESTROYED,
        actor=actor,
        office=found.office,
        at=now,
        reason=why,
        reference=found.found_no,
    )


@dataclass(frozen=True, slots=True)
class HeldCard:
    office_code: str
    office_name: str


def lookup_held(session: Session, *, now: dt.datetime, id_number: str, name: str) -> HeldCard | None:
    """Citizen-facing: is a card of mine held? Only a name that matches the registry gets an answer,
    and the answer says only where to collect it.

    The name is sealed at rest (registry/sealed.py), so the query narrows by id number and the
    holder's name is opened and compared here, in memory: one or two rows, and no clear name
    or name hash in the database."""
    number = idnumber.parse(id_number, today=today_cst(now)).value
    rows = session.execute(
        sa.select(FoundCard.office, Office.name, Person)
        .join(Card, Card.id == FoundCard.card_id)
        .join(Person, Person.id == Card.person_id)
        .join(Office, Office.code == FoundCard.office)
        .where(Card.id_number == number, FoundCard.disposition == FoundDisposition.HELD)
        .order_by(FoundCard.received_at, FoundCard.found_no)
    ).all()
    for office_code, office_name, holder in rows:
        if holder.name == name:
            return HeldCard(office_code=office_code, office_name=office_name)
    return None
