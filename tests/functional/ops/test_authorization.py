"""Who may read GET /metrics (the central table, tests/functional/test_authorization.py, unions
this TABLE into its coverage check).

API.md: no auth, or behind IDGUARD_METRICS_TOKEN when set. Unset (the table), every caller reads
it, whatever credentials they carry; set, only its bearer does: no staff token or unit key
opens it (test_metrics.py: the token; and here, every caller kind refused).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy.orm import Session, sessionmaker

from idguard.app import create_app
from idguard.config import Settings
from idguard.core.clock import FixedClock
from tests.functional.conftest import Counter
from tests.functional.test_authorization import (
    CALLERS,
    OK,
    Request,
    Row,
    credentials,
    misjudgements,
    row,
    send,
    staff_keys,
    suspend_unit,
)
from tests.functional.verification.test_verify import Bank

TOKEN = "metrics-token-0123456789"


@dataclass
class World:
    keys: dict[str, str]  # caller -> Authorization header value (none for anonymous)


# fmt: off
TABLE: dict[tuple[str, str], Row] = {
    #                                  anon clerk other  sup  aud admin unit susp
    ("GET", "/metrics"):           row(OK,  OK,   OK,   OK,  OK,  OK,  OK,  OK,
        request=lambda w: Request("/metrics")),
}
# fmt: on


@pytest.fixture
def world(counter: Counter, session_factory: sessionmaker[Session]) -> World:
    unit = Bank(counter, code="UNIT-A")
    suspended = Bank(counter, code="UNIT-S")
    suspend_unit(session_factory, suspended.code)
    keys = staff_keys()
    keys |= {"unit": f"Bearer {unit.key}", "suspended_unit": f"Bearer {suspended.key}"}
    return World(keys)


def _statuses(client: TestClient, world: World, method: str, request: Request) -> dict[str, int]:
    return {caller: send(client, method, request, credentials(world.keys, caller)) for caller in CALLERS}


def test_who_may_call_each_operation(client: TestClient, world: World) -> None:
    wrong: list[str] = []
    for (method, path), entry in sorted(TABLE.items()):
        request: Any = entry.request(world)  # type: ignore[arg-type]
        wrong += misjudgements(client, method, path, request, CALLERS, entry.expected, world.keys)
    assert wrong == []


@pytest.fixture
def guarded(settings: Settings, clock: FixedClock) -> Iterator[TestClient]:
    app = create_app(settings.model_copy(update={"metrics_token": SecretStr(TOKEN)}), clock=clock)
    with TestClient(app) as client:
        yield client
    app.state.engine.dispose()


def test_with_a_token_no_caller_kind_reads_the_metrics_without_it(
    guarded: TestClient, counter: Counter, world: World
) -> None:
    # `world`'s staff tokens and unit keys are valid in any app on this database.
    statuses = _statuses(guarded, world, "GET", Request("/metrics"))
    assert statuses == dict.fromkeys(CALLERS, 401)
    assert guarded.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_every_ops_operation_has_a_row(client: TestClient) -> None:
    spec = client.get("/api/v1/openapi.json").json()
    ours = {(m.upper(), p) for p, item in spec["paths"].items() for m in item if p == "/metrics"}
    assert ours == set(TABLE)
