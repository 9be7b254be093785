"""One idempotent write for the pages of callers who are not staff: citizens (`/me`) and unit
tellers (`/unit`). routes/common.write is the staff pages' (its principal is the member of
staff); this is the same unit of work with the principal named by the caller, so a form sent
twice (a double click, a retry after a lost answer) gets the first answer and changes nothing
twice."""

from __future__ import annotations

import json
from collections.abc import Callable

from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from idguard.api.deps import refusal_json
from idguard.console.routes.common import FORM_KEY, unit_of_work
from idguard.console.web import Ctx
from idguard.core.errors import RuleViolation
from idguard.uow import Idempotency


def write_as(
    ctx: Ctx,
    db: Session,
    principal: str,
    fn: Callable[[], str],
    *,
    form: FormData | None = None,
    extra: str = "",
) -> str:
    """Run `fn` (a write answering JSON text) in the one unit of work and return its answer.

    The form's own key (`form_key`, new at every render) is the write's Idempotency-Key under
    `principal` (`citizen:<person id>`, `unit:<code>`, as the API's); `extra` is what else the
    request carried (an uploaded file), so the same key with other content is refused."""
    idempotency = None
    key = form.get(FORM_KEY) if form is not None else None
    if form is not None and isinstance(key, str) and key:
        fields = sorted(
            (name, value) for name, value in form.multi_items() if isinstance(value, str) and name != "csrf"
        )
        request = f"{ctx.request.method} {ctx.request.url.path}\n{fields}\n{extra}".encode()
        idempotency = Idempotency.of(principal, "console:" + key[:100], request)
    answer = unit_of_work(ctx, db).write(fn, status=201, idempotency=idempotency, refusal_body=refusal_json)
    if answer.status >= 400:  # a recorded refusal, replayed as it was answered the first time
        raise RuleViolation(str(json.loads(answer.body).get("detail", "refused")))
    return answer.body
