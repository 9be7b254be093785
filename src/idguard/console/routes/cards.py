"""Issuing a card at the counter (first issue, renewal, replacement, corrected re-issue) with the
two fingerprint captures uploaded as ISO files (in development also a "demo capture" of the demo
person's fingers), and a temporary card. Both end on the person's page, whose timeline shows the
new card's first event."""

from __future__ import annotations

import json
import uuid
from functools import partial
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session
from starlette.datastructures import FormData
from starlette.responses import Response

from idguard.api.deps import SessionDep
from idguard.console import deps
from idguard.console.capture import record_text
from idguard.console.routes.common import error_values, shown_number, write
from idguard.console.web import ConsoleRefusal, Ctx, check_csrf, text, upload
from idguard.core.errors import DomainError, InvalidField
from idguard.core.grants import Permission
from idguard.registry import cards, persons
from idguard.registry.lifecycle import IssueKind, RevocationReason
from idguard.registry.models import Person
from idguard.registry.routes.deps import get_biometrics

router = APIRouter(include_in_schema=False)
KINDS = [k.value for k in IssueKind if k is not IssueKind.TEMPORARY]
FINGERS = list(range(1, 11))
DEFAULT_FINGERS = (1, 6)  # right and left thumb, the usual choice at the counter


def _person(db: Session, person_id: str) -> Person:
    try:
        person = db.get(Person, uuid.UUID(person_id))
    except ValueError:
        person = None
    if person is None:
        raise ConsoleRefusal(404, "error.no_person")
    return person


def _form(ctx: Ctx, person: Person, *, status: int = 200, **values: Any) -> Response:
    assert ctx.actor is not None  # noqa: S101 - a staff page
    demo = deps.demo_support(ctx.request) if ctx.development else None
    defaults: dict[str, Any] = {
        "kind": "first",
        "office": ctx.actor.office or person.hukou_office,
        "finger_1": DEFAULT_FINGERS[0],
        "finger_2": DEFAULT_FINGERS[1],
        "error": None,
        "error_detail": "",
        "error_field": "",
    }
    return ctx.render(
        "staff/issue.html",
        status=status,
        person=person,
        number=shown_number(ctx.actor, person.id_number),
        kinds=KINDS,
        fingers=FINGERS,
        demo_capture=demo is not None and demo.enrolment is not None,
        **{**defaults, **values},
    )


@router.get("/console/persons/{person_id}/issue")
def issue_form(person_id: str, request: Request, db: SessionDep) -> Response:
    ctx = deps.staff(request, db, permission=Permission.REGISTRY_WRITE)
    return _form(ctx, _person(db, person_id))


def _finger_position(form: FormData, name: str) -> int:
    try:
        finger = int(text(form, name))
    except ValueError:
        raise InvalidField(name, "choose a finger position 1-10") from None
    if finger not in FINGERS:
        raise InvalidField(name, "choose a finger position 1-10")
    return finger


async def _captures(ctx: Ctx, form: FormData, person: Person) -> list[tuple[int, str]] | None:
    """The two fingers: both files, or the demo person's fingers, or none (no fingerprints)."""
    files = [await upload(form, "fingerprint_1"), await upload(form, "fingerprint_2")]
    if text(form, "demo_capture") and ctx.development:
        demo = deps.demo_support(ctx.request)
        if demo is not None and demo.enrolment is not None:
            return demo.enrolment(person.id_number)
    if files == [None, None]:
        return None
    if None in files:
        missing = "fingerprint_1" if files[0] is None else "fingerprint_2"
        raise InvalidField(missing, "a card registers two fingers: upload both captures, or none")
    positions = (_finger_position(form, "finger_1"), _finger_position(form, "finger_2"))
    if positions[0] == positions[1]:
        raise InvalidField("finger_2", "the two captures must be of two different fingers")
    return [
        (positions[n], record_text(raw, field=f"fingerprint_{n + 1}"))
        for n, raw in enumerate(files)
        if raw is not None
    ]


@router.post("/console/persons/{person_id}/issue")
async def issue(person_id: str, request: Request, db: SessionDep) -> Response:
    """Issue the card; the previous one becomes superseded (the registry's rules decide)."""
    ctx = await run_in_threadpool(deps.staff, request, db, permission=Permission.REGISTRY_WRITE)
    form = await check_csrf(request, ctx)
    person = await run_in_threadpool(_person, db, person_id)
    assert ctx.actor is not None  # noqa: S101
    actor = ctx.actor
    values: dict[str, Any] = {
        "kind": text(form, "kind"),
        "office": text(form, "office")[:12] or (actor.office or ""),
        "finger_1": text(form, "finger_1"),
        "finger_2": text(form, "finger_2"),
    }
    try:
        kind = IssueKind(values["kind"]) if values["kind"] in KINDS else None
        if kind is None:
            raise InvalidField("kind", "choose first, renewal, replacement or correction")
        captures = await _captures(ctx, form, person)

        def run() -> str:
            card = cards.issue_card(
                db,
                actor=actor,
                now=ctx.now,
                id_number=person.id_number,
                kind=kind,
                office=values["office"],
                fingerprints=captures,
                biometrics=get_biometrics(request),
            )
            return json.dumps({"card_id": str(card.id)})

        await run_in_threadpool(partial(write, ctx, db, run, form=form, extra=repr(captures)))
    except DomainError as exc:
        shown = error_values(exc)
        status = exc.status if exc.status in (403, 404, 422) else 409
        return await run_in_threadpool(partial(_form, ctx, person, status=status, **values, **shown))
    return ctx.redirect(f"/console/persons/{person.id}?done=issued")


@router.post("/console/persons/{person_id}/temporary-card")
async def temporary_card(person_id: str, request: Request, db: SessionDep) -> Response:
    """A temporary card (临时居民身份证), valid three months, at the clerk's office."""
    ctx = await run_in_threadpool(deps.staff, request, db, permission=Permission.REGISTRY_WRITE)
    form = await check_csrf(request, ctx)
    person = await run_in_threadpool(_person, db, person_id)
    assert ctx.actor is not None  # noqa: S101
    actor = ctx.actor
    office = text(form, "office")[:12] or (actor.office or person.hukou_office)

    def run() -> str:
        cards.issue_temporary_card(db, actor=actor, now=ctx.now, id_number=person.id_number, office=office)
        return "{}"

    try:
        await run_in_threadpool(write, ctx, db, run)
    except DomainError as exc:
        raise ConsoleRefusal(
            exc.status if exc.status in (403, 404, 409, 422) else 409, "error.rule_detail", detail=exc.detail
        ) from None
    return ctx.redirect(f"/console/persons/{person.id}?done=temporary")


@router.post("/console/persons/{person_id}/revoke")
async def revoke(person_id: str, request: Request, db: SessionDep) -> Response:
    """Revoke the person's registration (deceased, nationality lost, fraud, hukou cancelled) at
    the hukou office: every valid card becomes revoked."""
    ctx = await run_in_threadpool(deps.staff, request, db, permission=Permission.REGISTRY_WRITE)
    form = await check_csrf(request, ctx)
    person = await run_in_threadpool(_person, db, person_id)
    assert ctx.actor is not None  # noqa: S101
    actor = ctx.actor
    try:
        reason = RevocationReason(text(form, "reason"))
    except ValueError:
        raise ConsoleRefusal(422, "error.rule_detail", detail="choose a revocation reason") from None

    def run() -> str:
        persons.revoke_person(
            db, actor=actor, now=ctx.now, id_number=person.id_number, reason=reason, office=actor.office
        )
        return "{}"

    try:
        await run_in_threadpool(partial(write, ctx, db, run, form=form))
    except DomainError as exc:
        status = exc.status if exc.status in (403, 404, 409, 422) else 409
        raise ConsoleRefusal(status, "error.rule_detail", detail=exc.detail) from None
    return ctx.redirect(f"/console/persons/{person.id}?done=revoked")
