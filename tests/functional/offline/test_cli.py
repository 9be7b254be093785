"""`idguard offline fetch` and `idguard offline check` against a real idguard over real HTTP (a
uvicorn server in a thread), as a unit's machine runs them."""

from __future__ import annotations

import datetime as dt
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest
import uvicorn
from typer.testing import CliRunner

from idguard.app import create_app
from idguard.cli.main import app as cli
from idguard.config import Settings
from tests.factories import OFFICE_A, auth, id_number

runner = CliRunner()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server(settings: Settings) -> Iterator[str]:
    app = create_app(settings)  # the real clock: the reader stamps its checks with it
    port = _free_port()
    running = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not running.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("the test server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    running.should_exit = True
    thread.join(timeout=15)


def _card(http: httpx.Client, birth: dt.date) -> dict[str, str]:
    number = id_number(birth)
    person = {
        "id_number": number,
        "name": "王五",
        "sex": "male",
        "ethnicity": "汉",
        "birth_date": birth.isoformat(),
        "address": "北京市朝阳区建国路1号",
        "hukou_office": OFFICE_A,
    }
    assert http.post("/api/v1/persons", json=person, headers=auth("clerk_a")).status_code == 201
    r = http.post(
        f"/api/v1/persons/{number}/cards", json={"kind": "first", "office": OFFICE_A}, headers=auth("clerk_a")
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


def test_fetch_then_check_over_http(server: str, tmp_path: Path) -> None:
    with httpx.Client(base_url=server) as http:
        r = http.post(
            "/api/v1/units",
            json={"code": "GATE", "name": "车站", "sector": "railway", "purposes": ["ticketing"]},
            headers=auth("supervisor"),
        )
        key = r.json()["api_key"]
        assert (
            http.put(
                "/api/v1/units/GATE/offline", json={"offline": True}, headers=auth("supervisor")
            ).status_code
            == 200
        )
        young = _card(http, dt.date(1995, 2, 2))  # a 20-year card
        old = _card(http, dt.date(1960, 2, 2))  # long-term
        lost = _card(http, dt.date(1990, 2, 2))
        r = http.post(
            "/api/v1/loss-reports",
            json={
                "card_id": lost["card_id"],
                "reason": "stolen",
                "office": OFFICE_A,
                "applicant_id_number": lost["id_number"],
            },
            headers=auth("clerk_a"),
        )
        assert r.status_code == 201

        directory = tmp_path / "set"
        result = runner.invoke(
            cli, ["offline", "fetch", "--url", server, "--key", key, "--dir", str(directory)]
        )
        assert result.exit_code == 0, result.output
        assert "snapshot" in result.output

        def check(card: dict[str, str], *extra: str) -> tuple[int, str]:
            args = ["offline", "check", str(directory), card["id_number"], card["chip_serial"]]
            if card["expires_on"]:
                args += ["--expires-on", card["expires_on"]]
            out = runner.invoke(cli, [*args, *extra])
            return out.exit_code, out.output

        code, output = check(young, "--operator", "gate-3")
        assert code == 0
        assert output.startswith("valid (version ")
        assert "age" in output
        assert check(old)[0] == 0
        assert check(lost)[0] == 1
        assert check(lost)[1].startswith("invalid")
        assert (
            runner.invoke(cli, ["offline", "check", str(directory), young["id_number"], "FORGED"]).exit_code
            == 1
        )

        # a report while the reader is offline: after the next fetch it is invalid
        r = http.post(
            "/api/v1/loss-reports",
            json={
                "card_id": young["card_id"],
                "reason": "lost",
                "office": OFFICE_A,
                "applicant_id_number": young["id_number"],
            },
            headers=auth("clerk_a"),
        )
        assert check(young)[0] == 0  # not yet known offline
        result = runner.invoke(
            cli, ["offline", "fetch", "--url", server, "--key", key, "--dir", str(directory)]
        )
        assert result.exit_code == 0, result.output
        assert "delta with 1 changed cards" in result.output
        assert "6 offline checks uploaded" in result.output
        assert check(young)[0] == 1

        # the checks made offline are in the unit's history
        history = http.get("/api/v1/checks", headers={"Authorization": f"Bearer {key}"}).json()["items"]
        assert {c["operator"] for c in history} == {"gate-3", "offline-reader"}

        # a stored file altered: the reader refuses to answer (exit 2), it never guesses
        stored = directory / "snapshot.bin"
        data = bytearray(stored.read_bytes())
        data[40] ^= 0x20
        stored.write_bytes(bytes(data))
        code, output = check(old)
        assert code == 2
        assert "cannot be used" in output
