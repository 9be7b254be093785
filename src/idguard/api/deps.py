"""Request dependencies every feature's routes share: the session, settings, clock, throttling,
and `respond`, which turns a unit of work's answer into the HTTP response.

Who the caller is lives with the feature that knows them: staff tokens in
registry/routes/deps.py, units' API keys in verification/routes/deps.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPBearer
from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException
from starlette.responses import Response

from idguard.api.errors import PROBLEM, ApiError, problem_body
from idguard.config import Settings
from idguard.core.clock import Clock
from idguard.core.errors import RecordedRefusal
from idguard.core.ratelimit import RateLimiter
from idguard.uow import Answer

bearer = HTTPBearer(auto_error=False, description="staff token from /api/v1/auth/token, or a unit's API key")


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.sessionmaker() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_clock(request: Request) -> Clock:
    clock: Clock = request.app.state.clock
    return clock


def throttle(request: Request, key: str, *, per_minute: float, burst: int, what: str) -> None:
    """429 with Retry-After once `key` has used its burst and refills at `per_minute`: slows
    guessing (passwords, who holds a found card) without a lock-out anyone could trigger forever."""
    limiter: RateLimiter = request.app.state.throttle
    wait = limiter.take(key, per_minute / 60.0, burst=burst)
    if wait:
        raise HTTPException(
            429, f"too many {what}; retry later", headers={"Retry-After": limiter.retry_after_header(wait)}
        )


def unauthorized(detail: str) -> ApiError:
    """A 401 that says what is wrong with the credentials (and how to send them)."""
    return ApiError(401, detail, code="unauthorized", headers={"WWW-Authenticate": "Bearer"})


def credentials_fault(request: Request, *, takes: str) -> str | None:
    """Why the request carries no bearer credential at all (None when it carries one): no
    Authorization header, or one that is not `Bearer <credential>`. `takes` names what the route
    takes, for the message."""
    header = request.headers.get("authorization")
    if header is None:
        return f"no Authorization header: send `Authorization: Bearer <{takes}>`"
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return f"the Authorization header must be `Bearer <{takes}>`"
    return None


def client_address(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


def refusal_json(refusal: RecordedRefusal) -> str:
    """A recorded refusal as the problem document stored for its Idempotency-Key."""
    return json.dumps(problem_body(refusal.status, refusal.title, refusal.detail, code=refusal.code))


def respond(answer: Answer) -> Response:
    """The HTTP response of a unit of work's answer; a replay says so in `Idempotent-Replayed`
    (a stored error is a recorded refusal, replayed as the problem it was)."""
    response = Response(
        content=answer.body,
        status_code=answer.status,
        media_type=PROBLEM if answer.status >= 400 else "application/json",
    )
    if answer.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response
