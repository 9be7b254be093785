"""Supervisors' units page: every unit, onboarding (the API key shown once, on the answer page,
never stored or shown again), key rotation and revocation, suspension and reinstatement with a
reason. Auditors and admins read the list.

Suspending here is verification/units.py's `suspend` (the keys stop on every worker within one
poll, kept for reinstatement); reinstating is accountability's `cases.reinstate`, the API's
`POST /units/{code}/reinstate`, so a unit suspended by a case's decision gets the reinstatement
on that case and is told. A suspension belongs on a case where there is one (the case page's
decision); this form is for the supervisor who must stop a unit at once."""

from __future__ import annotations

import json
from functools import partial
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError
from sqlalchemy.orm import Session
from starlette.responses import Response

from idguard.accountability import cases
from idguard.api.deps import SessionDep
from idguard.api.errors import field_name
from idguard.console import deps
from idguard.console.routes.common import error_values, read, write
from idguard.console.web import Ctx, check_csrf, text
from idguard.core.errors import DomainError, InvalidField
from idguard.core.grants import Permission
from idguard.verification import units
from idguard.verification.routes.deps import get_verifier
from idguard.verification.rules import PURPOSES
from idguard.verification.schemas import UnitIn

router = APIRouter(include_in_schema=False)


def _page(ctx: Ctx, db: Session, *, status: int = 200, **values: Any) -> Response:
    assert ctx.actor is not None  # noqa: S101 - a staff page
    actor = ctx.actor
    listed = read(ctx, db, lambda: units.list_units(db, actor=actor))
    defaults: dict[str, Any] = {
        "issued": None,
        "error": None,
        "error_detail": "",
        "error_field": "",
        "form": {"code": "", "name": "", "sector": "", "purposes": []},
        "status_unit": "",
        "status_reason": "",
    }
    return ctx.render(
        "staff/units.html",
        status=status,
        units=listed,
        purposes=sorted(PURPOSES),
        may_onboard=actor.may(Permission.ONBOARD_UNITS),
        **{**defaults, **values},
    )


@router.get("/console/units")
def units_page(request: Request, db: SessionDep) -> Response:
    ctx = deps.staff(request, db, permission=Permission.READ_UNITS)
    for done in ("suspended", "reinstated"):
        if request.query_params.get(done):
            ctx.values["notice"] = f"units.done_{done}"
    return _page(ctx, db)


def _refresh(request: Request) -> None:
    # This worker applies the change at once; the others within one ledger poll (as the API does).
    get_verifier(request).follower.poll()


@router.post("/console/units")
async def onboard(request: Request, db: SessionDep) -> Response:
    ctx = await run_in_threadpool(deps.staff, request, db, permission=Permission.ONBOARD_UNITS)
    form = await check_csrf(request, ctx)
    assert ctx.actor is not None  # noqa: S101
    actor = ctx.actor
    values = {
        "code": text(form, "code")[:40],
        "name": text(form, "name")[:100],
        "sector": text(form, "sector")[:40],
        "purposes": [p for p in form.getlist("purposes") if isinstance(p, str)][:20],
    }
    try:
        body = UnitIn.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = field_name(tuple(first["loc"]))
        return await run_in_threadpool(
            lambda: _page(
                ctx,
                db,
                status=422,
                form=values,
                error="error.invalid",
                error_detail=first["msg"],
                error_field=field,
            )
        )

    def run() -> str:
        issued = units.onboard(
            db,
            actor=actor,
            now=ctx.now,
            secret_key=ctx.settings.secret_key,
            code=body.code,
            name=body.name,
            sector=body.sector,
            purposes=list(body.purposes),
            rate_limit=body.rate_limit,
            webhook_url=body.webhook_url,
        )
        return json.dumps({"code": issued.unit.code, "api_key": issued.api_key})

    try:
        answer = json.loads(await run_in_threadpool(write, ctx, db, run))
    except DomainError as exc:
        shown = error_values(exc)
        return await run_in_threadpool(partial(_page, ctx, db, status=exc.status, form=values, **shown))
    await run_in_threadpool(_refresh, request)
    return await run_in_threadpool(lambda: _page(ctx, db, issued=answer))


@router.post("/console/units/{code}/rotate")
async def rotate(code: str, request: Request, db: SessionDep) -> Response:
    ctx = await run_in_threadpool(deps.staff, request, db, permission=Permission.ONBOARD_UNITS)
    await check_csrf(request, ctx)
    assert ctx.actor is not None  # noqa: S101
    actor = ctx.actor

    def run() -> str:
        issued = units.rotate_key(
            db, actor=actor, now=ctx.now, secret_key=ctx.settings.secret_key, code=code[:40]
        )
        return json.dumps({"code": issued.unit.code, "api_key": issued.api_key, "rotated": True})

    try:
        answer = json.loads(await run_in_threadpool(write, ctx, db, run))
    except DomainError as exc:
        shown = error_values(exc)
        return await run_in_threadpool(partial(_page, ctx, db, status=exc.status, **shown))
    await run_in_threadpool(_refresh, request)
    return await run_in_threadpool(lambda: _page(ctx, db, issued=answer))


@router.post("/console/units/{code}/revoke")
async def revoke(code: str, request: Request, db: SessionDep) -> Response:
    ctx = await run_in_threadpool(deps.staff, request, db, permission=Permission.ONBOARD_UNITS)
    await check_csrf(request, ctx)
    assert ctx.actor is not None  # noqa: S101
    actor = ctx.actor

    def run() -> str:
        units.revoke_keys(db, actor=actor, now=ctx.now, code=code[:40])
        return "{}"

    try:
        await run_in_threadpool(write, ctx, db, run)
    except DomainError as exc:
        shown = error_values(exc)
        return await run_in_threadpool(partial(_page, ctx, db, status=exc.status, **shown))
    await run_in_threadpool(_refresh, request)
    return ctx.redirect("/console/units?revoked=" + code[:40])


def _status_change(
    request: Request, db: Session, ctx: Ctx, code: str, reason: str, *, suspend: bool
) -> Response:
    assert ctx.actor is not None  # noqa: S101
    actor = ctx.actor
    code = code[:40]
    if not reason:
        shown = error_values(InvalidField("reason", "a reason is required"))
        return _page(ctx, db, status=422, status_unit=code, status_reason=reason, **shown)

    def run() -> str:
        if suspend:
            units.suspend(db, actor=actor, now=ctx.now, code=code, reason=reason)
        else:
            cases.reinstate(db, actor=actor, now=ctx.now, unit_code=code, note=reason)
        return "{}"

    try:
        write(ctx, db, run)
    except DomainError as exc:
        shown = error_values(exc)
        return _page(ctx, db, status=exc.status, status_unit=code, status_reason=reason, **shown)
    _refresh(request)
    return ctx.redirect(f"/console/units?{'suspended' if suspend else 'reinstated'}={code}")


@router.post("/console/units/{code}/suspend")
async def suspend(code: str, request: Request, db: SessionDep) -> Response:
    """Suspend a unit with a reason: every key of it stops (401 saying so) until reinstated."""
    ctx = await run_in_threadpool(deps.staff, request, db, permission=Permission.ONBOARD_UNITS)
    form = await check_csrf(request, ctx)
    reason = text(form, "reason")[:200]
    return await run_in_threadpool(partial(_status_change, request, db, ctx, code, reason, suspend=True))


@router.post("/console/units/{code}/reinstate")
async def reinstate(code: str, request: Request, db: SessionDep) -> Response:
    """Reinstate a suspended unit with a reason (recorded on the case that suspended it)."""
    ctx = await run_in_threadpool(deps.staff, request, db, permission=Permission.ONBOARD_UNITS)
    form = await check_csrf(request, ctx)
    reason = text(form, "reason")[:200]
    return await run_in_threadpool(partial(_status_change, request, db, ctx, code, reason, suspend=False))
