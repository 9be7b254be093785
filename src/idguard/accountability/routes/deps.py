"""Accountability's request dependencies: settings it reads, and `UnitTx`, a unit's write as one
unit of work with its Idempotency-Key (staff writes use the registry's `Tx`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from pydantic import BaseModel
from starlette.responses import Response

from idguard.accountability.rules import Ladder, parse_ladder
from idguard.api.deps import SessionDep, get_clock, get_settings, refusal_json, respond
from idguard.core.sealing import Sealer
from idguard.uow import IDEMPOTENCY_HEADER, Idempotency, UnitOfWork
from idguard.verification.routes.deps import CurrentUnit


def window(request: Request) -> dt.timedelta:
    return dt.timedelta(hours=get_settings(request).check_window_hours)


def ladder(request: Request) -> Ladder:
    return parse_ladder(get_settings(request).compliance_levels)


class UnitTx:
    """The unit of work of one unit's write (its API key is the principal of its Idempotency-Key)."""

    def __init__(self, request: Request, session: SessionDep, unit: CurrentUnit) -> None:
        self.request = request
        self.session = session
        self.unit = unit
        self.now: dt.datetime = get_clock(request).now()
        self.uow = UnitOfWork(session, self.now, Sealer(get_settings(request).idempotency_key))

    def write(
        self, fn: Callable[[], BaseModel], *, body: BaseModel | None, status_code: int = 201
    ) -> Response:
        key = self.request.headers.get(IDEMPOTENCY_HEADER)
        idempotency = None
        if key is not None:
            request = f"{self.request.method} {self.request.url.path}\n".encode() + (
                body.model_dump_json().encode() if body is not None else b""
            )
            idempotency = Idempotency.of(f"unit:{self.unit.code}", key, request)
        answer = self.uow.write(
            lambda: fn().model_dump_json(),
            status=status_code,
            idempotency=idempotency,
            refusal_body=refusal_json,
        )
        return respond(answer)


UnitTxDep = Annotated[UnitTx, Depends()]
