"""Test cards (issue 18): `idguard demo unit-key` and `idguard demo card CATEGORY` give a newcomer
a working key and one demo card per answer; each card gets the answer written here by hand."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from idguard.app import create_app
from idguard.config import Environment, Settings
from idguard.registry.models import Person
from idguard.watchlist.models import BlacklistEntry
from tests import servers
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


# -- the guide's examples, run as a newcomer would run them ------------------------------------

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "integration.md"


def _blocks(language: str, section: str) -> list[str]:
    """The guide's fenced blocks in `language` under the heading that starts with `section`."""
    text = GUIDE.read_text(encoding="utf-8")
    start = text.index(f"\n## {section}")
    end = text.find("\n## ", start + 1)
    part = text[start : end if end >= 0 else None]
    return re.findall(rf"```{language}\n(.*?)```", part, flags=re.DOTALL)


@pytest.fixture
def demo_server(
    registry: sa.Engine,  # noqa: F811
    database_url: str,
    tmp_path: Path,
) -> Iterator[str]:
    """The demo data served by `idguard serve` (as `make run` does), on a socket bound here."""
    run("demo", "--citizens", "1500", "--seed", "2", "--fingerprint-persons", "2")
    log = tmp_path / "server.log"
    with servers.listening_socket() as sock:
        proc = servers.spawn(servers.serve_argv(sock), sock=sock, database_url=database_url, log=log)
        base = f"http://127.0.0.1:{servers.port_of(sock)}"
    try:
        servers.wait_healthy(base, proc, lambda: log.read_text(encoding="utf-8", errors="replace"))
        yield base
    finally:
        servers.stop(proc)


def test_the_guides_two_commands_answer_valid_and_invalid(
    demo_server: str,
    database_url: str,
    registry: sa.Engine,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Section 0, copied and pasted into a shell in a clone (`.venv/bin/idguard` there): the two
    commands, then the blacklist's two (with `BL` one of the listed persons the guide means)."""
    first_block, blacklist_block = _blocks("sh", "0.")
    venv = tmp_path / ".venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "idguard").write_text(
        f'#!/bin/sh\nexec "{sys.executable}" -c "from idguard.cli.main import app; app()" "$@"\n',
        encoding="utf-8",
    )
    (venv / "idguard").chmod(0o755)
    holder = json.loads(run("demo", "card", "with_fingerprints"))["id_number"]
    with registry.connect() as conn:
        listed = conn.scalars(
            sa.select(Person.id_number)
            .join(BlacklistEntry, BlacklistEntry.person_id == Person.id)
            .where(BlacklistEntry.status == "active", Person.id_number != holder)
        ).all()
    assert listed, "the demo lists other persons than the holder"
    env = {
        **os.environ,
        "IDGUARD_DATABASE_URL": database_url,
        "IDGUARD_ENV": "test",
        "IDGUARD_SECRET_KEY": SECRET,
        "BL": listed[0],
    }
    answers = []
    for block in (first_block, first_block.splitlines()[0] + "\n" + blacklist_block):
        script = block.replace("http://127.0.0.1:8000", demo_server)
        assert script != block, "the guide's commands no longer name http://127.0.0.1:8000"
        out = subprocess.run(  # noqa: S603 - the guide's own commands
            ["/bin/bash", "-euo", "pipefail", "-c", script],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
        answers += [json.loads(line) for line in out.replace("}{", "}\n{").splitlines() if line.strip()]
    valid, lost, listed_card, impersonated = answers
    assert valid["result"] == "valid"
    assert (lost["result"], lost["reason"]) == ("invalid", "reported_lost")
    assert (listed_card["result"], listed_card["alerts"]) == ("valid", ["blacklisted"])
    assert impersonated["fingerprint_match"] is False
    assert impersonated["alerts"] == ["blacklisted", "known_impersonator"]


def test_the_guides_python_client_runs_against_the_service(demo_server: str) -> None:
    """Section 3's client, pointed at the demo server with the demo key: a single check, a batch,
    and an error it raises as the guide says (a key that is not accepted)."""
    (block,) = _blocks("python", "3.")
    definitions = block[: block.index("\nanswer = verify(")]
    namespace: dict[str, Any] = {}
    exec(compile(definitions, str(GUIDE), "exec"), namespace)  # noqa: S102 - the guide's own code
    namespace["IDG"] = demo_server
    namespace["KEY"] = run("demo", "unit-key").strip()
    valid = json.loads(run("demo", "card", "valid"))
    lost = json.loads(run("demo", "card", "reported_lost"))
    answer = namespace["verify"](**valid)
    assert answer["result"] == "valid"
    results = namespace["verify_batch"]([valid, lost])
    assert [r["result"] for r in results] == ["valid", "invalid"]
    namespace["KEY"] = "idg_not-a-key"
    with pytest.raises(namespace["VerifyError"]) as refused:
        namespace["verify"](**valid)
    assert refused.value.status == 401
    assert refused.value.problem["code"] == "unauthorized"
