"""Case notices: what a unit is told about the cases against it, through the notification
channel it already uses (poll, server-sent events, webhook). A notice is a `case_events` row of
a notified kind (rules.NOTIFIED: opened, decided, reinstated); its cursor is the event's id.
Installed on the worker's webhook dispatcher as its `case_feed` (verification/notifications.py
defines the protocol; this is the higher feature's side of the hook)."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Session

from idguard.accountability.models import CaseEvent, CaseWebhookCursor
from idguard.accountability.rules import NOTIFIED
from idguard.verification.notifications import CaseNotice
from idguard.verification.runtime.webhooks import backoff
from idguard.verification.verifier import Verifier

_KINDS = sorted(k.value for k in NOTIFIED)


class CaseNotices:
    def notices_after(self, session: Session, unit_code: str, after: int, limit: int) -> list[CaseNotice]:
        rows = session.scalars(
            sa.select(CaseEvent)
            .where(CaseEvent.unit_code == unit_code, CaseEvent.id > after, CaseEvent.kind.in_(_KINDS))
            .order_by(CaseEvent.id)
            .limit(limit)
        )
        return [
            CaseNotice(
                cursor=e.id,
                case_no=e.case_no,
                event=e.kind.value,
                at=e.at,
                decision=e.decision.value if e.decision is not None else None,
                text=e.text,
            )
            for e in rows
        ]

    def webhook_due(self, session: Session, unit_codes: list[str], now: dt.datetime) -> dict[str, int]:
        if not unit_codes:
            return {}
        newest = dict(
            session.execute(
                sa.select(CaseEvent.unit_code, sa.func.max(CaseEvent.id))
                .where(CaseEvent.unit_code.in_(unit_codes), CaseEvent.kind.in_(_KINDS))
                .group_by(CaseEvent.unit_code)
            ).all()
        )
        if not newest:
            return {}
        cursors = {
            c.unit_code: c
            for c in session.scalars(
                sa.select(CaseWebhookCursor).where(CaseWebhookCursor.unit_code.in_(list(newest)))
            )
        }
        due: dict[str, int] = {}
        for code, top in newest.items():
            cursor = cursors.get(code)
            delivered = cursor.delivered_id if cursor is not None else 0
            waiting = (
                cursor is not None and cursor.next_attempt_at is not None and cursor.next_attempt_at > now
            )
            if top > delivered and not waiting:
                due[code] = delivered
        return due

    def webhook_done(
        self, session: Session, unit_code: str, *, upto: int, ok: bool, now: dt.datetime
    ) -> None:
        cursor = session.get(CaseWebhookCursor, unit_code, with_for_update=True)
        if cursor is None:
            cursor = CaseWebhookCursor(unit_code=unit_code, delivered_id=0, failures=0, next_attempt_at=None)
            session.add(cursor)
        if ok:
            cursor.delivered_id = max(cursor.delivered_id, upto)
            cursor.failures = 0
            cursor.next_attempt_at = None
        else:
            cursor.failures += 1
            cursor.next_attempt_at = now + dt.timedelta(seconds=backoff(cursor.failures))
        session.flush()


def install(verifier: Verifier) -> None:
    verifier.dispatcher.case_feed = CaseNotices()
