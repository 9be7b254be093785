"""Appending to the ledger (the backbone every status change goes through)."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Session

from idguard.db.models import Card, LedgerEvent, LedgerHead
from idguard.domain.cards import CardStatus
from idguard.domain.roles import Actor


def next_seq(session: Session) -> int:
    """Allocate the next global sequence number.

    The UPDATE takes the head row's lock until commit: concurrent writers queue here, so they
    commit in sequence order, and a rollback gives the number back (no gaps).
    """
    stmt = (
        sa.update(LedgerHead)
        .where(LedgerHead.id == 1)
        .values(seq=LedgerHead.seq + 1)
        .returning(LedgerHead.seq)
    )
    return int(session.execute(stmt, execution_options={"synchronize_session": False}).scalar_one())


def record(
    session: Session,
    card: Card,
    *,
    event: str,
    new_status: CardStatus,
    actor: Actor | None,
    office: str | None,
    at: dt.datetime,
    reason: str | None = None,
    reference: str | None = None,
    initial: bool = False,
) -> LedgerEvent:
    """Change `card.status` to `new_status` and append the event that says so, in one step.

    `initial` marks the card's first event (issue), which has no status before.
    """
    status_before = None if initial else card.status
    card.status = new_status
    card.updated_at = at
    entry = LedgerEvent(
        seq=next_seq(session),
        card_id=card.id,
        person_id=card.person_id,
        event=event,
        status_before=status_before,
        status_after=new_status,
        office=office,
        actor=actor.staff_id if actor else None,
        at=at,
        reason=reason,
        reference=reference,
    )
    session.add(entry)
    return entry
