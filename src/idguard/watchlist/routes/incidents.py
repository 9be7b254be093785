"""Incidents (冒用线索): list, stream, close."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker
from starlette.exceptions import HTTPException
from starlette.responses import Response, StreamingResponse

from idguard import uow
from idguard.api.deps import bearer, get_clock, get_settings
from idguard.api.schemas import STAFF_READ_ERRORS, STAFF_WRITE_ERRORS, problem_responses
from idguard.core.clock import Clock
from idguard.core.grants import Actor
from idguard.registry.routes.deps import TxDep
from idguard.registry.staff import actor_from_token
from idguard.watchlist import incidents, rules
from idguard.watchlist.incidents import Shown
from idguard.watchlist.routes import cursors
from idguard.watchlist.rules import IncidentKind, IncidentStatus
from idguard.watchlist.schemas import CloseIn, IncidentOut, IncidentPage

router = APIRouter(prefix="/api/v1/incidents", tags=["impersonation: incidents"])
log = logging.getLogger("idguard.api.incidents")

STREAM_POLL_SECONDS = 0.2
HEARTBEAT_SECONDS = 15.0
RETRY_MILLISECONDS = 3000
# An incident whose seq was allocated before another's may commit after it (two workers): the
# stream keeps looking SETTLE_SECONDS back, and never sends one twice.
SETTLE_SECONDS = 5.0
MAX_SEQ = 2**63 - 1


class EventStream(StreamingResponse):
    media_type = "text/event-stream"


def _out(shown: Shown) -> IncidentOut:
    i = shown.incident
    return IncidentOut(
        incident_no=i.incident_no,
        kind=i.kind,
        status=i.status,
        opened_at=i.opened_at,
        id_number=shown.id_number,
        unit_code=i.unit_code,
        check_id=i.check_id,
        office=i.office,
        count=i.count,
        last_at=i.last_at,
        closed_at=i.closed_at,
        note=i.note,
        detail=i.detail,
    )


@router.get("", response_model=IncidentPage, responses=STAFF_READ_ERRORS)
def list_incidents(
    tx: TxDep,
    status: Annotated[IncidentStatus | None, Query(description="open | confirmed | dismissed")] = None,
    kind: Annotated[IncidentKind | None, Query()] = None,
    office: Annotated[
        str | None, Query(max_length=12, description="the owning office (a clerk: their own by default)")
    ] = None,
    after: Annotated[str | None, Query(max_length=200, description="the `next` of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> IncidentPage:
    """Incidents, newest first (clerks: their own office's holders; supervisors and auditors:
    every office's, and the units' harvesting suspicions). Owned by the holder's
    household-registration office. A clerk asking for another office (`office`) sees its
    incidents with masked id numbers. Each holder shown in full is an audited read."""
    position = None if after is None else cursors.decode_int(after)
    rows, more = tx.read(
        lambda: incidents.list_incidents(
            tx.session,
            actor=tx.actor,
            now=tx.now,
            status=status,
            kind=kind,
            office=office,
            after=position,
            limit=limit,
        )
    )
    last = rows[-1].incident if rows and more else None
    return IncidentPage(
        items=[_out(r) for r in rows],
        next=None if last is None else cursors.encode(last.opened_at, last.seq),
    )


@router.post(
    "/{incident_no}/close", status_code=200, response_model=IncidentOut, responses=STAFF_WRITE_ERRORS
)
def close(incident_no: str, body: CloseIn, tx: TxDep) -> Response:
    """Close an open incident as `confirmed` or `dismissed`, with a `note` (a clerk of the owning
    office, or a supervisor; a unit's harvesting suspicion: supervisors, and closing it lifts the
    unit's throttle). Closed once (409 after); never deleted. Audited."""

    def run() -> IncidentOut:
        return _out(
            incidents.close(
                tx.session,
                actor=tx.actor,
                now=tx.now,
                incident_no=incident_no,
                outcome=body.outcome,
                note=body.note,
            )
        )

    return tx.write(run, body=body, status_code=200)


def _read(
    sessions: sessionmaker[Session], actor: Actor, clock: Clock, floor: int, sent: set[int]
) -> list[Shown]:
    with uow.transaction(sessions) as session:  # commits the audit entries of what is sent
        return incidents.new_since(session, actor=actor, now=clock.now(), floor=floor, sent=sent)


def _start(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return incidents.latest_seq(session)


def _sse(shown: Shown) -> str:
    data = _out(shown).model_dump_json()
    return f"id: {shown.incident.seq}\nevent: incident\ndata: {data}\n\n"


async def _stream(request: Request, actor: Actor, start: int | None, seconds: float) -> AsyncIterator[str]:
    sessions: sessionmaker[Session] = request.app.state.sessionmaker
    clock = get_clock(request)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    quiet_since = loop.time()
    yield f"retry: {RETRY_MILLISECONDS}\n\n"
    try:
        floor = start if start is not None else await run_in_threadpool(_start, sessions)
    except OperationalError:
        return
    sent: dict[int, float] = {}  # seq -> when sent; forgotten once below the floor
    while loop.time() < deadline:
        try:
            items = await run_in_threadpool(_read, sessions, actor, clock, floor, set(sent))
        except OperationalError as exc:
            log.warning("incident stream ended: database unavailable (%s)", type(exc.orig).__name__)
            return
        now = loop.time()
        for shown in items:
            sent[shown.incident.seq] = now
            yield _sse(shown)
        if items:
            quiet_since = now
        # Move the floor past what was sent long enough ago that nothing below it can still commit.
        settled = [seq for seq, at in sent.items() if at <= now - SETTLE_SECONDS]
        if settled:
            floor = max(floor, *settled)
            for seq in [seq for seq in sent if seq <= floor]:
                del sent[seq]
        if now - quiet_since >= HEARTBEAT_SECONDS:
            yield ": keep-alive\n\n"
            quiet_since = now
        await asyncio.sleep(max(0.0, min(STREAM_POLL_SECONDS, deadline - now)))


_EXAMPLE: dict[str, Any] = {
    "incident_no": "INCX3K9P2M7QW4D",
    "kind": "lost_card_presented",
    "status": "open",
    "opened_at": "2026-11-28T02:00:00Z",
    "id_number": "110105********002X",
    "unit_code": "ICBC-BJ",
    "check_id": "0b9f1c1e-5d0c-4a8e-9d5e-2c1a7f0e9b11",
    "office": "110105001",
    "count": 1,
}


def _streaming_staff(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Actor:
    """The member of staff behind the token, read in a session closed at once: a stream lasts
    minutes, and a session held open that long (the usual dependency's) would hold SQLite's
    write lock (BEGIN IMMEDIATE) against every writer."""
    unauthorized = HTTPException(
        401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"}
    )
    if credentials is None:
        raise unauthorized
    with request.app.state.sessionmaker() as session:
        actor = actor_from_token(session, credentials.credentials, secret=get_settings(request).token_key)
    if actor is None:
        raise unauthorized
    return actor


@router.get(
    "/stream",
    response_class=EventStream,
    responses={
        200: {
            "description": "an endless text/event-stream (until `max_seconds`)",
            "content": {
                "text/event-stream": {
                    "schema": {"type": "string"},
                    "example": f"retry: {RETRY_MILLISECONDS}\n\n"
                    f"id: 42\nevent: incident\ndata: {json.dumps(_EXAMPLE, ensure_ascii=False)}\n\n",
                }
            },
        },
        **problem_responses(401, 403, 422),
    },
)
async def stream(
    request: Request,
    actor: Annotated[Actor, Depends(_streaming_staff)],
    after: Annotated[int | None, Query(ge=0, le=MAX_SEQ, description="resume after this event id")] = None,
    last_event_id: Annotated[
        int | None,
        Header(alias="Last-Event-ID", ge=0, le=MAX_SEQ, description="sent by EventSource on reconnect"),
    ] = None,
    max_seconds: Annotated[float, Query(ge=0.1, le=3600, description="close after this long")] = 600,
) -> EventStream:
    """New incidents as server-sent events (`event: incident`, `data`: the item as in
    `GET /api/v1/incidents`, `id`: its position), to the same callers and with the same masking
    as the list. An incident appears here within a second of the check that opened it. Without
    `after` / `Last-Event-ID` the stream starts with incidents opened from now on; reconnect with
    the last id to resume. `: keep-alive` after 15 s without events."""
    rules.require_read_incidents(actor)
    start = last_event_id if last_event_id is not None else after
    return EventStream(
        _stream(request, actor, start, max_seconds),
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
