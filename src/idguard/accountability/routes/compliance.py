"""Monthly compliance: every unit's (supervisors, auditors) and one unit's (itself, too)."""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Annotated

from fastapi import APIRouter, Query, Request
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from starlette.responses import Response

from idguard import uow
from idguard.accountability import compliance
from idguard.accountability.routes.deps import ladder, window
from idguard.accountability.rules import Ladder, closable_at, parse_month
from idguard.accountability.schemas import ComplianceOut, ComplianceRowOut, UnitComplianceOut, ViolationOut
from idguard.api.deps import SessionDep, get_clock, get_settings
from idguard.api.schemas import problem_responses
from idguard.core.errors import Forbidden, InvalidField, NotFound, RuleViolation
from idguard.core.grants import Actor, Permission
from idguard.verification.models import Unit
from idguard.verification.routes.deps import CurrentCaller

router = APIRouter(prefix="/api/v1", tags=["accountability"])

_Month = Annotated[str, Query(description="YYYY-MM (China Standard Time)", max_length=7)]


def _row(r: compliance.Row) -> ComplianceRowOut:
    return ComplianceRowOut(
        unit_code=r.unit_code,
        transactions=r.transactions,
        violations=r.violations,
        violation_rate=r.violation_rate,
        level=r.level,
        **r.counts,
    )


def _close_if_due(request: Request, session: Session, month: str) -> None:
    """The first read after a month can be closed closes it (its own transaction), so closed
    months always answer from stored rows; a concurrent reader closing it first is fine.
    The request's own transaction is ended first: on SQLite it holds the write lock."""
    settings = get_settings(request)
    now = get_clock(request).now()
    if now < closable_at(month, window(request)) or compliance.is_closed(session, month) is not None:
        return
    session.rollback()
    try:
        with uow.transaction(request.app.state.sessionmaker) as closing:
            if compliance.is_closed(closing, month) is not None:
                return
            compliance.close_month(
                closing,
                month=month,
                now=now,
                window=window(request),
                ladder=ladder(request),
                ladder_text=settings.compliance_levels,
                staff_id=None,
            )
    except (IntegrityError, RuleViolation):
        return  # closed by someone else meanwhile


def _require_staff_reader(caller: Actor) -> None:
    caller.require(Permission.READ_CHECK_LOG)


@router.get("/compliance", response_model=ComplianceOut, responses=problem_responses(401, 403, 422))
def all_units(
    request: Request,
    caller: CurrentCaller,
    session: SessionDep,
    month: _Month,
    after: Annotated[str | None, Query(max_length=40, description="the `next` of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000,
) -> Response:
    """One row per unit for the month (supervisors, auditors): transactions, counts per class,
    `violation_rate` and `level` (`ok` / `early_warning` / `standard` / `excessive`; the
    thresholds are in docs/accountability.md). Units in code order, `limit` per page.

    A closed month answers from the figures stored when it was closed (`closed: true`). A month
    is closed by `idguard compliance close YYYY-MM`, or by the first read once its end plus the
    check window has passed; before that the figures are computed now and provisional."""
    if not isinstance(caller, Actor):
        raise Forbidden("units read their own row: GET /api/v1/units/{code}/compliance")
    _require_staff_reader(caller)
    month = parse_month(month)
    _close_if_due(request, session, month)
    body = report_json(session, month=month, ladder=ladder(request), after=after, limit=limit)
    return Response(body, media_type="application/json")


def _time(value: dt.datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def report_json(session: Session, *, month: str, ladder: Ladder, after: str | None, limit: int) -> str:
    """GET /api/v1/compliance's answer (ComplianceOut) as JSON. A closed month asked for whole
    (no `after`, `limit` at least its units) is the array rendered when it was closed: one row
    read, whatever the number of units. Otherwise rows are read and written out directly (10,000
    rows through pydantic models would cost several times the database read)."""
    closed = compliance.is_closed(session, month)
    if closed is not None and after is None and limit >= closed.units:
        head = {"month": month, "closed": True, "closed_at": _time(closed.closed_at), "next": None}
        return json.dumps(head, separators=(",", ":"))[:-1] + ',"items":' + closed.items_json + "}"
    if closed is not None:
        rows = compliance.stored(session, month=month, after=after, limit=limit + 1)
    else:
        rows = [
            r
            for r in compliance.live(session, month=month, ladder=ladder)
            if after is None or r.unit_code > after
        ]
    page, more = rows[:limit], len(rows) > limit
    head = {
        "month": month,
        "closed": closed is not None,
        "closed_at": _time(closed.closed_at if closed is not None else None),
        "next": page[-1].unit_code if more else None,
    }
    return json.dumps(head, separators=(",", ":"))[:-1] + ',"items":' + compliance.items_json(page) + "}"


def _encode(keys: tuple[dt.datetime, int]) -> str:
    return base64.urlsafe_b64encode(f"{keys[0].isoformat()}|{keys[1]}".encode()).decode()


def _decode(cursor: str) -> tuple[dt.datetime, int]:
    try:
        at, row_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        parsed = dt.datetime.fromisoformat(at), int(row_id)
    except (ValueError, UnicodeDecodeError):
        raise InvalidField("after", "not a cursor returned by this endpoint") from None
    if parsed[0].tzinfo is None:
        raise InvalidField("after", "not a cursor returned by this endpoint")
    return parsed[0].astimezone(dt.UTC), parsed[1]


@router.get(
    "/units/{code}/compliance",
    response_model=UnitComplianceOut,
    responses=problem_responses(401, 403, 404, 422),
)
def one_unit(
    request: Request,
    code: str,
    caller: CurrentCaller,
    session: SessionDep,
    month: _Month,
    after: Annotated[str | None, Query(max_length=200, description="the `next` of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> UnitComplianceOut:
    """One unit's month: its row and its non-compliant transactions (`ref`, class, `at`), oldest
    first, `limit` per page. A unit reads its own (with its key); supervisors and auditors any."""
    if isinstance(caller, Actor):
        _require_staff_reader(caller)
    elif caller.code != code:
        raise Forbidden("a unit reads only its own compliance")
    month = parse_month(month)
    if session.get(Unit, code) is None:
        raise NotFound(f"no unit {code}")
    _close_if_due(request, session, month)
    report = compliance.report(session, month=month, ladder=ladder(request), unit_code=code)
    if not report.rows:  # a unit onboarded after the month was closed
        row = compliance.Row(
            code, 0, dict.fromkeys(compliance.CLASS_COLUMNS, 0), 0.0, ladder(request).level(0, 0)
        )
    else:
        row = report.rows[0]
    items, more = compliance.violations_page(
        session, unit_code=code, month=month, after=_decode(after) if after else None, limit=limit
    )
    return UnitComplianceOut(
        month=month,
        closed=report.closed,
        closed_at=report.closed_at,
        row=_row(row),
        violations=[ViolationOut(ref=i.ref, classification=i.classification, at=i.at) for i in items],
        next=_encode(more) if more is not None else None,
    )
