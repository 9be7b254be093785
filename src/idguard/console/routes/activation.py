"""The clerk's side of a citizen's account: the activation code, printed on a receipt for the
person standing at the counter (identity checked there), with the address of `/me/activate`.

The code is the API's (`citizens.accounts.issue_activation_code`: one use, 72 hours, any earlier
unused code withdrawn, audited on the record). It is a secret shown once, so this write has no
form key: nothing of the answer is stored for a replay (as units' onboarding). A second click
prints a new code that replaces the first, which is the safe direction.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from starlette.responses import Response

from idguard.api.deps import SessionDep
from idguard.citizens import accounts
from idguard.citizens.routes.deps import keys_of
from idguard.console import deps
from idguard.console.routes.common import error_values, office_names, shown_number, write
from idguard.console.routes.receipts import qr_svg
from idguard.console.web import ConsoleRefusal, check_csrf
from idguard.core.errors import DomainError
from idguard.core.grants import Permission
from idguard.registry.models import Person

router = APIRouter(include_in_schema=False)


@router.post("/console/persons/{person_id}/activation-code")
async def activation_code(person_id: str, request: Request, db: SessionDep) -> Response:
    """Issue the person's activation code and show it on a printable receipt (回执)."""
    ctx = await run_in_threadpool(deps.staff, request, db, permission=Permission.REGISTRY_WRITE)
    await check_csrf(request, ctx)
    assert ctx.actor is not None  # noqa: S101 - deps.staff sets it
    actor = ctx.actor
    try:
        record_id = uuid.UUID(person_id)
    except ValueError:
        raise ConsoleRefusal(404, "error.no_person") from None
    person = await run_in_threadpool(db.get, Person, record_id)
    if person is None:
        raise ConsoleRefusal(404, "error.no_person")
    number = person.id_number
    code_key = keys_of(request).code_key

    def run() -> str:
        code, expires_at = accounts.issue_activation_code(
            db, actor=actor, now=ctx.now, id_number=number, code_key=code_key
        )
        return json.dumps({"code": code, "expires_at": expires_at.isoformat()})

    try:
        answer = json.loads(await run_in_threadpool(write, ctx, db, run))
    except DomainError as exc:
        values = error_values(exc)
        raise ConsoleRefusal(exc.status, "error.rule_detail", detail=values["error_detail"]) from None
    url = f"{str(request.base_url).rstrip('/')}/me/activate"
    office = actor.office or ""
    return ctx.render(
        "staff/activation_code.html",
        person=person,
        id_shown=shown_number(actor, number),
        code=answer["code"],
        expires_at=dt.datetime.fromisoformat(answer["expires_at"]),
        issued_at=ctx.now,
        office=office,
        office_name=office_names(db, [office]).get(office, office),
        url=url,
        qr=qr_svg(url),
    )
