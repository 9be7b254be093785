"""The unit teller's other pages: notifications about the cards the unit watches (and notices of
accountability cases), the transactions upload (a CSV file, as `POST /api/v1/transactions`), and
the unit's own monthly compliance with its cases and its statements on them.

Each asks what the API asks of the unit's key (deps.unit: the key checked against the worker's
key ring now, so a revoked key or a suspended unit ends the session) and calls the same
use-cases: verification/notifications.py, accountability/transactions.py, compliance.py,
cases.py. A unit sees only its own.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session
from starlette.responses import Response

from idguard.accountability import cases, compliance, transactions
from idguard.accountability.rules import month_of, parse_ladder, parse_month
from idguard.api.deps import SessionDep
from idguard.console import deps
from idguard.console.routes.common import error_values, read
from idguard.console.routes.own_writes import write_as
from idguard.console.web import ConsoleRefusal, Ctx, check_csrf, text, upload
from idguard.core.errors import DomainError, InvalidField, NotFound
from idguard.verification.notifications import notifications_after
from idguard.verification.routes.deps import get_verifier
from idguard.verification.runtime.keyring import UnitView

router = APIRouter(include_in_schema=False)
NOTIFICATIONS_PAGE = 100
MAX_CURSOR = 2**63 - 1
TRANSACTIONS_MAX_BYTES = 512 * 1024
VIOLATIONS_PAGE = 100


def _principal(unit: UnitView) -> str:
    return f"unit:{unit.code}"  # the API's principal for a unit's Idempotency-Key


def _cursor(request: Request, name: str) -> int:
    raw = request.query_params.get(name, "0")[:20]
    try:
        value = int(raw)
    except ValueError:
        raise ConsoleRefusal(422, "teller.bad_cursor") from None
    if not 0 <= value <= MAX_CURSOR:
        raise ConsoleRefusal(422, "teller.bad_cursor")
    return value


# ---- notifications --------------------------------------------------------------------------


@router.get("/unit/notifications")
def notifications(request: Request, db: SessionDep) -> Response:
    """Changes to the cards the unit watches (a check with `watch: true`), oldest first from
    `after`, as `GET /api/v1/notifications` answers them (after the settle horizon, so none is
    ever skipped); and the notices of accountability cases about the unit."""
    ctx, unit = deps.unit(request)
    after, cases_after = _cursor(request, "after"), _cursor(request, "cases_after")
    dispatcher = get_verifier(request).dispatcher
    horizon = dispatcher.horizon.seq()
    items, next_cursor = notifications_after(db, unit.code, after, NOTIFICATIONS_PAGE, upto=horizon)
    feed = dispatcher.case_feed
    notices = feed.notices_after(db, unit.code, cases_after, NOTIFICATIONS_PAGE) if feed is not None else []
    return ctx.render(
        "unit/notifications.html",
        unit=unit,
        items=items,
        notices=notices,
        after=after,
        next=next_cursor,
        more=len(items) == NOTIFICATIONS_PAGE,
        cases_after=cases_after,
        cases_next=notices[-1].cursor if notices else cases_after,
    )


# ---- transactions upload --------------------------------------------------------------------


def _transaction_rows(raw: bytes) -> list[dict[str, Any]]:
    """The CSV's rows as API items: a header naming the fields (ref, at, id_number, purpose,
    check_id; an unknown column is an error, as in `idguard transactions import`), UTF-8 (a
    spreadsheet's BOM allowed), empty cells left out. Each row is then judged on its own."""
    try:
        decoded = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidField("file", "the CSV file is not UTF-8") from None
    reader = csv.DictReader(io.StringIO(decoded, newline=""))
    header = reader.fieldnames or []
    unknown = [h for h in header if h not in transactions.FIELDS]
    if unknown or "ref" not in header:
        raise InvalidField(
            "file", f"the header names the columns {', '.join(transactions.FIELDS)}; got {', '.join(header)}"
        )
    rows: list[dict[str, Any]] = []
    for record in reader:
        if len(rows) == transactions.MAX_ITEMS:
            raise InvalidField("file", f"at most {transactions.MAX_ITEMS} transactions in one file")
        extra = record.pop(None, None)
        row: dict[str, Any] = {k: v.strip() for k, v in record.items() if v not in (None, "")}
        if extra:
            row["row"] = "more values than columns"  # an unknown field: the item is rejected
        rows.append(row)
    if not rows:
        raise InvalidField("file", "the file has no transaction")
    return rows


def _transactions_page(ctx: Ctx, unit: UnitView, *, status: int = 200, **values: Any) -> Response:
    defaults: dict[str, Any] = {"results": None, "summary": {}, "error": None, "error_detail": ""}
    return ctx.render("unit/transactions.html", status=status, unit=unit, **{**defaults, **values})


@router.get("/unit/transactions")
def transactions_page(request: Request) -> Response:
    ctx, unit = deps.unit(request)
    return _transactions_page(ctx, unit)


@router.post("/unit/transactions")
async def upload_transactions(request: Request, db: SessionDep) -> Response:
    """Report the transactions of a CSV file (up to 1,000): each row accepted or rejected on its
    own with the fields at fault, idempotent per `ref`, and classified against the unit's own
    checks (provisional until the month is closed)."""
    ctx, unit = deps.unit(request)
    form = await check_csrf(request, ctx)
    raw = await upload(form, "file")
    try:
        if raw is None:
            raise InvalidField("file", "choose a CSV file")
        if len(raw) > TRANSACTIONS_MAX_BYTES:
            raise InvalidField("file", "the file is too large")
        items = _transaction_rows(raw)
    except DomainError as exc:
        return _transactions_page(ctx, unit, status=422, **error_values(exc))
    settings = ctx.settings

    def run() -> str:
        results = transactions.submit(
            db,
            unit_code=unit.code,
            items=items,
            now=ctx.now,
            window=dt.timedelta(hours=settings.check_window_hours),
            hash_key=settings.check_hash_key,
        )
        return json.dumps(
            [
                {
                    "ref": r.ref,
                    "status": r.status,
                    "errors": [{"field": e.field, "detail": e.detail} for e in r.errors],
                    "classification": r.classification,
                }
                for r in results
            ]
        )

    extra = hashlib.sha256(raw).hexdigest()
    try:
        answer = await run_in_threadpool(write_as, ctx, db, _principal(unit), run, form=form, extra=extra)
    except DomainError as exc:
        return _transactions_page(ctx, unit, status=exc.status, **error_values(exc))
    results: list[dict[str, Any]] = json.loads(answer)
    for line, result in enumerate(results, start=2):  # line 1 is the header
        result["line"] = line
    summary = {
        "accepted": sum(1 for r in results if r["status"] == "accepted"),
        "rejected": sum(1 for r in results if r["status"] == "rejected"),
        "violations": sum(
            1 for r in results if r["classification"] not in (None, "compliant") and r["status"] == "accepted"
        ),
    }
    return _transactions_page(ctx, unit, results=results, summary=summary)


# ---- the unit's own compliance and cases ------------------------------------------------------


def _compliance_values(ctx: Ctx, db: Session, unit: UnitView, month: str) -> dict[str, Any]:
    ladder = parse_ladder(ctx.settings.compliance_levels)
    report = compliance.report(db, month=month, ladder=ladder, unit_code=unit.code)
    row = (
        report.rows[0]
        if report.rows
        else compliance.Row(unit.code, 0, dict.fromkeys(compliance.CLASS_COLUMNS, 0), 0.0, ladder.level(0, 0))
    )
    violations, more = compliance.violations_page(
        db, unit_code=unit.code, month=month, after=None, limit=VIOLATIONS_PAGE
    )
    own, _ = cases.list_cases(db, caller=unit, unit_code=None, status=None, after=None, limit=50)
    return {
        "month": month,
        "report": report,
        "row": row,
        "classes": compliance.CLASS_COLUMNS,
        "violations": violations,
        "more": more is not None,
        "cases": own,
    }


def _compliance_page(
    ctx: Ctx, db: Session, unit: UnitView, month: str, *, status: int = 200, **values: Any
) -> Response:
    page = read(ctx, db, lambda: _compliance_values(ctx, db, unit, month))
    defaults: dict[str, Any] = {"error": None, "error_detail": "", "error_case": ""}
    return ctx.render("unit/compliance.html", status=status, unit=unit, **{**defaults, **page, **values})


@router.get("/unit/compliance")
def compliance_page(request: Request, db: SessionDep) -> Response:
    """The unit's month (`GET /api/v1/units/{code}/compliance`): transactions, counts per class,
    violation rate and level, the non-compliant transactions; and its cases with their history.
    A month not yet closed is shown as provisional (closing is the supervisors' figures' job)."""
    ctx, unit = deps.unit(request)
    try:
        month = parse_month(request.query_params.get("month", "")[:7] or month_of(ctx.now))
    except InvalidField:
        raise ConsoleRefusal(422, "teller.bad_month") from None
    if request.query_params.get("responded"):
        ctx.values["notice"] = "teller.responded"
    return _compliance_page(ctx, db, unit, month)


@router.post("/unit/cases/{case_no}/response")
async def respond(case_no: str, request: Request, db: SessionDep) -> Response:
    """The unit's statement on its own open case (the hearing: `POST /api/v1/cases/{no}/responses`)."""
    ctx, unit = deps.unit(request)
    form = await check_csrf(request, ctx)
    statement = text(form, "statement")
    month = text(form, "month")[:7] or month_of(ctx.now)
    try:
        month = parse_month(month)
    except InvalidField:
        month = month_of(ctx.now)

    def run() -> str:
        event = cases.respond(db, unit=unit, now=ctx.now, case_no=case_no[:24], statement=statement)
        return json.dumps({"event": event.id})

    try:
        await run_in_threadpool(write_as, ctx, db, _principal(unit), run, form=form)
    except NotFound:
        raise ConsoleRefusal(404, "teller.no_case") from None
    except DomainError as exc:
        status, shown = exc.status, error_values(exc)
        return await run_in_threadpool(
            lambda: _compliance_page(ctx, db, unit, month, status=status, error_case=case_no[:24], **shown)
        )
    return ctx.redirect(f"/unit/compliance?month={month}&responded=1")
