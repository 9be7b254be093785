"""The registry's request dependencies: the member of staff behind a bearer token, and `Tx`, a
staff request's unit of work (idguard.uow) with its Idempotency-Key."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable
from typing import Annotated, TypeVar

import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel
from starlette.responses import Response

from idguard.api.deps import (
    SessionDep,
    bearer,
    credentials_fault,
    get_clock,
    get_settings,
    refusal_json,
    respond,
    unauthorized,
)
from idguard.biometrics.fingerprints import Biometrics
from idguard.core.grants import UNIT_KEY_PREFIX, Actor
from idguard.core.sealing import Sealer
from idguard.registry.staff import actor_from_token
from idguard.uow import IDEMPOTENCY_HEADER, Idempotency, UnitOfWork

T = TypeVar("T")


def current_staff(
    request: Request,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Actor:
    """The member of staff whose token is the bearer credential; a 401 saying what is wrong
    otherwise (no header, not Bearer, a unit's key or a citizen's token, an expired token)."""
    if credentials is None:
        raise unauthorized(credentials_fault(request, takes=STAFF_TOKEN) or f"send a {STAFF_TOKEN}")
    token = credentials.credentials
    actor = actor_from_token(session, token, secret=get_settings(request).token_key)
    if actor is None:
        raise unauthorized(_why_not_staff(token))
    return actor


STAFF_TOKEN = "staff token from POST /api/v1/auth/token"  # noqa: S105 - words for a message, not a secret


def _why_not_staff(token: str) -> str:
    """The reason a bearer credential is not a staff token, for the 401's detail. The claims are
    read without checking the signature: only to choose the words, never to let anyone in."""
    if token.startswith(UNIT_KEY_PREFIX):
        return f"this is a unit's API key; staff routes take a {STAFF_TOKEN}"
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        return f"not a token this service issued: send a {STAFF_TOKEN}"
    if claims.get("typ") == "citizen":
        return f"this is a citizen's token; staff routes take a {STAFF_TOKEN}"
    expires = claims.get("exp")
    if isinstance(expires, int | float) and expires <= time.time():  # as jwt.decode judged it
        at = dt.datetime.fromtimestamp(expires, dt.UTC).isoformat(timespec="seconds")
        return f"the token expired at {at}: sign in again"
    return (
        "the token is not accepted (signed with a key since rotated, or its account disabled): sign in again"
    )


CurrentStaff = Annotated[Actor, Depends(current_staff)]


def get_biometrics(request: Request) -> Biometrics:
    biometrics: Biometrics = request.app.state.biometrics
    return biometrics


BiometricsDep = Annotated[Biometrics, Depends(get_biometrics)]


class Tx:
    """The unit of work of one staff request."""

    def __init__(self, request: Request, session: SessionDep, actor: CurrentStaff) -> None:
        self.request = request
        self.session = session
        self.actor = actor
        self.now: dt.datetime = get_clock(request).now()
        self.uow = UnitOfWork(session, self.now, Sealer(get_settings(request).idempotency_key))

    def read(self, fn: Callable[[], T]) -> T:
        """Run a read and commit its audit entries with it."""
        return self.uow.read(fn)

    def write(
        self,
        fn: Callable[[], BaseModel],
        *,
        body: BaseModel | None,
        status_code: int = 201,
        shown_once: tuple[str, ...] = (),
        notice: str | None = None,
    ) -> Response:
        """Run a write and commit it once; a retry under the same Idempotency-Key (same member of
        staff, same method, path and body) gets the first answer again and changes nothing.

        `shown_once` names answer fields holding secrets (an API key): they are in the answer but
        never stored, so a replay answers them null, with `notice` saying what to do instead."""
        key = self.request.headers.get(IDEMPOTENCY_HEADER)
        idempotency = None
        if key is not None:
            request = f"{self.request.method} {self.request.url.path}\n".encode() + (
                body.model_dump_json().encode() if body is not None else b""
            )
            idempotency = Idempotency.of(str(self.actor.staff_id), key, request)
        answer = self.uow.write(
            lambda: fn().model_dump_json(),
            status=status_code,
            idempotency=idempotency,
            refusal_body=refusal_json,
            stored=_without(shown_once, notice) if shown_once else None,
        )
        return respond(answer)


def _without(fields: tuple[str, ...], notice: str | None) -> Callable[[str], str]:
    def keep(answer: str) -> str:
        kept = json.loads(answer)
        for name in fields:
            kept[name] = None
        if notice is not None:
            kept["notice"] = notice
        return json.dumps(kept, separators=(",", ":"), ensure_ascii=False)

    return keep


TxDep = Annotated[Tx, Depends()]
