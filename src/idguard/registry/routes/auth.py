from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from idguard.api.deps import SessionDep, client_address, get_settings
from idguard.api.schemas import problem_responses
from idguard.core.errors import InvalidField
from idguard.core.ratelimit import RateLimiter
from idguard.registry.schemas import TokenIn, TokenOut
from idguard.registry.staff import authenticate, issue_token

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])
LOGIN_BURST = 10  # failed sign-ins at once per account and address (50 per address, 100 per account)
LOGIN_PER_MINUTE = 2.0  # then refilled at this rate (10 per minute per address, 20 per account)

_BODY_DOC = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": TokenIn.model_json_schema(),
                "example": {"username": "clerk1", "password": "..."},
            },
            "application/x-www-form-urlencoded": {"schema": TokenIn.model_json_schema()},
        },
    }
}


@router.post(
    "/token",
    response_model=TokenOut,
    responses={**problem_responses(401, 422), 429: {"description": "too many attempts; see Retry-After"}},
    openapi_extra=_BODY_DOC,
)
async def token(request: Request, session: SessionDep) -> TokenOut:
    """Exchange a staff username and password (JSON or OAuth2 form) for an expiring bearer token."""
    content_type = request.headers.get("content-type", "")
    try:
        if content_type.startswith("application/x-www-form-urlencoded") or content_type.startswith(
            "multipart/form-data"
        ):
            form = await request.form()
            data: object = {k: v for k, v in form.items() if k in ("username", "password")}
        else:
            data = await request.json()
        credentials = TokenIn.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InvalidField(str(first["loc"][0]) if first["loc"] else "body", first["msg"]) from None
    except (ValueError, RecursionError):  # not JSON, or nested deeper than json.loads goes
        raise InvalidField("body", "send username and password as JSON or as a form") from None
    # Failed sign-ins are counted per (account, address), per address, and per account. A guesser
    # empties the buckets of the addresses it uses and is refused there before any password is
    # checked; the account's owner, signing in from another address, is not slowed by it. The
    # per-account bucket (counting only failures that reached the password check) stops a guesser
    # spread over many addresses. Only failures take tokens: a clerk who signs in is never counted.
    limiter: RateLimiter = request.app.state.throttle
    address = client_address(request)
    buckets = (
        (
            f"login:{credentials.username}:{address}",
            LOGIN_PER_MINUTE,
            LOGIN_BURST,
            "for this account from this address",
        ),
        (f"login-address:{address}", LOGIN_PER_MINUTE * 5, LOGIN_BURST * 5, "from this address"),
        (
            f"login-account:{credentials.username}",
            LOGIN_PER_MINUTE * 10,
            LOGIN_BURST * 10,
            "for this account",
        ),
    )
    for key, per_minute, burst, where in buckets:
        wait = limiter.peek(key, per_minute / 60.0, burst=burst)
        if wait:
            raise HTTPException(
                429,
                f"too many failed sign-ins {where}; retry later",
                headers={"Retry-After": limiter.retry_after_header(wait)},
            )
    # argon2 takes tens of milliseconds of CPU: keep it off the event loop.
    staff = await run_in_threadpool(
        authenticate, session, username=credentials.username, password=credentials.password
    )
    if staff is None:
        for key, per_minute, burst, _ in buckets:
            limiter.take(key, per_minute / 60.0, burst=burst)
        raise HTTPException(401, "wrong username or password", headers={"WWW-Authenticate": "Bearer"})
    settings = get_settings(request)
    # Token expiry is checked by PyJWT against the wall clock, so it is issued by the wall clock too.
    now = dt.datetime.now(dt.UTC)
    return TokenOut(
        access_token=issue_token(
            staff, secret=settings.token_key, now=now, ttl_seconds=settings.token_ttl_seconds
        ),
        expires_in=settings.token_ttl_seconds,
    )
