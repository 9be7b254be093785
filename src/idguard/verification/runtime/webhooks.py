"""Webhooks for watched cards: one WebhookDispatcher thread per worker process delivers, for
every active unit with a `webhook_url`, the notifications (verification/notifications.py) beyond
its `webhook_cursors.delivered_seq`, in batches, signed with the unit's secret
(verification/units.webhook_secret), retrying with exponential backoff, and logs every attempt in
`webhook_deliveries`. Delivery is at least once: a receiver deduplicates by the items' `cursor`.
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
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from idguard import __version__, uow
from idguard.core.clock import Clock
from idguard.registry.models import LedgerEvent
from idguard.verification.models import Watch, WebhookCursor, WebhookDelivery
from idguard.verification.notifications import RELEVANT, CaseFeed, NotificationHorizon, notifications_after
from idguard.verification.runtime.keyring import KeyRing, UnitView
from idguard.verification.units import webhook_secret

log = logging.getLogger("idguard.notifications")

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
        # Case notices (accountability installs it): POSTed as {"unit", "cases": [...]}.
        self.case_feed: CaseFeed | None = None

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
            if self.case_feed is not None and not (interruptible and self._stop.is_set()):
                # Case notices are rare: their own query per round, whatever the ledger did.
                attempts += self._deliver_cases(self.case_feed, units)
            return attempts

    def _deliver_cases(self, feed: CaseFeed, units: dict[str, UnitView]) -> int:
        """One batch of case notices per unit that has some due. The cursor and backoff are the
        feed's (its own table); the POST is signed like the card notifications."""
        now = self._clock.now()
        with self._sessions() as session:
            due = feed.webhook_due(session, sorted(units), now)
            batches = {
                code: feed.notices_after(session, code, after, WEBHOOK_BATCH) for code, after in due.items()
            }
        attempts = 0
        for code, items in sorted(batches.items()):
            url = units[code].webhook_url
            if not items or url is None:
                continue
            body = json.dumps(
                {"unit": code, "cases": [n.as_dict() for n in items]},
                separators=(",", ":"),
                ensure_ascii=False,
            ).encode()
            timestamp = int(now.timestamp())
            headers = {
                "Content-Type": "application/json",
                "User-Agent": f"idguard-webhook/{__version__}",
                TIMESTAMP_HEADER: str(timestamp),
                SIGNATURE_HEADER: sign(webhook_secret(self._secret_key, code), timestamp, body),
            }
            result = self._post(url, body, headers, self._timeout)
            attempts += 1
            finished = self._clock.now()
            with uow.transaction(self._sessions) as session:
                feed.webhook_done(session, code, upto=items[-1].cursor, ok=result.ok, now=finished)
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
                            RELEVANT,
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
        try:
            with uow.transaction(self._sessions) as session:
                if session.get(WebhookCursor, code) is None:
                    session.add(
                        WebhookCursor(unit_code=code, delivered_seq=0, next_attempt_at=None, failures=0)
                    )
        except IntegrityError:  # another worker created it first
            pass
        self._cursor_exists.add(code)

    def _deliver(self, code: str, url: str, horizon: int) -> tuple[bool, bool]:
        """Try one batch for the unit; return (an attempt was made, nothing is left to do)."""
        self._ensure_cursor(code)
        now = self._clock.now()
        with uow.transaction(self._sessions) as session:
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
        with uow.transaction(self._sessions) as session:
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
