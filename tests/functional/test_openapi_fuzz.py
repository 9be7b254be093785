"""Schemathesis against our own OpenAPI document: generated requests, valid and not, for every
operation: staff routes as an admin (who may act at any office, so generated office codes get
past the office check and the deeper validation is exercised), unit routes with a unit's key. No input may produce a server error.

The operations are driven through Hypothesis directly (schemathesis' pytest plugin does not yet
support pytest 9); each operation is one parametrised test.
"""

from __future__ import annotations

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings

from idguard import uow
from idguard.app import create_app
from idguard.core.clock import FixedClock
from idguard.db.engine import make_engine, make_sessionmaker
from idguard.verification.rules import PURPOSES
from idguard.verification.units import onboard
from tests.conftest import BACKENDS, fresh_database, settings_for
from tests.factories import NOW, auth

# The schema is read once at collection time from an app that is never started: it only needs
# the routes, not a database.
_SCHEMA = schemathesis.openapi.from_dict(
    create_app(settings_for("sqlite:///:memory:"), clock=FixedClock(NOW)).openapi()
)
OPERATIONS = [result.ok() for result in _SCHEMA.get_all_operations()]


@pytest.fixture(scope="module", params=BACKENDS)
def fuzz_app(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[FastAPI, str]:
    """The app on its own database (SQLite, and PostgreSQL where NUL bytes and long text fail
    differently), with one unit onboarded (its key calls the unit routes)."""
    settings = settings_for(fresh_database(request, request.param, tmp_path_factory.mktemp("fuzz")))
    engine = make_engine(settings)
    with make_sessionmaker(engine)() as session:
        issued = onboard(
            session,
            actor=None,
            now=NOW,
            secret_key=settings.secret_key,
            code="FUZZ",
            name="fuzz",
            sector="bank",
            purposes=sorted(PURPOSES),
            rate_limit=100_000,
        )
        uow.commit(session)
    engine.dispose()
    return create_app(settings, clock=FixedClock(NOW)), issued.api_key


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: op.label)
def test_no_input_causes_a_server_error(
    fuzz_app: tuple[FastAPI, str], operation: schemathesis.APIOperation
) -> None:
    app, unit_key = fuzz_app
    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", app)
    live = schema[operation.path][operation.method.upper()]
    unit_route = operation.path.startswith(("/api/v1/verify", "/api/v1/notifications"))
    headers = {"Authorization": f"Bearer {unit_key}"} if unit_route else auth("admin")

    @given(case=live.as_strategy())
    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    def check(case: schemathesis.Case) -> None:
        # An event stream stays open by design: read it briefly (a timeout ends the read, not the test).
        response = case.call(
            headers=headers, **({"timeout": 0.2} if operation.path.endswith("/stream") else {})
        )
        assert response.status_code < 500, (
            f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:300]}"
        )

    check()
