"""Cases: opened by supervisors, answered by the unit (hearing), decided; reinstatement."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from starlette.responses import Response

from idguard.accountability import cases
from idguard.accountability.models import CaseEvent
from idguard.accountability.routes.deps import UnitTxDep
from idguard.accountability.rules import CaseStatus, parse_month
from idguard.accountability.schemas import (
    CaseEventOut,
    CaseIn,
    CaseOpened,
    CaseOut,
    CasePage,
    DecisionIn,
    ReinstateIn,
    ResponseIn,
    UnitStatusOut,
)
from idguard.api.deps import SessionDep
from idguard.api.schemas import STAFF_WRITE_ERRORS, problem_responses
from idguard.registry.routes.deps import TxDep
from idguard.verification.routes.deps import CurrentCaller, get_verifier

router = APIRouter(prefix="/api/v1", tags=["accountability"])


def _event(e: CaseEvent) -> CaseEventOut:
    return CaseEventOut(
        id=e.id,
        kind=e.kind.value,
        at=e.at,
        by="unit" if e.staff_id is None else "supervisor",
        text=e.text,
        decision=e.decision,
    )


def _case(view: cases.CaseView) -> CaseOut:
    c = view.case
    return CaseOut(
        case_no=c.case_no,
        unit_code=c.unit_code,
        month=c.month,
        finding=c.finding,
        status=c.status,
        decision=c.decision,
        opened_at=c.opened_at,
        decided_at=c.decided_at,
        history=[_event(e) for e in view.events],
    )


@router.post("/units/{code}/cases", status_code=201, response_model=CaseOpened, responses=STAFF_WRITE_ERRORS)
def open_case(code: str, body: CaseIn, tx: TxDep) -> Response:
    """Open a case against a unit for a month (supervisors), with the finding. The unit is told
    at once through its notification channel (a `case` item: poll, stream, webhook) and answers
    with `POST /api/v1/cases/{case_no}/responses`."""

    def run() -> CaseOpened:
        case = cases.open_case(
            tx.session,
            actor=tx.actor,
            now=tx.now,
            unit_code=code,
            month=parse_month(body.month),
            finding=body.finding,
        )
        return CaseOpened(case_no=case.case_no, status=case.status)

    return tx.write(run, body=body)


@router.post(
    "/cases/{case_no}/responses",
    status_code=201,
    response_model=CaseEventOut,
    responses=problem_responses(401, 404, 409, 422),
)
def respond(case_no: str, body: ResponseIn, tx: UnitTxDep) -> Response:
    """Your unit's statement on a case against it (the hearing, 陈述申辩), while the case is
    open; send as many as you need. A warning or suspension is decided only after you have been
    heard (or 7 days after the case was opened without a statement)."""

    def run() -> CaseEventOut:
        return _event(
            cases.respond(tx.session, unit=tx.unit, now=tx.now, case_no=case_no, statement=body.statement)
        )

    return tx.write(run, body=body)


@router.post(
    "/cases/{case_no}/decision", status_code=200, response_model=CaseOut, responses=STAFF_WRITE_ERRORS
)
def decide(case_no: str, body: DecisionIn, tx: TxDep) -> Response:
    """Decide a case once (supervisors): `warning`, `suspension` or `dismissed`, with a note.
    A suspension stops every key of the unit on every worker within the time a loss report
    takes to reach them; the unit's calls answer 401 saying it is suspended and how to appeal,
    until `POST /api/v1/units/{code}/reinstate`."""

    def run() -> CaseOut:
        case = cases.decide(
            tx.session, actor=tx.actor, now=tx.now, case_no=case_no, decision=body.decision, note=body.note
        )
        return _case(cases.view(tx.session, case.case_no))

    response = tx.write(run, body=body, status_code=200)
    get_verifier(tx.request).follower.poll()  # this worker at once; the others within one poll
    return response


@router.post(
    "/units/{code}/reinstate", status_code=200, response_model=UnitStatusOut, responses=STAFF_WRITE_ERRORS
)
def reinstate(code: str, tx: TxDep, body: ReinstateIn | None = None) -> Response:
    """Reinstate a suspended unit (supervisors): its keys work again on every worker within one
    poll. Recorded on the case that suspended it, and the unit is told. The body (`note`) is
    optional."""

    def run() -> UnitStatusOut:
        note = body.note if body is not None else ""
        unit = cases.reinstate(tx.session, actor=tx.actor, now=tx.now, unit_code=code, note=note)
        return UnitStatusOut(code=unit.code, status=unit.status.value)

    response = tx.write(run, body=body, status_code=200)
    get_verifier(tx.request).follower.poll()
    return response


@router.get("/cases", response_model=CasePage, responses=problem_responses(401, 403, 422))
def list_cases(
    caller: CurrentCaller,
    session: SessionDep,
    unit: Annotated[
        str | None, Query(max_length=32, description="one unit's cases (a unit: only its own)")
    ] = None,
    status: Annotated[CaseStatus | None, Query(description="open | decided")] = None,
    after: Annotated[str | None, Query(max_length=40, description="the `next` of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> CasePage:
    """Cases with their full, append-only history (supervisors, auditors; a unit its own)."""
    views, more = cases.list_cases(
        session, caller=caller, unit_code=unit, status=status, after=after, limit=limit
    )
    return CasePage(items=[_case(v) for v in views], next=more)
