"""Accountability of units (责任追究) for supervisors, read by auditors: the monthly table with
levels, the charts (checks per day and sector, invalid and mismatch rates, violations by unit)
drawn on the server as SVG with their numbers as tables, and cases — the finding, the unit's
answers (the hearing) and the decision.

Through the same use-cases as the API (accountability/compliance.py, statistics.py, cases.py):
reading needs `read_check_log`, opening and deciding a case `onboard_units` (the use-cases ask
again). A month whose end plus the check window has passed is closed by the first read, here as
through the API (`_close_if_due`), so both answer from the same stored figures. Aggregates and
cases hold no personal data: these reads are not person reads and are not audited as such.
"""

from __future__ import annotations

import datetime as dt
from functools import partial
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError
from sqlalchemy.orm import Session
from starlette.responses import Response

from idguard.accountability import cases, compliance, statistics
from idguard.accountability.routes.compliance import _close_if_due, _decode, _encode
from idguard.accountability.routes.deps import ladder
from idguard.accountability.rules import CaseStatus, Level, month_of, parse_month
from idguard.accountability.schemas import CaseIn, DecisionIn
from idguard.api.deps import SessionDep
from idguard.api.errors import field_name
from idguard.console import charts, deps
from idguard.console.routes.common import error_values, write
from idguard.console.web import ConsoleRefusal, Ctx, check_csrf, text
from idguard.core.clock import today_cst
from idguard.core.errors import DomainError, InvalidField, NotFound
from idguard.core.grants import Permission
from idguard.verification.models import Unit as UnitRow
from idguard.verification.routes.deps import get_verifier

router = APIRouter(include_in_schema=False)
PAGE = 50
CHART_UNITS = 20  # units drawn in the rates chart (the busiest); the table lists every one
TOP = 10  # units in the violations chart
DEFAULT_DAYS = 30


def _invalid(exc: ValidationError) -> dict[str, str]:
    first = exc.errors()[0]
    return {
        "error": "error.invalid",
        "error_detail": str(first["msg"]),
        "error_field": field_name(tuple(first["loc"])),
    }


def _month(ctx: Ctx, value: str | None) -> tuple[str, dict[str, str]]:
    """The month asked for (`YYYY-MM`), this month (China Standard Time) when absent; an invalid
    one falls back to this month with an error naming the field."""
    if not value:
        return month_of(ctx.now), {}
    try:
        return parse_month(value[:7]), {}
    except InvalidField as exc:
        return month_of(ctx.now), error_values(exc)


def _shift(month: str, by: int) -> str:
    year, mon = int(month[:4]), int(month[5:7]) - 1 + by
    return f"{year + mon // 12:04d}-{mon % 12 + 1:02d}"


# ---- the monthly table --------------------------------------------------------------------------
def _monthly(ctx: Ctx, db: Session, *, status: int = 200, **values: Any) -> Response:
    assert ctx.actor is not None  # noqa: S101
    asked = values.pop("month", None)
    month, error = _month(ctx, asked or ctx.request.query_params.get("month"))
    _close_if_due(ctx.request, db, month)
    report = compliance.report(db, month=month, ladder=ladder(ctx.request))
    defaults: dict[str, Any] = {
        "error": None,
        "error_detail": "",
        "error_field": "",
        "form": {"unit": ctx.request.query_params.get("unit", "")[:40], "finding": ""},
    }
    return ctx.render(
        "staff/accountability.html",
        status=422 if error and status == 200 else status,
        report=report,
        month=month,
        previous=_shift(month, -1),
        following=_shift(month, 1) if _shift(month, 1) <= month_of(ctx.now) else None,
        classes=compliance.CLASS_COLUMNS,
        levels=[lvl.value for lvl in Level],
        may_open=ctx.actor.may(Permission.ONBOARD_UNITS),
        **{**defaults, **error, **values},
    )


@router.get("/console/accountability")
def monthly_table(request: Request, db: SessionDep) -> Response:
    """Every unit's month: transactions, counts per class, violation rate and level."""
    ctx = deps.staff(request, db, permission=Permission.READ_CHECK_LOG)
    return _monthly(ctx, db)


@router.post("/console/accountability/cases")
async def open_case(request: Request, db: SessionDep) -> Response:
    """Open a case against a unit for a month, with the finding (cases.open_case; the unit is
    told through its notification channel)."""
    ctx = await run_in_threadpool(deps.staff, request, db, permission=Permission.ONBOARD_UNITS)
    form = await check_csrf(request, ctx)
    assert ctx.actor is not None  # noqa: S101
    actor = ctx.actor
    values = {
        "unit": text(form, "unit")[:40],
        "month": text(form, "month")[:7],
        "finding": text(form, "finding")[:2000],
    }
    shown_form = {"unit": values["unit"], "finding": values["finding"]}
    try:
        body = CaseIn.model_validate({"month": values["month"], "finding": values["finding"]})
    except ValidationError as exc:
        return await run_in_threadpool(
            partial(_monthly, ctx, db, status=422, month=values["month"], form=shown_form, **_invalid(exc))
        )
    if not values["unit"]:
        shown = error_values(InvalidField("unit", "choose the unit"))
        return await run_in_threadpool(
            partial(_monthly, ctx, db, status=422, month=values["month"], form=shown_form, **shown)
        )

    def run() -> str:
        case = cases.open_case(
            db,
            actor=actor,
            now=ctx.now,
            unit_code=values["unit"],
            month=parse_month(body.month),
            finding=body.finding,
        )
        return case.case_no

    try:
        case_no = await run_in_threadpool(partial(write, ctx, db, run, form=form))
    except DomainError as exc:
        return await run_in_threadpool(
            partial(
                _monthly,
                ctx,
                db,
                status=exc.status,
                month=values["month"],
                form=shown_form,
                **error_values(exc),
            )
        )
    return ctx.redirect(f"/console/cases/{case_no}?done=opened")


@router.get("/console/accountability/units/{code}")
def unit_month(code: str, request: Request, db: SessionDep) -> Response:
    """One unit's month: its row and its non-compliant transactions (`ref`, class, time), oldest
    first, 50 a page (`after`: the API's cursor) — what a supervisor reads before opening a case."""
    ctx = deps.staff(request, db, permission=Permission.READ_CHECK_LOG)
    code = code[:32]
    if db.get(UnitRow, code) is None:
        raise ConsoleRefusal(404, "acct.no_unit")
    month, error = _month(ctx, request.query_params.get("month"))
    _close_if_due(request, db, month)
    report = compliance.report(db, month=month, ladder=ladder(request), unit_code=code)
    row = report.rows[0] if report.rows else None
    try:
        after = _decode(request.query_params["after"]) if request.query_params.get("after") else None
    except InvalidField as exc:
        after, error = None, error or error_values(exc)
    items, more = compliance.violations_page(db, unit_code=code, month=month, after=after, limit=PAGE)
    next_url = None
    if more is not None:
        next_url = f"/console/accountability/units/{code}?" + urlencode(
            {"month": month, "after": _encode(more)}
        )
    return ctx.render(
        "staff/accountability_unit.html",
        status=422 if error else 200,
        code=code,
        month=month,
        report=report,
        row=row,
        classes=compliance.CLASS_COLUMNS,
        items=items,
        next_url=next_url,
        may_open=ctx.actor is not None and ctx.actor.may(Permission.ONBOARD_UNITS),
        **({"error": None, "error_detail": "", "error_field": ""} | error),
    )


# ---- charts -------------------------------------------------------------------------------------
def _day(value: str | None, field: str, default: dt.date) -> dt.date:
    if not value:
        return default
    try:
        return dt.date.fromisoformat(value[:10])
    except ValueError:
        raise InvalidField(field, "a day is YYYY-MM-DD") from None


@router.get("/console/accountability/charts")
def charts_page(request: Request, db: SessionDep) -> Response:
    """Checks per day and sector, invalid and mismatch rates per unit, the month's violations by
    unit: each an SVG chart with its numbers as a table (`from`, `to`: at most 92 days)."""
    ctx = deps.staff(request, db, permission=Permission.READ_CHECK_LOG)
    assert ctx.actor is not None  # noqa: S101
    actor = ctx.actor
    q = request.query_params
    today = today_cst(ctx.now)
    error: dict[str, str] = {}
    try:
        until = _day(q.get("to"), "to", today)
        since = _day(q.get("from"), "from", until - dt.timedelta(days=DEFAULT_DAYS - 1))
        per_sector = statistics.checks_per_sector(db, actor=actor, since=since, until=until)
        rates = statistics.unit_rates(db, actor=actor, since=since, until=until)
    except InvalidField as exc:
        error = error_values(exc)
        until, since = today, today - dt.timedelta(days=DEFAULT_DAYS - 1)
        per_sector = statistics.checks_per_sector(db, actor=actor, since=since, until=until)
        rates = statistics.unit_rates(db, actor=actor, since=since, until=until)
    month, month_error = _month(
        ctx, q.get("month") or month_of(dt.datetime.combine(until, dt.time(12), tzinfo=dt.UTC))
    )
    error = error or month_error
    _close_if_due(request, db, month)
    top = statistics.top_violators(db, actor=actor, month=month, ladder=ladder(request), limit=TOP)

    days = [since + dt.timedelta(days=n) for n in range((until - since).days + 1)]
    sectors = sorted({r.sector for r in per_sector})
    by_day = {(r.day.isoformat()[5:], r.sector): r.checks for r in per_sector}
    t = ctx.t
    day_chart = charts.stacked_columns([d.isoformat()[5:] for d in days], sectors, by_day)
    busiest = sorted(rates, key=lambda r: (-r.checks, r.unit_code))[:CHART_UNITS]
    invalid, mismatch = t("acct.invalid_rate"), t("acct.mismatch_rate")
    rate_values = {(r.unit_code, invalid): r.share(r.invalid) for r in busiest} | {
        (r.unit_code, mismatch): r.share(r.mismatch) for r in busiest
    }
    rate_chart = charts.horizontal_bars(
        [r.unit_code for r in busiest], [invalid, mismatch], rate_values, percent=True
    )
    violations = t("acct.violations")
    top_chart = charts.horizontal_bars(
        [r.unit_code for r in top],
        [violations],
        {(r.unit_code, violations): float(r.violations) for r in top},
    )
    totals: dict[str, int] = {}
    for r in per_sector:
        totals[r.sector] = totals.get(r.sector, 0) + r.checks
    return ctx.render(
        "staff/accountability_charts.html",
        status=422 if error else 200,
        since=since,
        until=until,
        month=month,
        days=days,
        sectors=sectors,
        by_day=by_day,
        sector_totals=totals,
        day_chart=day_chart,
        rates=sorted(rates, key=lambda r: r.unit_code),
        rate_chart=rate_chart,
        top=top,
        top_chart=top_chart,
        **({"error": None, "error_detail": "", "error_field": ""} | error),
    )


# ---- cases --------------------------------------------------------------------------------------
@router.get("/console/cases")
def case_list(request: Request, db: SessionDep) -> Response:
    """Cases by case number with their history (`unit`, `status` filters; `after`: paging)."""
    ctx = deps.staff(request, db, permission=Permission.READ_CHECK_LOG)
    assert ctx.actor is not None  # noqa: S101
    q = request.query_params
    unit = q.get("unit", "").strip()[:32] or None
    try:
        status = CaseStatus(q["status"]) if q.get("status") else None
    except ValueError:
        status = None
    after = q.get("after", "")[:40] or None
    views, more = cases.list_cases(
        db, caller=ctx.actor, unit_code=unit, status=status, after=after, limit=PAGE
    )
    filters = {"unit": unit or "", "status": status.value if status else ""}
    next_url = "/console/cases?" + urlencode({**filters, "after": more}) if more else None
    return ctx.render("staff/cases.html", views=views, filters=filters, next_url=next_url)


def _case_page(ctx: Ctx, db: Session, case_no: str, *, status: int = 200, **values: Any) -> Response:
    assert ctx.actor is not None  # noqa: S101
    try:
        view = cases.view(db, case_no[:40])
    except NotFound:
        raise ConsoleRefusal(404, "acct.no_case") from None
    defaults: dict[str, Any] = {
        "error": None,
        "error_detail": "",
        "error_field": "",
        "form": {"decision": "", "note": ""},
    }
    return ctx.render(
        "staff/case.html",
        status=status,
        view=view,
        case=view.case,
        responses=sum(1 for e in view.events if e.kind.value == "response"),
        may_decide=ctx.actor.may(Permission.ONBOARD_UNITS) and view.case.status is CaseStatus.OPEN,
        **{**defaults, **values},
    )


@router.get("/console/cases/{case_no}")
def case_page(case_no: str, request: Request, db: SessionDep) -> Response:
    """A case: the finding, the unit's answers (the hearing), the decision, a reinstatement."""
    ctx = deps.staff(request, db, permission=Permission.READ_CHECK_LOG)
    if request.query_params.get("done") in ("opened", "decided"):
        ctx.values["notice"] = "acct.done_" + request.query_params["done"]
    return _case_page(ctx, db, case_no)


@router.post("/console/cases/{case_no}/decision")
async def decide(case_no: str, request: Request, db: SessionDep) -> Response:
    """Decide the case once: warning, suspension (the unit's keys stop) or dismissed, with a note."""
    ctx = await run_in_threadpool(deps.staff, request, db, permission=Permission.ONBOARD_UNITS)
    form = await check_csrf(request, ctx)
    assert ctx.actor is not None  # noqa: S101
    actor = ctx.actor
    values = {"decision": text(form, "decision")[:20], "note": text(form, "note")[:4000]}
    try:
        body = DecisionIn.model_validate(values)
    except ValidationError as exc:
        return await run_in_threadpool(
            partial(_case_page, ctx, db, case_no, status=422, form=values, **_invalid(exc))
        )

    def run() -> str:
        return cases.decide(
            db, actor=actor, now=ctx.now, case_no=case_no[:40], decision=body.decision, note=body.note
        ).case_no

    try:
        await run_in_threadpool(partial(write, ctx, db, run, form=form))
    except DomainError as exc:
        if isinstance(exc, NotFound):
            raise ConsoleRefusal(404, "acct.no_case") from None
        return await run_in_threadpool(
            partial(_case_page, ctx, db, case_no, status=exc.status, form=values, **error_values(exc))
        )
    await run_in_threadpool(get_verifier(request).follower.poll)  # this worker at once, as the API
    return ctx.redirect(f"/console/cases/{case_no[:40]}?done=decided")
