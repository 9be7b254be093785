"""Who may call the watchlist's routes: one row per operation, one expected status per caller
(the central table's callers and helpers, tests/functional/test_authorization.py, which unions
this TABLE into its coverage check).

The blacklist is the supervisors' (auditors read it); incidents are read by the owning office's
clerks (another office's clerk gets their own office's, or masked numbers when asking for
another), supervisors and auditors, and closed by the owning office's clerk or a supervisor;
protection is set by the holder's hukou office's clerk or a supervisor. Admins and units have no
part in any of it. (A citizen's token is refused by every staff route: citizens' own table.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

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
from tests.functional.watchlist.helpers import Bank, incidents, listed, settle


@dataclass
class World:
    person: str  # a holder of office A, with a card
    listable: str  # a person of office A not yet listed
    entry_no: str  # an active blacklist entry
    incident_no: str  # an open incident owned by office A
    keys: dict[str, str]


# fmt: off
TABLE: dict[tuple[str, str], Row] = {
    #                                                       anon clerk other  sup  aud admin unit susp
    ("GET", "/api/v1/incidents"):                       row(401, OK,   OK,   OK,  OK,  403, 401, 401,
        request=lambda w: Request("/api/v1/incidents")),
    ("GET", "/api/v1/incidents/stream"):                row(401, OK,   OK,   OK,  OK,  403, 401, 401,
        request=lambda w: Request("/api/v1/incidents/stream", params={"max_seconds": 0.1})),
    ("POST", "/api/v1/incidents/{incident_no}/close"):  row(401, OK,   403,  OK,  403, 403, 401, 401,
        request=lambda w: Request(f"/api/v1/incidents/{w.incident_no}/close",
                                  body={"outcome": "confirmed", "note": "seen on camera"})),
    ("POST", "/api/v1/blacklist"):                      row(401, 403,  403,  OK,  403, 403, 401, 401,
        request=lambda w: Request("/api/v1/blacklist", body={
            "id_number": w.listable, "reason": "impersonation", "case_no": "A-1"})),
    ("GET", "/api/v1/blacklist"):                       row(401, 403,  403,  OK,  OK,  403, 401, 401,
        request=lambda w: Request("/api/v1/blacklist", params={"status": "active"})),
    ("POST", "/api/v1/blacklist/{entry_no}/lift"):      row(401, 403,  403,  OK,  403, 403, 401, 401,
        request=lambda w: Request(f"/api/v1/blacklist/{w.entry_no}/lift", body={"reason": "acquitted"})),
    ("PUT", "/api/v1/persons/{id_number}/protection"):  row(401, OK,   403,  OK,  403, 403, 401, 401,
        request=lambda w: Request(f"/api/v1/persons/{w.person}/protection",
                                  body={"person_check_required": True, "reason": "card misused"})),
}
# fmt: on


@pytest.fixture
def world(counter: Counter, session_factory: sessionmaker[Session]) -> World:
    bank = Bank(counter, code="UNIT-A")
    suspended = Bank(counter, code="UNIT-S")
    person = counter.person()
    card = counter.card(person)
    lost = counter.card(counter.person())
    assert counter.report(lost).status_code == 201
    settle(counter)
    bank.verify(lost)
    settle(counter)
    incident = next(i for i in incidents(counter) if i["id_number"] == lost["id_number"])
    entry = listed(counter, counter.person())
    suspend_unit(session_factory, suspended.code)
    settle(counter)
    keys = staff_keys()
    keys |= {"unit": f"Bearer {bank.key}", "suspended_unit": f"Bearer {suspended.key}"}
    assert card["id_number"] == person
    return World(
        person=person,
        listable=counter.person(),
        entry_no=entry["entry_no"],
        incident_no=incident["incident_no"],
        keys=keys,
    )


def test_who_may_call_each_operation(client: TestClient, world: World) -> None:
    wrong: list[str] = []
    for (method, path), entry in by_path(TABLE):
        request: Any = entry.request(world)  # type: ignore[arg-type]
        wrong += misjudgements(client, method, path, request, CALLERS, entry.expected, world.keys)
    assert wrong == []


def test_every_watchlist_operation_has_a_row(client: TestClient) -> None:
    spec = client.get("/api/v1/openapi.json").json()
    ours = {
        (m.upper(), p)
        for p, item in spec["paths"].items()
        for m in item
        if any(s in p for s in ("/incidents", "/blacklist", "/protection")) and "/me/" not in p
    }
    assert ours == set(TABLE)
