"""`idguard serve`'s two HTTP protocols (api/server.py) answer the connection-level limits alike.

The default, httptools on uvloop, runs under every real-server test (test_hostile_input.py);
here both `--http httptools` and `--http h11` get the cases where the server, not the app,
answers: a head past MAX_HEAD_BYTES streamed in pieces (431, read by the client instead of a
reset), a chunked body past the limit while the client still sends (413), a single check
refused on a kept-alive connection, and a plain single check answered alike by either (in the
protocol with httptools, by the app's front door with h11) and by FastAPI's own route.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx2 as httpx
import pytest

from idguard.api.guard import MAX_BODY_BYTES, MAX_HEAD_BYTES
from idguard.api.server import uvicorn_options
from tests import servers
from tests.functional.conftest import Counter, assert_problem
from tests.functional.verification.test_verify import Bank


def test_serve_defaults_to_httptools_on_uvloop() -> None:
    assert uvicorn_options()["http"].endswith(":GuardedHttpToolsProtocol")
    assert uvicorn_options()["loop"] == "uvloop"
    assert uvicorn_options("h11")["http"].endswith(":GuardedH11Protocol")
    assert uvicorn_options("h11")["loop"] == "asyncio"
    with pytest.raises(ValueError, match="unknown HTTP protocol"):
        uvicorn_options("h2")


@pytest.fixture(params=["httptools", "h11"])
def served(
    request: pytest.FixtureRequest, database_url: str, tmp_path: Path
) -> Iterator[tuple[str, Callable[[], str]]]:
    log = tmp_path / "server.log"
    with servers.listening_socket() as sock:
        argv = [
            sys.executable,
            *("-c", "from idguard.cli.main import app; app()"),
            *("serve", "--fd", str(sock.fileno()), "--http", request.param),
        ]
        proc = servers.spawn(argv, sock=sock, database_url=database_url, log=log)
        base = f"http://127.0.0.1:{servers.port_of(sock)}"

    def output() -> str:
        return log.read_text(encoding="utf-8", errors="replace")

    try:
        servers.wait_healthy(base, proc, output)
        yield base, output
    finally:
        servers.stop(proc)


def _exchange(base: str, head: bytes, chunks: Iterator[bytes]) -> bytes:
    """Send `head` and then `chunks` until the answer begins; the whole answer."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(head)
        s.setblocking(False)
        for chunk in chunks:
            try:
                if s.recv(1, socket.MSG_PEEK):
                    break
            except BlockingIOError:
                pass
            s.setblocking(True)
            s.sendall(chunk)
            s.setblocking(False)
        s.setblocking(True)
        answer = b""
        while data := s.recv(65536):
            answer += data
        return answer


def test_both_protocols_answer_the_limits(served: tuple[str, Callable[[], str]], counter: Counter) -> None:
    base, output = served
    # A head streamed past the limit, a piece at a time: 431, read whole by the client.
    pieces = (b"X-Filler-%d: %s\r\n" % (i, b"a" * 1000) for i in range(200))
    answer = _exchange(base, b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n", pieces)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b'"code":"headers_too_large"' in answer
    # A chunked body past the limit while the client still sends: 413, no reset.
    body = (b"10000\r\n" + b" " * 65_536 + b"\r\n" for _ in range(4 * MAX_BODY_BYTES // 65_536))
    answer = _exchange(
        base,
        b"POST /api/v1/auth/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n",
        body,
    )
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    with httpx.Client(base_url=base, timeout=10) as client:
        assert_problem(client.get("/api/v1/checks", headers={"X-Big": "a" * (MAX_HEAD_BYTES + 10)}), 431)
        for _ in range(3):  # one kept-alive connection: each answer whole
            r = client.post("/api/v1/verify", json={}, headers={"Authorization": "Bearer idg_" + "x" * 43})
            assert_problem(r, 401)
        assert client.get("/api/v1/health").status_code == 200
    assert "Traceback" not in output()


def test_both_protocols_answer_a_plain_check_alike(
    served: tuple[str, Callable[[], str]], counter: Counter
) -> None:
    """A plain single check (httptools: answered in the protocol, api/server.py; h11: by the
    app's front door) against the same check only FastAPI's route reads (`…+json`): the same
    answer, the same headers, on one kept-alive connection, and uvicorn's access line for each."""
    base, output = served
    bank = Bank(counter)
    card = counter.card(counter.person())
    body = bank.body(card, operator="teller-1")
    with httpx.Client(base_url=base, timeout=10, headers=bank.headers()) as client:
        deadline = time.monotonic() + 10  # the server's follower learns the unit and the card
        while (r := client.post("/api/v1/verify", json=body)).json().get("result") != "valid":
            assert time.monotonic() < deadline, r.text
            time.sleep(0.05)
        answers = [
            client.post("/api/v1/verify", json=body, headers={"X-Request-Id": f"plain-{i}"}) for i in range(3)
        ]
        declared = client.post(
            "/api/v1/verify",
            content=json.dumps(body),
            headers={"Content-Type": "application/x-idguard+json", "X-Request-Id": "declared-1"},
        )
    for r in [*answers, declared]:
        assert r.status_code == 200, r.text
        assert set(r.json()) == {"result", "check_id", "checked_at"}
        assert r.json()["result"] == "valid"
    names = {name for name in answers[0].headers if name != "content-type"}
    assert names == {name for name in declared.headers if name != "content-type"}
    assert answers[0].headers["content-type"].startswith("application/json")
    assert [r.headers["x-request-id"] for r in answers] == ["plain-0", "plain-1", "plain-2"]
    assert answers[0].headers["x-content-type-options"] == "nosniff"
    assert answers[0].headers["ratelimit-limit"] == "1000"
    assert len({r.json()["check_id"] for r in answers}) == 3
    deadline = time.monotonic() + 5
    while "request_id=plain-2" not in output():
        assert time.monotonic() < deadline, output()[-2000:]
        time.sleep(0.05)
    lines = [line for line in output().splitlines() if "request_id=plain-" in line]
    assert len(lines) == 3
    assert all('"POST /api/v1/verify HTTP/1.1" 200' in line for line in lines)
    assert "Traceback" not in output()
