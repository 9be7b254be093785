"""Notifications for ID-using units about the cards they watch: poll, stream, webhook log.

What a notification is, the cursor, the settle horizon and the webhook dispatcher are in
verification/notifications.py; docs/notifications.md is the integrator's page.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker
from starlette.responses import StreamingResponse

from idguard.api.deps import SessionDep, get_clock
from idguard.api.schemas import problem_responses
from idguard.core.errors import InvalidField
from idguard.verification.notifications import (
    CaseNotice,
    Notification,
    delivery_log,
    notifications_after,
)
from idguard.verification.routes.deps import CurrentUnit, get_verifier

router = APIRouter(prefix="/api/v1", tags=["notifications (units)"])
log = logging.getLogger("idguard.api.notifications")

MAX_CURSOR = 2**63 - 1  # ledger seq is a BIGINT; larger values are a 422, not a database error
STREAM_POLL_SECONDS = 0.25
HEARTBEAT_SECONDS = 15.0
STREAM_BATCH = 100
RETRY_MILLISECONDS = 3000
CASE_POLL_SECONDS = 2.0


class EventStream(StreamingResponse):
    # Not FastAPI's EventStream: that class makes FastAPI treat the route as a generator
    # of events, and this one returns a ready response whose stream we write ourselves.
    media_type = "text/event-stream"


_ITEM_EXAMPLE: dict[str, Any] = {
    "cursor": 1842,
    "check_id": "0b9f1c1e-5d0c-4a8e-9d5e-2c1a7f0e9b11",
    "status": "reported_lost",
    "event": "reported_lost",
    "at": "2026-11-27T08:00:00Z",
}


class NotificationOut(BaseModel):
    cursor: int = Field(description="position in the registry's ledger; pass it back as `after`")
    check_id: str = Field(description="your check (made with `watch: true`) that subscribed you to the card")
    status: str = Field(
        description="the card's status right after the change: valid | expired | reported_lost | "
        "reported_stolen | superseded | revoked | destroyed"
    )
    event: str = Field(
        description="what happened: reported_lost, reported_stolen, loss_report_cancelled, superseded, "
        "revoked, destroyed"
    )
    at: dt.datetime = Field(description="when it happened (RFC 3339, UTC)")


_CASE_EXAMPLE: dict[str, Any] = {
    "kind": "case",
    "cursor": 7,
    "case_no": "AC-202605-3F2A1B0C",
    "event": "opened",
    "decision": None,
    "text": "1.9 % of May's accounts were opened without a check",
    "at": "2026-06-03T01:00:00Z",
}


class CaseNoticeOut(BaseModel):
    kind: str = Field(default="case", description="always `case`: an accountability case about your unit")
    cursor: int = Field(description="position among your case notices; pass the page's `cases_next` back")
    case_no: str
    event: str = Field(description="opened | decided | reinstated")
    decision: str | None = Field(description="with `decided`: warning | suspension | dismissed")
    text: str = Field(description="the finding (opened), the decision's note (decided), or why reinstated")
    at: dt.datetime


class NotificationPage(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"items": [_ITEM_EXAMPLE], "next": 1842, "cases": [_CASE_EXAMPLE], "cases_next": 7}]
        }
    )
    items: list[NotificationOut] = Field(description="oldest first")
    next: int = Field(description="pass as `after` next time (the last item's cursor, or yours if none)")
    # Present only for a unit that has case notices or asks for them (`cases_after`): the answer of
    # a unit with no case is what it always was.
    cases: list[CaseNoticeOut] | None = Field(
        default=None,
        description="case notices (accountability) after `cases_after`, oldest first; absent when "
        "your unit has none and you sent no `cases_after`",
    )
    cases_next: int | None = Field(default=None, description="pass as `cases_after` next time")


class DeliveryOut(BaseModel):
    id: int = Field(description="the attempt's number in this log (for paging with `before`)")
    delivery_id: str | None = Field(
        default=None,
        description="the message this attempt carried: its `Webhook-Id` header; resend it with "
        "POST /api/v1/units/{code}/webhook/deliveries/{delivery_id}/resend",
    )
    cursor: int = Field(description="the last item's cursor in the batch this attempt carried")
    attempt: int = Field(description="1 for the first try of a batch, then 2, 3, … while it fails")
    at: dt.datetime
    status_code: int | None = Field(description="your endpoint's HTTP status; null if it did not answer")
    error: str | None = Field(description="why there was no HTTP answer (refused, timeout, TLS, …)")
    delivered: bool = Field(description="true for a 2xx answer")


class DeliveryPage(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "items": [
                        {
                            "id": 8,
                            "delivery_id": "6f1c2a9e-3b1d-4c8e-9a51-0d2b7e4f5a10",
                            "cursor": 1842,
                            "attempt": 2,
                            "at": "2026-11-27T08:00:03Z",
                            "status_code": 200,
                            "error": None,
                            "delivered": True,
                        },
                        {
                            "id": 7,
                            "delivery_id": "6f1c2a9e-3b1d-4c8e-9a51-0d2b7e4f5a10",
                            "cursor": 1842,
                            "attempt": 1,
                            "at": "2026-11-27T08:00:02Z",
                            "status_code": 503,
                            "error": None,
                            "delivered": False,
                        },
                    ],
                    "next": None,
                    "delivered_cursor": 1842,
                    "failures": 0,
                    "next_attempt_at": None,
                }
            ]
        }
    )
    items: list[DeliveryOut] = Field(description="newest first")
    next: int | None = Field(description="pass as `before` for older attempts; null at the end")
    delivered_cursor: int | None = Field(description="everything up to this cursor has been delivered")
    failures: int = Field(description="failed attempts in a row for the pending batch")
    next_attempt_at: dt.datetime | None = Field(description="when the next attempt is due, while failing")


def _case_out(n: CaseNotice) -> CaseNoticeOut:
    return CaseNoticeOut(
        kind="case",
        cursor=n.cursor,
        case_no=n.case_no,
        event=n.event,
        decision=n.decision,
        text=n.text,
        at=n.at,
    )


def _out(n: Notification) -> NotificationOut:
    return NotificationOut(cursor=n.cursor, check_id=str(n.check_id), status=n.status, event=n.event, at=n.at)


@router.get(
    "/notifications",
    response_model=NotificationPage,
    response_model_exclude_unset=True,
    responses=problem_responses(401, 422),
)
def notifications(
    request: Request,
    unit: CurrentUnit,
    session: SessionDep,
    after: Annotated[
        int, Query(ge=0, le=MAX_CURSOR, description="the `next` of your previous call; 0 from the start")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cases_after: Annotated[
        int,
        Query(ge=0, le=MAX_CURSOR, description="the `cases_next` of your previous call; 0 from the start"),
    ] = 0,
) -> NotificationPage:
    """Changes to the cards you watch, oldest first; and notices of accountability cases about
    your unit (`cases`).

    Check a card with `watch: true` and you are subscribed to it: when its status later changes
    (reported lost or stolen, report cancelled, replaced by a newer card, revoked, destroyed) a
    notification appears here. You hear only about cards your own unit checked, from the moment
    of that check; a `mismatch` answer subscribes you to nothing. Notifications carry no personal
    data: `check_id` is your check, so look the card up in your own records.

    Keep the `next` of each answer and send it as `after` on the following call: items with a
    cursor greater than `after` are returned, so nothing is repeated or skipped. A change shows
    here about two seconds after it is recorded (the registry waits until every check made before
    the change has been logged, so that no subscription can miss it).

    Prefer not to poll? Use `GET /api/v1/notifications/stream` (server-sent events) or have your
    unit configured with a webhook URL.

    **Case notices.** When a supervisor opens an accountability case about your unit, decides
    it, or reinstates your unit, a notice appears in `cases` (its own cursor: keep `cases_next`
    and send it as `cases_after`). Answer a case with `POST /api/v1/cases/{case_no}/responses`."""
    dispatcher = get_verifier(request).dispatcher
    horizon = dispatcher.horizon.seq()
    items, next_cursor = notifications_after(session, unit.code, after, limit, upto=horizon)
    notices = (
        dispatcher.case_feed.notices_after(session, unit.code, cases_after, limit)
        if dispatcher.case_feed
        else []
    )
    page = NotificationPage(items=[_out(n) for n in items], next=next_cursor)
    if notices or cases_after:
        page.cases = [_case_out(n) for n in notices]
        page.cases_next = notices[-1].cursor if notices else cases_after
    return page


def _read(sessions: sessionmaker[Session], unit_code: str, after: int, upto: int) -> list[Notification]:
    with sessions() as session:
        return notifications_after(session, unit_code, after, STREAM_BATCH, upto=upto)[0]


def _event_id(cursor: int, cases: int) -> str:
    """An event's id: the ledger cursor, and once a case notice was sent, `<ledger>.<case>`
    (both positions, so a reconnect with Last-Event-ID resumes both)."""
    return f"{cursor}.{cases}" if cases else str(cursor)


def _sse(n: Notification, cases: int = 0) -> str:
    data = json.dumps(n.as_dict(), separators=(",", ":"))
    return f"id: {_event_id(n.cursor, cases)}\nevent: notification\ndata: {data}\n\n"


def _sse_case(n: CaseNotice, scanned: int) -> str:
    data = json.dumps(n.as_dict(), separators=(",", ":"), ensure_ascii=False)
    return f"id: {_event_id(scanned, n.cursor)}\nevent: case\ndata: {data}\n\n"


def _read_cases(sessions: sessionmaker[Session], feed: Any, unit_code: str, after: int) -> list[CaseNotice]:
    with sessions() as session:
        notices: list[CaseNotice] = feed.notices_after(session, unit_code, after, STREAM_BATCH)
        return notices


def parse_event_id(value: str) -> tuple[int, int]:
    """Last-Event-ID: `<ledger cursor>` or `<ledger cursor>.<case cursor>`."""
    ledger, _, cases = value.strip().partition(".")
    try:
        parsed = int(ledger), int(cases) if cases else 0
    except ValueError:
        raise InvalidField("Last-Event-ID", "an event id this stream sent (`1842` or `1842.7`)") from None
    if not (0 <= parsed[0] <= MAX_CURSOR and 0 <= parsed[1] <= MAX_CURSOR):
        raise InvalidField("Last-Event-ID", "an event id this stream sent (`1842` or `1842.7`)")
    return parsed


async def _stream(
    request: Request, unit_code: str, api_key: str, start: int, seconds: float, cases_start: int = 0
) -> AsyncIterator[str]:
    """The event stream. Database reads run in the thread pool and waiting is `asyncio.sleep`, so
    a stream never holds the event loop or a thread while idle; the ledger is only queried when
    the horizon has moved. When the client goes away the server cancels this generator."""
    verifier = get_verifier(request)
    horizon = verifier.dispatcher.horizon
    sessions: sessionmaker[Session] = request.app.state.sessionmaker
    clock = get_clock(request)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    quiet_since = loop.time()
    scanned = start  # every notification up to here has been sent
    case_feed = verifier.dispatcher.case_feed
    cases_scanned = cases_start
    next_case_poll = loop.time()
    yield f"retry: {RETRY_MILLISECONDS}\n\n"
    while loop.time() < deadline:
        if case_feed is not None and loop.time() >= next_case_poll:
            # Case notices are rare: looked for every CASE_POLL_SECONDS, not every tick.
            next_case_poll = loop.time() + CASE_POLL_SECONDS
            try:
                notices = await run_in_threadpool(_read_cases, sessions, case_feed, unit_code, cases_scanned)
            except OperationalError:
                return
            for c in notices:
                cases_scanned = c.cursor
                yield _sse_case(c, scanned)
            if notices:
                quiet_since = loop.time()
        upto = horizon.seq()
        if upto > scanned:
            try:
                items = await run_in_threadpool(_read, sessions, unit_code, scanned, upto)
            except OperationalError as exc:
                # The database is unreachable: end the stream; the client reconnects with
                # Last-Event-ID after `retry` and resumes where it stopped.
                log.warning("notification stream ended: database unavailable (%s)", type(exc.orig).__name__)
                return
            for n in items:
                yield _sse(n, cases_scanned)
            if len(items) == STREAM_BATCH:
                scanned = items[-1].cursor
                continue  # more are waiting: send them before sleeping
            scanned = upto
            if items:
                quiet_since = loop.time()
        now = loop.time()
        if now - quiet_since >= HEARTBEAT_SECONDS:
            # A key revoked (or a unit suspended) since the stream opened stops it here.
            if verifier.keyring.authenticate(api_key, clock.now()) is None:
                return
            yield ": keep-alive\n\n"
            quiet_since = now
        await asyncio.sleep(max(0.0, min(STREAM_POLL_SECONDS, deadline - now)))


@router.get(
    "/notifications/stream",
    response_class=EventStream,
    responses={
        200: {
            "description": "an endless text/event-stream (until `max_seconds`)",
            "content": {
                "text/event-stream": {
                    "schema": {"type": "string"},
                    "example": f"retry: {RETRY_MILLISECONDS}\n\n"
                    f"id: 1842\nevent: notification\ndata: {json.dumps(_ITEM_EXAMPLE, separators=(',', ':'))}\n\n"
                    ": keep-alive\n\n",
                }
            },
        },
        **problem_responses(401, 422),
    },
)
async def notification_stream(
    request: Request,
    unit: CurrentUnit,
    after: Annotated[
        int | None,
        Query(
            ge=0, le=MAX_CURSOR, description="start after this cursor (ignored when Last-Event-ID is sent)"
        ),
    ] = None,
    last_event_id: Annotated[
        str | None,
        Header(
            alias="Last-Event-ID",
            max_length=41,
            description="send it when you reconnect: resume after it "
            "(`<cursor>` or `<cursor>.<case cursor>`)",
        ),
    ] = None,
    cases_after: Annotated[
        int,
        Query(ge=0, le=MAX_CURSOR, description="start case notices after this (ignored with Last-Event-ID)"),
    ] = 0,
    max_seconds: Annotated[
        float, Query(ge=0.1, le=3600, description="close the stream after this long; reconnect to go on")
    ] = 600,
) -> EventStream:
    """The same notifications as `GET /api/v1/notifications`, pushed as server-sent events.

    Each notification is one event:

        id: 1842
        event: notification
        data: {"cursor":1842,"check_id":"…","status":"reported_lost","event":"reported_lost","at":"…"}

    The `id` is the cursor. To resume after a disconnect, reconnect with the header
    `Last-Event-ID: <the last id you processed>` or with `?after=<cursor>`; without either the
    stream starts from the beginning of your subscriptions. The header wins over `after`, because
    a reconnecting SSE client re-sends the original URL.

    The stream needs your key in an `Authorization: Bearer` header, which a browser's
    `EventSource` cannot send: use a client that sends headers (a server-side one: your key
    never belongs in a browser), e.g. Python with httpx:

        with httpx.stream("GET", f"{base}/api/v1/notifications/stream",
                          params={"after": cursor}, headers={"Authorization": f"Bearer {key}"},
                          timeout=httpx.Timeout(5.0, read=30.0)) as r:
            for line in r.iter_lines():
                if line.startswith("id: "):
                    cursor = int(line[4:].partition(".")[0])
                elif line.startswith("data: "):
                    handle(json.loads(line[6:]))

    or `curl -sN "$IDG/api/v1/notifications/stream?after=0" -H "Authorization: Bearer $KEY"`.

    Case notices (an accountability case about your unit opened or decided, your unit
    reinstated) are events of their own, `event: case`, with the data of the poll's `cases`
    items. Once one was sent, every event's `id` holds both positions, `<cursor>.<case cursor>`,
    so `Last-Event-ID` resumes both; `?cases_after=` starts the case notices after a position.

    A comment line `: keep-alive` is sent after 15 seconds without events, so proxies keep the
    connection open. The server closes the stream after `max_seconds` (default 10 minutes), or
    when your API key is revoked; reconnect to continue. Use a client with a read timeout longer
    than 15 seconds."""
    if last_event_id is not None:
        start, cases_start = parse_event_id(last_event_id)
    else:
        start, cases_start = after or 0, cases_after
    api_key = request.headers.get("authorization", "").partition(" ")[2].strip()
    return EventStream(
        _stream(request, unit.code, api_key, start, max_seconds, cases_start),
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/notifications/deliveries", response_model=DeliveryPage, responses=problem_responses(401, 422))
def deliveries(
    unit: CurrentUnit,
    session: SessionDep,
    before: Annotated[
        int | None, Query(ge=1, le=MAX_CURSOR, description="the `next` of the previous page")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> DeliveryPage:
    """Your webhook's delivery log, newest first: every attempt, your endpoint's answer, and
    whether the batch was delivered.

    **Webhooks.** If your unit was onboarded with a `webhook_url`, the registry POSTs your
    notifications there as JSON, in batches of up to 100, oldest first:

        {"unit": "ICBC-BJ", "items": [{"cursor": 1842, "check_id": "…", "status": "reported_lost",
                                        "event": "reported_lost", "at": "…"}]}

    Every POST carries `Webhook-Id` (the message's id: a retry or a resend of it carries the
    same id and body, so you can deduplicate on it) and `Idguard-Signature: t=<unix seconds>,
    v1=<hex>[,v1=<hex>]`: the HMAC-SHA256, under each secret in use, of the timestamp, a dot and
    the raw body bytes — one `v1` normally, two while a rolled secret overlaps with the previous
    one (POST /api/v1/units/{code}/webhook-secret). Accept the POST if any `v1` matches yours:

        fields = [f.split("=", 1) for f in request.headers["Idguard-Signature"].split(",")]
        t = dict(fields)["t"]
        expected = hmac.new(webhook_secret.encode(), t.encode() + b"." + raw_body,
                            hashlib.sha256).hexdigest()
        ok = any(hmac.compare_digest(expected, v) for k, v in fields if k == "v1")
        fresh = abs(time.time() - int(t)) < 300   # refuse replays

    (The first scheme, `X-Idguard-Timestamp` and `X-Idguard-Signature: sha256=<hex>` under the
    oldest secret in use, is still sent; docs/webhooks.md.)

    Answer any 2xx within 5 seconds to acknowledge the batch. Anything else (or no answer) is a
    failed attempt: the same notifications are sent again after 1 s, 2 s, 4 s … up to 5 minutes
    (±20%), until one succeeds; redirects are not followed. Delivery is at least once: skip items
    whose `cursor` you have already processed. The summary fields say how far delivery has got
    (`delivered_cursor`) and, while failing, when the next attempt is due."""
    page, cursor = delivery_log(session, unit.code, before=before, limit=limit)
    return DeliveryPage(
        items=[
            DeliveryOut(
                id=d.id,
                delivery_id=None if d.message_id is None else str(d.message_id),
                cursor=d.cursor,
                attempt=d.attempt,
                at=d.at,
                status_code=d.status_code,
                error=d.error,
                delivered=d.delivered,
            )
            for d in page.rows
        ],
        next=page.rows[-1].id if page.more else None,
        delivered_cursor=cursor.delivered_seq if cursor is not None else None,
        failures=cursor.failures if cursor is not None else 0,
        # While a batch is in flight the column holds the claim's lease, which is no retry time.
        next_attempt_at=cursor.next_attempt_at if cursor is not None and cursor.failures else None,
    )
