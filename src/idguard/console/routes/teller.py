"""The unit teller's page (/unit): check one card, with an optional fingerprint file, and see the
answer. The check goes through the worker's Verifier exactly as `POST /api/v1/verify` does: the
unit's purposes and rate apply, the check is recorded in the check log (journal synced before
the answer is shown) against the unit, the teller's operator name and the purpose."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError
from starlette.responses import Response

from idguard.api.deps import SessionDep
from idguard.api.errors import field_name
from idguard.biometrics import fingerprints
from idguard.console import deps
from idguard.console.capture import record_text
from idguard.console.web import Ctx, check_csrf, text, upload
from idguard.core.errors import DomainError, InvalidField
from idguard.verification import checks
from idguard.verification.routes.deps import get_verifier
from idguard.verification.runtime.checklog import LogFull
from idguard.verification.runtime.keyring import UnitView
from idguard.verification.schemas import VerifyIn
from idguard.verification.verifier import Item, Query

router = APIRouter(include_in_schema=False)
FIELDS = ("id_number", "name", "issued_on", "expires_on", "purpose")
HISTORY = 100


def _page(ctx: Ctx, unit: UnitView, *, status: int = 200, **values: Any) -> Response:
    defaults: dict[str, Any] = {
        "answer": None,
        "errors": {},
        "form": dict.fromkeys(FIELDS, "") | {"long_term": ""},
        "message": None,
    }
    template = "unit/result.html" if ctx.request.headers.get("HX-Request") else "unit/check.html"
    return ctx.render(
        template, status=status, unit=unit, purposes=sorted(unit.purposes), **{**defaults, **values}
    )


@router.get("/unit")
def check_page(request: Request) -> Response:
    ctx, unit = deps.unit(request)
    return _page(ctx, unit)


@router.post("/unit/check")
async def check(request: Request) -> Response:
    """Check the card in front of the teller; the answer is valid / invalid (reason) / mismatch."""
    ctx, unit = deps.unit(request)
    form = await check_csrf(request, ctx)
    values = {name: text(form, name)[:80] for name in FIELDS} | {"long_term": text(form, "long_term")}
    data: dict[str, Any] = {
        "id_number": values["id_number"],
        "name": values["name"],
        "issued_on": values["issued_on"] or None,
        "expires_on": None if values["long_term"] else (values["expires_on"] or ""),
        "purpose": values["purpose"],
        "operator": ctx.session.operator or "console",
    }
    errors: dict[str, str] = {}
    fingerprint: str | None = None
    try:
        raw = await upload(form, "fingerprint")
        if raw is not None:
            fingerprint = record_text(raw, field="fingerprint")
    except DomainError as exc:
        errors["fingerprint"] = exc.detail
    try:
        body = VerifyIn.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            errors.setdefault(field_name(tuple(err["loc"])), "unit.bad_" + field_name(tuple(err["loc"])))
        body = None
    if body is None or errors:
        return _page(ctx, unit, status=422, errors=errors, form=values)
    if body.purpose not in unit.purposes:
        return _page(ctx, unit, status=403, errors={"purpose": "unit.purpose_not_allowed"}, form=values)
    verifier = get_verifier(request)
    if verifier.limiter.take(unit.code, unit.rate_limit, 1):
        return _page(ctx, unit, status=429, message="unit.rate_limited", form=values)
    try:
        live = await run_in_threadpool(fingerprints.live_template, fingerprint) if fingerprint else None
    except DomainError as exc:
        return _page(ctx, unit, status=422, errors={"fingerprint": exc.detail}, form=values)
    query = Query(
        body.id_number,
        body.name,
        body.issued_on,
        body.expires_on,
        body.purpose,
        body.operator,
        body.chip_serial,
        False,
        fingerprint=live,
    )

    def run() -> tuple[dict[str, object], int]:
        return verifier.check(unit, [query])[0], verifier.log.last_ticket()

    try:
        answer, ticket = await run_in_threadpool(run)
        await verifier.log.recorded(ticket)
    except LogFull:
        return _page(ctx, unit, status=503, message="unit.log_full", form=values)
    return _page(ctx, unit, answer=answer, form=values)


@router.get("/unit/history")
def history(request: Request, db: SessionDep) -> Response:
    """The unit's own checks, newest first (the API's GET /api/v1/checks): a unit sees only its own."""
    ctx, unit = deps.unit(request)
    page = checks.check_history(db, caller=unit, limit=HISTORY)
    return ctx.render("unit/history.html", unit=unit, rows=page.rows)


# ---- batch check ---------------------------------------------------------------------------
BATCH_MAX = 1000  # as POST /api/v1/verify/batch
BATCH_MAX_BYTES = 512 * 1024
BATCH_COLUMNS = ("id_number", "name", "issued_on", "expires_on", "purpose")
RESULT_COLUMNS = (*BATCH_COLUMNS, "result", "reason", "check_id", "error")


def _batch_rows(raw: bytes) -> list[dict[str, str]]:
    """The CSV's rows: a header naming BATCH_COLUMNS (any order, more ignored), UTF-8 (a BOM, as
    spreadsheets write, is allowed); an empty `expires_on` is a long-term card."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidField("file", "the CSV file is not UTF-8") from None
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in BATCH_COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise InvalidField("file", f"the header lacks {', '.join(missing)}")
    rows: list[dict[str, str]] = []
    for row in reader:
        if len(rows) == BATCH_MAX:
            raise InvalidField("file", f"at most {BATCH_MAX} cards in one file")
        rows.append({c: (row.get(c) or "").strip() for c in BATCH_COLUMNS})
    if not rows:
        raise InvalidField("file", "the file has no card")
    return rows


@router.get("/unit/batch")
def batch_page(request: Request) -> Response:
    ctx, unit = deps.unit(request)
    return ctx.render("unit/batch.html", unit=unit, results=None, error=None, summary={})


@router.post("/unit/batch")
async def batch(request: Request) -> Response:
    """Check every card of an uploaded CSV (up to 1000) as one batch: the unit's purposes and
    rate apply to each row, every check is recorded under the teller's operator id. The answer
    is a table, or with `format=csv` the same rows as a CSV file to download."""
    ctx, unit = deps.unit(request)
    form = await check_csrf(request, ctx)
    raw = await upload(form, "file")
    try:
        if raw is None:
            raise InvalidField("file", "choose a CSV file")
        if len(raw) > BATCH_MAX_BYTES:
            raise InvalidField("file", "the file is too large")
        rows = _batch_rows(raw)
    except DomainError as exc:
        return ctx.render(
            "unit/batch.html", status=422, unit=unit, results=None, error=exc.detail, summary={}
        )
    operator = ctx.session.operator or "console"
    items: list[Item] = []
    positions: list[int] = []
    results: list[dict[str, Any]] = [dict(row) for row in rows]
    for n, row in enumerate(rows):
        data = {**row, "expires_on": row["expires_on"] or None, "operator": operator}
        try:
            body = VerifyIn.model_validate(data)
        except ValidationError as exc:
            results[n]["error"] = ", ".join(sorted({field_name(tuple(e["loc"])) for e in exc.errors()}))
            continue
        if body.purpose not in unit.purposes:
            results[n]["error"] = "purpose not allowed"
            continue
        positions.append(n)
        items.append(
            (body.id_number, body.name, body.issued_on, body.expires_on, body.purpose, operator, None, False)
        )
    verifier = get_verifier(request)
    if items and verifier.limiter.take(unit.code, unit.rate_limit, len(items)):
        return ctx.render(
            "unit/batch.html", status=429, unit=unit, results=None, error="unit.rate_limited", summary={}
        )
    if items:
        try:
            answers = verifier.check_items(unit, items)
            await verifier.log.recorded(verifier.log.last_ticket())
        except LogFull:
            return ctx.render(
                "unit/batch.html", status=503, unit=unit, results=None, error="unit.log_full", summary={}
            )
        for n, text_answer in zip(positions, answers, strict=True):
            results[n].update(json.loads(text_answer))
    summary = {k: sum(1 for r in results if r.get("result") == k) for k in ("valid", "invalid", "mismatch")}
    summary["error"] = sum(1 for r in results if r.get("error"))
    if text(form, "format") == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=RESULT_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(results)
        response = Response(
            out.getvalue().encode("utf-8-sig"),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="checks.csv"'},
        )
        return ctx.finish(response)
    return ctx.render("unit/batch.html", unit=unit, results=results, error=None, summary=summary)
