"""What broke when the service was attacked (issue 9), each on SQLite and PostgreSQL alike.

1. Text the database cannot store (a NUL; an unpaired surrogate) in any field, query parameter,
   path parameter or header is a 422 naming the field, with or without login — never a 500 on
   PostgreSQL while SQLite takes it (api/guard.py holds every request to core/text.py's rule).
2. A deeply nested JSON login body, and a time bound outside the calendar once in UTC, are 4xx.
3. The request line and headers are limited (431) and so is the body (413), counted while
   reading: a missing or lying Content-Length or a chunked body changes nothing. Checked in
   process and against a real `idguard serve` (uvicorn with api/server.py's protocol), where a
   1 MB Authorization header used to reset the connection.
4. An id number in full-width digits is the same number everywhere: /verify answers as for the
   ASCII number and the check log hashes the same; digits NFKC does not fold are refused.
5. An id number percent-encoded or in full-width digits is masked in the log like a plain one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import select
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx2 as httpx
import pytest
import sqlalchemy as sa
from uvicorn.protocols.utils import get_path_with_query_string

from idguard import logs
from idguard.api.guard import MAX_BODY_BYTES, MAX_HEAD_BYTES
from idguard.biometrics.fingerprints import MAX_RECORD_BASE64
from idguard.core.idnumber import mask
from idguard.verification.models import Check
from idguard.verification.routes.verify import MAX_BATCH_FINGERPRINTS
from idguard.verification.runtime import checklog
from idguard.verification.schemas import MAX_BATCH_BODY_BYTES
from tests import servers
from tests.factories import CHECK_HASH_KEY, OFFICE_A, PASSWORD, auth
from tests.functional.conftest import Counter, assert_problem
from tests.functional.verification.test_verify import Bank, flush, sync

NUL = "\x00"
LONE = "\ud800"  # an unpaired surrogate, as json.loads makes it from the escape "\ud800"
FULL_WIDTH = str.maketrans("0123456789X", "０１２３４５６７８９Ｘ")
ARABIC_INDIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")


def json_bytes(value: Any, *, ensure_ascii: bool = True) -> bytes:
    """`value` as JSON a client sends; lone surrogates as the escape (ASCII) or raw UTF-8 bytes."""
    return json.dumps(value, ensure_ascii=ensure_ascii).encode("utf-8", "surrogatepass")


def post_json(client: Any, path: str, value: Any, headers: dict[str, str] | None = None, **kw: Any) -> Any:
    return client.post(
        path,
        content=json_bytes(value, **kw),
        headers={"Content-Type": "application/json", **(headers or {})},
    )


def fields(r: httpx.Response) -> set[str]:
    return {e["field"] for e in r.json()["errors"]}


def card_body(card: dict[str, Any], **over: Any) -> dict[str, Any]:
    return {
        "id_number": card["id_number"],
        "name": card["name"],
        "issued_on": card["issued_on"],
        "expires_on": card["expires_on"],
        "purpose": "account_opening",
        "operator": "teller-7",
        **over,
    }


@pytest.fixture
def bank(counter: Counter) -> Bank:
    return Bank(counter)


@pytest.fixture
def card(counter: Counter) -> dict[str, Any]:
    card = counter.card(counter.person(name="张三"))
    sync(counter)
    return card


# -- 1. NUL and unpaired surrogates: 422 naming the field, on both databases ----------------------


def test_login_refuses_nul_and_surrogates_without_a_login(counter: Counter) -> None:
    client = counter.client
    r = post_json(client, "/api/v1/auth/token", {"username": "a" + NUL, "password": PASSWORD})
    assert_problem(r, 422, field="username", says="username")
    r = post_json(client, "/api/v1/auth/token", {"username": "clerk_a", "password": "x" + LONE})
    assert_problem(r, 422, field="password")
    # The same surrogate as raw UTF-8 bytes (json.loads takes them), and in a form.
    r = post_json(client, "/api/v1/auth/token", {"username": LONE, "password": "x"}, ensure_ascii=False)
    assert_problem(r, 422, field="username")
    r = client.post("/api/v1/auth/token", data={"username": "clerk_a", "password": "x" + NUL})
    assert_problem(r, 422, field="password")
    r = client.post(  # multipart, as an OAuth2 client may send it
        "/api/v1/auth/token",
        data={"username": "clerk_a" + NUL, "password": "x"},
        files={"note": ("note.txt", b"")},
    )
    assert_problem(r, 422, field="username")
    r = client.post(
        "/api/v1/auth/token",
        content=b"username=clerk_a%00&password=x",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert_problem(r, 422, field="username")
    assert r.json()["title"] == "Invalid request"  # the problem document of every 422
    assert r.json()["detail"] == "invalid fields: username"
    assert "NUL" in r.json()["errors"][0]["detail"]


def test_public_lookup_refuses_nul_in_the_query(counter: Counter, card: dict[str, Any]) -> None:
    r = counter.client.get("/api/v1/found-cards/lookup", params={"id_number": card["id_number"], "name": NUL})
    assert_problem(r, 422, field="name")
    r = counter.client.get(
        "/api/v1/found-cards/lookup", params={"id_number": card["id_number"][:10] + NUL + "0000000"}
    )
    assert_problem(r, 422, field="id_number")


def test_every_field_of_a_staff_body_is_held_to_the_rule(counter: Counter, card: dict[str, Any]) -> None:
    client = counter.client
    person = {
        "id_number": card["id_number"],
        "name": "王" + NUL,
        "sex": "male",
        "ethnicity": "汉" + LONE,
        "birth_date": "1990-05-04",
        "address": "北京市" + NUL,
        "hukou_office": OFFICE_A,
    }
    r = post_json(client, "/api/v1/persons", person, auth("clerk_a"))
    assert_problem(r, 422)
    assert fields(r) == {"name", "ethnicity", "address"}
    found = {
        "id_number": card["id_number"],
        "issued_on": card["issued_on"],
        "office": OFFICE_A + NUL,
        "finder": {"name": "李四" + NUL, "phone": "138" + LONE},
    }
    r = post_json(client, "/api/v1/found-cards", found, auth("clerk_a"))
    assert fields(r) == {"office", "finder.name", "finder.phone"}
    unit = {
        "code": "BANK-X",
        "name": "银行" + NUL,
        "sector": "bank" + NUL,
        "purposes": ["account_opening" + NUL],
        "webhook_url": "https://example.test/" + NUL,
    }
    r = post_json(client, "/api/v1/units", unit, auth("supervisor"))
    assert_problem(r, 422)
    assert fields(r) == {"name", "sector", "purposes.0", "webhook_url"}
    r = post_json(client, "/api/v1/units", {"code": "B", NUL: 1}, auth("supervisor"))
    assert_problem(r, 422, field="body", says="body")  # a bad member name: the object holding it


def test_path_parameters_query_filters_and_headers(counter: Counter, card: dict[str, Any]) -> None:
    number = card["id_number"]
    r = counter.client.get(f"/api/v1/persons/{number[:12]}%00{number[13:]}", headers=auth("clerk_a"))
    assert_problem(r, 422, field="id_number")
    r = counter.client.post(
        "/api/v1/found-cards/F%00X/return", json={"claimant_id_number": number}, headers=auth("clerk_a")
    )
    assert_problem(r, 422, field="found_no")
    r = counter.client.get("/api/v1/no-such-route/%00")
    assert_problem(r, 422, field="path")
    r = counter.get("/api/v1/checks", as_="supervisor", unit="BANK" + NUL)
    assert_problem(r, 422, field="unit")
    r = counter.get("/api/v1/fingerprint-comparisons", as_="supervisor", office=OFFICE_A + NUL)
    assert_problem(r, 422, field="office")
    # A header (the idempotency key is stored): driven through ASGI, as HTTP clients refuse to send it.
    status, body = asgi_request(
        counter.client.app,
        "POST",
        "/api/v1/persons",
        headers=[(b"idempotency-key", b"key\x00"), *auth_header("clerk_a")],
    )
    assert status == 422, body
    assert [e["field"] for e in json.loads(body)["errors"]] == ["idempotency-key"]


def test_verify_single_and_batch(counter: Counter, bank: Bank, card: dict[str, Any]) -> None:
    client = counter.client
    r = post_json(client, "/api/v1/verify", card_body(card, operator="teller" + NUL), bank.headers())
    assert_problem(r, 422, field="operator")
    r = post_json(client, "/api/v1/verify", card_body(card, name=LONE), bank.headers(), ensure_ascii=False)
    assert_problem(r, 422, field="name")
    items = [
        card_body(card),
        card_body(card, purpose="account_opening" + NUL),
        card_body(card, operator=LONE),
    ]
    r = post_json(client, "/api/v1/verify/batch", {"items": items}, bank.headers())
    assert_problem(r, 422)
    assert fields(r) == {"items.1.purpose", "items.2.operator"}
    # Without a key the text is refused all the same, before the 401.
    r = post_json(client, "/api/v1/verify", card_body(card, operator=NUL))
    assert_problem(r, 422, field="operator")


@pytest.mark.parametrize("ensure_ascii", [True, False], ids=["escaped", "utf8"])
def test_text_that_only_looks_suspect_is_accepted(
    counter: Counter, bank: Bank, card: dict[str, Any], ensure_ascii: bool
) -> None:
    """A backslash followed by "u0000", a surrogate pair (an emoji: escaped as two surrogates) and
    Hangul (UTF-8 bytes 0xED 0x95 …) are ordinary text, stored as sent on both databases."""
    operators = ["\\u0000", "\\\\ud800", "柜员😀", "김한결"]
    sent = {}
    for operator in operators:
        r = post_json(
            counter.client,
            "/api/v1/verify",
            card_body(card, operator=operator),
            bank.headers(),
            ensure_ascii=ensure_ascii,
        )
        assert r.status_code == 200, r.text
        assert r.json()["result"] == "valid"
        sent[r.json()["check_id"]] = operator
    flush(counter)
    logged = {
        c["check_id"]: c["operator"]
        for c in counter.client.get("/api/v1/checks", headers=bank.headers()).json()["items"]
    }
    assert logged == sent


# -- 2. more 500s: deep nesting, times out of range ------------------------------------------------


def test_deeply_nested_login_body_is_a_4xx(counter: Counter) -> None:
    for body in (b"[" * 100_000 + b"]" * 100_000, b'{"username": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"):
        r = counter.client.post(
            "/api/v1/auth/token", content=body, headers={"Content-Type": "application/json"}
        )
        assert_problem(r, 422, field="body")
        r = counter.client.post("/api/v1/auth/token", content=body, headers={"Content-Type": "text/plain"})
        assert r.status_code == 415  # not a type the route takes: refused before it is parsed


@pytest.mark.parametrize(
    ("path", "param", "value"),
    [
        ("/api/v1/checks", "to", "0001-01-01T00:00:00+14:00"),
        ("/api/v1/checks", "from", "0001-01-01T00:00:00+14:00"),
        ("/api/v1/checks", "from", "9999-12-31T23:59:59-14:00"),
        ("/api/v1/fingerprint-comparisons", "from", "0001-01-01T00:00:00+14:00"),
        ("/api/v1/fingerprint-comparisons", "from", "9999-12-31T23:59:59-14:00"),
    ],
)
def test_a_time_outside_the_calendar_in_utc_is_422_naming_it(
    counter: Counter, path: str, param: str, value: str
) -> None:
    r = counter.get(path, as_="supervisor", **{param: value})
    assert_problem(r, 422, field=param)
    # Just inside the calendar is a time like any other.
    inside = value.replace("0001-01-01T00:00:00", "0001-01-01T14:00:00").replace("23:59:59-", "09:59:59-")
    assert counter.get(path, as_="supervisor", **{param: inside}).status_code == 200


def test_a_cursor_with_an_impossible_time_is_422(counter: Counter, bank: Bank) -> None:
    import base64

    for at in ("0001-01-01T00:00:00+14:00", "2026-01-01T00:00:00"):
        cursor = base64.urlsafe_b64encode(f"{at}|00000000-0000-0000-0000-000000000000".encode()).decode()
        r = counter.client.get("/api/v1/checks", params={"after": cursor}, headers=bank.headers())
        assert_problem(r, 422, field="after")


# -- 3. limits: 431 and 413, counted while reading ------------------------------------------------


def auth_header(user: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", auth(user)["Authorization"].encode())]


def asgi_request(
    app: Any,
    method: str,
    path: str,
    *,
    headers: list[tuple[bytes, bytes]] | None = None,
    chunks: Iterator[bytes] | None = None,
) -> tuple[int, bytes]:
    """Call the app as a server would, the body arriving in `chunks` (more_body until they end)."""
    pending = iter(chunks or [b""])
    nxt = next(pending, None)

    async def receive() -> dict[str, Any]:
        nonlocal nxt
        if nxt is None:
            await asyncio.sleep(3600)  # a server waits for the client's disconnect
        chunk, nxt = nxt, next(pending, None)
        return {"type": "http.request", "body": chunk, "more_body": nxt is not None}

    status, out = 0, []

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            out.append(message.get("body", b""))

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), *(headers or [])],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    asyncio.run(asyncio.wait_for(app(scope, receive, send), 30))
    return status, b"".join(out)


def test_header_limit_in_process(counter: Counter) -> None:
    r = counter.client.get("/api/v1/checks", headers={"Authorization": "Bearer " + "a" * MAX_HEAD_BYTES})
    assert_problem(r, 431)
    r = counter.client.get("/api/v1/checks", headers={"Authorization": "Bearer " + "a" * 8000})
    assert_problem(r, 401)


def test_body_limit_is_counted_while_reading(counter: Counter) -> None:
    app = counter.client.app
    chunk = b"x" * 65_536
    # Content-Length above the limit: refused before a byte is read.
    read = 0

    def endless() -> Iterator[bytes]:
        nonlocal read
        while True:
            read += 1
            yield chunk

    declared = [(b"content-length", str(MAX_BODY_BYTES + 1).encode())]
    status, body = asgi_request(app, "POST", "/api/v1/auth/token", headers=declared, chunks=endless())
    assert status == 413, body
    assert read <= 2  # the first chunk (and the next, drawn to say whether more follows)
    # No Content-Length (chunked): counted, and refused after the limit, not at the stream's end.
    read = 0
    status, body = asgi_request(
        app, "POST", "/api/v1/auth/token", headers=[(b"transfer-encoding", b"chunked")], chunks=endless()
    )
    assert status == 413, body
    assert read <= MAX_BODY_BYTES // len(chunk) + 2
    assert json.loads(body)["title"] == "Content too large"
    # A Content-Length that lies low changes nothing.
    read = 0
    small = [(b"content-length", b"10")]
    status, body = asgi_request(app, "POST", "/api/v1/auth/token", headers=small, chunks=endless())
    assert status == 413, body
    assert read <= MAX_BODY_BYTES // len(chunk) + 2
    # The verify batch has its own, larger limit (and is refused above it alike).
    big = [(b"content-length", str(MAX_BATCH_BODY_BYTES + 1).encode())]
    status, _ = asgi_request(app, "POST", "/api/v1/verify/batch", headers=big, chunks=endless())
    assert status == 413
    status, _ = asgi_request(app, "POST", "/api/v1/verify", headers=big, chunks=endless())
    assert status == 413
    # In the test client too, and anonymous or not.
    r = counter.client.post(
        "/api/v1/auth/token",
        content=b" " * (MAX_BODY_BYTES + 1),
        headers={"Content-Type": "application/json"},
    )
    assert_problem(r, 413)


def test_the_largest_legitimate_batch_is_within_the_limit(counter: Counter, bank: Bank) -> None:
    """1000 items, every field at its longest and every item with a fingerprint: not a 413 (it is
    refused for carrying more than MAX_BATCH_FINGERPRINTS fingerprints, naming the field)."""
    item = {
        "id_number": "11010519491231002X",
        "name": "张" * 60,
        "issued_on": "2015-03-01",
        "expires_on": "2035-03-01",
        "purpose": "account_opening",
        "operator": "柜" * 64,
        "chip_serial": "A" * 32,
        "fingerprint": "A" * MAX_RECORD_BASE64,
        "watch": True,
    }
    body = json_bytes({"items": [item] * 1000})  # ASCII-escaped: the longer encoding
    assert len(body) < MAX_BATCH_BODY_BYTES
    r = counter.client.post(
        "/api/v1/verify/batch", content=body, headers={**bank.headers(), "Content-Type": "application/json"}
    )
    assert_problem(r, 422, field="items", says=f"at most {MAX_BATCH_FINGERPRINTS}")


# -- 4. one id-number parser: full-width digits are the same number everywhere --------------------


def test_full_width_number_gets_the_ascii_answer_and_the_same_hash(
    counter: Counter, bank: Bank, card: dict[str, Any], engine: sa.Engine
) -> None:
    number = card["id_number"]
    wide = number.translate(FULL_WIDTH)
    ids = []
    for sent in (number, wide, " " + wide.lower() + "\u3000", number.lower()):
        r = bank.verify(card, id_number=sent)
        assert r.status_code == 200, r.text
        assert r.json()["result"] == "valid", sent
        ids.append(r.json()["check_id"])
    r = counter.client.post(
        "/api/v1/verify/batch",
        json={"items": [card_body(card, id_number=wide), card_body(card)]},
        headers=bank.headers(),
    )
    assert [a["result"] for a in r.json()["results"]] == ["valid", "valid"]
    ids += [a["check_id"] for a in r.json()["results"]]
    counter.report(card)
    sync(counter)
    r = bank.verify(card, id_number=wide)
    assert (r.json()["result"], r.json()["reason"]) == ("invalid", "reported_lost")
    ids.append(r.json()["check_id"])
    flush(counter)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(Check.id_hash, Check.id_masked).where(Check.id.in_([uuid.UUID(i) for i in ids]))
        ).all()
    assert len(rows) == len(ids)
    assert {tuple(row) for row in rows} == {(checklog.id_hash(CHECK_HASH_KEY, number), mask(number))}
    # Staff routes read the same person; digits NFKC does not fold are refused everywhere.
    assert counter.get(f"/api/v1/persons/{quote(wide)}").json()["id_number"] == number
    arabic = number.translate(ARABIC_INDIC)
    assert_problem(bank.verify(card, id_number=arabic), 422, field="id_number")
    assert_problem(counter.get(f"/api/v1/persons/{quote(arabic)}"), 422, field="id_number", says="17 digits")


# -- 5. the log masks every form of an id number ---------------------------------------------------


def test_access_log_masks_percent_encoded_and_full_width_numbers(
    counter: Counter, card: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """The access line uvicorn writes for each request (uvicorn's own formatting of the scope the
    app received: the path re-encoded, the query as sent) carries no form of the number."""
    number = card["id_number"]
    wide = number.translate(FULL_WIDTH)
    scopes: list[dict[str, Any]] = []
    app = counter.client.app
    inner = app.middleware_stack
    assert inner is not None  # built by the first request

    async def spy(scope: Any, receive: Any, send: Any) -> None:
        scopes.append(scope)
        await inner(scope, receive, send)

    app.middleware_stack = spy  # type: ignore[assignment]
    try:
        percent = "".join(f"%{b:02X}" for b in number.encode())
        counter.client.get(f"/api/v1/found-cards/lookup?id_number={percent}&name=x")
        counter.client.get(f"/api/v1/found-cards/lookup?id_number={percent.lower()}&name=x")
        counter.client.get(f"/api/v1/persons/{quote(wide)}", headers=auth("clerk_a"))
        counter.client.get(
            f"/api/v1/persons/{quote(wide.translate({ord('０'): '0'}))}", headers=auth("clerk_a")
        )
    finally:
        app.middleware_stack = inner
    logs.install()
    with caplog.at_level(logging.INFO, logger="uvicorn.access"):
        for scope in scopes:
            logging.getLogger("uvicorn.access").info(
                '%s - "%s %s HTTP/%s" %d',
                "127.0.0.1:1",
                scope["method"],
                get_path_with_query_string(scope),
                "1.1",
                200,
            )
    lines = [r.getMessage() for r in caplog.records if r.name == "uvicorn.access"]
    assert len(lines) == 4
    assert_no_number("\n".join(lines), number)
    assert all(mask(number) in line for line in lines)


def forms_of(number: str) -> list[str]:
    wide = number.translate(FULL_WIDTH)
    return [
        number,
        wide,
        "".join(f"%{b:02X}" for b in number.encode()),
        "".join(f"%{b:02x}" for b in number.encode()),
        quote(wide),
        number[6:14],  # the birth date alone is what the mask hides
    ]


def assert_no_number(text: str, number: str) -> None:
    for form in forms_of(number):
        assert form not in text, form


# -- a real server: `idguard serve` ----------------------------------------------------------------


@pytest.fixture
def server(database_url: str, tmp_path: Path) -> Iterator[tuple[str, Callable[[], str]]]:
    """`idguard serve` on a socket bound here, against the test database: (base URL, its output
    so far)."""
    log = tmp_path / "server.log"
    with servers.listening_socket() as sock:
        proc = servers.spawn(servers.serve_argv(sock), sock=sock, database_url=database_url, log=log)
        base = f"http://127.0.0.1:{servers.port_of(sock)}"

    def output() -> str:
        return log.read_text(encoding="utf-8", errors="replace")

    try:
        servers.wait_healthy(base, proc, output)
        yield base, output
    finally:
        servers.stop(proc)


def raw_exchange(base: str, head: bytes, body_chunks: Iterator[bytes] | None = None) -> bytes:
    """Send `head`, then chunks until the server answers; the whole answer (it closes after)."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(head)
        for chunk in body_chunks or ():
            if select.select([s], [], [], 0)[0]:  # the answer has begun: stop sending
                break
            s.sendall(chunk)
        answer = b""
        while True:
            try:
                data = s.recv(65536)
            except ConnectionResetError:
                pytest.fail(f"connection reset after {answer[:200]!r}")
            if not data:
                return answer
            answer += data


def test_real_server_answers_431_and_413_instead_of_resetting(
    server: tuple[str, Callable[[], str]], counter: Counter
) -> None:
    base, output = server
    with httpx.Client(base_url=base, timeout=30) as client:
        for size in (1_000_000, 50_000_000, MAX_HEAD_BYTES + 100):  # streamed in, and whole in one read
            r = client.get("/api/v1/checks", headers={"Authorization": "Bearer " + "a" * size})
            assert_problem(r, 431)
        assert_problem(client.get("/api/v1/checks", headers={"Authorization": "Bearer " + "a" * 8000}), 401)
        # A body over the limit, sent whole by a client that reads only afterwards: 413, no reset.
        r = client.post(
            "/api/v1/auth/token", content=b" " * 5_000_000, headers={"Content-Type": "application/json"}
        )
        assert_problem(r, 413)

        def chunks() -> Iterator[bytes]:
            for _ in range(200):
                yield b" " * 65_536

        r = client.post("/api/v1/auth/token", content=chunks(), headers={"Content-Type": "application/json"})
        assert_problem(r, 413)
        assert client.get("/api/v1/health").status_code == 200
    # At the socket: a declared length over the limit is answered before any body is sent ...
    answer = raw_exchange(
        base,
        b"POST /api/v1/auth/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100000000\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    # ... and a chunked body the moment it passes the limit, while the client is still sending.
    sent = 0

    def endless() -> Iterator[bytes]:
        nonlocal sent
        while sent < 100 * MAX_BODY_BYTES:
            sent += 65_536
            yield b"10000\r\n" + b" " * 65_536 + b"\r\n"

    answer = raw_exchange(
        base,
        b"POST /api/v1/auth/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n",
        endless(),
    )
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert sent < 10 * MAX_BODY_BYTES
    assert "Traceback" not in output()


def test_real_server_log_masks_every_form_of_an_id_number(
    server: tuple[str, Callable[[], str]], counter: Counter
) -> None:
    base, output = server
    number = counter.person()
    wide = number.translate(FULL_WIDTH)
    percent = "".join(f"%{b:02X}" for b in number.encode())
    with httpx.Client(base_url=base, timeout=10) as client:
        client.get(f"/api/v1/found-cards/lookup?id_number={percent}&name=x")
        r = client.get(f"/api/v1/persons/{quote(wide)}", headers=auth("clerk_a"))
        assert r.status_code == 200, r.text
        assert r.json()["id_number"] == number
        r = client.get("/api/v1/found-cards/lookup", params={"id_number": number, "name": "x" + NUL})
        assert_problem(r, 422, field="name")
    time.sleep(0.2)  # the access lines are written as the answers go out
    text = output()
    assert_no_number(text, number)
    assert text.count(mask(number)) >= 3, text[-2000:]
