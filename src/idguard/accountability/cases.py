"""Cases (责任追究案件): a supervisor opens one against a unit for a month; the unit is told
(its notification channel) and answers (the hearing); the supervisor decides: warning,
suspension (every key of the unit stops until reinstated) or dismissed.

Append-only: a case's history is its `case_events`, never updated or deleted; the `cases` row's
status and decision are kept consistent with them in the same transaction. Every step is in
the audit log too.
"""

from __future__ import annotations

import datetime as dt
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from idguard.accountability.models import Case, CaseEvent
from idguard.accountability.rules import (
    CaseEventKind,
    CaseStatus,
    Decision,
    check_can_decide,
    check_can_respond,
)
from idguard.core.errors import Forbidden, InvalidField, NotFound
from idguard.core.grants import Actor, Permission
from idguard.db.common import AuditEntry
from idguard.verification import units
from idguard.verification.models import Unit
from idguard.verification.runtime.keyring import UnitView

APPEAL = (
    "To appeal, send your statement to the supervising authority (公安机关) that decided the case, "
    "quoting the case number; when it is upheld a supervisor restores your keys with "
    "POST /api/v1/units/{code}/reinstate."
)


@dataclass(frozen=True, slots=True)
class CaseView:
    case: Case
    events: list[CaseEvent]


def _new_case_no(month: str) -> str:
    return f"AC-{month.replace('-', '')}-{secrets.token_hex(4).upper()}"


def _event(
    session: Session,
    case: Case,
    kind: CaseEventKind,
    *,
    now: dt.datetime,
    staff_id: uuid.UUID | None,
    text: str,
    decision: Decision | None = None,
) -> CaseEvent:
    event = CaseEvent(
        case_no=case.case_no,
        unit_code=case.unit_code,
        kind=kind,
        at=now,
        staff_id=staff_id,
        text=text,
        decision=decision,
    )
    session.add(event)
    return event


def _text(value: str, field: str, max_length: int) -> str:
    value = value.strip()
    if not value:
        raise InvalidField(field, "required")
    if len(value) > max_length:
        raise InvalidField(field, f"at most {max_length} characters")
    return value


def open_case(
    session: Session, *, actor: Actor, now: dt.datetime, unit_code: str, month: str, finding: str
) -> Case:
    """Open a case against the unit for `month` (supervisors). The unit is told through its
    notification channel (the `opened` event is a case notification)."""
    actor.require(Permission.ONBOARD_UNITS)
    finding = _text(finding, "finding", 2000)
    if session.get(Unit, unit_code) is None:
        raise NotFound(f"no unit {unit_code}")
    case = Case(
        case_no=_new_case_no(month),
        unit_code=unit_code,
        month=month,
        finding=finding,
        status=CaseStatus.OPEN,
        decision=None,
        opened_at=now,
        opened_by=actor.staff_id,
        decided_at=None,
    )
    session.add(case)
    session.flush()
    _event(session, case, CaseEventKind.OPENED, now=now, staff_id=actor.staff_id, text=finding)
    session.add(
        AuditEntry(at=now, staff_id=actor.staff_id, action="case.open", detail=f"{case.case_no} {unit_code}")
    )
    session.flush()
    return case


def _case(session: Session, case_no: str, *, lock: bool = False) -> Case:
    case = session.get(Case, case_no, with_for_update=lock or None)
    if case is None:
        raise NotFound(f"no case {case_no}")
    return case


def respond(session: Session, *, unit: UnitView, now: dt.datetime, case_no: str, statement: str) -> CaseEvent:
    """The unit's statement on its own case (the hearing). Another unit's case is a 404: a unit
    does not learn which cases other units have."""
    case = _case(session, case_no, lock=True)
    if case.unit_code != unit.code:
        raise NotFound(f"no case {case_no}")
    check_can_respond(case.status)
    event = _event(
        session,
        case,
        CaseEventKind.RESPONSE,
        now=now,
        staff_id=None,
        text=_text(statement, "statement", 4000),
    )
    session.add(
        AuditEntry(at=now, staff_id=None, action="case.response", detail=f"{case_no} by unit {unit.code}")
    )
    session.flush()
    return event


def decide(
    session: Session, *, actor: Actor, now: dt.datetime, case_no: str, decision: Decision, note: str
) -> Case:
    """Decide the case once (supervisors). `suspension` suspends the unit (verification/units.py):
    its keys stop on every worker within one poll."""
    actor.require(Permission.ONBOARD_UNITS)
    case = _case(session, case_no, lock=True)
    responses = session.scalar(
        sa.select(sa.func.count()).where(
            CaseEvent.case_no == case_no, CaseEvent.kind == CaseEventKind.RESPONSE
        )
    )
    check_can_decide(
        case.status, responses=int(responses or 0), decision=decision, opened_at=case.opened_at, now=now
    )
    note = note.strip()[:4000] or f"decided: {decision.value}"
    text = note
    if decision is Decision.SUSPENSION:
        text = f"{note}\n\n{APPEAL.format(code=case.unit_code)}"
        unit = session.get(Unit, case.unit_code)
        if unit is not None and unit.status.value != "suspended":
            units.suspend(session, actor=actor, now=now, code=case.unit_code, reason=f"case {case_no}")
    case.status = CaseStatus.DECIDED
    case.decision = decision
    case.decided_at = now
    _event(
        session, case, CaseEventKind.DECIDED, now=now, staff_id=actor.staff_id, text=text, decision=decision
    )
    session.add(
        AuditEntry(
            at=now, staff_id=actor.staff_id, action="case.decide", detail=f"{case_no}: {decision.value}"
        )
    )
    session.flush()
    return case


def reinstate(session: Session, *, actor: Actor, now: dt.datetime, unit_code: str, note: str) -> Unit:
    """Restore a suspended unit's keys (supervisors); the reinstatement is appended to the case
    that suspended it (the latest decided suspension), and the unit is told."""
    note = note.strip()[:4000] or "reinstated"
    unit = units.reinstate(session, actor=actor, now=now, code=unit_code, reason=note)
    case = session.scalars(
        sa.select(Case)
        .where(Case.unit_code == unit_code, Case.decision == Decision.SUSPENSION)
        .order_by(Case.decided_at.desc())
        .limit(1)
    ).first()
    if case is not None:
        _event(session, case, CaseEventKind.REINSTATED, now=now, staff_id=actor.staff_id, text=note)
    session.flush()
    return unit


def list_cases(
    session: Session,
    *,
    caller: UnitView | Actor,
    unit_code: str | None,
    status: CaseStatus | None,
    after: str | None,
    limit: int,
) -> tuple[list[CaseView], str | None]:
    """Cases by case number, with their full history. A unit sees only its own (asking for
    another unit's is a 403); supervisors and auditors every unit's."""
    stmt = sa.select(Case)
    if isinstance(caller, Actor):
        caller.require(Permission.READ_CHECK_LOG)
        if unit_code is not None:
            stmt = stmt.where(Case.unit_code == unit_code)
    else:
        if unit_code is not None and unit_code != caller.code:
            raise Forbidden("a unit sees only its own cases")
        stmt = stmt.where(Case.unit_code == caller.code)
    if status is not None:
        stmt = stmt.where(Case.status == status)
    if after is not None:
        stmt = stmt.where(Case.case_no > after)
    cases: Sequence[Case] = session.scalars(stmt.order_by(Case.case_no).limit(limit + 1)).all()
    more = len(cases) > limit
    cases = cases[:limit]
    events: dict[str, list[CaseEvent]] = {c.case_no: [] for c in cases}
    if cases:
        for e in session.scalars(
            sa.select(CaseEvent).where(CaseEvent.case_no.in_(list(events))).order_by(CaseEvent.id)
        ):
            events[e.case_no].append(e)
    return [CaseView(c, events[c.case_no]) for c in cases], (cases[-1].case_no if more else None)


def view(session: Session, case_no: str) -> CaseView:
    case = _case(session, case_no)
    events = list(
        session.scalars(sa.select(CaseEvent).where(CaseEvent.case_no == case_no).order_by(CaseEvent.id))
    )
    return CaseView(case, events)


def suspension_notes(session: Session) -> dict[str, str]:
    """{unit: note} for every suspended unit: the case that suspended it and how to appeal (the
    key ring shows it in the 401 a suspended unit's key gets)."""
    notes: dict[str, str] = {}
    rows = session.execute(
        sa.select(Case.unit_code, Case.case_no)
        .join(Unit, Unit.code == Case.unit_code)
        .where(Unit.status == "suspended", Case.decision == Decision.SUSPENSION)
        .order_by(Case.decided_at)
    )
    for code, case_no in rows:  # the latest suspension wins
        notes[code] = f"Suspended by the decision on case {case_no}. " + APPEAL.format(code=code)
    return notes
