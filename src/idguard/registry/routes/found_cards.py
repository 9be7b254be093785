"""Lost and found (丢失招领)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from sqlalchemy.orm import Session
from starlette.responses import Response

from idguard.api.deps import SessionDep, client_address, get_clock, throttle
from idguard.api.schemas import STAFF_WRITE_ERRORS, IdNumberStr, Name, problem_responses
from idguard.core.errors import InvalidField
from idguard.registry import found_cards
from idguard.registry.routes.deps import BiometricsDep, TxDep
from idguard.registry.schemas import (
    DestroyIn,
    FoundCardIn,
    FoundCardOut,
    HeldLookupIn,
    HeldLookupOut,
    ReturnIn,
)

router = APIRouter(prefix="/api/v1/found-cards", tags=["lost and found"])
LOOKUP_BURST = 20  # lookups at once per client address
LOOKUP_PER_MINUTE = 10.0  # then refilled at this rate


@router.post("", status_code=201, response_model=FoundCardOut, responses=STAFF_WRITE_ERRORS)
def hand_in(body: FoundCardIn, tx: TxDep) -> Response:
    """Record a card handed in by a finder. If the owner already has a newer card the found card
    is destroyed (`disposition: destroyed`); otherwise it is held for the owner."""

    def run() -> FoundCardOut:
        found, card = found_cards.hand_in(
            tx.session,
            actor=tx.actor,
            now=tx.now,
            id_number=body.id_number,
            issued_on=body.issued_on,
            office=body.office,
            finder_name=body.finder.name,
            finder_phone=body.finder.phone,
            chip_serial=body.chip_serial,
        )
        return FoundCardOut.of(found, card, tx.now)

    return tx.write(run, body=body)


@router.post("/{found_no}/return", status_code=200, response_model=FoundCardOut, responses=STAFF_WRITE_ERRORS)
def return_card(found_no: str, body: ReturnIn, tx: TxDep, biometrics: BiometricsDep) -> Response:
    """Hand a held card back to its owner, at the office that holds it, after checking the
    claimant's id number (and name, when sent) against the card. A card with registered
    fingerprints needs the claimant's live `fingerprint`, which must match one of them; every
    comparison is recorded, and a mismatch is refused with 409."""

    def run() -> FoundCardOut:
        office = body.office or tx.actor.office
        if office is None:
            raise InvalidField("office", "office is required for staff not bound to an office")
        found, card = found_cards.return_to_owner(
            tx.session,
            actor=tx.actor,
            now=tx.now,
            found_no=found_no,
            office=office,
            claimant_id_number=body.claimant_id_number,
            claimant_name=body.claimant_name,
            photo_ref=body.photo_ref,
            fingerprint=body.fingerprint,
            biometrics=biometrics,
        )
        return FoundCardOut.of(found, card, tx.now)

    return tx.write(run, body=body, status_code=200)


@router.post(
    "/{found_no}/destroy", status_code=200, response_model=FoundCardOut, responses=STAFF_WRITE_ERRORS
)
def destroy(found_no: str, body: DestroyIn, tx: TxDep) -> Response:
    """Record that a held card was destroyed (销毁) because it can no longer be returned: since it
    was handed in, its owner got a newer card, or the card or the owner's registration was
    revoked. Only at the holding office; a card its owner may still collect is refused (409)."""

    def run() -> FoundCardOut:
        office = body.office or tx.actor.office
        if office is None:
            raise InvalidField("office", "office is required for staff not bound to an office")
        found, card = found_cards.destroy_unreturnable(
            tx.session, actor=tx.actor, now=tx.now, found_no=found_no, office=office
        )
        return FoundCardOut.of(found, card, tx.now)

    return tx.write(run, body=body, status_code=200)


@router.post(
    "/lookup",
    response_model=HeldLookupOut,
    responses={**problem_responses(422), 429: {"description": "too many lookups; see Retry-After"}},
)
def lookup(request: Request, session: SessionDep, body: HeldLookupIn) -> HeldLookupOut:
    """For citizens, no login: is a card of mine held at a police office? Send the id number and
    the name; answers only when the name matches the registry, and says only where to collect
    it. Limited per client address (429 with Retry-After), so it cannot be used to guess who
    holds which number. A POST, so that neither the number nor the name is in any URL (URLs
    land in access logs and browser histories)."""
    return _lookup(request, session, body.id_number, body.name)


@router.get(
    "/lookup",
    response_model=HeldLookupOut,
    responses={**problem_responses(422), 429: {"description": "too many lookups; see Retry-After"}},
    deprecated=True,
)
def lookup_by_query(
    request: Request,
    session: SessionDep,
    id_number: Annotated[IdNumberStr, Query()],
    name: Annotated[Name, Query()],
) -> HeldLookupOut:
    """Deprecated: use `POST /api/v1/found-cards/lookup`, which keeps the number and the name out
    of URLs. Same answer and the same limit (they share it)."""
    return _lookup(request, session, id_number, name)


def _lookup(request: Request, session: Session, id_number: str, name: str) -> HeldLookupOut:
    throttle(
        request,
        f"lookup:{client_address(request)}",
        per_minute=LOOKUP_PER_MINUTE,
        burst=LOOKUP_BURST,
        what="lookups from this address",
    )
    held = found_cards.lookup_held(session, now=get_clock(request).now(), id_number=id_number, name=name)
    if held is None:
        return HeldLookupOut(held=False)
    return HeldLookupOut(held=True, office=held.office_code, office_name=held.office_name)
