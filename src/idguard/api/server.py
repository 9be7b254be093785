"""How `idguard serve` runs uvicorn: its HTTP/1.1 protocol, with the request guard's limits
answered properly at the connection level too.

The default is uvicorn's httptools protocol on uvloop (`GuardedHttpToolsProtocol`): measured
against uvicorn's pure-Python h11 parser on asyncio's loop it serves about twice the requests a
second (bench/floor.py, README "Performance"); `idguard serve --http h11` keeps the h11 protocol
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
from typing import Any, cast

import h11
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

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


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with GuardedH11Protocol's answers: 431 for a head past
    MAX_HEAD_BYTES (counted as the parser hands it over, whether it came in one read or many),
    and a lingering close of a connection whose request was not read to its end."""

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

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head = 0
        self._in_message = True

    def on_url(self, url: bytes) -> None:
        self._head += len(url)
        if self._head > MAX_HEAD_BYTES:
            raise _HeadTooLarge
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head += len(name) + len(value) + 4  # "name: value\r\n"
        if self._head > MAX_HEAD_BYTES:
            raise _HeadTooLarge
        super().on_header(name, value)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_message = False

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
