"""Cases over HTTP: opened, the unit told and heard, decided; a suspension stops the unit's keys
with a 401 saying why and how to appeal; reinstatement; a unit sees only its own cases."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from idguard.accountability.models import CaseEvent
from idguard.core.clock import FixedClock
from idguard.db.common import AuditEntry
from tests.factories import auth
from tests.functional.accountability.conftest import Unit
from tests.functional.conftest import Counter, assert_problem


def open_case(counter: Counter, unit: Unit, finding: str = "1.9 % of May's accounts opened unchecked") -> str:
    r = counter.post(
        f"/api/v1/units/{unit.code}/cases", {"month": "2026-05", "finding": finding}, as_="supervisor"
    )
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "open"
    return str(r.json()["case_no"])


def decide(counter: Counter, case_no: str, decision: str, note: str = "decided") -> Any:
    return counter.post(
        f"/api/v1/cases/{case_no}/decision", {"decision": decision, "note": note}, as_="supervisor"
    )


def test_case_lifecycle_with_the_units_answer(
    counter: Counter, bank: Unit, session_factory: sessionmaker[Session]
) -> None:
    case_no = open_case(counter, bank)
    # The unit is told through its notification channel.
    r = bank.get("/api/v1/notifications")
    assert r.status_code == 200, r.text
    [notice] = r.json()["cases"]
    assert (notice["kind"], notice["case_no"], notice["event"]) == ("case", case_no, "opened")
    assert "unchecked" in notice["text"]
    assert notice["decision"] is None
    cases_next = r.json()["cases_next"]
    assert bank.get("/api/v1/notifications", cases_after=cases_next).json()["cases"] == []
    # A sanction before the unit is heard: refused.
    assert_problem(decide(counter, case_no, "warning"), 409, says="not been heard")
    # The hearing.
    r = bank.post(f"/api/v1/cases/{case_no}/responses", {"statement": "branch 12's reader was broken"})
    assert r.status_code == 201, r.text
    assert r.json()["by"] == "unit"
    r = decide(counter, case_no, "warning", "first finding; fix the reader")
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["status"], body["decision"]) == ("decided", "warning")
    assert [e["kind"] for e in body["history"]] == ["opened", "response", "decided"]
    # Decided once; the hearing is over.
    assert_problem(decide(counter, case_no, "dismissed"), 409, says="already decided")
    assert_problem(bank.post(f"/api/v1/cases/{case_no}/responses", {"statement": "more"}), 409)
    # The decision is a notice too; the unit still works (a warning).
    notices = bank.get("/api/v1/notifications", cases_after=cases_next).json()["cases"]
    assert [(n["event"], n["decision"]) for n in notices] == [("decided", "warning")]
    # Everything is in the audit log.
    with session_factory() as session:
        actions = set(session.scalars(sa.select(AuditEntry.action).where(AuditEntry.action.like("case.%"))))
    assert actions == {"case.open", "case.response", "case.decide"}


def test_dismissal_needs_no_hearing(counter: Counter, bank: Unit) -> None:
    case_no = open_case(counter, bank)
    r = decide(counter, case_no, "dismissed", "the figures were a reporting error")
    assert r.status_code == 200, r.text
    assert r.json()["decision"] == "dismissed"


def test_a_sanction_after_the_hearing_period_without_an_answer(
    counter: Counter, bank: Unit, clock: FixedClock
) -> None:
    case_no = open_case(counter, bank)
    clock.advance(dt.timedelta(days=7))
    assert decide(counter, case_no, "warning").status_code == 200


def test_suspension_and_reinstatement(counter: Counter, bank: Unit, other: Unit) -> None:
    case_no = open_case(counter, bank)
    assert bank.post(f"/api/v1/cases/{case_no}/responses", {"text": "we disagree"}).status_code == 201
    r = decide(counter, case_no, "suspension", "third excessive month")
    assert r.status_code == 200, r.text
    # Every route with the unit's key: 401 naming the suspension, the case and the appeal.
    for path in ("/api/v1/checks", "/api/v1/notifications"):
        r = bank.get(path)
        assert_problem(r, 401, says="suspended")
        assert case_no in r.json()["detail"]
        assert "reinstate" in r.json()["detail"]
        assert "appeal" in r.json()["detail"]
    assert_problem(bank.post("/api/v1/transactions", {"items": []}), 401, says="suspended")
    # Another unit is unaffected; a wrong key is still a plain 401.
    assert other.get("/api/v1/checks").status_code == 200
    r = counter.client.get("/api/v1/checks", headers={"Authorization": "Bearer idg_wrongwrongwrongwrong"})
    assert "suspended" not in r.json()["detail"]
    # Reinstated by a supervisor only.
    assert_problem(counter.post(f"/api/v1/units/{bank.code}/reinstate", {"note": "x"}, as_="auditor"), 403)
    r = counter.client.post(f"/api/v1/units/{bank.code}/reinstate", headers=auth("supervisor"))  # no body
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "active"
    assert bank.get("/api/v1/checks").status_code == 200
    assert_problem(
        counter.post(f"/api/v1/units/{bank.code}/reinstate", {"note": "again"}, as_="supervisor"), 409
    )
    # The unit hears of all of it, and the case's history records the reinstatement.
    events = [(n["event"], n["decision"]) for n in bank.get("/api/v1/notifications").json()["cases"]]
    assert events == [("opened", None), ("decided", "suspension"), ("reinstated", None)]
    r = counter.get("/api/v1/cases", as_="auditor", unit=bank.code)
    [case] = r.json()["items"]
    assert [e["kind"] for e in case["history"]] == ["opened", "response", "decided", "reinstated"]


def test_a_unit_sees_and_answers_only_its_own_cases(counter: Counter, bank: Unit, other: Unit) -> None:
    mine = open_case(counter, bank)
    theirs = open_case(counter, other)
    r = bank.get("/api/v1/cases")
    assert r.status_code == 200, r.text
    assert [c["case_no"] for c in r.json()["items"]] == [mine]
    assert_problem(bank.get("/api/v1/cases", unit=other.code), 403)
    assert_problem(bank.post(f"/api/v1/cases/{theirs}/responses", {"statement": "not ours"}), 404)
    assert other.get("/api/v1/notifications").json()["cases"][0]["case_no"] == theirs
    assert [n["case_no"] for n in bank.get("/api/v1/notifications").json()["cases"]] == [mine]
    # Staff: supervisors and auditors every case, filtered.
    r = counter.get("/api/v1/cases", as_="supervisor", status="open")
    assert {c["case_no"] for c in r.json()["items"]} == {mine, theirs}
    assert_problem(counter.get("/api/v1/cases", as_="clerk_a"), 403)


def test_cases_are_append_only(counter: Counter, bank: Unit, session_factory: sessionmaker[Session]) -> None:
    case_no = open_case(counter, bank)
    bank.post(f"/api/v1/cases/{case_no}/responses", {"statement": "one"})
    bank.post(f"/api/v1/cases/{case_no}/responses", {"statement": "two"})
    decide(counter, case_no, "warning")
    with session_factory() as session:
        texts = [  # sealed at rest (registry/sealed.py): opened through the model
            e.text
            for e in session.scalars(
                sa.select(CaseEvent).where(CaseEvent.case_no == case_no).order_by(CaseEvent.id)
            )
        ]
    assert texts[1:3] == ["one", "two"]


def test_bad_case_requests_name_the_field(counter: Counter, bank: Unit) -> None:
    r = counter.post(f"/api/v1/units/{bank.code}/cases", {"month": "May", "finding": "x"}, as_="supervisor")
    assert_problem(r, 422, field="month")
    r = counter.post(
        f"/api/v1/units/{bank.code}/cases", {"month": "2026-05", "finding": ""}, as_="supervisor"
    )
    assert_problem(r, 422, field="finding")
    r = counter.post("/api/v1/units/NOPE/cases", {"month": "2026-05", "finding": "x"}, as_="supervisor")
    assert_problem(r, 404)
    case_no = open_case(counter, bank)
    assert_problem(decide(counter, case_no, "fine"), 422, field="decision")
    assert_problem(decide(counter, "AC-NOPE", "warning"), 404)
