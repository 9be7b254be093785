"""Loss declarations (遗失声明): published for a reported card, public, signed; the offline script
in docs/citizens.md accepts a real one and refuses a tampered one; keys rotate."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr

from idguard.app import create_app
from idguard.citizens.declarations import DeclarationKeys, parse_keys
from idguard.citizens.routes.deps import CitizenKeys
from idguard.config import Environment, Settings
from idguard.core.clock import FixedClock
from tests.factories import NOW, SECRET
from tests.functional.citizens.conftest import Citizen, Citizens
from tests.functional.conftest import assert_problem

DOCS = Path(__file__).parents[3] / "docs" / "citizens.md"


def offline_script() -> str:
    text = DOCS.read_text(encoding="utf-8")
    found = re.search(r"<!-- verify-declaration-script.*?-->\s*```python\n(.*?)```", text, re.DOTALL)
    assert found, "docs/citizens.md lost its verification script"
    return found.group(1)


def declare(citizen: Citizen, **over: Any) -> dict[str, Any]:
    r = citizen.post("/me/loss-reports", {"card_id": citizen.card["card_id"], "reason": "lost"})
    assert r.status_code == 201, r.text
    body = {"card_id": citizen.card["card_id"], "lost_on": "2026-06-15", "place": "北京西站", **over}
    r = citizen.post("/me/loss-declarations", body)
    assert r.status_code == 201, r.text
    return dict(r.json())


def test_a_declaration_is_public_masked_and_listed_in_my_view(citizens: Citizens) -> None:
    citizen = citizens.new(name="韩梅梅")
    created = declare(citizen)
    r = citizens.client.get(created["url"])  # no credentials: public
    assert r.status_code == 200
    body = r.json()
    assert body["declaration_no"] == created["declaration_no"]
    assert body["name_masked"] == "韩**"
    assert body["id_number_masked"] == citizen.id_number[:6] + "********" + citizen.id_number[-4:]
    assert body["card_status"] == "reported_lost"
    assert (body["issued_on"], body["lost_on"], body["place"]) == (
        citizen.card["issued_on"],
        "2026-06-15",
        "北京西站",
    )
    assert citizen.id_number not in r.text
    assert "韩梅梅" not in r.text
    assert [d["declaration_no"] for d in citizen.get("/me").json()["declarations"]] == [
        created["declaration_no"]
    ]
    keys = citizens.client.get("/api/v1/declarations/keys").json()["keys"]
    assert [(k["key_id"], k["signing"], k["algorithm"]) for k in keys] == [("dev1", True, "Ed25519")]
    assert citizens.client.get("/api/v1/declarations/LDNOSUCHTHING").status_code == 404


def test_only_a_reported_card_once_and_not_in_the_future(citizens: Citizens) -> None:
    citizen = citizens.new()
    body = {"card_id": citizen.card["card_id"], "lost_on": "2026-06-15", "place": "北京"}
    assert_problem(citizen.post("/me/loss-declarations", body), 409, says="report it")
    assert (
        citizen.post("/me/loss-reports", {"card_id": citizen.card["card_id"], "reason": "lost"}).status_code
        == 201
    )
    assert_problem(
        citizen.post("/me/loss-declarations", {**body, "lost_on": "2026-06-16"}), 422, field="lost_on"
    )
    assert_problem(
        citizen.post("/me/loss-declarations", {**body, "lost_on": "2020-01-01"}), 422, field="lost_on"
    )
    assert_problem(citizen.post("/me/loss-declarations", {**body, "place": ""}), 422, field="place")
    assert citizen.post("/me/loss-declarations", body).status_code == 201
    assert_problem(citizen.post("/me/loss-declarations", body), 409, says="already declared")


def _run_script(
    tmp_path: Path, declaration: dict[str, Any], keys: dict[str, Any]
) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "verify_declaration.py"
    script.write_text(offline_script(), encoding="utf-8")
    (tmp_path / "declaration.json").write_text(json.dumps(declaration, ensure_ascii=False), encoding="utf-8")
    (tmp_path / "keys.json").write_text(json.dumps(keys), encoding="utf-8")
    return subprocess.run(  # noqa: S603 - our own documented script
        [sys.executable, str(script), "declaration.json", "keys.json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_documented_offline_script_accepts_a_real_declaration_and_refuses_a_tampered_one(
    citizens: Citizens, tmp_path: Path
) -> None:
    script = offline_script()
    assert len(script.strip().splitlines()) <= 22  # "a 20-line script"
    citizen = citizens.new(name="张三")
    created = declare(citizen)
    declaration = citizens.client.get(created["url"]).json()
    keys = citizens.client.get("/api/v1/declarations/keys").json()
    ok = _run_script(tmp_path, declaration, keys)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith(f"valid: {created['declaration_no']}")
    for field, forged in (
        ("place", "上海虹桥站"),
        ("name_masked", "李*"),
        ("lost_on", "2026-06-01"),
        ("key_id", "dev2"),
    ):
        tampered = {**declaration, field: forged}
        bad = _run_script(tmp_path, tampered, keys)
        assert bad.returncode == 1, field
        assert "NOT VALID" in bad.stderr
    # Another key (as a forger would sign with) fails too.
    forged_keys = {"keys": [{**keys["keys"][0], "public_key": base64.b64encode(b"\x01" * 32).decode()}]}
    assert _run_script(tmp_path, declaration, forged_keys).returncode == 1


def test_old_declarations_stay_verifiable_after_the_key_rotates(
    database_url: str, citizens: Citizens, clock: FixedClock
) -> None:
    citizen = citizens.new()
    old = citizens.client.get(declare(citizen)["url"]).json()
    old_seed = base64.b64encode(
        Settings(database_url=database_url, env=Environment.TEST, secret_key=SECRET).derived_key(
            "declaration-signing"
        )
    ).decode()
    new_seed = base64.b64encode(b"\x07" * 32).decode()
    rotated = Settings(
        database_url=database_url,
        env=Environment.TEST,
        secret_key=SECRET,
        declaration_keys=f"k2027:{new_seed},dev1:{old_seed}",  # type: ignore[arg-type]
    )
    app = create_app(rotated, clock=clock)
    with TestClient(app) as client:
        keys = client.get("/api/v1/declarations/keys").json()["keys"]
        assert [(k["key_id"], k["signing"]) for k in keys] == [("k2027", True), ("dev1", False)]
        again = client.get(f"/api/v1/declarations/{old['declaration_no']}").json()
        assert again == old
        ring = DeclarationKeys(parse_keys(f"k2027:{new_seed},dev1:{old_seed}"))
        assert ring.verify(again)
        assert not ring.verify({**again, "place": "elsewhere"})
    app.state.engine.dispose()


def test_production_refuses_to_start_without_declaration_keys() -> None:
    """citizens.install builds the keys when the app is made: in production, none are derived."""
    settings = Settings(database_url="sqlite://", env=Environment.TEST, secret_key=SECRET)
    production = settings.model_copy(update={"env": Environment.PRODUCTION})
    with pytest.raises(ValueError, match="IDGUARD_DECLARATION_KEYS must be set in production"):
        CitizenKeys.from_settings(production)
    seed = base64.b64encode(b"\x05" * 32).decode()
    configured = production.model_copy(update={"declaration_keys": SecretStr(f"p1:{seed}")})
    assert CitizenKeys.from_settings(configured).declarations.signing_key_id == "p1"


def test_bad_declaration_keys_fail_at_start() -> None:
    settings = Settings(
        database_url="sqlite://", env=Environment.TEST, secret_key=SECRET, declaration_keys="k1:no!"
    )  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not valid base64"):
        create_app(settings, clock=FixedClock(NOW))
