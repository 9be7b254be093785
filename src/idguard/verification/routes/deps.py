"""Verification's request dependencies: the worker's Verifier, and the unit whose API key is the
bearer token (checked in memory, in constant time)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials
from starlette.exceptions import HTTPException

from idguard.api.deps import SessionDep, bearer, get_clock
from idguard.core.grants import Actor
from idguard.registry.routes.deps import current_staff
from idguard.verification.rules import KEY_PREFIX
from idguard.verification.runtime.keyring import UnitView
from idguard.verification.verifier import Verifier


def get_verifier(request: Request) -> Verifier:
    verifier: Verifier = request.app.state.verifier
    return verifier


def _unit_for(request: Request, credentials: HTTPAuthorizationCredentials | None) -> UnitView:
    unauthorized = HTTPException(
        401, "a valid unit API key is required", headers={"WWW-Authenticate": "Bearer"}
    )
    if credentials is None:
        raise unauthorized
    keyring = get_verifier(request).keyring
    now = get_clock(request).now()
    unit = keyring.authenticate(credentials.credentials, now)
    if unit is None:
        suspended = keyring.identify(credentials.credentials, now)
        if suspended is not None:  # a right key of a suspended unit: say so, and how to appeal
            raise HTTPException(401, suspension_detail(suspended), headers={"WWW-Authenticate": "Bearer"})
        raise unauthorized
    return unit


def suspension_detail(unit: UnitView) -> str:
    """The 401's detail for a suspended unit's key (only its own key's holder reads it)."""
    note = unit.suspension_note or (
        "To appeal, contact the supervising authority (公安机关) that decided it; a supervisor restores "
        f"your keys with POST /api/v1/units/{unit.code}/reinstate."
    )
    return f"unit {unit.code} is suspended: its API keys do not work until it is reinstated. {note}"


async def current_unit(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> UnitView:
    """The unit whose API key is the bearer token, checked in memory in constant time. `async`
    because it does no I/O: a sync dependency would cost a thread hop on every check."""
    return _unit_for(request, credentials)


CurrentUnit = Annotated[UnitView, Depends(current_unit)]


def current_caller(
    request: Request,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> UnitView | Actor:
    """A unit (API key) or a member of staff (token), for routes both may call."""
    if credentials is not None and credentials.credentials.startswith(KEY_PREFIX):
        return _unit_for(request, credentials)
    return current_staff(request, session, credentials)


CurrentCaller = Annotated[UnitView | Actor, Depends(current_caller)]
