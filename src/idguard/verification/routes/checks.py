"""The check log: a unit's own history; supervisors and auditors see every unit's."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, Query

from idguard.api.deps import CurrentCaller, SessionDep
from idguard.api.paging import decode_cursor, encode_cursor
from idguard.api.schemas import problem_responses
from idguard.core.errors import Forbidden, InvalidField
from idguard.core.grants import Actor, Role
from idguard.verification.models import Check
from idguard.verification.schemas import CheckOut, CheckPage

router = APIRouter(prefix="/api/v1", tags=["verification (units)"])


@router.get("/checks", response_model=CheckPage, responses=problem_responses(401, 403, 422))
def checks(
    caller: CurrentCaller,
    session: SessionDep,
    since: Annotated[dt.datetime | None, Query(alias="from", description="RFC 3339, inclusive")] = None,
    until: Annotated[dt.datetime | None, Query(alias="to", description="RFC 3339, exclusive")] = None,
    result: Annotated[str | None, Query(pattern="^(valid|invalid|mismatch)$")] = None,
    unit: Annotated[str | None, Query(description="staff only: one unit's checks")] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> CheckPage:
    """Check history, newest first. A unit (API key) sees only its own checks; supervisors and
    auditors (staff token) see all and may filter by `unit`. Checks reach this log within one
    second of being answered. Id numbers are masked."""
    stmt = sa.select(Check)
    if isinstance(caller, Actor):
        if caller.role not in (Role.SUPERVISOR, Role.AUDITOR):
            raise Forbidden(f"the {caller.role.value} role may not read the check log")
        if unit is not None:
            stmt = stmt.where(Check.unit_code == unit)
    else:
        stmt = stmt.where(Check.unit_code == caller.code)
    for name, bound in (("from", since), ("to", until)):
        if bound is not None and bound.tzinfo is None:
            raise InvalidField(name, "give a time zone (RFC 3339)")
    if since is not None:
        stmt = stmt.where(Check.at >= since)
    if until is not None:
        stmt = stmt.where(Check.at < until)
    if result is not None:
        stmt = stmt.where(Check.result == result)
    if cursor is not None:
        at, check_id = decode_cursor(cursor)
        stmt = stmt.where(sa.or_(Check.at < at, sa.and_(Check.at == at, Check.id < check_id)))
    rows = list(session.scalars(stmt.order_by(Check.at.desc(), Check.id.desc()).limit(limit + 1)))
    page, more = rows[:limit], len(rows) > limit
    return CheckPage(
        items=[
            CheckOut(
                check_id=str(c.id),
                unit=c.unit_code,
                operator=c.operator,
                purpose=c.purpose,
                at=c.at,
                result=c.result,
                reason=c.reason,
                id_number=c.id_masked,
                fingerprint_match=c.fingerprint_match,
            )
            for c in page
        ],
        next=encode_cursor(page[-1].at, page[-1].id) if more else None,
    )
