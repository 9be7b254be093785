"""Schemathesis against our own OpenAPI document: generated requests, valid and not, for every
operation, as an admin (who may act at any office, so generated office codes get past the
office check and the deeper validation is exercised). No input may produce a server error.

The operations are driven through Hypothesis directly (schemathesis' pytest plugin does not yet
support pytest 9); each operation is one parametrised test.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings

from idguard.api.app import create_app
from idguard.domain.clock import FixedClock
from tests.conftest import settings_for
from tests.factories import NOW, auth

# The schema is read once at collection time from an app that is never served: it only needs
# the routes, not a database.
_SCHEMA = schemathesis.openapi.from_asgi(
    "/api/v1/openapi.json", create_app(settings_for("sqlite:///:memory:"), clock=FixedClock(NOW))
)
OPERATIONS = [result.ok() for result in _SCHEMA.get_all_operations()]


@pytest.fixture(scope="module")
def fuzz_app(sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    path = tmp_path_factory.mktemp("fuzz") / "fuzz.db"
    shutil.copyfile(sqlite_template, path)
    return create_app(settings_for(f"sqlite:///{path}"), clock=FixedClock(NOW))


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: op.label)
def test_no_input_causes_a_server_error(fuzz_app: FastAPI, operation: schemathesis.APIOperation) -> None:
    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", fuzz_app)
    live = schema[operation.path][operation.method.upper()]

    @given(case=live.as_strategy())
    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    def check(case: schemathesis.Case) -> None:
        response = case.call(headers=auth("admin"))
        assert response.status_code < 500, (
            f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:300]}"
        )

    check()
