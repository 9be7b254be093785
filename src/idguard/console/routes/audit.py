"""Read-only pages for auditors (and supervisors): the audit log, the fingerprint comparison log
and the check log. Id numbers appear masked; opening the audit log is itself recorded.

The audit log needs `read_check_log` for now: GRANTS has no permission of its own for it yet (see
docs/console.md); the comparison log asks `registry_read` (a clerk sees their own office's), the
check log `read_check_log`, exactly as the API's routes do."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request
from starlette.responses import Response

from idguard.api.deps import SessionDep
from idguard.console import deps
from idguard.console.routes.common import read
from idguard.core.errors import DomainError
from idguard.core.grants import Permission
from idguard.core.idnumber import mask
from idguard.db.common import AuditEntry
from idguard.registry.comparisons import list_comparisons
from idguard.registry.models import Person, Staff
from idguard.verification import checks

router = APIRouter(include_in_schema=False)
PAGE = 50


def _before(value: str | None) -> int | None:
    try:
        return int(value) if value else None
    except ValueError:
        return None


@router.get("/console/audit")
def audit_log(request: Request, db: SessionDep) -> Response:
    """The audit trail, newest first, 50 a page (`before` = the last id shown)."""
    ctx = deps.staff(request, db, permission=Permission.READ_CHECK_LOG)
    assert ctx.actor is not None  # noqa: S101 - a staff page
    actor = ctx.actor
    before = _before(request.query_params.get("before"))
    action = request.query_params.get("action", "")[:40]
    stmt = (
        sa.select(AuditEntry, Staff.username, Staff.role, Person.id_number)
        .outerjoin(Staff, Staff.id == AuditEntry.staff_id)
        .outerjoin(Person, Person.id == AuditEntry.person_id)
        .order_by(AuditEntry.id.desc())
        .limit(PAGE + 1)
    )
    if before is not None:
        stmt = stmt.where(AuditEntry.id < before)
    if action:
        stmt = stmt.where(AuditEntry.action == action)

    def load() -> list[Any]:
        rows = list(db.execute(stmt).all())
        db.add(
            AuditEntry(
                at=ctx.now, staff_id=actor.staff_id, action="audit_log.read", detail=f"rows={len(rows)}"
            )
        )
        return rows

    rows = read(ctx, db, load)
    entries = [
        {
            "entry": entry,
            "who": username or "—",
            "role": role.value if role is not None else None,
            "person": mask(number) if number else "",
        }
        for entry, username, role, number in rows[:PAGE]
    ]
    more = len(rows) > PAGE
    return ctx.render(
        "staff/audit.html",
        entries=entries,
        next_before=entries[-1]["entry"].id if more and entries else None,
        action=action,
    )


@router.get("/console/comparisons")
def comparisons(request: Request, db: SessionDep) -> Response:
    """Every on-site fingerprint comparison, newest first (a clerk's own office's only)."""
    ctx = deps.staff(request, db, permission=Permission.REGISTRY_READ)
    assert ctx.actor is not None  # noqa: S101
    actor = ctx.actor
    matched = {"yes": True, "no": False}.get(request.query_params.get("matched", ""))
    page = read(ctx, db, lambda: list_comparisons(db, actor=actor, now=ctx.now, matched=matched, limit=PAGE))
    return ctx.render(
        "staff/comparisons.html", rows=page.rows, matched=request.query_params.get("matched", "")
    )


@router.get("/console/checks")
def check_log(request: Request, db: SessionDep) -> Response:
    """The check log of every unit (supervisors, auditors), newest first, by unit and result."""
    ctx = deps.staff(request, db, permission=Permission.READ_CHECK_LOG)
    assert ctx.actor is not None  # noqa: S101
    actor = ctx.actor
    unit = request.query_params.get("unit", "")[:40] or None
    result = request.query_params.get("result", "")
    result = result if result in ("valid", "invalid", "mismatch") else ""
    after: tuple[dt.datetime, uuid.UUID] | None = None
    error = None
    try:
        page = checks.check_history(
            db, caller=actor, unit=unit, result=result or None, after=after, limit=PAGE
        )
        rows = page.rows
    except DomainError as exc:
        rows, error = [], exc.detail
    return ctx.render("staff/checks.html", rows=rows, unit=unit or "", result=result, error=error)
