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

Webhooks: one WebhookDispatcher thread per worker process delivers, for every active unit with a
`webhook_url`, the notifications beyond its `webhook_cursors.delivered_seq`, in batches, signed
with the unit's secret (verification/units.webhook_secret), retrying with exponential backoff, and
logs every attempt in `webhook_deliveries`. Delivery is at least once: a receiver deduplicates by
the items' `cursor`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import http.client
import json
import logging
import random
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from idguard import __version__
from idguard.core.clock import Clock, today_cst
from idguard.registry.lifecycle import effective_status
from idguard.registry.models import Card, LedgerEvent
from idguard.verification.models import Watch, WebhookCursor, WebhookDelivery
from idguard.verification.runtime.checklog import MAX_UNWRITTEN_SECONDS
from idguard.verification.runtime.follower import IndexFollower
from idguard.verification.runtime.keyring import KeyRing, UnitView
from idguard.verification.units import webhook_secret

log = logging.getLogger("idguard.notifications")

# Events that matter to a unit even though the status did not change (see the module docstring).
ALWAYS_NOTIFY = ("superseded", "loss_report_cancelled")
# The check log's bound plus a margin for a follower that is a few polls behind.
SETTLE_SECONDS = MAX_UNWRITTEN_SECONDS + 1.0

WEBHOOK_BATCH = 100
DISPATCH_INTERVAL = 0.5
POST_TIMEOUT = 5.0
# A claimed delivery holds the cursor this long; if the worker dies mid-POST another retries then.
LEASE = dt.timedelta(seconds=60)
FIRST_BACKOFF = 1.0
MAX_BACKOFF = 300.0
MAX_RESPONSE_BYTES = 64 * 1024

TIMESTAMP_HEADER = "X-Idguard-Timestamp"
SIGNATURE_HEADER = "X-Idguard-Signature"

_RELEVANT = sa.or_(
    LedgerEvent.status_before != LedgerEvent.status_after,  # NULL before (issue) is not a change
    LedgerEvent.event.in_(ALWAYS_NOTIFY),
)


@dataclass(frozen=True, slots=True)
class Notification:
    cursor: int  # the ledger seq
    check_id: uuid.UUID  # the unit's own check that started the watch
    status: str  # the card's status right after the event, as verification would answer it
    event: str
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
            _RELEVANT,
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


# ---- webhooks ---------------------------------------------------------------------------------
def sign(secret: str, timestamp: int, body: bytes) -> str:
    """`X-Idguard-Signature`: HMAC-SHA256 under the unit's secret over `"<timestamp>.<body>"`."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def backoff(failures: int) -> float:
    """Seconds before the next attempt after `failures` failures in a row: 1, 2, 4 … 300, ±20%.

    The jitter keeps units whose endpoints failed together (one outage) from retrying in step.
    """
    delay = min(MAX_BACKOFF, FIRST_BACKOFF * float(2 ** min(max(failures, 1) - 1, 30)))
    return delay * random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not a secret


@dataclass(frozen=True, slots=True)
class PostResult:
    status_code: int | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


Poster = Callable[[str, bytes, dict[str, str], float], PostResult]


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # A redirect would re-send (or silently turn into a GET) a signed body to a place the unit did
    # not register; it counts as a failed attempt and the unit fixes its URL.
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def post_json(url: str, body: bytes, headers: dict[str, str], timeout: float) -> PostResult:
    """POST with the standard library (no extra runtime dependency); never raises."""
    if not url.startswith(("http://", "https://")):
        return PostResult(None, "webhook_url is not an http(s) URL")
    try:
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310 - scheme checked above
        with _OPENER.open(request, timeout=timeout) as response:
            response.read(MAX_RESPONSE_BYTES)
            return PostResult(int(response.status))
    except urllib.error.HTTPError as exc:
        exc.close()
        return PostResult(exc.code)
    # Refused, reset, timeout, DNS, TLS, a malformed answer — or a URL urllib cannot parse
    # (ValueError), which must fail this unit's attempt, not the whole round.
    except (OSError, http.client.HTTPException, ValueError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        return PostResult(None, f"{type(exc).__name__}: {reason}"[:200])


class WebhookDispatcher:
    """Delivers webhook notifications; one per worker process, started and stopped with the
    Verifier. `run_once` does one round and is what tests call.

    Several workers share the work safely: a unit's delivery is claimed by locking its cursor
    row (PostgreSQL `FOR UPDATE SKIP LOCKED`, so a worker skips a unit another one is claiming;
    SQLite's writer lock serialises claims) and setting a lease in `next_attempt_at` before the
    POST. The row lock is not held during the POST: on SQLite that would stop every write in the
    registry for as long as a bank's endpoint takes to answer. Each round looks only at units
    with new notifications since the last round, plus those it left waiting (backing off, more
    than one batch behind, or claimed by another worker).
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        keyring: KeyRing,
        horizon: NotificationHorizon,
        *,
        secret_key: str,
        clock: Clock,
        post: Poster = post_json,
        interval: float = DISPATCH_INTERVAL,
        timeout: float = POST_TIMEOUT,
    ) -> None:
        self._sessions = sessions
        self._keyring = keyring
        self.horizon = horizon
        self._secret_key = secret_key
        self._clock = clock
        self._post = post
        self._interval = interval
        self._timeout = timeout
        self._scanned: int | None = None  # ledger seq up to which new notifications were looked for
        self._units: set[str] = set()  # webhook units seen in the previous round
        self._pending: set[str] = set()
        self._cursor_exists: set[str] = set()
        self._round_lock = threading.Lock()  # the thread and a test calling run_once
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="idguard-webhooks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self._timeout + 5)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._round(interruptible=True)
            except Exception as exc:  # the database may be down: try again next round
                log.warning("webhook round failed (%s)", type(exc).__name__)

    def run_once(self) -> int:
        """One round: deliver at most one batch per unit that has something due; return the
        number of POST attempts made."""
        return self._round(interruptible=False)

    def _round(self, *, interruptible: bool) -> int:
        with self._round_lock:
            horizon = self.horizon.seq()
            units = {u.code: u for u in self._keyring.units() if u.active and u.webhook_url}
            if not units:
                self._units = set()
                return 0
            candidates = self._candidates(units, horizon)
            attempts = 0
            for code in sorted(candidates):
                if interruptible and self._stop.is_set():
                    break  # shutting down: the rest wait for the next start
                url = units[code].webhook_url
                if url is None:  # filtered above; keeps the type checker informed
                    continue
                attempted, done = self._deliver(code, url, horizon)
                attempts += attempted
                if done:
                    self._pending.discard(code)
                else:
                    self._pending.add(code)
            return attempts

    def _candidates(self, units: dict[str, UnitView], horizon: int) -> set[str]:
        new_units = set(units) - self._units
        if self._scanned is None:
            found = set(units)  # first round: every cursor may be behind
        elif horizon > self._scanned:
            with self._sessions() as session:
                found = set(
                    session.scalars(
                        sa.select(Watch.unit_code)
                        .distinct()
                        .join(LedgerEvent, LedgerEvent.card_id == Watch.card_id)
                        .where(
                            LedgerEvent.seq > self._scanned,
                            LedgerEvent.seq <= horizon,
                            LedgerEvent.seq > Watch.since_seq,
                            Watch.unit_code.in_(sorted(units)),
                            _RELEVANT,
                        )
                    )
                )
        else:
            found = set()
        self._scanned = max(self._scanned or 0, horizon)
        self._units = set(units)
        self._pending &= set(units)  # a unit that lost its webhook or was suspended
        return found | new_units | self._pending

    def _ensure_cursor(self, code: str) -> None:
        """Create the unit's cursor row on first use: 0 is before all of the unit's watches."""
        if code in self._cursor_exists:
            return
        with self._sessions() as session:
            if session.get(WebhookCursor, code) is None:
                session.add(WebhookCursor(unit_code=code, delivered_seq=0, next_attempt_at=None, failures=0))
                try:
                    session.commit()
                except IntegrityError:  # another worker created it first
                    session.rollback()
        self._cursor_exists.add(code)

    def _deliver(self, code: str, url: str, horizon: int) -> tuple[bool, bool]:
        """Try one batch for the unit; return (an attempt was made, nothing is left to do)."""
        self._ensure_cursor(code)
        now = self._clock.now()
        with self._sessions() as session, session.begin():
            cursor = session.scalars(
                sa.select(WebhookCursor)
                .where(WebhookCursor.unit_code == code)
                .with_for_update(skip_locked=True)
            ).one_or_none()
            if cursor is None:  # locked: another worker is claiming it right now
                return False, False
            if cursor.next_attempt_at is not None and cursor.next_attempt_at > now:
                return False, False  # backing off, or leased to another worker's POST
            items, _ = notifications_after(session, code, cursor.delivered_seq, WEBHOOK_BATCH, upto=horizon)
            if not items:
                return False, True
            cursor.next_attempt_at = now + LEASE
            attempt = cursor.failures + 1
        body = json.dumps(
            {"unit": code, "items": [n.as_dict() for n in items]}, separators=(",", ":")
        ).encode()
        timestamp = int(now.timestamp())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"idguard-webhook/{__version__}",
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: sign(webhook_secret(self._secret_key, code), timestamp, body),
        }
        result = self._post(url, body, headers, self._timeout)
        finished = self._clock.now()
        with self._sessions() as session, session.begin():
            cursor = session.scalars(
                sa.select(WebhookCursor).where(WebhookCursor.unit_code == code).with_for_update()
            ).one()
            session.add(
                WebhookDelivery(
                    unit_code=code,
                    cursor=items[-1].cursor,
                    attempt=attempt,
                    at=finished,
                    status_code=result.status_code,
                    error=result.error,
                    delivered=result.ok,
                )
            )
            if result.ok:
                # max(): if our lease ran out and another worker delivered further, keep its cursor.
                cursor.delivered_seq = max(cursor.delivered_seq, items[-1].cursor)
                cursor.failures = 0
                cursor.next_attempt_at = None
            else:
                cursor.failures += 1
                cursor.next_attempt_at = finished + dt.timedelta(seconds=backoff(cursor.failures))
        if not result.ok:
            log.info(
                "webhook to unit %s failed (%s); attempt %d",
                code,
                result.status_code or result.error,
                attempt,
            )
        return True, result.ok and len(items) < WEBHOOK_BATCH
