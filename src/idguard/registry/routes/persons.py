"""Citizen records, their cards, temporary cards and revocations (staff)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from idguard.api.schemas import STAFF_WRITE_ERRORS, IdNumberStr
from idguard.registry import cards, persons
from idguard.registry.routes.deps import BiometricsDep, TxDep
from idguard.registry.schemas import (
    CardList,
    CardOut,
    IssueCardIn,
    PersonIn,
    PersonOut,
    RevocationIn,
    RevocationOut,
    TemporaryCardIn,
)

router = APIRouter(prefix="/api/v1/persons", tags=["persons and cards"])


@router.post("", status_code=201, response_model=PersonOut, responses=STAFF_WRITE_ERRORS)
def register_person(body: PersonIn, tx: TxDep) -> Response:
    """Register a citizen identity record. The id number is checked (GB 11643-1999: check
    character, real birth date not in the future, known region) and sex and birth date must agree
    with it. A clerk registers persons of their own office's household register."""

    def run() -> PersonOut:
        person = persons.register_person(tx.session, actor=tx.actor, now=tx.now, **body.model_dump())
        return PersonOut.of(person, [], tx.now)

    return tx.write(run, body=body)


@router.get("/{id_number}", response_model=PersonOut, responses=STAFF_WRITE_ERRORS)
def read_person(id_number: IdNumberStr, tx: TxDep) -> PersonOut:
    """The record and its current card. The read is recorded in the audit log."""
    record = tx.read(
        lambda: persons.read_person(
            tx.session, actor=tx.actor, now=tx.now, id_number=id_number, action="person.read"
        )
    )
    return PersonOut.of(record.person, record.cards, tx.now)


@router.get("/{id_number}/cards", response_model=CardList, responses=STAFF_WRITE_ERRORS)
def list_cards(id_number: IdNumberStr, tx: TxDep) -> CardList:
    """Every card of the person, oldest first, with today's status (an audited read)."""
    record = tx.read(
        lambda: persons.read_person(
            tx.session, actor=tx.actor, now=tx.now, id_number=id_number, action="person.cards"
        )
    )
    return CardList(items=[CardOut.of(c, tx.now) for c in record.cards])


@router.post("/{id_number}/cards", status_code=201, response_model=CardOut, responses=STAFF_WRITE_ERRORS)
def issue_card(id_number: IdNumberStr, body: IssueCardIn, tx: TxDep, biometrics: BiometricsDep) -> Response:
    """Issue a card (first / renewal / replacement / correction). The previous card becomes
    `superseded`; the validity period follows the holder's age at issue (5/10/20 years/long-term).
    Send `previous_card_id` to make a race with another clerk a clean 409. `fingerprints`
    registers two fingers on the card: each capture must pass the quality gate (enough minutiae,
    scanner-reported quality), or the request is refused naming the finger and what to do."""

    def run() -> CardOut:
        card = cards.issue_card(
            tx.session,
            actor=tx.actor,
            now=tx.now,
            id_number=id_number,
            kind=body.kind,
            office=body.office,
            issued_on=body.issued_on,
            previous_card_id=body.previous_card_id,
            fingerprints=[(f.finger, f.template) for f in body.fingerprints]
            if body.fingerprints is not None
            else None,
            biometrics=biometrics,
        )
        return CardOut.of(card, tx.now)

    return tx.write(run, body=body)


@router.post(
    "/{id_number}/temporary-cards", status_code=201, response_model=CardOut, responses=STAFF_WRITE_ERRORS
)
def issue_temporary_card(id_number: IdNumberStr, body: TemporaryCardIn, tx: TxDep) -> Response:
    """Issue a temporary card (临时居民身份证), valid 3 months; it may coexist with a regular card."""

    def run() -> CardOut:
        card = cards.issue_temporary_card(
            tx.session, actor=tx.actor, now=tx.now, id_number=id_number, office=body.office
        )
        return CardOut.of(card, tx.now)

    return tx.write(run, body=body)


@router.post(
    "/{id_number}/revocations", status_code=201, response_model=RevocationOut, responses=STAFF_WRITE_ERRORS
)
def revoke(id_number: IdNumberStr, body: RevocationIn, tx: TxDep) -> Response:
    """Revoke the person's registration (deceased, nationality lost, fraud, hukou cancelled):
    every valid card becomes `revoked` and no new card can be issued."""

    def run() -> RevocationOut:
        record = persons.revoke_person(
            tx.session,
            actor=tx.actor,
            now=tx.now,
            id_number=id_number,
            reason=body.reason,
            office=body.office,
        )
        assert record.person.revoked_reason is not None  # noqa: S101 - just set
        assert record.person.revoked_at is not None  # noqa: S101
        return RevocationOut(
            id_number=record.person.id_number,
            revoked_reason=record.person.revoked_reason,
            revoked_at=record.person.revoked_at,
            cards=[CardOut.of(c, tx.now) for c in record.cards],
        )

    return tx.write(run, body=body)
