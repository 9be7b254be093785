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
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from idguard import uow
from idguard.verification.models import RegistryVersion
from idguard.verification.models import Unit as UnitRow
from idguard.verification.rules import UnitStatus
from tests.factories import NOW, auth
from tests.functional.citizens.conftest import Citizens
from tests.functional.conftest import Counter
from tests.functional.offline.conftest import OfflineUnit
from tests.functional.test_authorization import CALLERS as CENTRAL_CALLERS
from tests.functional.test_authorization import OK, Expected, Request, Row, misjudged

CALLERS = (*CENTRAL_CALLERS, "citizen", "unit_without_offline")


@dataclass
class World:
    version: int  # a version the set has been at
    target: str  # a unit granted `offline` by the supervisor's request
    id_number: str
    keys: dict[str, str]


ORow = Callable[[World], Request]


def row(
    anonymous: Expected,
    clerk: Expected,
    other_clerk: Expected,
    supervisor: Expected,
    auditor: Expected,
    admin: Expected,
    unit: Expected,
    suspended_unit: Expected,
    citizen: Expected,
    unit_without_offline: Expected,
    *,
    request: ORow,
) -> Row:
    expected = (
        anonymous,
        clerk,
        other_clerk,
        supervisor,
        auditor,
        admin,
        unit,
        suspended_unit,
        citizen,
        unit_without_offline,
    )
    return Row(expected, request)  # type: ignore[arg-type]


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

_STAFF = {
    "clerk": "clerk_a",
    "other_clerk": "clerk_b",
    "supervisor": "supervisor",
    "auditor": "auditor",
    "admin": "admin",
}


@pytest.fixture
def world(counter: Counter, session_factory: sessionmaker[Session]) -> World:
    unit = OfflineUnit(counter, "UNIT-A")
    suspended = OfflineUnit(counter, "UNIT-S")
    without = OfflineUnit(counter, "UNIT-N", offline=False)
    OfflineUnit(counter, "UNIT-T", offline=False)
    citizen = Citizens(counter).new(name="张三")
    version = int(unit.get("/api/v1/offline/snapshot").headers["X-Offline-Version"])
    with uow.transaction(session_factory) as session:
        row_ = session.get(UnitRow, suspended.code)
        assert row_ is not None
        row_.status = UnitStatus.SUSPENDED
        session.execute(
            sa.update(RegistryVersion)
            .where(RegistryVersion.name == "units")
            .values(version=RegistryVersion.version + 1)
        )
    counter.client.app.state.verifier.follower.poll()  # type: ignore[attr-defined]
    keys = {c: auth(u)["Authorization"] for c, u in _STAFF.items()}
    keys |= {
        "unit": f"Bearer {unit.key}",
        "suspended_unit": f"Bearer {suspended.key}",
        "citizen": f"Bearer {citizen.token}",
        "unit_without_offline": f"Bearer {without.key}",
    }
    return World(version=version, target="UNIT-T", id_number=citizen.id_number, keys=keys)


def test_who_may_call_each_offline_operation(client: TestClient, world: World) -> None:
    wrong: list[str] = []
    for (method, path), entry in sorted(TABLE.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        request = entry.request(world)  # type: ignore[arg-type]
        for caller, expected in zip(CALLERS, entry.expected, strict=True):
            headers = {"Authorization": world.keys[caller]} if caller in world.keys else {}
            status = client.request(
                method, request.path, params=request.params, json=request.body, headers=headers
            ).status_code
            if (fault := misjudged(expected, status)) is not None:
                wrong.append(f"{method} {path} as {caller}: {status}, {fault}")
    assert wrong == []


def test_every_offline_operation_has_a_row(client: TestClient) -> None:
    spec = client.get("/api/v1/openapi.json").json()
    ours = {(m.upper(), p) for p, item in spec["paths"].items() for m in item if "offline" in p}
    assert ours == set(TABLE)
