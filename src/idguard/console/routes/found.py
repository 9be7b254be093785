"""Lost and found (丢失招领) at the counter: record a card a finder hands in (destroyed at once when
its owner already has a newer card), the cards the office holds, handing one back to its owner
(with the live finger when the card has registered fingers) and destroying one that can no longer
be returned. Each ends on the found card's printable receipt."""

from __future__ import annotations

import datetime as dt
import json
from functools import partial
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session
from starlette.responses import Response

from idguard.api.deps import SessionDep
from idguard.console import deps
from idguard.console.routes.common import error_values, read, shown_number, write
from idguard.console.routes.registry import finger_from
from idguard.console.web import ConsoleRefusal, Ctx, check_csrf, text
from idguard.core import idnumber
from idguard.core.errors import DomainError, InvalidField
from idguard.core.grants import Permission
from idguard.db.common import AuditEntry
from idguard.registry import found_cards
from idguard.registry.lifecycle import FoundDisposition
from idguard.registry.models import Card, FoundCard
from idguard.registry.routes.deps import get_biometrics

router = APIRouter(include_in_schema=False)
HELD_SHOWN = 200


def _held(ctx: Ctx, db: Session) -> list[dict[str, Any]]:
    """The cards held at the clerk's office (every office's for staff of all offices): an audited
    read, since it lists holders."""
    assert ctx.actor is not None  # noqa: S101 - a staff page
    actor = ctx.actor
    stmt = (
        sa.select(FoundCard, Card)
        .join(Card, Card.id == FoundCard.card_id)
        .where(FoundCard.disposition == FoundDisposition.HELD)
        .order_by(FoundCard.received_at.desc())
        .limit(HELD_SHOWN)
    )
    if not actor.may(Permission.ALL_OFFICES):
        stmt = stmt.where(FoundCard.office == actor.office)

    def load() -> list[dict[str, Any]]:
        rows = db.execute(stmt).all()
        db.add(
            AuditEntry(
                at=ctx.now, staff_id=actor.staff_id, action="found_cards.list", detail=f"rows={len(rows)}"
            )
        )
        return [
            {
                "found": f,
                "card": c,
                "number": shown_number(actor, c.id_number),
                "fingers": c.fingerprints_registered,
            }
            for f, c in rows
        ]

    return read(ctx, db, load)


def _page(ctx: Ctx, db: Session, *, status: int = 200, **values: Any) -> Response:
    assert ctx.actor is not None  # noqa: S101
    defaults: dict[str, Any] = {
        "form": {"id_number": "", "issued_on": "", "finder_name": "", "finder_phone": "", "chip_serial": ""},
        "office": ctx.actor.office or "",
        "error": None,
        "error_detail": "",
        "error_field": "",
        "return_error": None,
        "return_for": "",
    }
    return ctx.render(
        "staff/found.html",
        status=status,
        held=_held(ctx, db),
        demo_capture=deps.demo_support(ctx.request) is not None and ctx.development,
        **{**defaults, **values},
    )


@router.get("/console/found-cards")
def found_page(request: Request, db: SessionDep) -> Response:
    ctx = deps.staff(request, db, permission=Permission.REGISTRY_WRITE)
    return _page(ctx, db)


@router.post("/console/found-cards")
async def hand_in(request: Request, db: SessionDep) -> Response:
    """A finder hands a card in: recorded (the finder's name, optionally a phone), and destroyed
    at once when the owner already has a newer card."""
    ctx = await run_in_threadpool(deps.staff, request, db, permission=Permission.REGISTRY_WRITE)
    form = await check_csrf(request, ctx)
    assert ctx.actor is not None  # noqa: S101
    actor = ctx.actor
    values = {
        name: text(form, name)[:60]
        for name in ("id_number", "issued_on", "finder_name", "finder_phone", "chip_serial")
    }
    office = text(form, "office")[:12] or (actor.office or "")
    try:
        try:
            issued_on = dt.date.fromisoformat(values["issued_on"])
        except ValueError:
            raise InvalidField("issued_on", "the issue date printed on the card, YYYY-MM-DD") from None
        if not values["finder_name"]:
            raise InvalidField("finder_name", "the finder's name (the finder signs the record)")

        def run() -> str:
            found, _ = found_cards.hand_in(
                db,
                actor=actor,
                now=ctx.now,
                id_number=idnumber.normalised(values["id_number"]) or values["id_number"],
                issued_on=issued_on,
                office=office,
                finder_name=values["finder_name"],
                finder_phone=values["finder_phone"] or None,
                chip_serial=values["chip_serial"].upper() or None,
            )
            return json.dumps({"found_no": found.found_no})

        body = await run_in_threadpool(partial(write, ctx, db, run, form=form))
    except DomainError as exc:
        shown = error_values(exc)
        status = exc.status if exc.status in (403, 404, 422) else 409
        return await run_in_threadpool(
            partial(_page, ctx, db, status=status, form=values, office=office, **shown)
        )
    return ctx.redirect(f"/console/receipts/{json.loads(body)['found_no']}")


def _found(db: Session, found_no: str) -> tuple[FoundCard, Card]:
    found = db.get(FoundCard, found_no[:32])
    if found is None:
        raise ConsoleRefusal(404, "error.no_receipt")
    card = db.get(Card, found.card_id)
    assert card is not None  # noqa: S101 - foreign key
    return found, card


@router.post("/console/found-cards/{found_no}/return")
async def return_card(found_no: str, request: Request, db: SessionDep) -> Response:
    """Hand a held card back to its verified owner (the live finger when it has registered ones)."""
    ctx = await run_in_threadpool(deps.staff, request, db, permission=Permission.REGISTRY_WRITE)
    form = await check_csrf(request, ctx)
    assert ctx.actor is not None  # noqa: S101
    actor = ctx.actor
    found, card = await run_in_threadpool(_found, db, found_no)
    claimant = text(form, "claimant_id_number")[:40]
    try:
        fingerprint = await finger_from(ctx, form, card.id_number)

        def run() -> str:
            found_cards.return_to_owner(
                db,
                actor=actor,
                now=ctx.now,
                found_no=found.found_no,
                office=text(form, "office")[:12] or (actor.office or found.office),
                claimant_id_number=idnumber.normalised(claimant) or claimant,
                claimant_name=text(form, "claimant_name")[:60] or None,
                photo_ref=text(form, "photo_ref")[:100] or None,
                fingerprint=fingerprint,
                biometrics=get_biometrics(request),
            )
            return "{}"

        await run_in_threadpool(partial(write, ctx, db, run, form=form, extra=fingerprint or ""))
    except DomainError as exc:
        shown = error_values(exc)
        status = exc.status if exc.status in (403, 404, 422) else 409
        return await run_in_threadpool(
            partial(_page, ctx, db, status=status, return_error=shown, return_for=found.found_no)
        )
    return ctx.redirect(f"/console/receipts/{found.found_no}")


@router.post("/console/found-cards/{found_no}/destroy")
async def destroy(found_no: str, request: Request, db: SessionDep) -> Response:
    """Record the destruction (销毁) of a held card that can no longer be returned."""
    ctx = await run_in_threadpool(deps.staff, request, db, permission=Permission.REGISTRY_WRITE)
    form = await check_csrf(request, ctx)
    assert ctx.actor is not None  # noqa: S101
    actor = ctx.actor
    found, _ = await run_in_threadpool(_found, db, found_no)

    def run() -> str:
        found_cards.destroy_unreturnable(
            db,
            actor=actor,
            now=ctx.now,
            found_no=found.found_no,
            office=text(form, "office")[:12] or (actor.office or found.office),
        )
        return "{}"

    try:
        await run_in_threadpool(write, ctx, db, run)
    except DomainError as exc:
        shown = error_values(exc)
        status = exc.status if exc.status in (403, 404, 422) else 409
        return await run_in_threadpool(
            partial(_page, ctx, db, status=status, return_error=shown, return_for=found.found_no)
        )
    return ctx.redirect(f"/console/receipts/{found.found_no}")
