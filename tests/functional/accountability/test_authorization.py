"""Who may call accountability's routes: one row per operation, one expected status per caller
(the central table's callers and helpers, tests/functional/test_authorization.py, which unions
this TABLE into its coverage check).

A unit reports and reads only its own (its key); supervisors open and decide cases and
reinstate; supervisors and auditors read compliance, cases and statistics; clerks and admins
none of it; a suspended unit's key answers 401 everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from tests.functional.accountability.conftest import Unit, number, tx
from tests.functional.conftest import Counter
from tests.functional.test_authorization import (
    CALLERS,
    OK,
    Request,
    Row,
    by_path,
    misjudgements,
    row,
    staff_keys,
    suspend_unit,
)


@dataclass
class World:
    unit: str  # the calling unit's code (UNIT-A)
    case_no: str  # an open case against it
    keys: dict[str, str]


MAY = "2026-05"
_DAYS = {"from": "2026-06-01", "to": "2026-06-15"}

# fmt: off
TABLE: dict[tuple[str, str], Row] = {
    #                                                  anon clerk other  sup  aud admin unit susp
    ("POST", "/api/v1/transactions"):              row(401, 401,  401,  401, 401, 401, OK,  401,
        request=lambda w: Request("/api/v1/transactions", body={"items": [tx(number(), -5)]})),
    ("GET", "/api/v1/compliance"):                 row(401, 403,  403,  OK,  OK,  403, 403, 401,
        request=lambda w: Request("/api/v1/compliance", params={"month": MAY})),
    ("GET", "/api/v1/units/{code}/compliance"):    row(401, 403,  403,  OK,  OK,  403, OK,  401,
        request=lambda w: Request(f"/api/v1/units/{w.unit}/compliance", params={"month": MAY})),
    ("POST", "/api/v1/units/{code}/cases"):        row(401, 403,  403,  OK,  403, 403, 401, 401,
        request=lambda w: Request(f"/api/v1/units/{w.unit}/cases", body={"month": MAY, "finding": "x"})),
    ("POST", "/api/v1/cases/{case_no}/responses"): row(401, 401,  401,  401, 401, 401, OK,  401,
        request=lambda w: Request(f"/api/v1/cases/{w.case_no}/responses", body={"statement": "heard"})),
    ("POST", "/api/v1/cases/{case_no}/decision"):  row(401, 403,  403,  OK,  403, 403, 401, 401,
        request=lambda w: Request(f"/api/v1/cases/{w.case_no}/decision",
                                  body={"decision": "dismissed", "note": "n"})),
    ("POST", "/api/v1/units/{code}/reinstate"):    row(401, 403,  403,  OK,  403, 403, 401, 401,
        request=lambda w: Request(f"/api/v1/units/{w.unit}/reinstate", body={"note": "n"})),
    ("GET", "/api/v1/cases"):                      row(401, 403,  403,  OK,  OK,  403, OK,  401,
        request=lambda w: Request("/api/v1/cases")),
    ("GET", "/api/v1/statistics/checks-per-sector"): row(401, 403, 403, OK,  OK,  403, 401, 401,
        request=lambda w: Request("/api/v1/statistics/checks-per-sector", params=_DAYS)),
    ("GET", "/api/v1/statistics/units"):           row(401, 403,  403,  OK,  OK,  403, 401, 401,
        request=lambda w: Request("/api/v1/statistics/units", params=_DAYS)),
    ("GET", "/api/v1/statistics/top-violators"):   row(401, 403,  403,  OK,  OK,  403, 401, 401,
        request=lambda w: Request("/api/v1/statistics/top-violators", params={"month": MAY})),
}
# fmt: on


@pytest.fixture
def world(counter: Counter, session_factory: sessionmaker[Session]) -> World:
    unit = Unit(counter, "UNIT-A")
    suspended = Unit(counter, "UNIT-S")
    r = counter.post(f"/api/v1/units/{unit.code}/cases", {"month": MAY, "finding": "f"}, as_="supervisor")
    assert r.status_code == 201, r.text
    suspend_unit(session_factory, suspended.code)
    counter.client.app.state.verifier.follower.poll()  # type: ignore[attr-defined]
    keys = staff_keys()
    keys |= {"unit": f"Bearer {unit.key}", "suspended_unit": f"Bearer {suspended.key}"}
    return World(unit=unit.code, case_no=r.json()["case_no"], keys=keys)


def test_who_may_call_each_operation(client: TestClient, world: World) -> None:
    wrong: list[str] = []
    for (method, path), entry in by_path(TABLE):
        request: Any = entry.request(world)  # type: ignore[arg-type]
        wrong += misjudgements(client, method, path, request, CALLERS, entry.expected, world.keys)
    assert wrong == []


def test_every_accountability_operation_has_a_row(client: TestClient) -> None:
    spec = client.get("/api/v1/openapi.json").json()
    ours = {
        (m.upper(), p)
        for p, item in spec["paths"].items()
        for m in item
        if any(s in p for s in ("/transactions", "compliance", "/cases", "/statistics/", "/reinstate"))
    }
    assert ours == set(TABLE)
