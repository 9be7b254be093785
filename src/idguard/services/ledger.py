"""Appending to the ledger: the backbone every status change goes through.

`record` changes a card's status and appends the event in the same transaction. It writes with
Core statements on the session's connection (no unit-of-work flush): this is the hot path of
every loss report, and the ORM object is kept in step with `set_committed_value`.
"""

from __future__ import annotations

import datetime as dt
from typing import cast

import sqlalchemy as sa
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from idguard.db.models import Card, LedgerEvent, LedgerHead
from idguard.domain.cards import CardStatus
from idguard.domain.roles import Actor

_head = cast(sa.Table, LedgerHead.__table__)
_events = cast(sa.Table, LedgerEvent.__table__)
_cards = cast(sa.Table, Card.__table__)

_NEXT_SEQ = sa.update(_head).where(_head.c.id == 1).values(seq=_head.c.seq + 1).returning(_head.c.seq)
_SET_STATUS = (
    sa.update(_cards)
    .where(_cards.c.id == sa.bindparam("card_id"))
    .values(status=sa.bindparam("status"), updated_at=sa.bindparam("at"))
)


def next_seq(session: Session) -> int:
    """Allocate the next global sequence number.

    The UPDATE takes the head row's lock until commit: concurrent writers queue here, so they
    commit in sequence order, and a rollback gives the number back (no gaps).
    """
    return int(session.connection().execute(_NEXT_SEQ).scalar_one())


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
) -> int:
    """Set `card.status` to `new_status` and append the event that says so; return its seq.

    `initial` marks the card's first event (issue), which has no status before; the card row
    must already be flushed (the event references it).
    """
    if card in session.new:
        session.flush()
    status_before = None if initial else card.status
    conn = session.connection()
    if not initial:
        conn.execute(_SET_STATUS, {"card_id": card.id, "status": new_status, "at": at})
        set_committed_value(card, "status", new_status)
        set_committed_value(card, "updated_at", at)
    seq = next_seq(session)
    conn.execute(
        sa.insert(_events),
        {
            "seq": seq,
            "card_id": card.id,
            "person_id": card.person_id,
            "event": event,
            "status_before": status_before,
            "status_after": new_status,
            "office": office,
            "actor": actor.staff_id if actor else None,
            "at": at,
            "reason": reason,
            "reference": reference,
        },
    )
    return seq
