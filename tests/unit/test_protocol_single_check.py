"""The single check answered in `idguard serve`'s HTTP protocol (api/server.py), on the wire.

The protocol is fed raw bytes and writes into a transport that records every write. The app
behind it is a stand-in door (what ops/middleware.FrontDoor offers: `single_check`,
`head_passes`, `observe`) in front of an ASGI app that answers whatever the door declines, so
each case shows which of the two answered and what went out:

- a check the door makes is answered in one write, with no ASGI task, and not before the check
  is recorded (its `pending` future); a failed record is answered 503, never the check's answer;
- whatever the door does not take (another path, a query, `Expect: 100-continue`, a body past
  uvicorn's read-ahead, a declined check) is answered by the app, with the body it sent;
- pipelined requests are answered in order; `Connection: close` closes after the answer; the
  access line names the client that X-Forwarded-For gives when a trusted proxy sends it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from uvicorn.config import Config
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from idguard.api.server import GuardedHttpToolsProtocol

PATH = "/api/v1/verify"


class Made:
    def __init__(self, rid: str, pending: asyncio.Future[None] | None, body: bytes) -> None:
        self.rid = rid
        self.pending = pending
        self.body = body

    def response(self) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        pending = self.pending
        if pending is not None and pending.exception() is not None:
            return 503, [(b"content-length", b"2"), (b"x-request-id", self.rid.encode())], b"no"
        text = b'{"result":"valid","echo":' + self.body + b"}"
        return 200, [(b"content-length", str(len(text)).encode()), (b"x-request-id", self.rid.encode())], text


class Door:
    """The app: a door for single checks in front of an ASGI app answering the rest."""

    path = PATH
    max_body = 1024 * 1024

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.checks: list[bytes] = []
        self.observed: list[int] = []
        self.asgi: list[tuple[str, bytes]] = []  # (path, body) the app answered
        self.pending: list[asyncio.Future[None]] = []
        self.wait = False  # checks wait for their record (a future) until the test settles it
        self.decline = False

    def head_passes(self, headers: list[tuple[bytes, bytes]], raw_path: bytes) -> bool:
        return not any(name == b"x-refuse" for name, _ in headers)

    def single_check(
        self, headers: list[tuple[bytes, bytes]], body: bytes, loop: asyncio.AbstractEventLoop
    ) -> Made | None:
        assert loop is self.loop
        if self.decline:
            return None
        self.checks.append(body)
        future: asyncio.Future[None] | None = None
        if self.wait:
            future = self.loop.create_future()
            self.pending.append(future)
        return Made(f"rid-{len(self.checks)}", future, body)

    def observe(self, status: int, seconds: float) -> None:
        self.observed.append(status)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        self.asgi.append((scope["path"], body))
        text = b'{"from":"app"}'
        headers = [(b"content-length", str(len(text)).encode()), (b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": text})


class Transport(asyncio.Transport):
    def __init__(self, peer: str = "127.0.0.1") -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.closed = False
        self.peer = peer

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return (self.peer, 50000)
        if name == "sockname":
            return ("127.0.0.1", 8000)
        return default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


class Wire:
    def __init__(self, loop: asyncio.AbstractEventLoop, *, peer: str = "127.0.0.1") -> None:
        self.loop = loop
        self.door = Door(loop)
        config = Config(app=self.door, log_config=None, access_log=True, proxy_headers=True)
        config.load()
        self.state = ServerState()
        self.state.default_headers = [(b"date", b"Sat, 28 Nov 2026 18:00:00 GMT"), (b"server", b"uvicorn")]
        self.protocol = GuardedHttpToolsProtocol(config, self.state, {}, _loop=loop)
        self.inner = Transport(peer)
        self.protocol.connection_made(self.inner)

    def send(self, data: bytes) -> None:
        self.protocol.data_received(data)

    async def settle(self) -> None:
        for _ in range(20):  # tasks and callbacks scheduled by what was sent
            await asyncio.sleep(0)
        while self.state.tasks:
            await asyncio.gather(*self.state.tasks)

    @property
    def out(self) -> bytes:
        return b"".join(self.inner.writes)


def request(body: bytes = b'{"id_number":"x"}', *, path: str = PATH, extra: bytes = b"") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n".encode()
        + extra
        + b"Content-Length: %d\r\n\r\n" % len(body)
        + body
    )


def answers(data: bytes) -> list[tuple[int, dict[bytes, bytes], bytes]]:
    """The HTTP/1.1 answers in `data`, in order: status, headers, body."""
    out = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        headers = dict(line.split(b": ", 1) for line in lines[1:])
        n = int(headers.get(b"content-length", b"0"))
        out.append((status, headers, rest[:n]))
        data = rest[n:]
    return out


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def test_a_check_the_door_makes_is_answered_in_one_write_without_a_task(
    loop: asyncio.AbstractEventLoop,
) -> None:
    wire = Wire(loop)

    async def scenario() -> None:
        wire.send(request(b'{"a":1}'))
        assert not wire.state.tasks  # no ASGI cycle was started for it
        await wire.settle()

    loop.run_until_complete(scenario())
    assert wire.door.checks == [b'{"a":1}']
    assert wire.door.asgi == []
    assert len(wire.inner.writes) == 1  # head and body in one piece
    [(status, headers, body)] = answers(wire.out)
    assert status == 200
    assert body == b'{"result":"valid","echo":{"a":1}}'
    assert headers[b"x-request-id"] == b"rid-1"
    assert headers[b"date"] == b"Sat, 28 Nov 2026 18:00:00 GMT"  # uvicorn's own headers, as the app's
    assert headers[b"server"] == b"uvicorn"
    assert wire.door.observed == [200]
    assert not wire.inner.closed


def test_the_answer_waits_for_the_record_and_a_failed_record_is_a_503(
    loop: asyncio.AbstractEventLoop,
) -> None:
    wire = Wire(loop)
    wire.door.wait = True

    async def scenario() -> None:
        wire.send(request(b'{"n":1}'))
        await wire.settle()
        assert wire.out == b""  # not recorded yet: nothing has left
        wire.door.pending[0].set_result(None)
        await wire.settle()
        assert answers(wire.out)[0][0] == 200
        wire.send(request(b'{"n":2}'))
        await wire.settle()
        assert len(answers(wire.out)) == 1
        wire.door.pending[1].set_exception(RuntimeError("journal down"))
        await wire.settle()

    loop.run_until_complete(scenario())
    assert [a[0] for a in answers(wire.out)] == [200, 503]
    assert wire.door.observed == [200, 503]


@pytest.mark.parametrize(
    ("path", "extra", "body"),
    [
        ("/api/v1/other", b"", b'{"a":1}'),
        (PATH + "?x=1", b"", b'{"a":1}'),
        (PATH, b"Expect: 100-continue\r\n", b'{"a":1}'),
        (PATH, b"X-Refuse: 1\r\n", b'{"a":1}'),
        (PATH, b"", b"[" + b" " * HIGH_WATER_LIMIT + b"]"),
    ],
    ids=["other path", "query", "expect 100-continue", "head refused", "body past read-ahead"],
)
def test_what_the_door_does_not_take_the_app_answers_with_its_body(
    loop: asyncio.AbstractEventLoop, path: str, extra: bytes, body: bytes
) -> None:
    wire = Wire(loop)

    async def scenario() -> None:
        data = request(body, path=path, extra=extra)
        for i in range(0, len(data), 4096):  # as it arrives off a socket
            wire.send(data[i : i + 4096])
        await wire.settle()

    loop.run_until_complete(scenario())
    assert wire.door.checks == []
    assert wire.door.asgi == [(path.partition("?")[0], body)]
    statuses = [a[0] for a in answers(wire.out.removeprefix(b"HTTP/1.1 100 Continue\r\n\r\n"))]
    assert statuses == [200]
    assert b'{"from":"app"}' in wire.out


def test_a_check_the_door_declines_goes_to_the_app(loop: asyncio.AbstractEventLoop) -> None:
    wire = Wire(loop)
    wire.door.decline = True
    loop.run_until_complete(_send_and_settle(wire, request(b'{"a":2}')))
    assert wire.door.asgi == [(PATH, b'{"a":2}')]
    assert answers(wire.out)[0][2] == b'{"from":"app"}'


async def _send_and_settle(wire: Wire, data: bytes) -> None:
    wire.send(data)
    await wire.settle()


def test_pipelined_requests_are_answered_in_order(loop: asyncio.AbstractEventLoop) -> None:
    """The door takes a request that finds the connection idle; those queued behind an answer
    not yet sent (pipelined) are uvicorn's as always, and every answer leaves in order."""
    wire = Wire(loop)
    wire.door.wait = True
    data = request(b'{"n":1}') + request(b'{"n":2}', path="/api/v1/other") + request(b'{"n":3}')

    async def scenario() -> None:
        wire.send(data)
        await wire.settle()
        assert wire.out == b""  # the first waits for its record; the others wait behind it
        wire.door.pending[0].set_result(None)
        await wire.settle()

    loop.run_until_complete(scenario())
    bodies = [a[2] for a in answers(wire.out)]
    assert bodies == [
        b'{"result":"valid","echo":{"n":1}}',
        b'{"from":"app"}',
        b'{"from":"app"}',
    ]
    assert wire.door.checks == [b'{"n":1}']


def test_connection_close_closes_after_the_answer(loop: asyncio.AbstractEventLoop) -> None:
    wire = Wire(loop)
    loop.run_until_complete(_send_and_settle(wire, request(extra=b"Connection: close\r\n")))
    [(status, headers, _)] = answers(wire.out)
    assert status == 200
    assert headers[b"connection"] == b"close"
    assert wire.inner.closed


def test_the_access_line_names_the_forwarded_client(
    loop: asyncio.AbstractEventLoop, caplog: pytest.LogCaptureFixture
) -> None:
    wire = Wire(loop)  # the peer is 127.0.0.1, uvicorn's trusted proxy by default
    with caplog.at_level(logging.INFO, logger="uvicorn.access"):
        loop.run_until_complete(_send_and_settle(wire, request(extra=b"X-Forwarded-For: 203.0.113.7\r\n")))
    lines = [r.getMessage() for r in caplog.records if r.name == "uvicorn.access"]
    assert lines == [f'203.0.113.7:0 - "POST {PATH} HTTP/1.1" 200']  # as uvicorn's layer names it
    untrusted = Wire(loop, peer="198.51.100.9")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="uvicorn.access"):
        loop.run_until_complete(
            _send_and_settle(untrusted, request(extra=b"X-Forwarded-For: 203.0.113.7\r\n"))
        )
    [line] = [r.getMessage() for r in caplog.records if r.name == "uvicorn.access"]
    assert line == f'198.51.100.9:50000 - "POST {PATH} HTTP/1.1" 200'  # an untrusted peer's header ignored


def test_a_client_gone_before_the_record_gets_nothing_and_nothing_breaks(
    loop: asyncio.AbstractEventLoop,
) -> None:
    wire = Wire(loop)
    wire.door.wait = True

    async def scenario() -> None:
        wire.send(request())
        await wire.settle()
        wire.protocol.connection_lost(None)
        wire.door.pending[0].set_result(None)
        await wire.settle()

    loop.run_until_complete(scenario())
    assert wire.out == b""
    assert json.dumps(wire.door.observed) == "[200]"  # counted as the app would count it


def test_an_idle_connection_is_closed_after_the_keep_alive_timeout_and_a_busy_one_is_not(
    loop: asyncio.AbstractEventLoop,
) -> None:
    """One keep-alive timer a connection (not one a request): requests every 20 ms keep a
    connection with a 250 ms timeout open for 400 ms; once idle it closes after the timeout
    counted from its last answer, not before."""
    wire = Wire(loop)
    timeout = wire.protocol.timeout_keep_alive = 0.25

    async def scenario() -> None:
        started = loop.time()
        answered = started
        for _ in range(20):
            wire.send(request())
            await wire.settle()
            answered = loop.time()  # the answer is complete: the idle time counts from here
            await asyncio.sleep(0.02)
            assert not wire.inner.closed
        assert answered - started > timeout  # it outlived one timeout by being busy
        while not wire.inner.closed:
            await asyncio.sleep(0.005)
            assert loop.time() - answered < timeout + 2.0
        idle = loop.time() - answered
        assert idle >= timeout - 0.02, idle  # (the few loop turns between the answer and `answered`)
        assert len(answers(wire.out)) == 20

    loop.run_until_complete(scenario())


def test_a_request_arriving_in_pieces_holds_the_keep_alive_timer(loop: asyncio.AbstractEventLoop) -> None:
    """A request whose head is still arriving when the timeout passes is not cut off: the
    connection is busy from its first byte."""
    wire = Wire(loop)
    wire.protocol.timeout_keep_alive = 0.05

    async def scenario() -> None:
        wire.send(request())
        await wire.settle()
        whole = request(b'{"b":2}')
        wire.send(whole[:10])
        await asyncio.sleep(0.15)
        assert not wire.inner.closed
        wire.send(whole[10:])
        await wire.settle()
        assert [a[0] for a in answers(wire.out)] == [200, 200]
        await asyncio.sleep(0.15)
        assert wire.inner.closed

    loop.run_until_complete(scenario())


@given(
    url=st.lists(st.binary(min_size=1, max_size=12), min_size=1, max_size=3),
    headers=st.lists(
        st.tuples(
            st.sampled_from([b"Expect", b"expect", b"EXPECT", b"Host", b"X-Other", b"Content-Type"]),
            st.sampled_from([b"100-continue", b"100-Continue", b"x", b"", b"application/json"]),
        ),
        max_size=6,
    ),
)
def test_the_head_is_taken_as_uvicorn_takes_it(url: list[bytes], headers: list[tuple[bytes, bytes]]) -> None:
    """on_url and on_header do uvicorn's work inline (one frame a header): the URL, the headers
    and the Expect flag come out as uvicorn's own protocol makes them."""
    loop = asyncio.new_event_loop()
    try:
        config = Config(app=Door(loop), log_config=None)
        config.load()
        ours = GuardedHttpToolsProtocol(config, ServerState(), {}, _loop=loop)
        theirs = HttpToolsProtocol(config, ServerState(), {}, _loop=loop)
        for protocol in (ours, theirs):
            protocol.on_message_begin()
            for piece in url:
                protocol.on_url(piece)
            for name, value in headers:
                protocol.on_header(name, value)
        assert (ours.url, ours.headers, ours.expect_100_continue) == (
            theirs.url,
            theirs.headers,
            theirs.expect_100_continue,
        )
    finally:
        loop.close()
