"""The counter: find a person, the person's page (cards, statuses, the ledger as a timeline), a
loss report with the live finger and its cancellation, each ending on a printable receipt.

Pages call the registry's use-cases directly (never the HTTP API), through the one unit of work;
reads are audited exactly as the API's are (`person.read`, `card.events`). Persons are addressed
by their record's id in URLs, so no id number is ever in a URL, a browser history or a log line.
"""

from __future__ import annotations

import json
import uuid
from functools import partial
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session
from starlette.datastructures import FormData
from starlette.responses import Response

from idguard.api.deps import SessionDep
from idguard.console import deps
from idguard.console.capture import record_text
from idguard.console.routes.common import (
    error_values,
    office_names,
    read,
    sees_whole_numbers,
    shown_number,
    write,
)
from idguard.console.web import ConsoleRefusal, Ctx, check_csrf, text, upload
from idguard.core import idnumber
from idguard.core.clock import today_cst
from idguard.core.errors import DomainError, InvalidField, NotFound
from idguard.core.grants import Permission
from idguard.registry import cards, loss_reports, persons
from idguard.registry.lifecycle import CardStatus, LossReason, effective_status
from idguard.registry.lookups import person_by_number
from idguard.registry.models import Card, LossReport, Person
from idguard.registry.routes.deps import get_biometrics
from idguard.verification.models import PersonFlags
from idguard.watchlist import rules as watch_rules
from idguard.watchlist.models import BlacklistEntry
from idguard.watchlist.rules import BlacklistReason, EntryStatus

router = APIRouter(include_in_schema=False)
_REPORTABLE = {CardStatus.VALID}
DONE = ("issued", "temporary", "returned", "revoked")  # what the person page confirms after a write
WATCH_DONE = ("blacklisted", "protection_set", "protection_cleared")  # the watchlist's forms (watchlist.py)


@router.get("/console")
def start(request: Request, db: SessionDep) -> Response:
    """A member of staff's start page: the person search for those who read the registry."""
    ctx = deps.staff(request, db)
    return ctx.render("staff/start.html", error=None, error_detail="", query="")


@router.post("/console/search")
async def search(request: Request, db: SessionDep) -> Response:
    """Find a person by id number; the page itself is an audited read."""
    ctx = await run_in_threadpool(deps.staff, request, db, permission=Permission.REGISTRY_READ)
    form = await check_csrf(request, ctx)
    query = text(form, "id_number")[:40]

    def find() -> uuid.UUID:
        number = idnumber.normalised(query) or query
        return person_by_number(db, number, now=ctx.now).id

    try:
        person_id = await run_in_threadpool(find)
    except DomainError as exc:
        values = error_values(exc)
        status = 404 if isinstance(exc, NotFound) else 422
        return ctx.render("staff/start.html", status=status, query=query, **values)
    return ctx.redirect(f"/console/persons/{person_id}")


def _person_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise ConsoleRefusal(404, "error.no_person") from None


def _open_reports(db: Session, card_ids: list[uuid.UUID]) -> dict[uuid.UUID, LossReport]:
    if not card_ids:
        return {}
    rows = db.scalars(
        sa.select(LossReport)
        .where(LossReport.card_id.in_(card_ids), LossReport.cancelled_at.is_(None))
        .order_by(LossReport.accepted_at)
    )
    return {r.card_id: r for r in rows}


def person_view(ctx: Ctx, db: Session, person_id: uuid.UUID) -> dict[str, Any]:
    """Everything the person page shows, read (and audited) as the API reads it."""
    assert ctx.actor is not None  # noqa: S101 - a staff page
    actor = ctx.actor
    person = db.get(Person, person_id)
    if person is None:
        raise ConsoleRefusal(404, "error.no_person")
    number = person.id_number

    def load() -> tuple[persons.PersonRecord, dict[uuid.UUID, list[Any]]]:
        record = persons.read_person(db, actor=actor, now=ctx.now, id_number=number, action="person.read")
        events = {
            c.id: cards.card_events(db, actor=actor, now=ctx.now, card_id=str(c.id)) for c in record.cards
        }
        return record, events

    record, events = read(ctx, db, load)
    today = today_cst(ctx.now)
    reports = _open_reports(db, [c.id for c in record.cards])
    codes = [person.hukou_office, *(c.issuing_office for c in record.cards)]
    codes += [e.office for evs in events.values() for e in evs]
    names = office_names(db, codes)
    card_rows = []
    for card in reversed(record.cards):  # newest first
        status = effective_status(card.status, card.expires_on, today)
        report = reports.get(card.id)
        card_rows.append(
            {
                "card": card,
                "status": status.value,
                "events": list(reversed(events[card.id])),
                "report": report,
                "may_report": status in _REPORTABLE and actor.may(Permission.REGISTRY_WRITE),
                "may_cancel": report is not None
                and actor.may(Permission.REGISTRY_WRITE)
                and (actor.may(Permission.ALL_OFFICES) or report.office == actor.office)
                and card.superseded_by is None,
            }
        )
    return {
        "person": person,
        "number": shown_number(actor, person.id_number),
        "whole": sees_whole_numbers(actor),
        "cards": card_rows,
        "offices": names,
        "watch": watch_state(ctx, db, person),
    }


def watch_state(ctx: Ctx, db: Session, person: Person) -> dict[str, Any]:
    """The person's alert flags and active blacklist entry, and which of the watchlist's forms
    the actor may use here (the use-cases decide again: watchlist/rules.py). Flags are not
    personal data beyond the record already read and audited above."""
    assert ctx.actor is not None  # noqa: S101
    actor = ctx.actor
    flags = db.get(PersonFlags, person.id)
    entry = db.scalars(
        sa.select(BlacklistEntry).where(
            BlacklistEntry.person_id == person.id, BlacklistEntry.status == EntryStatus.ACTIVE
        )
    ).first()
    today = today_cst(ctx.now)
    if (
        entry is not None
        and watch_rules.entry_status(entry.status, entry.until, today) is not EntryStatus.ACTIVE
    ):
        entry = None  # past its last day: ended, whether or not the sweeper has written it yet
    may_protect = watch_rules.may_manage_blacklist(actor) or (
        watch_rules.is_office_clerk(actor) and actor.office == person.hukou_office
    )
    return {
        "entry": entry,
        "protected": bool(flags and flags.person_check_required),
        "may_list": watch_rules.may_manage_blacklist(actor) and entry is None,
        "may_protect": may_protect,
        "reasons": [r.value for r in BlacklistReason],
    }


@router.get("/console/persons/{person_id}")
def person_page(person_id: str, request: Request, db: SessionDep) -> Response:
    ctx = deps.staff(request, db, permission=Permission.REGISTRY_READ)
    done = request.query_params.get("done")
    if done in DONE:
        ctx.values["notice"] = f"done.{done}"
    elif done in WATCH_DONE:
        ctx.values["notice"] = f"watch.done_{done}"
    return ctx.render("staff/person.html", **person_view(ctx, db, _person_id(person_id)))


# ---- loss reports -------------------------------------------------------------------------------
def _card_and_holder(db: Session, card_id: str) -> tuple[Card, Person]:
    try:
        key = uuid.UUID(card_id)
    except ValueError:
        raise ConsoleRefusal(404, "error.no_card") from None
    card = db.get(Card, key)
    if card is None:
        raise ConsoleRefusal(404, "error.no_card")
    holder = db.get(Person, card.person_id)
    assert holder is not None  # noqa: S101 - foreign key
    return card, holder


def _report_form(
    ctx: Ctx, db: Session, card: Card, holder: Person, *, status: int = 200, **values: Any
) -> Response:
    assert ctx.actor is not None  # noqa: S101
    demo = deps.demo_support(ctx.request) if ctx.development else None
    defaults: dict[str, Any] = {
        "reason": "lost",
        "applicant": holder.id_number,
        "office": ctx.actor.office or holder.hukou_office,
        "error": None,
        "error_detail": "",
        "error_field": "",
    }
    return ctx.render(
        "staff/loss_report.html",
        status=status,
        card=card,
        holder=holder,
        number=shown_number(ctx.actor, holder.id_number),
        demo_capture=demo is not None,
        **{**defaults, **values},
    )


@router.get("/console/cards/{card_id}/loss-report")
def loss_report_form(card_id: str, request: Request, db: SessionDep) -> Response:
    ctx = deps.staff(request, db, permission=Permission.REGISTRY_WRITE)
    card, holder = _card_and_holder(db, card_id)
    return _report_form(ctx, db, card, holder)


async def finger_from(ctx: Ctx, form: FormData, holder_number: str, field: str = "fingerprint") -> str | None:
    """The live capture: the uploaded file, or in development the demo person's finger."""
    raw = await upload(form, field)
    if raw is not None:
        return record_text(raw, field=field)
    if text(form, "demo_capture") and ctx.development:
        demo = deps.demo_support(ctx.request)
        if demo is not None:
            return demo.live_finger(holder_number)
    return None


@router.post("/console/cards/{card_id}/loss-report")
async def report_loss(card_id: str, request: Request, db: SessionDep) -> Response:
    """Accept a loss report (挂失申报); the card is invalid from the moment the page answers."""
    ctx = await run_in_threadpool(deps.staff, request, db, permission=Permission.REGISTRY_WRITE)
    form = await check_csrf(request, ctx)
    card, holder = await run_in_threadpool(_card_and_holder, db, card_id)
    assert ctx.actor is not None  # noqa: S101
    actor = ctx.actor
    values = {
        "reason": text(form, "reason"),
        "applicant": text(form, "applicant_id_number")[:40],
        "office": text(form, "office")[:12] or (actor.office or ""),
    }
    try:
        reason = LossReason(values["reason"])
    except ValueError:
        return _report_form(
            ctx,
            db,
            card,
            holder,
            status=422,
            **values,
            **error_values(InvalidField("reason", "choose lost or stolen")),
        )
    try:
        fingerprint = await finger_from(ctx, form, holder.id_number)

        def run() -> str:
            report, _ = loss_reports.report_loss(
                db,
                actor=actor,
                now=ctx.now,
                card_id=str(card.id),
                reason=reason,
                office=values["office"],
                applicant_id_number=idnumber.normalised(values["applicant"]) or values["applicant"],
                fingerprint=fingerprint,
                biometrics=get_biometrics(request),
            )
            return json.dumps({"report_no": report.report_no})

        body = await run_in_threadpool(partial(write, ctx, db, run, form=form, extra=fingerprint or ""))
    except DomainError as exc:
        shown = error_values(exc)
        status = exc.status if exc.status in (403, 404, 422) else 409
        return await run_in_threadpool(
            partial(_report_form, ctx, db, card, holder, status=status, **values, **shown)
        )
    return ctx.redirect(f"/console/receipts/{json.loads(body)['report_no']}")


@router.post("/console/loss-reports/{report_no}/cancel")
async def cancel_report(report_no: str, request: Request, db: SessionDep) -> Response:
    """解除挂失 at the accepting office, with the holder's live finger when the card has them."""
    ctx = await run_in_threadpool(deps.staff, request, db, permission=Permission.REGISTRY_WRITE)
    form = await check_csrf(request, ctx)
    assert ctx.actor is not None  # noqa: S101
    actor = ctx.actor
    report = await run_in_threadpool(db.get, LossReport, report_no[:32])
    if report is None:
        raise ConsoleRefusal(404, "error.no_report")
    _card, holder = await run_in_threadpool(_card_and_holder, db, str(report.card_id))
    office = text(form, "office")[:12] or (actor.office or report.office)
    try:
        fingerprint = await finger_from(ctx, form, holder.id_number)

        def run() -> str:
            loss_reports.cancel_loss_report(
                db,
                actor=actor,
                now=ctx.now,
                report_no=report.report_no,
                office=office,
                fingerprint=fingerprint,
                biometrics=get_biometrics(request),
            )
            return "{}"

        await run_in_threadpool(partial(write, ctx, db, run, form=form, extra=fingerprint or ""))
    except DomainError as exc:
        values = await run_in_threadpool(person_view, ctx, db, holder.id)
        return ctx.render(
            "staff/person.html",
            status=exc.status if exc.status in (403, 404, 409, 422) else 409,
            **values,
            cancel_error=error_values(exc),
            cancel_report=report.report_no,
        )
    return ctx.redirect(f"/console/receipts/{report.report_no}")
