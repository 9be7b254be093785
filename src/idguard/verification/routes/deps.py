"""Verification's request dependencies: the worker's Verifier, and the unit whose API key is the
bearer token (checked in memory, in constant time).

A refused key is a 401 that says what is wrong, so an integrator fixes it without guessing: no
Authorization header, one that is not `Bearer …`, a staff token on a unit route, a key nobody
issued, a key rotated or revoked away (and when), a key whose rotation grace period is over
(and when), a suspended unit's key. Only the holder of a real key learns its history: the
database is asked (off the event loop) for the key's row by its prefix, and the row counts only
when the whole key's hash matches it.
"""

from __future__ import annotations

import datetime as dt
import hmac
from typing import Annotated

import sqlalchemy as sa
from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy.exc import SQLAlchemyError

from idguard.api.deps import SessionDep, bearer, credentials_fault, get_clock, unauthorized
from idguard.core.grants import Actor
from idguard.registry.routes.deps import current_staff
from idguard.verification.models import UnitKey
from idguard.verification.rules import KEY_PREFIX, hash_key, key_prefix
from idguard.verification.runtime.keyring import UnitView
from idguard.verification.verifier import Verifier

TAKES = "unit API key"


def get_verifier(request: Request) -> Verifier:
    verifier: Verifier = request.app.state.verifier
    return verifier


def _unit_for(request: Request, credentials: HTTPAuthorizationCredentials | None) -> UnitView:
    """The active unit of the key, or raise the 401 saying what is wrong (`why_refused` for the
    reasons only the database knows; `current_unit` asks it)."""
    if credentials is None:
        raise unauthorized(
            credentials_fault(request, takes=TAKES) or f"send `Authorization: Bearer <{TAKES}>`"
        )
    keyring = get_verifier(request).keyring
    now = get_clock(request).now()
    unit = keyring.authenticate(credentials.credentials, now)
    if unit is None:
        suspended = keyring.identify(credentials.credentials, now)
        if suspended is not None:  # a right key of a suspended unit: say so, and how to appeal
            raise unauthorized(suspension_detail(suspended))
        raise _KeyRefused(credentials.credentials, now)
    return unit


class _KeyRefused(Exception):
    """A key the ring does not know (now): `current_unit` asks the database why, off the loop."""

    def __init__(self, key: str, now: dt.datetime) -> None:
        super().__init__("API key refused")
        self.key = key
        self.now = now


def why_refused(request: Request, key: str, now: dt.datetime) -> str:
    """Why a key the key ring refused is refused: a staff token, a key rotated or revoked away, a
    rotated key past its grace period, or a key never issued. The database says which; a key is
    matched by its whole hash (in constant time), so nobody learns of another's key."""
    if not key.startswith(KEY_PREFIX):
        if key.count(".") == 2:  # a JWT: header.payload.signature
            return f"this route takes a {TAKES} (idg_…), not a staff token"
        return f"not a {TAKES}: unit keys begin with {KEY_PREFIX}"
    sessions = getattr(request.app.state, "sessionmaker", None)  # None: a verifier node (no database)
    try:
        row = None
        if sessions is not None:
            with sessions() as session:
                row = session.scalars(sa.select(UnitKey).where(UnitKey.prefix == key_prefix(key))).first()
    except SQLAlchemyError:  # the registry is unreachable: the plain answer
        row = None
    if row is None or not hmac.compare_digest(hash_key(key), row.key_hash):
        return "unknown API key: check that it was copied whole (it is shown once, at onboarding or rotation)"
    if row.revoked_at is not None:
        return (
            f"this API key was revoked at {_when(row.revoked_at)} (rotated away or revoked by a "
            "supervisor): use your unit's current key"
        )
    if row.expires_at is not None and row.expires_at <= now:
        return (
            f"this API key expired at {_when(row.expires_at)}, when the grace period of a key "
            "rotation ended: use the key the rotation issued"
        )
    return "API key not accepted: retry in a moment (key changes reach every worker within a second)"


def _when(at: dt.datetime) -> str:
    return (at if at.tzinfo else at.replace(tzinfo=dt.UTC)).astimezone(dt.UTC).isoformat(timespec="seconds")


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
    because it does no I/O: a sync dependency would cost a thread hop on every check (a refused
    key asks the database why, in a thread)."""
    try:
        return _unit_for(request, credentials)
    except _KeyRefused as refused:
        raise unauthorized(await run_in_threadpool(why_refused, request, refused.key, refused.now)) from None


CurrentUnit = Annotated[UnitView, Depends(current_unit)]


def current_caller(
    request: Request,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> UnitView | Actor:
    """A unit (API key) or a member of staff (token), for routes both may call."""
    if credentials is not None and credentials.credentials.startswith(KEY_PREFIX):
        try:
            return _unit_for(request, credentials)
        except _KeyRefused as refused:  # a sync dependency: already in a thread
            raise unauthorized(why_refused(request, refused.key, refused.now)) from None
    return current_staff(request, session, credentials)


CurrentCaller = Annotated[UnitView | Actor, Depends(current_caller)]
