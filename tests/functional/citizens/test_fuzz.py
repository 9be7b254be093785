"""Schemathesis on the citizen's own routes with a real citizen token (the central fuzz test sends
an admin token, which these routes refuse before reading anything): no input may produce a
server error."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings

from idguard.app import create_app
from idguard.core.clock import FixedClock
from tests.conftest import settings_for
from tests.factories import NOW
from tests.functional.citizens.conftest import Citizens
from tests.functional.conftest import Counter

_SCHEMA = schemathesis.openapi.from_dict(
    create_app(settings_for("sqlite:///:memory:"), clock=FixedClock(NOW)).openapi()
)
OPERATIONS = [op for op in (r.ok() for r in _SCHEMA.get_all_operations()) if op.path.startswith("/api/v1/me")]


@pytest.fixture(scope="module")
def citizen_app(sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[FastAPI, str]:
    """The app on its own database with one citizen (account, valid card) and their token."""
    path = tmp_path_factory.mktemp("fuzz") / "fuzz.db"
    shutil.copyfile(sqlite_template, path)
    settings = settings_for(f"sqlite:///{path}")
    app = create_app(settings, clock=FixedClock(NOW))
    with TestClient(app) as client:
        citizen = Citizens(Counter(client)).new()
    return create_app(settings, clock=FixedClock(NOW)), citizen.token


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: op.label)
def test_no_input_causes_a_server_error(
    citizen_app: tuple[FastAPI, str], operation: schemathesis.APIOperation
) -> None:
    app, token = citizen_app
    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", app)
    live = schema[operation.path][operation.method.upper()]

    @given(case=live.as_strategy())
    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
    def check(case: schemathesis.Case) -> None:
        response = case.call(headers={"Authorization": f"Bearer {token}"})
        assert response.status_code < 500, (
            f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:300]}"
        )

    check()
