"""Webhooks for watched cards: one WebhookDispatcher thread per worker process delivers, for
every active unit with a `webhook_url`, the notifications (verification/notifications.py) beyond
its `webhook_cursors.delivered_seq`, in batches, signed with the unit's secrets
(verification/units.signing_secrets), retrying with exponential backoff, and logs every attempt in
`webhook_deliveries`. Delivery is at least once: a receiver deduplicates by the items' `cursor`,
or by the message's `Webhook-Id` (a retry or a resend is the same message: same id, same body).

A unit (or a supervisor) can also send a test event and resend a message on demand
(`send_now`): the POST is made at once, outside any transaction, and logged like any attempt.

The unit's secrets are sealed at rest; the dispatcher keeps them opened per unit until the
`units` registry version moves (a roll bumps it), so a delivery does not query and open them each
time. Each cached secret keeps its end and is filtered by time at every use: none signs past its
overlap's end. Messages and attempts older than `retention_days` (IDGUARD_WEBHOOK_RETENTION_DAYS) are
purged by the dispatcher's own loop, once an hour (`purge`).
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
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from idguard import __version__, uow
from idguard.core.clock import Clock
from idguard.core.errors import NotFound, RuleViolation
from idguard.registry.models import LedgerEvent
from idguard.verification.models import Unit, Watch, WebhookCursor, WebhookDelivery, WebhookMessage
from idguard.verification.notifications import RELEVANT, CaseFeed, NotificationHorizon, notifications_after
from idguard.verification.runtime.keyring import KeyRing, UnitView
from idguard.verification.units import SigningSecret, in_use, open_secrets

log = logging.getLogger("idguard.notifications")

WEBHOOK_BATCH = 100
DISPATCH_INTERVAL = 0.5
POST_TIMEOUT = 5.0
# A claimed delivery holds the cursor this long; if the worker dies mid-POST another retries then.
LEASE = dt.timedelta(seconds=60)
FIRST_BACKOFF = 1.0
MAX_BACKOFF = 300.0
MAX_RESPONSE_BYTES = 64 * 1024
# Kept messages and logged attempts older than this are purged (docs/webhooks.md): long enough for
# a unit to resend what it lost, short enough that the log does not grow without bound.
DEFAULT_RETENTION_DAYS = 30
PURGE_EVERY = dt.timedelta(hours=1)
PURGE_BATCH = 1000
# The attempt's error when no secret of the unit opens: it is never POSTed unsigned.
NO_SECRET = "the unit's webhook secret does not open (IDGUARD_SECRET_KEY changed?): the unit must roll it"  # noqa: S105 - an error message

# `Idguard-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>…]`: one v1 per secret in use, newest
# first (two during a roll's overlap). The recipe is docs/webhooks.md's.
SIGNATURES_HEADER = "Idguard-Signature"
DELIVERY_ID_HEADER = "Webhook-Id"
# The first scheme, kept for receivers written against it: one signature, under the oldest secret
# still in use (the one such a receiver knows, until the overlap of a roll ends).
TIMESTAMP_HEADER = "X-Idguard-Timestamp"
SIGNATURE_HEADER = "X-Idguard-Signature"
_CASES_NAMESPACE = uuid.UUID("5b0c8f0e-2f55-4c55-9a51-6a1f3cbf8f21")


def hmac_hex(secret: str, timestamp: int, body: bytes) -> str:
    """HMAC-SHA256 under `secret` over `"<timestamp>.<body>"`, in hex."""
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """`X-Idguard-Signature` (the first scheme): `sha256=<hmac_hex>`."""
    return f"sha256={hmac_hex(secret, timestamp, body)}"


def signature_header(secrets: Sequence[str], timestamp: int, body: bytes) -> str:
    """`Idguard-Signature`: the timestamp and one `v1` per secret, newest first."""
    return ",".join([f"t={timestamp}", *(f"v1={hmac_hex(s, timestamp, body)}" for s in secrets)])


def delivery_headers(
    secrets: Sequence[str], message_id: uuid.UUID, timestamp: int, body: bytes
) -> dict[str, str]:
    """The headers of one POST of a message (`secrets` newest first, at least one)."""
    return {
        "Content-Type": "application/json",
        "User-Agent": f"idguard-webhook/{__version__}",
        DELIVERY_ID_HEADER: str(message_id),
        SIGNATURES_HEADER: signature_header(secrets, timestamp, body),
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(secrets[-1], timestamp, body),
    }


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


@dataclass(frozen=True, slots=True)
class Sent:
    """What an on-demand POST (a test event, a resend) did."""

    delivery_id: uuid.UUID
    kind: str
    result: PostResult


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
        # {unit: (units version when opened, its live secrets)}; see `_signing_secrets`.
        self._secrets: dict[str, tuple[int, tuple[SigningSecret, ...]]] = {}
        # Set from IDGUARD_WEBHOOK_RETENTION_DAYS by the app (app.py).
        self.retention_days = DEFAULT_RETENTION_DAYS
        self._next_purge: dt.datetime | None = None

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
                now = self._clock.now()
                if self._next_purge is None or now >= self._next_purge:
                    self.purge()
                    self._next_purge = now + PURGE_EVERY
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
            for code in set(self._secrets) - set(units):  # lost its webhook, or was suspended
                self._secrets.pop(code, None)
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
        attempts = 0
        for code, after in sorted(due.items()):
            url = units[code].webhook_url
            if url is None:
                continue
            with uow.transaction(self._sessions) as session:
                # A failed batch is retried frozen, as the notifications are: the same message
                # (id and body) until delivered, even if more notices arrived meanwhile.
                message = session.scalars(
                    sa.select(WebhookMessage)
                    .where(
                        WebhookMessage.unit_code == code,
                        WebhookMessage.kind == "cases",
                        WebhookMessage.delivered_at.is_(None),
                        WebhookMessage.last_cursor > after,
                    )
                    .order_by(WebhookMessage.created_at, WebhookMessage.last_cursor)
                    .limit(1)
                ).first()
                if message is None:
                    items = feed.notices_after(session, code, after, WEBHOOK_BATCH)
                    if not items:
                        continue
                    message = WebhookMessage(
                        id=uuid.uuid5(_CASES_NAMESPACE, f"{code}/{after}/{items[-1].cursor}"),
                        unit_code=code,
                        kind="cases",
                        last_cursor=items[-1].cursor,
                        body=json.dumps(
                            {"unit": code, "cases": [n.as_dict() for n in items]},
                            separators=(",", ":"),
                            ensure_ascii=False,
                        ),
                        created_at=now,
                        delivered_at=None,
                    )
                    if session.get(WebhookMessage, message.id) is None:
                        session.add(message)
                attempt = 1 + int(
                    session.scalar(sa.select(sa.func.count()).where(WebhookDelivery.message_id == message.id))
                    or 0
                )
                secrets = self._signing_secrets(session, code, now)
                message_id, upto, body = message.id, message.last_cursor or 0, message.body.encode()
            result = self._send(url, secrets, message_id, now, body)
            attempts += 1
            finished = self._clock.now()
            with uow.transaction(self._sessions) as session:
                feed.webhook_done(session, code, upto=upto, ok=result.ok, now=finished)
                self._log_attempt(session, code, message_id, upto, attempt, finished, result)
        return attempts

    def _signing_secrets(
        self, session: Session, code: str, now: dt.datetime, *, fresh: bool = False
    ) -> list[str]:
        """The unit's secrets signing at `now`, newest first (empty: none opens).

        Opened from the database once per `units` version (the key ring's, which every worker
        polls; a roll bumps it) and kept: the version is read before the rows, so a roll
        committed meanwhile moves it past what is cached. Each secret keeps its end and `in_use`
        filters by time at every call, so a cached secret never signs past its overlap's end; a
        roll that shortens an overlap is seen within one poll, like a revoked API key. `fresh`
        (an on-demand POST) reads the database whatever the cache holds."""
        version = self._keyring.version
        cached = self._secrets.get(code)
        if not fresh and cached is not None and cached[0] == version >= 0:
            return in_use(cached[1], now)
        opened, unreadable = open_secrets(session, secret_key=self._secret_key, code=code, now=now)
        if unreadable:
            log.warning("unit %s: %d webhook secret(s) do not open; the unit must roll it", code, unreadable)
        if version >= 0:
            self._secrets[code] = (version, tuple(opened))
        return in_use(opened, now)

    def _send(
        self, url: str, secrets: Sequence[str], message_id: uuid.UUID, now: dt.datetime, body: bytes
    ) -> PostResult:
        """POST one message signed with `secrets`; a unit whose secret does not open gets a
        failed attempt instead (never an unsigned POST)."""
        if not secrets:
            return PostResult(None, NO_SECRET)
        headers = delivery_headers(secrets, message_id, int(now.timestamp()), body)
        return self._post(url, body, headers, self._timeout)

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
        """Try one message for the unit; return (an attempt was made, nothing is left to do).

        A failed message is retried as it was (same id, same body) until delivered; only then
        does the next batch start after it."""
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
            message = None
            if cursor.pending_message is not None:
                message = session.get(WebhookMessage, cursor.pending_message)
            more = True  # a retried message: whatever came after it is still to send
            if message is None or message.delivered_at is not None:
                items, _ = notifications_after(
                    session, code, cursor.delivered_seq, WEBHOOK_BATCH, upto=horizon
                )
                if not items:
                    cursor.pending_message = None
                    return False, True
                message = WebhookMessage(
                    id=uuid.uuid4(),
                    unit_code=code,
                    kind="notifications",
                    last_cursor=items[-1].cursor,
                    body=json.dumps(
                        {"unit": code, "items": [n.as_dict() for n in items]}, separators=(",", ":")
                    ),
                    created_at=now,
                    delivered_at=None,
                )
                session.add(message)
                cursor.pending_message = message.id
                more = len(items) >= WEBHOOK_BATCH
            cursor.next_attempt_at = now + LEASE
            attempt = cursor.failures + 1
            secrets = self._signing_secrets(session, code, now)
            message_id, last, body = message.id, message.last_cursor or 0, message.body.encode()
        result = self._send(url, secrets, message_id, now, body)
        finished = self._clock.now()
        with uow.transaction(self._sessions) as session:
            cursor = session.scalars(
                sa.select(WebhookCursor).where(WebhookCursor.unit_code == code).with_for_update()
            ).one()
            self._log_attempt(session, code, message_id, last, attempt, finished, result)
            if result.ok:
                # max(): if our lease ran out and another worker delivered further, keep its cursor.
                cursor.delivered_seq = max(cursor.delivered_seq, last)
                if cursor.pending_message == message_id:
                    cursor.pending_message = None
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
        return True, result.ok and not more

    @staticmethod
    def _log_attempt(
        session: Session,
        code: str,
        message_id: uuid.UUID,
        last: int,
        attempt: int,
        at: dt.datetime,
        result: PostResult,
    ) -> None:
        session.add(
            WebhookDelivery(
                unit_code=code,
                cursor=last,
                attempt=attempt,
                at=at,
                status_code=result.status_code,
                error=result.error,
                delivered=result.ok,
                message_id=message_id,
            )
        )
        if result.ok:
            message = session.get(WebhookMessage, message_id)
            if message is not None and message.delivered_at is None:
                message.delivered_at = at

    # --- on demand ------------------------------------------------------------------------------

    def send_now(self, code: str, *, resend: uuid.UUID | None = None) -> Sent:
        """POST a test event (`resend=None`) or resend one of the unit's messages, at once, and
        log the attempt. A resend carries the message's own body and id with a fresh timestamp
        and signatures; if it is the batch the dispatcher is retrying and it succeeds, delivery
        moves on from it at once (no waiting for the backoff). Raises NotFound for a message that
        is not the unit's, RuleViolation when the unit has no webhook_url."""
        now = self._clock.now()
        with uow.transaction(self._sessions) as session:
            unit = session.get(Unit, code)
            if unit is None:
                raise NotFound(f"no unit {code}")
            if not unit.webhook_url:
                raise RuleViolation(
                    f"unit {code} has no webhook_url: set one first (PATCH /api/v1/units/{code})"
                )
            url = unit.webhook_url
            if resend is None:
                message = WebhookMessage(
                    id=uuid.uuid4(),
                    unit_code=code,
                    kind="test",
                    last_cursor=None,
                    body=json.dumps(
                        {"unit": code, "test": True, "items": [], "sent_at": _rfc3339(now)},
                        separators=(",", ":"),
                    ),
                    created_at=now,
                    delivered_at=None,
                )
                session.add(message)
            else:
                found = session.get(WebhookMessage, resend)
                if found is None or found.unit_code != code:
                    raise NotFound(f"no webhook delivery {resend} of unit {code}")
                message = found
            attempts = session.scalar(
                sa.select(sa.func.count()).where(WebhookDelivery.message_id == message.id)
            )
            secrets = self._signing_secrets(session, code, now, fresh=True)
            if not secrets:
                raise RuleViolation(
                    f"unit {code}'s webhook secret does not open (IDGUARD_SECRET_KEY changed?): "
                    f"roll it (POST /api/v1/units/{code}/webhook-secret)"
                )
            message_id, kind, last = message.id, message.kind, message.last_cursor or 0
            body = message.body.encode()
        result = self._send(url, secrets, message_id, now, body)
        finished = self._clock.now()
        with uow.transaction(self._sessions) as session:
            self._log_attempt(session, code, message_id, last, int(attempts or 0) + 1, finished, result)
            if result.ok and kind == "notifications":
                cursor = session.scalars(
                    sa.select(WebhookCursor).where(WebhookCursor.unit_code == code).with_for_update()
                ).one_or_none()
                if cursor is not None and cursor.pending_message == message_id:
                    cursor.delivered_seq = max(cursor.delivered_seq, last)
                    cursor.pending_message = None
                    cursor.failures = 0
                    cursor.next_attempt_at = None
        return Sent(message_id, kind, result)

    # --- retention ------------------------------------------------------------------------------

    def purge(self, now: dt.datetime | None = None) -> tuple[int, int]:
        """Delete the logged attempts and the kept messages older than `retention_days`; return how
        many of each. In batches of PURGE_BATCH, each its own transaction (no long lock; another
        worker purging at the same time only finds less to do). A message still referenced by a
        younger attempt (a recent resend) or being retried by its unit's cursor is kept: its
        `Webhook-Id` must stay the same until it is delivered."""
        horizon = (now or self._clock.now()) - dt.timedelta(days=self.retention_days)
        attempts = self._purge_batches(
            sa.select(WebhookDelivery.id).where(WebhookDelivery.at < horizon),
            WebhookDelivery.id,
        )
        referenced = sa.exists().where(WebhookDelivery.message_id == WebhookMessage.id)
        retrying = sa.select(WebhookCursor.pending_message).where(WebhookCursor.pending_message.is_not(None))
        messages = self._purge_batches(
            sa.select(WebhookMessage.id).where(
                WebhookMessage.created_at < horizon, ~referenced, WebhookMessage.id.not_in(retrying)
            ),
            WebhookMessage.id,
        )
        if attempts or messages:
            log.info("webhook retention: purged %d attempts and %d messages", attempts, messages)
        return attempts, messages

    def _purge_batches(self, select: sa.Select[Any], column: Any) -> int:
        total = 0
        while True:
            with uow.transaction(self._sessions) as session:
                ids = list(session.scalars(select.order_by(column).limit(PURGE_BATCH)))
                if ids:
                    session.execute(sa.delete(column.class_).where(column.in_(ids)))
            total += len(ids)
            if len(ids) < PURGE_BATCH:
                return total


def _rfc3339(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
