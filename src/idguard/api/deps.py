"""Request dependencies: the session, the acting staff member, and the one transaction boundary.

`Tx.write` is where every staff write commits: it replays a stored answer for a repeated
Idempotency-Key, runs the use-case, stores the answer beside the change, and commits once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable, Iterator
from typing import Annotated, TypeVar

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException
from starlette.responses import Response

from idguard.api.errors import PROBLEM, problem_body
from idguard.biometrics.fingerprints import Biometrics
from idguard.config import Settings
from idguard.core.clock import Clock
from idguard.core.errors import InvalidField, RecordedRefusal, RuleViolation
from idguard.core.grants import Actor
from idguard.core.ratelimit import RateLimiter
from idguard.db.common import IdempotencyRecord
from idguard.registry.staff import actor_from_token
from idguard.verification.rules import KEY_PREFIX
from idguard.verification.runtime.keyring import UnitView
from idguard.verification.verifier import Verifier

_bearer = HTTPBearer(auto_error=False, description="staff token from /api/v1/auth/token, or a unit's API key")
IDEMPOTENCY_HEADER = "Idempotency-Key"
T = TypeVar("T")


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.sessionmaker() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def throttle(request: Request, key: str, *, per_minute: float, burst: int, what: str) -> None:
    """429 with Retry-After once `key` has used its burst and refills at `per_minute`: slows
    guessing (passwords, who holds a found card) without a lock-out anyone could trigger forever."""
    limiter: RateLimiter = request.app.state.throttle
    wait = limiter.take(key, per_minute / 60.0, burst=burst)
    if wait:
        raise HTTPException(
            429, f"too many {what}; retry later", headers={"Retry-After": limiter.retry_after_header(wait)}
        )


def client_address(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


def get_clock(request: Request) -> Clock:
    clock: Clock = request.app.state.clock
    return clock


def current_staff(
    request: Request,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Actor:
    unauthorized = HTTPException(
        401, "a valid bearer token is required", headers={"WWW-Authenticate": "Bearer"}
    )
    if credentials is None:
        raise unauthorized
    actor = actor_from_token(session, credentials.credentials, secret=get_settings(request).secret_key)
    if actor is None:
        raise unauthorized
    return actor


CurrentStaff = Annotated[Actor, Depends(current_staff)]


class Tx:
    """The unit of work of one request."""

    def __init__(self, request: Request, session: SessionDep, actor: CurrentStaff) -> None:
        self.request = request
        self.session = session
        self.actor = actor
        self.now: dt.datetime = get_clock(request).now()
        self.biometrics: Biometrics = request.app.state.biometrics

    def read(self, fn: Callable[[], T]) -> T:
        """Run a read and commit its audit entries with it."""
        result = fn()
        self.session.commit()
        return result

    def write(
        self, fn: Callable[[], BaseModel], *, body: BaseModel | None, status_code: int = 201
    ) -> Response:
        key = self.request.headers.get(IDEMPOTENCY_HEADER)
        if key is None:
            result = self._run(fn)
            return _json(result.model_dump_json(), status_code)
        if not 1 <= len(key) <= 128:
            raise InvalidField(IDEMPOTENCY_HEADER, "an Idempotency-Key has 1 to 128 characters")
        principal = str(self.actor.staff_id)
        digest = hashlib.sha256(
            f"{self.request.method} {self.request.url.path}\n".encode()
            + (body.model_dump_json().encode() if body is not None else b"")
        ).hexdigest()
        replay = self._replay(principal, key, digest)
        if replay is not None:
            return replay
        # Claim the key first: a concurrent retry blocks on this row (PostgreSQL) or on the write
        # lock (SQLite) until we commit, then finds our answer instead of acting twice.
        record = IdempotencyRecord(
            principal=principal,
            key=key,
            request_hash=digest,
            status_code=0,
            body="",
            created_at=self.now,
        )
        self.session.add(record)
        try:
            self.session.flush()
        except IntegrityError:
            self.session.rollback()
            replay = self._replay(principal, key, digest)
            if replay is not None:
                return replay
            raise
        result = self._call(fn, replay_as=record)
        record.status_code = status_code
        record.body = result.model_dump_json()
        self._commit()
        return _json(record.body, status_code)

    def _run(self, fn: Callable[[], BaseModel]) -> BaseModel:
        result = self._call(fn)
        self._commit()
        return result

    def _call(self, fn: Callable[[], BaseModel], *, replay_as: IdempotencyRecord | None = None) -> BaseModel:
        try:
            return fn()
        except RecordedRefusal as refusal:
            # Roll the request back, keep only the record of the refusal (a failed comparison),
            # and, under an Idempotency-Key, the refusal as the key's answer: a retry of the same
            # request replays it instead of being compared (and recorded) a second time.
            self.session.rollback()
            self.session.add_all(refusal.records)
            if replay_as is not None:
                self.session.add(
                    IdempotencyRecord(
                        principal=replay_as.principal,
                        key=replay_as.key,
                        request_hash=replay_as.request_hash,
                        status_code=refusal.status,
                        body=json.dumps(problem_body(refusal.status, refusal.title, refusal.detail)),
                        created_at=replay_as.created_at,
                    )
                )
            self.session.commit()
            raise

    def _commit(self) -> None:
        try:
            self.session.commit()
        except IntegrityError:
            # The database's own invariants (one valid card, unique numbers) caught a race the
            # locks should have prevented; nothing was written.
            self.session.rollback()
            raise RuleViolation("a concurrent change conflicted with this one; nothing was written") from None

    def _replay(self, principal: str, key: str, digest: str) -> Response | None:
        stored = self.session.get(IdempotencyRecord, (principal, key), populate_existing=True)
        if stored is None:
            return None
        if stored.request_hash != digest:
            raise InvalidField(IDEMPOTENCY_HEADER, "this Idempotency-Key was used for a different request")
        # A stored error is a recorded refusal, replayed as it was answered.
        response = _json(stored.body, stored.status_code, PROBLEM if stored.status_code >= 400 else None)
        response.headers["Idempotent-Replayed"] = "true"
        return response


def _json(body: str, status_code: int, media_type: str | None = None) -> Response:
    return Response(content=body, status_code=status_code, media_type=media_type or "application/json")


TxDep = Annotated[Tx, Depends()]


def get_verifier(request: Request) -> Verifier:
    verifier: Verifier = request.app.state.verifier
    return verifier


def _unit_for(request: Request, credentials: HTTPAuthorizationCredentials | None) -> UnitView:
    unauthorized = HTTPException(
        401, "a valid unit API key is required", headers={"WWW-Authenticate": "Bearer"}
    )
    if credentials is None:
        raise unauthorized
    unit = get_verifier(request).keyring.authenticate(credentials.credentials, get_clock(request).now())
    if unit is None:
        raise unauthorized
    return unit


async def current_unit(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> UnitView:
    """The unit whose API key is the bearer token, checked in memory in constant time. `async`
    because it does no I/O: a sync dependency would cost a thread hop on every check."""
    return _unit_for(request, credentials)


CurrentUnit = Annotated[UnitView, Depends(current_unit)]


def current_caller(
    request: Request,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> UnitView | Actor:
    """A unit (API key) or a member of staff (token), for routes both may call."""
    if credentials is not None and credentials.credentials.startswith(KEY_PREFIX):
        return _unit_for(request, credentials)
    return current_staff(request, session, credentials)


CurrentCaller = Annotated[UnitView | Actor, Depends(current_caller)]
