"""Pieces the console's staff pages share: the unit of work, office names, id numbers as a role
may see them, and errors shown on the form they came from."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from idguard.api.deps import refusal_json
from idguard.console.web import Ctx
from idguard.core.errors import (
    DomainError,
    Forbidden,
    InvalidField,
    NotFound,
    RecordedRefusal,
    RuleViolation,
    Unavailable,
)
from idguard.core.grants import Actor, Permission
from idguard.core.idnumber import mask
from idguard.core.sealing import Sealer
from idguard.registry.models import Office
from idguard.uow import Idempotency, UnitOfWork

T = TypeVar("T")


def unit_of_work(ctx: Ctx, db: Session) -> UnitOfWork:
    return UnitOfWork(db, ctx.now, Sealer(ctx.settings.idempotency_key))


FORM_KEY = "form_key"


def write(
    ctx: Ctx, db: Session, fn: Callable[[], str], *, form: FormData | None = None, extra: str = ""
) -> str:
    """Run a write through the one unit of work (a refused fingerprint comparison is still
    recorded, as through the API) and return what `fn` returned.

    A form carries a key of its own (`form_key`, new at every render), used as the write's
    Idempotency-Key: a form sent twice (a double click, a retry after a lost answer) gets the
    first answer again — the same receipt — and changes nothing twice. `extra` is what else the
    request carried (an uploaded capture), so the same key with other content is refused."""
    assert ctx.actor is not None  # noqa: S101 - staff writes only
    idempotency = None
    key = form.get(FORM_KEY) if form is not None else None
    if form is not None and isinstance(key, str) and key:
        fields = sorted(
            (name, value) for name, value in form.multi_items() if isinstance(value, str) and name != "csrf"
        )
        request = f"{ctx.request.method} {ctx.request.url.path}\n{fields}\n{extra}".encode()
        idempotency = Idempotency.of(str(ctx.actor.staff_id), "console:" + key[:100], request)
    answer = unit_of_work(ctx, db).write(fn, status=201, idempotency=idempotency, refusal_body=refusal_json)
    if answer.status >= 400:  # a recorded refusal, replayed as it was answered the first time
        raise RuleViolation(str(json.loads(answer.body).get("detail", "refused")))
    return answer.body


def read(ctx: Ctx, db: Session, fn: Callable[[], T]) -> T:
    """Run a read and commit its audit entries with it, as the API does."""
    return unit_of_work(ctx, db).read(fn)


def office_names(db: Session, codes: Iterable[str | None]) -> dict[str, str]:
    wanted = {c for c in codes if c}
    if not wanted:
        return {}
    rows = db.execute(sa.select(Office.code, Office.name).where(Office.code.in_(wanted))).all()
    return {row.code: row.name for row in rows}


def sees_whole_numbers(actor: Actor) -> bool:
    """Counter work (registry writes) needs the whole number to match the card in front of the
    clerk; reading roles (supervisors, auditors) see it masked on screen."""
    return actor.may(Permission.REGISTRY_WRITE)


def shown_number(actor: Actor, number: str) -> str:
    return number if sees_whole_numbers(actor) else mask(number)


def error_values(exc: DomainError) -> dict[str, str]:
    """How a refused action is shown on its form: a translated heading (by kind of error), the
    service's own detail (in English: the rule as the registry words it) and the field."""
    if isinstance(exc, InvalidField):
        heading = "error.fingerprint" if exc.field == "fingerprint" else "error.invalid"
    elif isinstance(exc, RecordedRefusal):  # a failed fingerprint comparison, recorded
        heading = "error.fingerprint"
    else:
        heading = {
            NotFound: "error.not_found",
            Forbidden: "error.forbidden_action",
            Unavailable: "error.unavailable",
        }.get(type(exc), "error.rule")
    return {
        "error": heading,
        "error_detail": exc.detail,
        "error_field": exc.field if isinstance(exc, InvalidField) else "",
    }
