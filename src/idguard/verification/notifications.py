"""Notifications for watched cards: a unit that checked a card with `watch: true` hears of the
card's later status changes (issue 3) by polling, by a server-sent-event stream, or by webhook.

Notifications are not stored: they are the ledger events on the cards a unit watches, after the
watch began (`seq > watch.since_seq`), and their cursor is the ledger `seq`. The ledger is
append-only and gap-free with commit order equal to sequence order (registry/ledger.py), so a
cursor never skips an event that later commits below it — with one exception handled here, the
settle horizon:

A watch row is written by the check log's thread up to MAX_UNWRITTEN_SECONDS after the check was
answered, but it starts at the ledger position the answer was given at. An event on that card in
between exists before its watch does; if we let a unit's cursor pass that event's seq before the
watch row lands, the unit would never hear of it (a card reported lost a moment after the bank
checked it — exactly the case that matters). So readers only see events up to the *horizon*: the
newest seq this worker's follower had already applied SETTLE_SECONDS ago. By then every watch
that could cover an event at or below it has been written. The cost is that a notification
arrives about two seconds after the change instead of at once.

Only status-relevant events count: the status changed, or the card was `superseded` (a lost card
replaced keeps its status, but the unit should know a newer card exists), or a loss report was
cancelled. `found` and `returned` change nothing a unit acts on and are left out. Nothing in a
notification is personal data: the unit gets back its own check id, the status and the event.

Webhooks are delivered by runtime/webhooks.py (WebhookDispatcher).

Case notices (issue 11) are a second kind of item, from a higher feature (accountability): a
case opened against the unit, decided, or the unit reinstated. They are stored events with a
cursor of their own (`cases_next` / `cases_after`), because they are not ledger events and
cannot take a place in the ledger's order. The feature installs a `CaseFeed` on the dispatcher;
poll, stream and webhook read it (docs/notifications.md, "Case notices").
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.orm import Session

from idguard.core.clock import today_cst
from idguard.db.paging import Page, newest_first
from idguard.registry.lifecycle import EventKind, effective_status
from idguard.registry.models import Card, LedgerEvent
from idguard.verification.models import Watch, WebhookCursor, WebhookDelivery
from idguard.verification.runtime.checklog import MAX_UNWRITTEN_SECONDS
from idguard.verification.runtime.follower import IndexFollower

# Events that matter to a unit even though the status did not change (see the module docstring).
ALWAYS_NOTIFY = (EventKind.SUPERSEDED, EventKind.LOSS_REPORT_CANCELLED)
# The check log's bound plus a margin for a follower that is a few polls behind.
SETTLE_SECONDS = MAX_UNWRITTEN_SECONDS + 1.0


RELEVANT = sa.or_(
    LedgerEvent.status_before != LedgerEvent.status_after,  # NULL before (issue) is not a change
    LedgerEvent.event.in_(ALWAYS_NOTIFY),
)


@dataclass(frozen=True, slots=True)
class Notification:
    cursor: int  # the ledger seq
    check_id: uuid.UUID  # the unit's own check that started the watch
    status: str  # the card's status right after the event, as verification would answer it
    event: EventKind
    at: dt.datetime

    def as_dict(self) -> dict[str, object]:
        return {
            "cursor": self.cursor,
            "check_id": str(self.check_id),
            "status": self.status,
            "event": self.event,
            "at": self.at.isoformat().replace("+00:00", "Z"),
        }


def notifications_after(
    session: Session, unit_code: str, after: int, limit: int, *, upto: int | None = None
) -> tuple[list[Notification], int]:
    """The unit's notifications with cursor > `after` (and <= `upto`, the horizon), oldest first;
    and the cursor to pass next time: the last item's, or `after` when there is none."""
    stmt = (
        sa.select(
            LedgerEvent.seq,
            Watch.check_id,
            LedgerEvent.status_after,
            LedgerEvent.event,
            LedgerEvent.at,
            Card.expires_on,
        )
        .join(Watch, Watch.card_id == LedgerEvent.card_id)
        .join(Card, Card.id == LedgerEvent.card_id)
        .where(
            Watch.unit_code == unit_code,
            LedgerEvent.seq > after,
            LedgerEvent.seq > Watch.since_seq,
            RELEVANT,
        )
        .order_by(LedgerEvent.seq)
        .limit(limit)
    )
    if upto is not None:
        stmt = stmt.where(LedgerEvent.seq <= upto)
    items = [
        Notification(
            cursor=seq,
            check_id=check_id,
            # A cancelled report makes the card valid again — or expired, if its date passed
            # meanwhile: say what a check at that moment would have said.
            status=effective_status(status, expires_on, today_cst(at)).value,
            event=event,
            at=at,
        )
        for seq, check_id, status, event, at, expires_on in session.execute(stmt)
    ]
    return items, (items[-1].cursor if items else after)


def delivery_log(
    session: Session, unit_code: str, *, before: int | None, limit: int
) -> tuple[Page[WebhookDelivery], WebhookCursor | None]:
    """The unit's webhook attempts, newest first (before the attempt id `before`), and its cursor
    row: how far delivery has got (None before the first attempt)."""
    page = newest_first(
        session,
        sa.select(WebhookDelivery).where(WebhookDelivery.unit_code == unit_code),
        keys=(WebhookDelivery.id,),
        after=None if before is None else (before,),
        limit=limit,
    )
    return page, session.get(WebhookCursor, unit_code)


@dataclass(frozen=True, slots=True)
class CaseNotice:
    """An item of the case kind: `cursor` is its own sequence (not the ledger's)."""

    cursor: int
    case_no: str
    event: str  # opened | decided | reinstated
    at: dt.datetime
    decision: str | None
    text: str

    def as_dict(self) -> dict[str, object]:
        return {
            "kind": "case",
            "cursor": self.cursor,
            "case_no": self.case_no,
            "event": self.event,
            "decision": self.decision,
            "text": self.text,
            "at": self.at.isoformat().replace("+00:00", "Z"),
        }


class CaseFeed(Protocol):
    """Case notices for units, provided by the accountability feature."""

    def notices_after(self, session: Session, unit_code: str, after: int, limit: int) -> list[CaseNotice]: ...

    def webhook_due(self, session: Session, unit_codes: list[str], now: dt.datetime) -> dict[str, int]:
        """{unit: delivered cursor} for the units with notices beyond it, not backing off."""
        ...

    def webhook_done(
        self, session: Session, unit_code: str, *, upto: int, ok: bool, now: dt.datetime
    ) -> None:
        """Record a webhook attempt: on success the cursor moves to `upto`; else the unit backs off."""
        ...


class NotificationHorizon:
    """The newest ledger seq whose notifications may be shown (see the module docstring).

    It samples the follower's position with the time it was first seen; the horizon is the
    newest sample at least `settle` seconds old. Sampling happens whenever someone asks (the
    dispatcher thread asks every DISPATCH_INTERVAL), and a sample seen late only makes the
    horizon more cautious, never less.
    """

    def __init__(self, follower: IndexFollower, settle: float = SETTLE_SECONDS) -> None:
        self._follower = follower
        self.settle = settle
        self._samples: deque[tuple[float, int]] = deque()
        self._settled = 0
        self._lock = threading.Lock()

    def seq(self) -> int:
        now = time.monotonic()
        current = self._follower.seq
        cutoff = now - self.settle
        with self._lock:
            if not self._samples or self._samples[-1][1] != current:
                self._samples.append((now, current))
            while self._samples and self._samples[0][0] <= cutoff:
                self._settled = max(self._settled, self._samples.popleft()[1])
            return self._settled
