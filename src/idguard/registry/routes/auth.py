from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from idguard.api.deps import SessionDep, client_address, get_settings, throttle
from idguard.api.schemas import problem_responses
from idguard.core.errors import InvalidField
from idguard.registry.schemas import TokenIn, TokenOut
from idguard.registry.staff import authenticate, issue_token

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])
LOGIN_BURST = 10  # attempts at once per account (50 per client address)
LOGIN_PER_MINUTE = 2.0  # then refilled at this rate (10 per minute per address)

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
    except ValueError:
        raise InvalidField("body", "send username and password as JSON or as a form") from None
    # Per account and per client address: a slow trickle of guesses at most, whoever sends them.
    throttle(
        request,
        f"login-account:{credentials.username}",
        per_minute=LOGIN_PER_MINUTE,
        burst=LOGIN_BURST,
        what="login attempts for this account",
    )
    throttle(
        request,
        f"login-address:{client_address(request)}",
        per_minute=LOGIN_PER_MINUTE * 5,
        burst=LOGIN_BURST * 5,
        what="login attempts from this address",
    )
    # argon2 takes tens of milliseconds of CPU: keep it off the event loop.
    staff = await run_in_threadpool(
        authenticate, session, username=credentials.username, password=credentials.password
    )
    if staff is None:
        raise HTTPException(401, "wrong username or password", headers={"WWW-Authenticate": "Bearer"})
    settings = get_settings(request)
    # Token expiry is checked by PyJWT against the wall clock, so it is issued by the wall clock too.
    now = dt.datetime.now(dt.UTC)
    return TokenOut(
        access_token=issue_token(
            staff, secret=settings.secret_key, now=now, ttl_seconds=settings.token_ttl_seconds
        ),
        expires_in=settings.token_ttl_seconds,
    )
