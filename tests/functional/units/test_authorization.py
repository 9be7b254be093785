"""Who may change a unit after onboarding and act on its webhook: one row per operation
(unioned into the central table's coverage check, tests/functional/test_authorization.py), with
the central callers and one more: another unit's key.

PATCH is a supervisor's (it changes purposes, rates and the offline grant). The webhook's secret
roll, test event and resend are the unit's own (its key, for its own code only: another unit's
key is 403) or a supervisor's; a suspended unit's key is 401 as everywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from tests.functional.conftest import Counter
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

CALLERS = (*CENTRAL_CALLERS, "other_unit")
# Nobody listens here: a test event or resend fails fast (connection refused) and is logged.
DEAD_URL = "http://127.0.0.1:9/hook"


@dataclass
class World:
    own: str  # the calling unit's code (UNIT-A)
    target: str  # a unit a supervisor changes (UNIT-T)
    delivery_id: str  # a message of UNIT-A's, to resend
    keys: dict[str, str]


WRow = Callable[[World], Request]


def row(*expected: Expected, request: WRow) -> Row:
    """A row: one expected status per caller, in CALLERS order."""
    return row_of(CALLERS, *expected, request=request)


# fmt: off
TABLE: dict[tuple[str, str], Row] = {
    #                                                                 anon clerk other sup  aud  admin unit susp other-unit
    ("PATCH", "/api/v1/units/{code}"):                                row(401, 403, 403,  OK,  403, 403,  401, 401, 401,
        request=lambda w: Request(f"/api/v1/units/{w.target}", body={"rate_limit": 50})),
    ("POST", "/api/v1/units/{code}/webhook-secret"):                  row(401, 403, 403,  OK,  403, 403,  OK,  401, 403,
        request=lambda w: Request(f"/api/v1/units/{w.own}/webhook-secret", body={"overlap_seconds": 60})),
    ("POST", "/api/v1/units/{code}/webhook/test"):                    row(401, 403, 403,  OK,  403, 403,  OK,  401, 403,
        request=lambda w: Request(f"/api/v1/units/{w.own}/webhook/test")),
    ("POST", "/api/v1/units/{code}/webhook/deliveries/{delivery_id}/resend"):
                                                                      row(401, 403, 403,  OK,  403, 403,  OK,  401, 403,
        request=lambda w: Request(f"/api/v1/units/{w.own}/webhook/deliveries/{w.delivery_id}/resend")),
}
# fmt: on


def _onboard(counter: Counter, code: str, webhook_url: str | None = None) -> str:
    body = {"code": code, "name": code, "sector": "bank", "purposes": ["account_opening"]}
    if webhook_url:
        body["webhook_url"] = webhook_url
    r = counter.post("/api/v1/units", body, as_="supervisor")
    assert r.status_code == 201, r.text
    return str(r.json()["api_key"])


@pytest.fixture
def world(counter: Counter, session_factory: sessionmaker[Session]) -> World:
    own = _onboard(counter, "UNIT-A", DEAD_URL)
    suspended = _onboard(counter, "UNIT-S", DEAD_URL)
    other = _onboard(counter, "UNIT-T", DEAD_URL)
    verifier = counter.client.app.state.verifier  # type: ignore[attr-defined]
    verifier.dispatcher.stop()
    r = counter.post("/api/v1/units/UNIT-A/webhook/test", {}, as_="supervisor")
    assert r.status_code == 200, r.text
    suspend_unit(session_factory, "UNIT-S")
    verifier.follower.poll()
    keys = staff_keys()
    keys |= {
        "unit": f"Bearer {own}",
        "suspended_unit": f"Bearer {suspended}",
        "other_unit": f"Bearer {other}",
    }
    return World(own="UNIT-A", target="UNIT-T", delivery_id=r.json()["delivery_id"], keys=keys)


def test_who_may_call_each_unit_operation(client: TestClient, world: World) -> None:
    wrong: list[str] = []
    for (method, path), entry in by_path(TABLE):
        request = entry.request(world)  # type: ignore[arg-type]
        wrong += misjudgements(client, method, path, request, CALLERS, entry.expected, world.keys)
    assert wrong == []


def test_every_new_unit_operation_has_a_row(client: TestClient) -> None:
    spec = client.get("/api/v1/openapi.json").json()
    ours = {
        (m.upper(), p)
        for p, item in spec["paths"].items()
        for m in item
        if p.startswith("/api/v1/units/{code}") and ("webhook" in p or m == "patch")
    }
    assert ours == set(TABLE)
