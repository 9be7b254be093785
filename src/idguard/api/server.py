"""How `idguard serve` runs uvicorn: its HTTP/1.1 protocol, with the request guard's limits
answered properly at the connection level too, and (httptools) the plain single check answered in
the protocol itself, without an ASGI cycle (`GuardedHttpToolsProtocol`, issue 14).

The default is uvicorn's httptools protocol on uvloop (`GuardedHttpToolsProtocol`): measured
against uvicorn's pure-Python h11 parser on asyncio's loop it serves about twice the requests a
second (bench/floor.py, docs/performance.md); `idguard serve --http h11` keeps the h11 protocol
(`GuardedH11Protocol`). Both answer alike: what follows holds for either.

uvicorn's h11 protocol already refuses a request head that grows past
`h11_max_incomplete_event_size` while it arrives, but it answers a bare 400 and closes the socket
at once, with the rest of the client's request unread: the kernel then resets the connection and
a client still sending (a 1 MB Authorization header) sees "connection reset", never the answer.
This protocol answers that case 431 with the problem document every error has, and closes
every connection whose request was not read to its end (that 431, the guard's 413, a malformed
request) by lingering: the answer is sent, then the sending side is shut (FIN), and what the
client still sends is read and thrown away for up to LINGER_SECONDS or LINGER_BYTES before the
socket closes, so the client reads the answer instead of a reset.

A head that arrives whole in one read is not stopped by h11 (it only limits incomplete events);
the request guard (api/guard.py) answers that one 431 itself, so the limit holds in any server.
httptools has no limit of its own: its protocol here counts the request line and the headers
as the parser hands them over and answers the same 431 once they pass MAX_HEAD_BYTES.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from itertools import chain
from typing import Any, Protocol, cast

import h11
from uvicorn.config import Config
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string
from uvicorn.server import ServerState

from idguard import logs
from idguard.api.errors import PROBLEM, problem_body
from idguard.api.guard import MAX_HEAD_BYTES

# FastAPI's native OpenTelemetry, off: idguard exports Prometheus metrics (GET /metrics) and
# configures no OpenTelemetry provider, so the hook only asked, on every request, whether a
# provider had appeared (reading os.environ several times): ~3 % of a single check's server CPU
# in a profile under load (issue 14). Every FastAPI app of idguard passes this.
TELEMETRY_OFF: Any = {"tracing": False, "metrics": False, "logs": False}

# uvicorn.run(http=…): this module's protocols, by import path (workers import them themselves).
HTTP_PROTOCOLS = {
    "httptools": "idguard.api.server:GuardedHttpToolsProtocol",
    "h11": "idguard.api.server:GuardedH11Protocol",
}
HTTP_PROTOCOL = HTTP_PROTOCOLS["h11"]  # the h11 one (kept by this name for its callers)
DEFAULT_HTTP = "httptools"
LINGER_SECONDS = 5.0
LINGER_BYTES = 64 * 1024 * 1024  # twice the largest body limit (the verify batch's 30 MiB)

log = logging.getLogger("idguard.api")
# The single checks' access lines, written per loop turn (logs.AccessLines; uvicorn's logger).
ACCESS_LINES = logs.AccessLines(logging.getLogger("uvicorn.access"))


def uvicorn_options(http: str = DEFAULT_HTTP) -> dict[str, Any]:
    """The uvicorn.run options `idguard serve` adds: the protocol (`httptools` on uvloop, the
    default, or `h11` on asyncio's loop) and the head limit."""
    if http not in HTTP_PROTOCOLS:
        raise ValueError(f"unknown HTTP protocol {http!r}: one of {', '.join(HTTP_PROTOCOLS)}")
    return {
        "http": HTTP_PROTOCOLS[http],
        "loop": "uvloop" if http == "httptools" else "asyncio",
        "h11_max_incomplete_event_size": MAX_HEAD_BYTES,
    }


def _head_too_large() -> bytes:
    """The whole 431 answer, as the app's problem answers are rendered."""
    body = json.dumps(
        problem_body(
            431,
            "Request header fields too large",
            f"the request line and headers exceed {MAX_HEAD_BYTES} bytes",
        ),
        separators=(",", ":"),
    ).encode()
    return b"".join(
        [
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n",
            b"content-type: " + PROBLEM.encode() + b"\r\n",
            b"content-length: " + str(len(body)).encode() + b"\r\n",
            b"connection: close\r\n\r\n",
            body,
        ]
    )


class _Connection(h11.Connection):
    """h11's connection, remembering the status its last protocol error suggests (431 for a
    head past the limit, else 400)."""

    error_hint: int | None = None

    def next_event(self) -> h11.Event | type[h11.NEED_DATA] | type[h11.PAUSED]:
        try:
            return super().next_event()
        except h11.RemoteProtocolError as exc:
            self.error_hint = exc.error_status_hint
            raise


class GuardedH11Protocol(H11Protocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.conn = _Connection(
            h11.SERVER,
            config.h11_max_incomplete_event_size
            if config.h11_max_incomplete_event_size is not None
            else MAX_HEAD_BYTES,
        )
        self.lingering = False
        self._discarded = 0
        self._linger_end: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream server's transport (uvloop's is not a subclass of asyncio.Transport).
        super().connection_made(_LingeringTransport(cast(asyncio.Transport, transport), self))

    def data_received(self, data: bytes) -> None:
        if self.lingering:  # the answer is out: what the client still sends is thrown away
            self._discarded += len(data)
            if self._discarded > LINGER_BYTES:
                self.stop_lingering()
            return
        super().data_received(data)

    def eof_received(self) -> None:
        if self.lingering:  # the client has sent everything and read the answer
            self.stop_lingering()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._linger_end is not None:
            self._linger_end.cancel()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        conn = self.conn
        if not isinstance(conn, _Connection) or conn.error_hint != 431:
            super().send_400_response(msg)
            return
        log.warning("request head larger than %d bytes refused", MAX_HEAD_BYTES)
        body = json.dumps(
            problem_body(
                431,
                "Request header fields too large",
                f"the request line and headers exceed {MAX_HEAD_BYTES} bytes",
            ),
            separators=(",", ":"),  # as the app's problem answers are rendered
        ).encode()
        headers = [
            (b"content-type", PROBLEM.encode()),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        reason = b"Request Header Fields Too Large"
        self.transport.write(conn.send(h11.Response(status_code=431, headers=headers, reason=reason)) or b"")
        self.transport.write(conn.send(h11.Data(data=body)) or b"")
        self.transport.write(conn.send(h11.EndOfMessage()) or b"")
        self.transport.close()

    def request_unfinished(self) -> bool:
        """Whether the client may still be sending this request (body or head)."""
        return self.conn.their_state in (h11.SEND_BODY, h11.ERROR) or (
            self.conn.their_state is h11.IDLE and bool(self.conn.trailing_data[0])
        )

    def start_lingering(self, transport: asyncio.Transport) -> None:
        self.lingering = True
        self._linger_end = self.loop.call_later(LINGER_SECONDS, transport.close)

    def stop_lingering(self) -> None:
        if self._linger_end is not None:
            self._linger_end.cancel()
            self._linger_end = None
        inner = self.transport
        if isinstance(inner, _LingeringTransport):
            inner.inner.close()


class _HeadTooLarge(Exception):
    """Raised in a parser callback: httptools stops, and `data_received` answers 431."""


Answer = tuple[int, list[tuple[bytes, bytes]], bytes]


class Made(Protocol):
    """A single check made by the door: its answer may leave once `pending` is done."""

    rid: str
    pending: asyncio.Future[None] | None

    def response(self) -> Answer: ...


class Door(Protocol):
    """What the app offers the protocol for a plain single check (ops/middleware.FrontDoor)."""

    path: str
    max_body: int

    def head_passes(self, headers: list[tuple[bytes, bytes]], raw_path: bytes) -> bool: ...

    def single_check(
        self, headers: list[tuple[bytes, bytes]], body: bytes, loop: asyncio.AbstractEventLoop
    ) -> Made | None: ...

    def observe(self, status: int, seconds: float) -> None: ...


def find_door(app: Any) -> tuple[Door, ProxyHeadersMiddleware | None] | None:
    """The app's single-check door (and uvicorn's proxy-headers layer in front of it, if any),
    found down the chain of ASGI layers; None until the app has built its stack (at its first
    request) or when it has no door."""
    proxy = None
    for _ in range(50):
        if isinstance(app, ProxyHeadersMiddleware):
            proxy = app
        if callable(getattr(app, "single_check", None)) and callable(getattr(app, "head_passes", None)):
            return cast(Door, app), proxy
        app = getattr(app, "middleware_stack", None) or getattr(app, "app", None)
        if app is None:
            return None
    return None


def client_addr(scope: Any, proxy: ProxyHeadersMiddleware | None) -> str:
    """The client as uvicorn's access line names it, after its proxy-headers layer (which the
    door's requests do not pass through) has taken X-Forwarded-For from a trusted proxy."""
    client = scope.get("client")
    if proxy is not None and client and client[0] in proxy.trusted_hosts:
        forwarded = [value for name, value in scope["headers"] if name == b"x-forwarded-for"]
        if forwarded:
            host, port = proxy.trusted_hosts.get_trusted_client_address(
                b", ".join(forwarded).decode("latin1")
            )
            if host:
                return get_client_addr(cast(Any, {"client": (host, port)}))
    return get_client_addr(scope)


_LOGGED_PATHS: dict[tuple[str, str], str] = {}


def _logged_path(scope: Any) -> str:
    """The path as uvicorn's access line shows it (`get_path_with_query_string`), kept for the
    door's requests: they carry no query, and their path is the door's (one percent-encoding
    a server, not one a request)."""
    if scope["query_string"]:
        return get_path_with_query_string(scope)
    key = (scope.get("root_path", ""), scope["path"])
    text = _LOGGED_PATHS.get(key)
    if text is None:
        text = get_path_with_query_string(scope)
        if len(_LOGGED_PATHS) < 16:
            _LOGGED_PATHS[key] = text
    return text


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with GuardedH11Protocol's answers: 431 for a head past
    MAX_HEAD_BYTES (counted as the parser hands it over, whether it came in one read or many),
    and a lingering close of a connection whose request was not read to its end.

    A plain single check is answered here, without an ASGI cycle (issue 14): the request's
    cycle is made as uvicorn makes it, but its task is not started; once the body is in, the
    app's door (`Door`, ops/middleware.FrontDoor) makes the check, and when the check is
    recorded the answer is written in one piece, with uvicorn's access line and default headers,
    and the cycle is completed as uvicorn's `send` completes it (keep-alive, pipelined requests,
    graceful shutdown). Whatever the door does not take — another path, a query, an `Expect:
    100-continue`, a body past uvicorn's read-ahead, anything the door declines — starts the task
    as uvicorn would have, with the request read so far: the app then answers it as before."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.lingering = False
        self._discarded = 0
        self._linger_end: asyncio.TimerHandle | None = None
        self._head = 0  # bytes of the request line and headers so far
        self._in_message = False  # between a request's first byte and its body's end
        self._failed = False  # the parser refused what the client sent (431 or 400)
        self._heading = False  # within uvicorn's on_headers_complete
        self._door: tuple[Door, ProxyHeadersMiddleware | None] | None = None
        self._deferred: RequestResponseCycle | None = None  # a cycle the door may answer
        self._deferred_at = 0.0
        self._idle_since: float | None = None  # when its last answer completed, while idle

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream server's transport (uvloop's is not a subclass of asyncio.Transport).
        super().connection_made(_LingeringTransport(cast(asyncio.Transport, transport), self))

    def data_received(self, data: bytes) -> None:
        if self.lingering:  # the answer is out: what the client still sends is thrown away
            self._discarded += len(data)
            if self._discarded > LINGER_BYTES:
                self.stop_lingering()
            return
        super().data_received(data)

    def eof_received(self) -> None:
        if self.lingering:  # the client has sent everything and read the answer
            self.stop_lingering()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._linger_end is not None:
            self._linger_end.cancel()
        self._deferred = None  # its client left: nobody to answer
        super().connection_lost(exc)
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None

    # --- keep-alive: one timer a connection, not one a request --------------------------------
    # uvicorn arms a timer when an answer is complete and cancels it when the next request's
    # bytes arrive: ~2.5 us of uvloop's timer work a request (issue 14). Here the timer stays
    # armed while requests come; when it fires it closes the connection only if it has been idle
    # for `timeout_keep_alive` since its last answer, and otherwise sets itself for the rest.

    def _unset_keepalive_if_required(self) -> None:
        self._idle_since = None  # busy: a timer that fires now stands down

    def on_response_complete(self) -> None:
        """uvicorn's, but for the keep-alive timer (see above)."""
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self._idle_since = None
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
            return
        self._idle_since = self.loop.time()
        if self.timeout_keep_alive_task is None:
            self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, self._keep_alive_due)

    def _keep_alive_due(self) -> None:
        self.timeout_keep_alive_task = None
        since = self._idle_since
        if since is None:  # serving a request: armed again once it is answered
            return
        left = since + self.timeout_keep_alive - self.loop.time()
        if left > 0:
            self.timeout_keep_alive_task = self.loop.call_later(left, self._keep_alive_due)
        else:
            self.timeout_keep_alive_handler()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head = 0
        self._in_message = True

    # on_url and on_header are called for every piece of every request's head: each does what
    # uvicorn's does (its body, inline: one Python frame a header, not two) after the count.

    def on_url(self, url: bytes) -> None:
        self._head += len(url)
        if self._head > MAX_HEAD_BYTES:
            raise _HeadTooLarge
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head += len(name) + len(value) + 4  # "name: value\r\n"
        if self._head > MAX_HEAD_BYTES:
            raise _HeadTooLarge
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_message = False
        cycle, found = self._deferred, self._door
        if cycle is not None and cycle is self.cycle and found is not None:
            self._deferred = None
            self._single_check(cycle, *found)

    # --- the single check, answered here -----------------------------------------------------

    def on_headers_complete(self) -> None:
        self._heading = True
        try:
            super().on_headers_complete()
        finally:
            self._heading = False

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        if self._heading and app is self.app and self._door_takes(cycle):
            self._deferred, self._deferred_at = cycle, time.perf_counter()
            return
        super()._start_asgi_task(cycle, app)

    def _door_takes(self, cycle: RequestResponseCycle) -> bool:
        scope = cycle.scope
        if scope["method"] != "POST" or scope["query_string"] or cycle.waiting_for_100_continue:
            return False
        if self._door is None:
            self._door = find_door(self.app)
            if self._door is None:
                return False
        door = self._door[0]
        return scope["path"] == door.path and door.head_passes(self.headers, scope["raw_path"])

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        cycle = self._deferred
        # Past uvicorn's read-ahead it pauses reading until the app reads: the app must, then.
        if cycle is not None and len(cycle.body) > min(HIGH_WATER_LIMIT, self._door_max()):
            self._deferred = None
            super()._start_asgi_task(cycle, self.app)

    def _door_max(self) -> int:
        return self._door[0].max_body if self._door is not None else 0

    def _single_check(
        self, cycle: RequestResponseCycle, door: Door, proxy: ProxyHeadersMiddleware | None
    ) -> None:
        try:
            made = door.single_check(self.headers, bytes(cycle.body), self.loop)
        except Exception:  # the app meets the request again and answers it
            log.exception("the single check could not be made in the protocol; the app answers it")
            made = None
        if made is None:
            super()._start_asgi_task(cycle, self.app)
        elif made.pending is None:
            self._respond(cycle, made, door, proxy)
        else:
            made.pending.add_done_callback(lambda _: self._respond(cycle, made, door, proxy))

    def _respond(
        self, cycle: RequestResponseCycle, made: Made, door: Door, proxy: ProxyHeadersMiddleware | None
    ) -> None:
        """Send the answer as uvicorn's `send` would (its access line, its default headers, its
        keep-alive and completion), in one write."""
        status = 500
        try:
            status, headers, body = made.response()
            if cycle.disconnected:  # the client left: nobody to answer
                return
            scope = cycle.scope
            if cycle.access_log:
                client, path = client_addr(scope, proxy), _logged_path(scope)
                method, version = scope["method"], scope["http_version"]
                if not ACCESS_LINES.write(self.loop, client, method, path, version, status, made.rid):
                    token = logs.request_id.set(made.rid)
                    try:
                        cycle.access_logger.info(
                            '%s - "%s %s HTTP/%s" %d', client, method, path, version, status
                        )
                    finally:
                        logs.request_id.reset(token)
            content = [STATUS_LINE[status]]
            for name, value in chain(self.server_state.default_headers, headers):
                content += (name, b": ", value, b"\r\n")
            if not cycle.keep_alive:
                content.append(b"connection: close\r\n")
            content += (b"\r\n", body)
            cycle.response_started = cycle.response_complete = True
            self.transport.write(b"".join(content))
            cycle.message_event.set()
            if not cycle.keep_alive:
                self.transport.close()
            cycle.on_response()
        except Exception:  # nothing sensible can be sent on this connection any more
            log.exception("the single check's answer could not be sent")
            self.transport.close()
        finally:
            door.observe(status, time.perf_counter() - self._deferred_at)

    def send_400_response(self, msg: str) -> None:
        self._failed = True
        if self._head <= MAX_HEAD_BYTES:
            super().send_400_response(msg)
            return
        log.warning("request head larger than %d bytes refused", MAX_HEAD_BYTES)
        self.transport.write(_head_too_large())
        self.transport.close()

    def request_unfinished(self) -> bool:
        """Whether the client may still be sending this request (body or head)."""
        return self._in_message or self._failed

    def start_lingering(self, transport: asyncio.Transport) -> None:
        self.lingering = True
        self._linger_end = self.loop.call_later(LINGER_SECONDS, transport.close)

    def stop_lingering(self) -> None:
        if self._linger_end is not None:
            self._linger_end.cancel()
            self._linger_end = None
        inner = self.transport
        if isinstance(inner, _LingeringTransport):
            inner.inner.close()


class _LingeringTransport(asyncio.Transport):
    """The connection's transport as uvicorn sees it: `close()` lingers while the client may
    still be sending (see the module's docstring); everything else is the real transport's."""

    def __init__(
        self, inner: asyncio.Transport, protocol: GuardedH11Protocol | GuardedHttpToolsProtocol
    ) -> None:
        super().__init__()
        self.inner = inner
        self.protocol = protocol
        # Every answer's bytes pass here: the real transport's own methods, without a frame of ours.
        self.write = inner.write  # type: ignore[method-assign]
        self.writelines = inner.writelines  # type: ignore[method-assign]

    def close(self) -> None:
        if self.protocol.lingering or self.inner.is_closing():
            return
        if self.protocol.request_unfinished() and self.inner.can_write_eof():
            self.inner.write_eof()  # after what is buffered: the answer, then FIN
            self.inner.resume_reading()
            self.protocol.start_lingering(self.inner)
            return
        self.inner.close()

    def is_closing(self) -> bool:
        return self.protocol.lingering or self.inner.is_closing()

    def abort(self) -> None:
        self.inner.abort()

    def write(self, data: bytes | bytearray | memoryview[int]) -> None:
        self.inner.write(data)

    def writelines(self, list_of_data: Any) -> None:
        self.inner.writelines(list_of_data)

    def write_eof(self) -> None:
        self.inner.write_eof()

    def can_write_eof(self) -> bool:
        return self.inner.can_write_eof()

    def get_write_buffer_size(self) -> int:
        return self.inner.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self.inner.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.inner.set_write_buffer_limits(high, low)

    def pause_reading(self) -> None:
        if not self.protocol.lingering:  # lingering reads on, to the end
            self.inner.pause_reading()

    def resume_reading(self) -> None:
        self.inner.resume_reading()

    def is_reading(self) -> bool:
        return self.inner.is_reading()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.inner.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.inner.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.inner.get_protocol()
