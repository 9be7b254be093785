"""The registry's request dependencies: the member of staff behind a bearer token, and `Tx`, a
staff request's unit of work (idguard.uow) with its Idempotency-Key."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Annotated, TypeVar

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.responses import Response

from idguard.api.deps import SessionDep, bearer, get_clock, get_settings, refusal_json, respond
from idguard.biometrics.fingerprints import Biometrics
from idguard.core.grants import Actor
from idguard.core.sealing import Sealer
from idguard.registry.staff import actor_from_token
from idguard.uow import IDEMPOTENCY_HEADER, Idempotency, UnitOfWork

T = TypeVar("T")


def current_staff(
    request: Request,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Actor:
    unauthorized = HTTPException(
        401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"}
    )
    if credentials is None:
        raise unauthorized
    actor = actor_from_token(session, credentials.credentials, secret=get_settings(request).token_key)
    if actor is None:
        raise unauthorized
    return actor


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
