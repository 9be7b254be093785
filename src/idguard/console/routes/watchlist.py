"""Impersonation (冒用) pages: the incidents queue and an incident with its closing, the
blacklist with lifting, and the person page's forms — list on the blacklist, victim protection.

Everything goes through the watchlist's use-cases (the same as the API's routes), which decide
who may do what from GRANTS (watchlist/rules.py): a clerk reads and closes the incidents of their
own office's holders, supervisors and auditors every office's, supervisors alone manage the
blacklist. Id numbers on the incidents pages follow the API's rule exactly (`rules.sees_number`:
whole for supervisors, auditors and the owning office's clerks, each such read audited; masked
otherwise); the blacklist page follows the console's (`shown_number`: whole only for counter
roles), its reads audited by the use-case as the API's are.
"""

from __future__ import annotations

import datetime as dt
import uuid
from functools import partial
from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError
from sqlalchemy.orm import Session
from starlette.responses import Response

from idguard.api.deps import SessionDep
from idguard.api.errors import field_name
from idguard.console import deps
from idguard.console.routes.common import error_values, office_names, read, shown_number, write
from idguard.console.routes.registry import person_view
from idguard.console.web import ConsoleRefusal, Ctx, check_csrf, text
from idguard.core.errors import DomainError, Forbidden, InvalidField, NotFound
from idguard.core.grants import Actor, Permission
from idguard.core.idnumber import mask
from idguard.db.common import AuditEntry
from idguard.registry.models import Person
from idguard.watchlist import blacklist, incidents, protection, rules
from idguard.watchlist.incidents import Shown
from idguard.watchlist.models import Incident
from idguard.watchlist.routes import cursors
from idguard.watchlist.rules import EntryStatus, IncidentKind, IncidentStatus, Outcome
from idguard.watchlist.schemas import BlacklistIn, CloseIn, LiftIn, ProtectionIn

router = APIRouter(include_in_schema=False)
PAGE = 50
NOTES = ("closed", "listed", "lifted", "protection_set", "protection_cleared")


def reads_incidents(actor: Actor) -> bool:
    """Whom the incidents pages serve: supervisors and auditors (every office), the clerks of an
    office (their own holders') — the API's rule, from GRANTS."""
    return rules.reads_every_office(actor) or rules.is_office_clerk(actor)


def may_protect_someone(actor: Actor) -> bool:
    """Who may set protection for at least some holder (the use-case then checks the office)."""
    return rules.may_manage_blacklist(actor) or rules.is_office_clerk(actor)


def _invalid(exc: ValidationError) -> dict[str, str]:
    first = exc.errors()[0]
    return {
        "error": "error.invalid",
        "error_detail": str(first["msg"]),
        "error_field": field_name(tuple(first["loc"])),
    }


def _choice(value: str | None, kind: type[Any]) -> Any:
    try:
        return kind(value) if value else None
    except ValueError:
        return None


# ---- the incidents queue --------------------------------------------------------------------------
@router.get("/console/incidents")
def incident_queue(request: Request, db: SessionDep) -> Response:
    """Incidents newest first, 50 a page (`after`: the cursor of the page's last row, as the API's
    `next`), filtered by status (open by default), kind and owning office."""
    ctx = deps.staff(request, db)
    assert ctx.actor is not None  # noqa: S101 - a staff page
    actor = ctx.actor
    if not reads_incidents(actor):
        raise ConsoleRefusal(403, "error.forbidden", role=actor.role.value)
    q = request.query_params
    status_text = q.get("status", "open")
    status: IncidentStatus | None = _choice(status_text, IncidentStatus)
    kind: IncidentKind | None = _choice(q.get("kind"), IncidentKind)
    office = q.get("office", "").strip()[:12] or None
    filters = {
        "status": status.value if status else "all",
        "kind": kind.value if kind else "",
        "office": office or "",
    }
    error: dict[str, str] = {}
    rows: list[Shown] = []
    more = False
    try:
        after = cursors.decode_int(q["after"]) if q.get("after") else None
        rows, more = read(
            ctx,
            db,
            lambda: incidents.list_incidents(
                db, actor=actor, now=ctx.now, status=status, kind=kind, office=office, after=after, limit=PAGE
            ),
        )
    except InvalidField as exc:
        error = error_values(exc)
    last = rows[-1].incident if rows and more else None
    next_url = None
    if last is not None:
        next_url = "/console/incidents?" + urlencode(
            {**filters, "after": cursors.encode(last.opened_at, last.seq)}
        )
    return ctx.render(
        "staff/incidents.html",
        status=422 if error else 200,
        rows=rows,
        offices=office_names(db, [r.incident.office for r in rows]),
        kinds=[k.value for k in IncidentKind],
        filters=filters,
        next_url=next_url,
        **({"error": None, "error_detail": "", "error_field": ""} | error),
    )


# ---- one incident -------------------------------------------------------------------------------
def _one(db: Session, actor: Actor, now: dt.datetime, incident_no: str) -> tuple[Shown, uuid.UUID | None]:
    """One incident as the queue would show it to `actor` (the same rules: a clerk never sees a
    unit's harvesting; the whole number only where `rules.sees_number`, and then audited as
    `incident.read`), and the holder's record id for the person page link."""
    rules.require_read_incidents(actor)
    row = db.execute(
        sa.select(Incident, Person.id_number)
        .outerjoin(Person, Person.id == Incident.person_id)
        .where(Incident.incident_no == incident_no[:32])
    ).one_or_none()
    if row is None or (row[0].kind in rules.UNIT_KINDS and not rules.reads_every_office(actor)):
        raise NotFound(f"no incident {incident_no[:32]}")
    incident, number = row[0], row[1]
    if number is not None and rules.sees_number(actor, incident.office):
        db.add(
            AuditEntry(
                at=now,
                staff_id=actor.staff_id,
                action="incident.read",
                person_id=incident.person_id,
                detail=incident.incident_no,
            )
        )
        return Shown(incident, number), incident.person_id
    return Shown(incident, None if number is None else mask(number)), incident.person_id


def _may_close(actor: Actor, incident: Incident) -> bool:
    if incident.status is not IncidentStatus.OPEN:
        return False
    try:
        rules.require_close(actor, kind=incident.kind, office=incident.office)
    except Forbidden:
        return False
    return True


def _incident_page(ctx: Ctx, db: Session, incident_no: str, *, status: int = 200, **values: Any) -> Response:
    assert ctx.actor is not None  # noqa: S101
    actor = ctx.actor
    try:
        shown, person_id = read(ctx, db, lambda: _one(db, actor, ctx.now, incident_no))
    except NotFound:
        raise ConsoleRefusal(404, "watch.no_incident") from None
    except Forbidden:
        raise ConsoleRefusal(403, "error.forbidden", role=actor.role.value) from None
    defaults: dict[str, Any] = {
        "error": None,
        "error_detail": "",
        "error_field": "",
        "form": {"outcome": "", "note": ""},
    }
    return ctx.render(
        "staff/incident.html",
        status=status,
        shown=shown,
        incident=shown.incident,
        person_id=person_id if actor.may(Permission.REGISTRY_READ) else None,
        offices=office_names(db, [shown.incident.office]),
        may_close=_may_close(actor, shown.incident),
        **{**defaults, **values},
    )


@router.get("/console/incidents/{incident_no}")
def incident_page(incident_no: str, request: Request, db: SessionDep) -> Response:
    ctx = deps.staff(request, db)
    assert ctx.actor is not None  # noqa: S101
    if not reads_incidents(ctx.actor):
        raise ConsoleRefusal(403, "error.forbidden", role=ctx.actor.role.value)
    if request.query_params.get("done") in NOTES:
        ctx.values["notice"] = "watch.done_" + request.query_params["done"]
    return _incident_page(ctx, db, incident_no)


@router.post("/console/incidents/{incident_no}/close")
async def close_incident(incident_no: str, request: Request, db: SessionDep) -> Response:
    """Close an open incident as confirmed or dismissed, with a note (incidents.close: a clerk of
    the owning office or a supervisor; audited)."""
    ctx = await run_in_threadpool(deps.staff, request, db)
    assert ctx.actor is not None  # noqa: S101
    actor = ctx.actor
    if not (rules.may_manage_blacklist(actor) or rules.is_office_clerk(actor)):
        raise ConsoleRefusal(403, "error.forbidden", role=actor.role.value)
    form = await check_csrf(request, ctx)
    values = {"outcome": text(form, "outcome")[:20], "note": text(form, "note")[:500]}
    try:
        body = CloseIn.model_validate(values)
    except ValidationError as exc:
        return await run_in_threadpool(
            partial(_incident_page, ctx, db, incident_no, status=422, form=values, **_invalid(exc))
        )
    outcome: Outcome = body.outcome

    def run() -> str:
        closed = incidents.close(
            db, actor=actor, now=ctx.now, incident_no=incident_no[:32], outcome=outcome, note=body.note
        )
        return closed.incident.incident_no

    try:
        await run_in_threadpool(partial(write, ctx, db, run, form=form))
    except DomainError as exc:
        if isinstance(exc, NotFound):
            raise ConsoleRefusal(404, "watch.no_incident") from None
        return await run_in_threadpool(
            partial(_incident_page, ctx, db, incident_no, status=exc.status, form=values, **error_values(exc))
        )
    return ctx.redirect(f"/console/incidents/{incident_no[:32]}?done=closed")


# ---- the blacklist ------------------------------------------------------------------------------
def _blacklist_page(ctx: Ctx, db: Session, *, status: int = 200, **values: Any) -> Response:
    assert ctx.actor is not None  # noqa: S101
    actor = ctx.actor
    q = ctx.request.query_params
    chosen = q.get("status", "active")
    entry_status: EntryStatus | None = _choice(chosen, EntryStatus)
    error: dict[str, str] = {}
    rows: list[blacklist.Listed] = []
    more = False
    try:
        after = cursors.decode(q["after"]) if q.get("after") and ctx.request.method == "GET" else None
        rows, more = read(
            ctx,
            db,
            lambda: blacklist.entries(
                db, actor=actor, now=ctx.now, status=entry_status, after=after, limit=PAGE
            ),
        )
    except InvalidField as exc:
        error = error_values(exc)
        status = 422
    except Forbidden:
        raise ConsoleRefusal(403, "error.forbidden", role=actor.role.value) from None
    last = rows[-1].entry if rows and more else None
    filter_value = entry_status.value if entry_status else "all"
    next_url = None
    if last is not None:
        next_url = "/console/blacklist?" + urlencode(
            {"status": filter_value, "after": cursors.encode(last.listed_at, last.entry_no)}
        )
    defaults: dict[str, Any] = {
        "error": None,
        "error_detail": "",
        "error_field": "",
        "lift_entry": "",
        "reason": "",
    }
    return ctx.render(
        "staff/blacklist.html",
        status=status,
        rows=[{"listed": r, "number": shown_number(actor, r.person.id_number)} for r in rows],
        chosen=filter_value,
        next_url=next_url,
        may_manage=rules.may_manage_blacklist(actor),
        **{**defaults, **error, **values},
    )


@router.get("/console/blacklist")
def blacklist_page(request: Request, db: SessionDep) -> Response:
    """Entries newest first with their history (supervisors, auditors; each person shown is an
    audited read, as through the API); lifting for supervisors."""
    ctx = deps.staff(request, db, permission=Permission.READ_CHECK_LOG)
    if request.query_params.get("done") in NOTES:
        ctx.values["notice"] = "watch.done_" + request.query_params["done"]
    return _blacklist_page(ctx, db)


@router.post("/console/blacklist/{entry_no}/lift")
async def lift_entry(entry_no: str, request: Request, db: SessionDep) -> Response:
    ctx = await run_in_threadpool(deps.staff, request, db, permission=Permission.ONBOARD_UNITS)
    form = await check_csrf(request, ctx)
    assert ctx.actor is not None  # noqa: S101
    actor = ctx.actor
    reason = text(form, "reason")[:500]
    entry = entry_no[:32]
    try:
        body = LiftIn.model_validate({"reason": reason})
    except ValidationError as exc:
        return await run_in_threadpool(
            partial(_blacklist_page, ctx, db, status=422, lift_entry=entry, reason=reason, **_invalid(exc))
        )

    def run() -> str:
        return blacklist.lift(db, actor=actor, now=ctx.now, entry_no=entry, reason=body.reason).entry.entry_no

    try:
        await run_in_threadpool(partial(write, ctx, db, run, form=form))
    except DomainError as exc:
        return await run_in_threadpool(
            partial(
                _blacklist_page,
                ctx,
                db,
                status=exc.status,
                lift_entry=entry,
                reason=reason,
                **error_values(exc),
            )
        )
    return ctx.redirect("/console/blacklist?done=lifted")


# ---- the person page's forms --------------------------------------------------------------------
def _person(db: Session, person_id: str) -> Person:
    try:
        person = db.get(Person, uuid.UUID(person_id))
    except ValueError:
        person = None
    if person is None:
        raise ConsoleRefusal(404, "error.no_person")
    return person


def _person_page(ctx: Ctx, db: Session, person: Person, *, status: int, form: str, **values: Any) -> Response:
    """The person page again, with the refused form's values and its error."""
    return ctx.render(
        "staff/person.html",
        status=status,
        **person_view(ctx, db, person.id),
        watch_form=form,
        watch_values=values.pop("values", {}),
        watch_error=values,
    )


@router.post("/console/persons/{person_id}/blacklist")
async def list_on_blacklist(person_id: str, request: Request, db: SessionDep) -> Response:
    """List the person on the impersonator blacklist (supervisors): case number, reason, an
    optional last day, a note (blacklist.list_person; audited, the alerts begin at once)."""
    ctx = await run_in_threadpool(deps.staff, request, db, permission=Permission.ONBOARD_UNITS)
    form = await check_csrf(request, ctx)
    assert ctx.actor is not None  # noqa: S101
    actor = ctx.actor
    person = await run_in_threadpool(_person, db, person_id)
    values = {
        "reason": text(form, "reason")[:40],
        "case_no": text(form, "case_no")[:60],
        "until": text(form, "until")[:10],
        "note": text(form, "note")[:500],
    }
    try:
        body = BlacklistIn.model_validate(
            {
                "id_number": person.id_number,
                "reason": values["reason"],
                "case_no": values["case_no"],
                "until": values["until"] or None,
                "note": values["note"] or None,
            }
        )
    except ValidationError as exc:
        return await run_in_threadpool(
            partial(
                _person_page, ctx, db, person, status=422, form="blacklist", values=values, **_invalid(exc)
            )
        )

    def run() -> str:
        listed = blacklist.list_person(
            db,
            actor=actor,
            now=ctx.now,
            id_number=person.id_number,
            reason=body.reason,
            case_no=body.case_no,
            until=body.until,
            note=body.note,
        )
        return listed.entry.entry_no

    try:
        await run_in_threadpool(partial(write, ctx, db, run, form=form))
    except DomainError as exc:
        return await run_in_threadpool(
            partial(
                _person_page,
                ctx,
                db,
                person,
                status=exc.status,
                form="blacklist",
                values=values,
                **error_values(exc),
            )
        )
    return ctx.redirect(f"/console/persons/{person.id}?done=blacklisted")


@router.post("/console/persons/{person_id}/protection")
async def set_protection(person_id: str, request: Request, db: SessionDep) -> Response:
    """Victim protection set or cleared, with a reason (protection.protect: a clerk of the
    holder's hukou office or a supervisor; recorded and audited)."""
    ctx = await run_in_threadpool(deps.staff, request, db)
    assert ctx.actor is not None  # noqa: S101
    actor = ctx.actor
    if not may_protect_someone(actor):
        raise ConsoleRefusal(403, "error.forbidden", role=actor.role.value)
    form = await check_csrf(request, ctx)
    person = await run_in_threadpool(_person, db, person_id)
    values = {"required": text(form, "required")[:5], "reason": text(form, "reason")[:500]}
    if values["required"] not in ("true", "false"):
        shown = error_values(InvalidField("required", "choose to set or to clear the protection"))
        return await run_in_threadpool(
            partial(_person_page, ctx, db, person, status=422, form="protection", values=values, **shown)
        )
    try:
        body = ProtectionIn.model_validate(
            {"person_check_required": values["required"] == "true", "reason": values["reason"]}
        )
    except ValidationError as exc:
        return await run_in_threadpool(
            partial(
                _person_page, ctx, db, person, status=422, form="protection", values=values, **_invalid(exc)
            )
        )

    def run() -> str:
        protection.protect(
            db,
            actor=actor,
            now=ctx.now,
            id_number=person.id_number,
            required=body.person_check_required,
            reason=body.reason,
        )
        return "{}"

    try:
        await run_in_threadpool(partial(write, ctx, db, run, form=form))
    except DomainError as exc:
        return await run_in_threadpool(
            partial(
                _person_page,
                ctx,
                db,
                person,
                status=exc.status,
                form="protection",
                values=values,
                **error_values(exc),
            )
        )
    done = "protection_set" if body.person_check_required else "protection_cleared"
    return ctx.redirect(f"/console/persons/{person.id}?done={done}")
