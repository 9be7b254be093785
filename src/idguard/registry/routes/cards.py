from __future__ import annotations

import uuid

from fastapi import APIRouter

from idguard.api.schemas import STAFF_READ_ERRORS
from idguard.registry import cards
from idguard.registry.routes.deps import TxDep
from idguard.registry.schemas import EventList

router = APIRouter(prefix="/api/v1/cards", tags=["persons and cards"])


@router.get(
    "/{card_id}/events",
    response_model=EventList,
    responses=STAFF_READ_ERRORS,
)
def card_events(card_id: uuid.UUID, tx: TxDep) -> EventList:
    """The card's ledger, oldest first: every change with who, which office, when, why, and the
    status before and after. `seq` is the global gap-free ledger sequence (an audited read)."""
    events = tx.read(lambda: cards.card_events(tx.session, actor=tx.actor, now=tx.now, card_id=str(card_id)))
    return EventList.of(card_id, events)
