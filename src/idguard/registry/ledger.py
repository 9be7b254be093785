"""Appending to the ledger: the backbone every status change goes through.

`record` changes a card's status and appends the event in the same transaction. It writes with
Core statements on the session's connection (no unit-of-work flush): this is the hot path of
every loss report, and the ORM object is kept in step with `set_committed_value`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import cast

import sqlalchemy as sa
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from idguard import uow
from idguard.core.grants import Actor
from idguard.registry.lifecycle import EventKind, transition
from idguard.registry.models import Card, LedgerEvent, LedgerHead

_head = cast(sa.Table, LedgerHead.__table__)
_events = cast(sa.Table, LedgerEvent.__table__)
_cards = cast(sa.Table, Card.__table__)

_NEXT_SEQ = sa.update(_head).where(_head.c.id == 1).values(seq=_head.c.seq + 1).returning(_head.c.seq)
_SET_STATUS = (
    sa.update(_cards)
    .where(_cards.c.id == sa.bindparam("card_id"))
    .values(status=sa.bindparam("status"), updated_at=sa.bindparam("at"))
)


# PostgreSQL: set the status, take the next seq, append the event, in one statement. `head`
# refers to `changed`, so the card row (already locked by the caller) is updated before the head
# row is locked: the same order as the three-statement path, so no new lock cycle can arise.
_changed = (
    sa.update(_cards)
    .where(_cards.c.id == sa.bindparam("card_id"))
    .values(status=sa.bindparam("new_status", type_=_cards.c.status.type), updated_at=sa.bindparam("at"))
    .returning(_cards.c.id)
    .cte("changed")
)
_allocated = (
    sa.update(_head)
    .where(_head.c.id == 1, sa.exists(sa.select(_changed.c.id)))
    .values(seq=_head.c.seq + 1)
    .returning(_head.c.seq)
    .cte("head")
)
_PG_CHANGE_AND_APPEND = (
    sa.insert(_events)
    .from_select(
        [
            "seq",
            "card_id",
            "person_id",
            "event",
            "status_before",
            "status_after",
            "office",
            "actor",
            "at",
            "reason",
            "reference",
        ],
        sa.select(
            _allocated.c.seq,
            sa.bindparam("ev_card_id", type_=_events.c.card_id.type),
            sa.bindparam("ev_person_id", type_=_events.c.person_id.type),
            sa.bindparam("ev_event", type_=_events.c.event.type),
            sa.bindparam("ev_status_before", type_=_events.c.status_before.type),
            sa.bindparam("ev_status_after", type_=_events.c.status_after.type),
            sa.bindparam("ev_office", type_=_events.c.office.type),
            sa.bindparam("ev_actor", type_=_events.c.actor.type),
            sa.bindparam("ev_at", type_=_events.c.at.type),
            sa.bindparam("ev_reason", type_=_events.c.reason.type),
            sa.bindparam("ev_reference", type_=_events.c.reference.type),
        ),
    )
    .returning(_events.c.seq)
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
    event: EventKind,
    actor: Actor | None,
    office: str | None,
    at: dt.datetime,
    reason: str | None = None,
    reference: str | None = None,
) -> int:
    """Apply `event` to the card: set its status to what the lifecycle table says
    (`lifecycle.transition`, RuleViolation if the event cannot happen to it) and append the
    event that says so; return its seq.

    An issue event is the card's first, with no status before; the card row must already be
    flushed (the event references it).
    """
    initial = event.is_issue
    new_status = transition(event, None if initial else card.status)
    if card in session.new:
        session.flush()
    conn = session.connection()
    values = {
        "card_id": card.id,
        "person_id": card.person_id,
        "event": event,
        "status_before": None if initial else card.status,
        "status_after": new_status,
        "office": office,
        "actor": actor.staff_id if actor else None,
        "at": at,
        "reason": reason,
        "reference": reference,
    }
    if conn.dialect.name == "postgresql" and not initial:
        # One round trip instead of three: the status change, the sequence allocation and the
        # event in one statement (the loss report's hot path; a round trip costs more than the
        # work). The card row is updated before the head, as below: `head` reads `changed`.
        # Prefixed names: an UPDATE would take a parameter named like a cards column as a SET value.
        params = {f"ev_{k}": v for k, v in values.items()}
        seq = int(
            conn.execute(
                _PG_CHANGE_AND_APPEND, {"card_id": card.id, "new_status": new_status, "at": at, **params}
            ).scalar_one()
        )
    else:
        if not initial:
            conn.execute(_SET_STATUS, {"card_id": card.id, "status": new_status, "at": at})
        seq = next_seq(session)
        conn.execute(sa.insert(_events), {"seq": seq, **values})
    if not initial:
        set_committed_value(card, "status", new_status)
        set_committed_value(card, "updated_at", at)
    uow.changed(session, ledger_seq=seq)  # every worker applies it before the answer (uow.py)
    return seq


def record_on_cards(
    session: Session,
    cards: Sequence[Card],
    *,
    event: EventKind,
    actor: Actor | None,
    office: str | None,
    at: dt.datetime,
    reason: str | None = None,
    reference: str | None = None,
) -> list[int]:
    """A watchlist event (listing, lifting, protection: `lifecycle.WATCHLIST_EVENTS`) on every
    card of one person, so each worker's index re-reads those cards with the person's new alert
    flags. No status changes. The caller holds the person's lock (the cards are locked here,
    after it: the registry's lock order)."""
    if not event.is_watchlist:
        raise ValueError(f"{event.value} is not a watchlist event")
    return [
        record(
            session, card, event=event, actor=actor, office=office, at=at, reason=reason, reference=reference
        )
        for card in cards
    ]
