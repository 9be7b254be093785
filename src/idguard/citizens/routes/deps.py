"""The citizens' request dependencies: the feature's keys (built once by `install`), the citizen
behind a citizen token, and `CitizenTx`, a citizen request's unit of work with its
Idempotency-Key."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, TypeVar

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.responses import Response

from idguard.api.deps import SessionDep, get_clock, get_settings, refusal_json, respond
from idguard.citizens.accounts import Citizen, citizen_from_token
from idguard.citizens.declarations import DeclarationKeys
from idguard.config import Environment, Settings
from idguard.core.sealing import Sealer
from idguard.uow import IDEMPOTENCY_HEADER, Idempotency, UnitOfWork

T = TypeVar("T")

citizen_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="citizen",
    description="a citizen token from /api/v1/citizen/token",
)


@dataclass(frozen=True)
class CitizenKeys:
    """The feature's keys, each derived for one job (HKDF labels) unless configured."""

    token_key: str  # signs citizen tokens: never the staff token key
    code_key: bytes  # keys the stored hash of activation codes
    totp_sealer: Sealer  # seals TOTP secrets at rest
    declarations: DeclarationKeys

    @classmethod
    def from_settings(cls, settings: Settings) -> CitizenKeys:
        configured = settings.declaration_keys
        if configured is None and settings.env is Environment.PRODUCTION:
            # Declarations are public and must outlive any secret rotation: never derived in production.
            raise ValueError("IDGUARD_DECLARATION_KEYS must be set in production")
        return cls(
            token_key=settings.derived_key("citizen-token").hex(),
            code_key=settings.derived_key("citizen-activation-code"),
            totp_sealer=Sealer(settings.derived_key("citizen-totp")),
            declarations=DeclarationKeys.from_config(
                configured.get_secret_value() if configured is not None else None,
                development_seed=settings.derived_key("declaration-signing"),
            ),
        )


def keys_of(request: Request) -> CitizenKeys:
    keys: CitizenKeys = request.app.state.citizen_keys
    return keys


async def get_keys(request: Request) -> CitizenKeys:
    """`async`: no I/O, so no thread hop (a sync dependency runs in the thread pool)."""
    return keys_of(request)


KeysDep = Annotated[CitizenKeys, Depends(get_keys)]


def current_citizen(
    request: Request,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(citizen_bearer)],
) -> Citizen:
    unauthorized = HTTPException(
        401, "a valid citizen token is required", headers={"WWW-Authenticate": "Bearer"}
    )
    if credentials is None:
        raise unauthorized
    citizen = citizen_from_token(session, credentials.credentials, secret=keys_of(request).token_key)
    if citizen is None:
        raise unauthorized
    return citizen


CurrentCitizen = Annotated[Citizen, Depends(current_citizen)]


class CitizenTx:
    """The unit of work of one citizen request."""

    def __init__(self, request: Request, session: SessionDep, citizen: CurrentCitizen) -> None:
        self.request = request
        self.session = session
        self.citizen = citizen
        self.settings = get_settings(request)
        self.keys = keys_of(request)
        self.now: dt.datetime = get_clock(request).now()
        self.uow = UnitOfWork(session, self.now, Sealer(self.settings.idempotency_key))

    def read(self, fn: Callable[[], T]) -> T:
        return self.uow.read(fn)

    def write(
        self, fn: Callable[[], BaseModel], *, body: BaseModel | None, status_code: int = 201
    ) -> Response:
        """Run a write and commit it once; a retry under the same Idempotency-Key (same citizen,
        method, path and body) gets the first answer again and changes nothing."""
        key = self.request.headers.get(IDEMPOTENCY_HEADER)
        idempotency = None
        if key is not None:
            request = f"{self.request.method} {self.request.url.path}\n".encode() + (
                body.model_dump_json().encode() if body is not None else b""
            )
            idempotency = Idempotency.of(f"citizen:{self.citizen.person_id}", key, request)
        answer = self.uow.write(
            lambda: fn().model_dump_json(),
            status=status_code,
            idempotency=idempotency,
            refusal_body=refusal_json,
        )
        return respond(answer)


async def _citizen_tx(request: Request, session: SessionDep, citizen: CurrentCitizen) -> CitizenTx:
    # `async` for the same reason as get_keys: building the unit of work does no I/O.
    return CitizenTx(request, session, citizen)


CitizenTxDep = Annotated[CitizenTx, Depends(_citizen_tx)]
