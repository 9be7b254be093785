"""Test cards (issue 18): `idguard demo unit-key` and `idguard demo card CATEGORY` give a newcomer
a working key and one demo card per answer; each card gets the answer written here by hand."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from idguard.app import create_app
from idguard.config import Environment, Settings
from tests.factories import SECRET
from tests.functional.test_cli import registry, run  # noqa: F401 - the fixture is used by name

EXPECTED = {
    "valid": {"result": "valid"},
    "reported_lost": {"result": "invalid", "reason": "reported_lost"},
    "reported_stolen": {"result": "invalid", "reason": "reported_stolen"},
    "superseded": {"result": "invalid", "reason": "superseded"},
    "expired": {"result": "invalid", "reason": "expired"},
    "revoked": {"result": "invalid", "reason": "revoked"},
    "with_fingerprints": {"result": "valid"},
}


def test_every_demo_card_gets_its_answer_with_the_demo_key(registry: sa.Engine, database_url: str) -> None:  # noqa: F811
    run("demo", "--citizens", "1500", "--seed", "2", "--fingerprint-persons", "2")
    key = run("demo", "unit-key").strip()
    assert key.startswith("idg_")
    cards = {category: json.loads(run("demo", "card", category)) for category in EXPECTED}
    for body in cards.values():  # exactly the fields a bank sends, nothing personal beyond the card
        assert set(body) == {"id_number", "name", "issued_on", "expires_on", "purpose", "operator"}
    settings = Settings(database_url=database_url, env=Environment.TEST, secret_key=SECRET)
    with TestClient(create_app(settings)) as client:
        for category, body in cards.items():
            answer = client.post("/api/v1/verify", json=body, headers={"Authorization": f"Bearer {key}"})
            assert answer.status_code == 200, (category, answer.text)
            got = {k: v for k, v in answer.json().items() if k in ("result", "reason")}
            assert got == EXPECTED[category], category


def test_a_new_demo_key_replaces_the_last_one(registry: sa.Engine, database_url: str) -> None:  # noqa: F811
    run("demo", "--citizens", "200", "--seed", "2", "--fingerprint-persons", "0")
    first = run("demo", "unit-key").strip()
    second = run("demo", "unit-key").strip()
    assert first != second
    body = json.loads(run("demo", "card", "valid"))
    settings = Settings(database_url=database_url, env=Environment.TEST, secret_key=SECRET)
    with TestClient(create_app(settings)) as client:
        assert (
            client.post("/api/v1/verify", json=body, headers={"Authorization": f"Bearer {first}"}).status_code
            == 401
        )
        assert (
            client.post(
                "/api/v1/verify", json=body, headers={"Authorization": f"Bearer {second}"}
            ).status_code
            == 200
        )


@pytest.mark.usefixtures("registry")
def test_an_unknown_category_is_refused_naming_the_choices() -> None:
    from typer.testing import CliRunner

    from idguard.cli.main import app

    result = CliRunner().invoke(app, ["demo", "card", "lost"])
    assert result.exit_code == 1
    assert "reported_lost" in result.output
