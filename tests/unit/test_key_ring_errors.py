"""A sealed record that does not open during a request (a data key missing from
IDGUARD_DATA_KEYS, or another key under that id) is the operator's fault, not the caller's: a 503
problem with its own code, the key id in the server's log and never a value in the answer."""

from __future__ import annotations

import logging

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from idguard.api import errors
from idguard.core.sealing import KeyRingError


def test_a_record_that_does_not_open_is_a_503_naming_the_code_and_logging_the_key_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = FastAPI()
    errors.install(app)

    @app.get("/person")
    def person() -> None:
        raise KeyRingError("no key 'k1' in IDGUARD_DATA_KEYS for persons.name")

    with caplog.at_level(logging.ERROR, logger="idguard.api"):
        r = TestClient(app).get("/person")
    assert r.status_code == 503
    assert r.headers["Retry-After"] == "60"
    problem = r.json()
    assert problem["code"] == "personal_data_key_unavailable"
    assert "k1" not in r.text  # the key id is for the operator's log
    assert any("k1" in m for m in caplog.messages)
