"""The check log: a unit's own history; supervisors and auditors see every unit's."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Query

from idguard.api.deps import SessionDep
from idguard.api.paging import decode_cursor, encode_cursor
from idguard.api.schemas import problem_responses
from idguard.verification.checks import check_history
from idguard.verification.routes.deps import CurrentCaller
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
    after: Annotated[str | None, Query(max_length=200, description="the `next` of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> CheckPage:
    """Check history, newest first. A unit (API key) sees only its own checks; supervisors and
    auditors (staff token) see all and may filter by `unit`. Checks reach this log within one
    second of being answered. Id numbers are masked."""
    page = check_history(
        session,
        caller=caller,
        unit=unit,
        since=since,
        until=until,
        result=result,
        after=decode_cursor(after) if after is not None else None,
        limit=limit,
    )
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
            for c in page.rows
        ],
        next=encode_cursor(page.rows[-1].at, page.rows[-1].id) if page.more else None,
    )
