"""Who may call offline verification's routes: one row per operation (unioned into the central
table's coverage check, tests/functional/test_authorization.py), with the central callers and two
more: a citizen with their own token, and a unit that was never granted `offline`.

A unit granted `offline` downloads the set and its deltas and uploads its offline checks; a unit
without the grant gets 403 there; a suspended unit's key is 401; staff and citizens are not units
(401). The public keys are public. Only a supervisor grants `offline`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from tests.factories import NOW
from tests.functional.citizens.conftest import Citizens
from tests.functional.conftest import Counter
from tests.functional.offline.conftest import OfflineUnit
from tests.functional.test_authorization import CALLERS as CENTRAL_CALLERS
from tests.functional.test_authorization import (
    OK,
    Expected,
    Request,
    Row,
    by_path,
    misjudgements,
    row_of,
    staff_keys,
    suspend_unit,
)

CALLERS = (*CENTRAL_CALLERS, "citizen", "unit_without_offline")


@dataclass
class World:
    version: int  # a version the set has been at
    target: str  # a unit granted `offline` by the supervisor's request
    id_number: str
    keys: dict[str, str]


ORow = Callable[[World], Request]


def row(*expected: Expected, request: ORow) -> Row:
    """A row: one expected status per caller, in CALLERS order."""
    return row_of(CALLERS, *expected, request=request)


def _upload(w: World) -> Request:
    item = {
        "check_id": str(uuid.uuid4()),
        "at": NOW.isoformat(),
        "id_number": w.id_number,
        "result": "valid",
        "version": w.version,
    }
    return Request("/api/v1/offline/checks", body={"items": [item]})


# fmt: off
TABLE: dict[tuple[str, str], Row] = {
    #                                              anon clerk other sup  aud  admin unit susp citizen no-offline
    ("GET", "/api/v1/offline/snapshot"):       row(401, 401,  401,  401, 401, 401,  OK,  401, 401,    403,
        request=lambda w: Request("/api/v1/offline/snapshot")),
    ("GET", "/api/v1/offline/deltas"):         row(401, 401,  401,  401, 401, 401,  OK,  401, 401,    403,
        request=lambda w: Request("/api/v1/offline/deltas", params={"after": w.version})),
    ("POST", "/api/v1/offline/checks"):        row(401, 401,  401,  401, 401, 401,  OK,  401, 401,    403,
        request=_upload),
    ("GET", "/api/v1/offline/keys"):           row(OK,  OK,   OK,   OK,  OK,  OK,   OK,  OK,  OK,     OK,
        request=lambda w: Request("/api/v1/offline/keys")),
    ("PUT", "/api/v1/units/{code}/offline"):   row(401, 403,  403,  OK,  403, 403,  401, 401, 401,    401,
        request=lambda w: Request(f"/api/v1/units/{w.target}/offline", body={"offline": True})),
}
# fmt: on


@pytest.fixture
def world(counter: Counter, session_factory: sessionmaker[Session]) -> World:
    unit = OfflineUnit(counter, "UNIT-A")
    suspended = OfflineUnit(counter, "UNIT-S")
    without = OfflineUnit(counter, "UNIT-N", offline=False)
    OfflineUnit(counter, "UNIT-T", offline=False)
    citizen = Citizens(counter).new(name="张三")
    version = int(unit.get("/api/v1/offline/snapshot").headers["X-Offline-Version"])
    suspend_unit(session_factory, suspended.code)
    counter.client.app.state.verifier.follower.poll()  # type: ignore[attr-defined]
    keys = staff_keys()
    keys |= {
        "unit": f"Bearer {unit.key}",
        "suspended_unit": f"Bearer {suspended.key}",
        "citizen": f"Bearer {citizen.token}",
        "unit_without_offline": f"Bearer {without.key}",
    }
    return World(version=version, target="UNIT-T", id_number=citizen.id_number, keys=keys)


def test_who_may_call_each_offline_operation(client: TestClient, world: World) -> None:
    wrong: list[str] = []
    for (method, path), entry in by_path(TABLE):
        request = entry.request(world)  # type: ignore[arg-type]
        wrong += misjudgements(client, method, path, request, CALLERS, entry.expected, world.keys)
    assert wrong == []


def test_every_offline_operation_has_a_row(client: TestClient) -> None:
    spec = client.get("/api/v1/openapi.json").json()
    ours = {(m.upper(), p) for p, item in spec["paths"].items() for m in item if "offline" in p}
    assert ours == set(TABLE)
