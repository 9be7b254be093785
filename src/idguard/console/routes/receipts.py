"""Receipts (回执): the printable page a counter hands over, and the public status page its QR
code opens.

The staff receipt shows the holder's name and number (an audited read). The public page, opened
by anyone holding the receipt's number (12 unguessable characters), shows only the number's
status: accepted or cancelled, when, at which office, and the card's masked id number. It is
throttled per address like the other public look-ups.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import segno
from fastapi import APIRouter, Request
from markupsafe import Markup
from sqlalchemy.orm import Session
from starlette.responses import Response

from idguard.api.deps import SessionDep, client_address
from idguard.console import deps
from idguard.console.routes.common import office_names, read, shown_number
from idguard.console.web import ConsoleRefusal, Ctx, context
from idguard.core.clock import today_cst
from idguard.core.grants import Permission
from idguard.core.idnumber import mask
from idguard.core.ratelimit import RateLimiter
from idguard.registry.lifecycle import effective_status
from idguard.registry.lookups import audit_read
from idguard.registry.models import Card, FoundCard, LossReport, Person

router = APIRouter(include_in_schema=False)
PUBLIC_PER_MINUTE = 30.0
PUBLIC_BURST = 30


@lru_cache(maxsize=1024)
def qr_svg(url: str) -> Markup:
    """The QR code of `url` as inline SVG (no script, no style attribute: allowed by the CSP).
    The mask pattern is fixed: choosing the best of eight took two thirds of a receipt's render
    time, and every mask reads the same; a receipt shown again is served from the cache."""
    svg = segno.make(url, error="m", micro=False, mask=0).svg_inline(scale=3, title=url)
    return Markup(svg)  # noqa: S704 - segno's own markup, with the URL escaped by segno


def public_url(request: Request, number: str) -> str:
    return f"{str(request.base_url).rstrip('/')}/receipt/{number}"


def _lookup(db: Session, number: str) -> tuple[LossReport | None, FoundCard | None, Card, Person]:
    report = db.get(LossReport, number) if number.startswith("LR") else None
    found = db.get(FoundCard, number) if number.startswith("FC") else None
    record = report or found
    if record is None:
        raise ConsoleRefusal(404, "error.no_receipt")
    card = db.get(Card, record.card_id)
    assert card is not None  # noqa: S101 - foreign key
    holder = db.get(Person, card.person_id)
    assert holder is not None  # noqa: S101 - foreign key
    return report, found, card, holder


def receipt_values(ctx: Ctx, db: Session, number: str) -> dict[str, Any]:
    assert ctx.actor is not None  # noqa: S101 - a staff page
    actor = ctx.actor
    report, found, card, holder = _lookup(db, number[:32])
    office = report.office if report is not None else found.office if found is not None else ""
    read(
        ctx,
        db,
        lambda: audit_read(db, actor, action="receipt.read", person=holder, at=ctx.now, detail=number[:32]),
    )
    url = public_url(ctx.request, number)
    return {
        "number": number,
        "report": report,
        "found": found,
        "card": card,
        "holder": holder,
        "id_shown": shown_number(actor, holder.id_number),
        "office": office,
        "office_name": office_names(db, [office]).get(office, office),
        "card_status": effective_status(card.status, card.expires_on, today_cst(ctx.now)).value,
        "url": url,
        "qr": qr_svg(url),
    }


@router.get("/console/receipts/{number}")
def receipt(number: str, request: Request, db: SessionDep) -> Response:
    """The printable receipt of a loss report (LR…) or a found card (FC…)."""
    ctx = deps.staff(request, db, permission=Permission.REGISTRY_READ)
    return ctx.render("staff/receipt.html", **receipt_values(ctx, db, number))


@router.get("/receipt/{number}")
def public_receipt(number: str, request: Request, db: SessionDep) -> Response:
    """Public: what a receipt's QR code opens. No name, a masked number, the status alone."""
    ctx = context(request)
    limiter: RateLimiter = request.app.state.throttle
    if limiter.take(f"receipt:{client_address(request)}", PUBLIC_PER_MINUTE / 60.0, burst=PUBLIC_BURST):
        raise ConsoleRefusal(429, "error.throttled")
    report, found, card, holder = _lookup(db, number[:32])
    office = report.office if report is not None else found.office if found is not None else ""
    return ctx.render(
        "public/receipt.html",
        number=number,
        report=report,
        found=found,
        masked=mask(holder.id_number),
        office_name=office_names(db, [office]).get(office, office),
        card_status=effective_status(card.status, card.expires_on, today_cst(ctx.now)).value,
    )
