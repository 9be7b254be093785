"""In front of every route (outermost of the app's middleware): the request id, the security
headers, and the request's count and latency.

- `X-Request-Id`: a client's own id is kept when it is sane (1-64 of A-Z a-z 0-9 . _ : -, and
  not shaped like an id number, which would then sit unmasked in every log line), else one is
  made (32 hex digits). It is echoed in the answer and set in `logs.request_id` for every line
  logged while the request is served (uvicorn's access line included).
- Security headers on every answer, never replacing one the route set (the console's pages set
  their own): `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer`, and outside
  development `Strict-Transport-Security` (browsers only heed it over HTTPS, which the reverse
  proxy terminates).
- The request is counted by method, route TEMPLATE (`/api/v1/persons/{id_number}`, never the raw
  path) and status, and its latency observed, after the answer has left.

A route that raises gets its 500 answered here, as a problem document with these headers (the
exception then goes on up, to be logged as before).

`IdguardAPI` (the app `create_app` builds) puts `FrontDoor` in front of its whole stack: a plain
single check (`POST /api/v1/verify`) is answered there by verification's `front_door` with what
this middleware adds (request id, security headers, the count and latency), without the ~10
ASGI layers, the routing and the dependency solving FastAPI spends on every request. Anything
else, and any single check it does not answer, goes on to the stack as it came.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from itertools import chain
from typing import Any

from fastapi import FastAPI
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from idguard import logs
from idguard.api.errors import PROBLEM, problem_body
from idguard.api.guard import MAX_BODY_BYTES, MAX_HEAD_BYTES, json_needs_a_look
from idguard.api.server import TELEMETRY_OFF
from idguard.core.clock import Clock
from idguard.core.randomness import token_bytes
from idguard.ops.metrics import UNMATCHED, Metrics
from idguard.verification.routes import verify
from idguard.verification.runtime.checklog import NOT_RECORDED, LogFull
from idguard.verification.verifier import Verifier

REQUEST_ID = b"x-request-id"
_SANE_ID = re.compile(rb"[A-Za-z0-9._:-]{1,64}")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
HSTS = b"max-age=63072000; includeSubDomains"
_500 = json.dumps(
    problem_body(500, "Internal server error", "the server failed to answer; the error is logged"),
    separators=(",", ":"),
).encode()


def request_id(headers: list[tuple[bytes, bytes]]) -> str:
    """The client's X-Request-Id when it is sane, else a new one."""
    for name, value in headers:
        if name == REQUEST_ID:
            if _SANE_ID.fullmatch(value):
                text = value.decode("ascii")
                if logs.redact(text) == text:
                    return text
            break
    return token_bytes(16).hex()  # as random as a uuid4, at a fraction of its cost


def route_label(scope: Scope) -> str:
    """The template of the route that took the request (UNMATCHED when none did)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if not isinstance(path, str):
        return UNMATCHED
    if isinstance(route, Mount):
        return f"{path}/{{path:path}}"
    return path


class OpsMiddleware:
    def __init__(self, app: ASGIApp, *, metrics: Metrics, hsts: bool) -> None:
        self.app = app
        self.metrics = metrics
        self.fixed: list[tuple[bytes, bytes]] = [
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
        ]
        if hsts:
            self.fixed.append((b"strict-transport-security", HSTS))

    def _headers(self, headers: list[tuple[bytes, bytes]], rid: bytes) -> list[tuple[bytes, bytes]]:
        present = {name.lower() for name, _ in headers}
        out = list(headers)
        if REQUEST_ID not in present:
            out.append((REQUEST_ID, rid))
        out.extend(item for item in self.fixed if item[0] not in present)
        return out

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        rid = request_id(scope["headers"])
        token = logs.request_id.set(rid)
        rid_bytes = rid.encode()
        status = 0

        async def answer(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = self._headers(list(message.get("headers", ())), rid_bytes)
            await send(message)

        try:
            await self.app(scope, receive, answer)
        except Exception:
            if status == 0:  # nothing sent yet: answer the 500 with the headers every answer has
                await answer(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [
                            (b"content-type", PROBLEM.encode()),
                            (b"content-length", str(len(_500)).encode()),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": _500})
            raise
        finally:
            method = scope["method"]
            self.metrics.observe(
                method if method in _METHODS else "other",
                route_label(scope),
                status or 500,
                time.perf_counter() - started,
            )
            logs.request_id.reset(token)


VERIFY = "/api/v1/verify"


class FrontDoor:
    """In front of the app's whole middleware stack: answers plain single checks (see the module's
    docstring); every other request goes on to `app` untouched.

    It takes a request only when the request guard (api/guard.py) would pass it without a
    word: no query, a head within MAX_HEAD_BYTES without a NUL, a body that came in one message
    within MAX_BODY_BYTES with no text the guard looks at closer (`json_needs_a_look`; the
    content type is JSON, which `front_door_check` requires). A request it reads but does not
    answer goes on with its body replayed.

    The HTTP protocol of `idguard serve` (api/server.py) calls `single_check` itself, before any
    ASGI cycle: the same check and the same answer, without the task, the scope and the two
    ASGI messages per request (issue 14)."""

    path = VERIFY
    max_body = MAX_BODY_BYTES

    def __init__(self, app: ASGIApp, *, verifier: Verifier, clock: Clock, ops: OpsMiddleware) -> None:
        self.app = app
        self.verifier = verifier
        self.clock = clock
        self.metrics = ops.metrics
        self.fixed = ops.fixed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["path"] != VERIFY
            or scope["method"] != "POST"
            or scope["query_string"]
            or not _head_passes(scope["headers"], scope.get("raw_path") or VERIFY.encode())
        ):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        message = await receive()
        if message["type"] != "http.request":  # the client left: nobody to answer
            return
        body: bytes = message.get("body", b"")
        made = None if message.get("more_body", False) else self.single_check(scope["headers"], body)
        if made is None:  # not answered here: the stack answers (and counts) it
            await self.app(scope, _replay(message, receive), send)
            return
        token = logs.request_id.set(made.rid)
        status = 0
        try:
            if made.pending is not None:
                with contextlib.suppress(Exception):  # a failed record: `response` says 503
                    await made.pending
            status, out, text = made.response()
            await send({"type": "http.response.start", "status": status, "headers": out})
            await send({"type": "http.response.body", "body": text})
        except Exception:
            if status == 0:  # nothing sent yet: the 500 every answer of ours would be
                status = 500
                await send({"type": "http.response.start", "status": 500, "headers": made.failed()})
                await send({"type": "http.response.body", "body": _500})
            raise
        finally:
            logs.request_id.reset(token)
            self.observe(status or 500, time.perf_counter() - started)

    def single_check(
        self,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> SingleCheck | None:
        """The check of a plain single check whose head passed (`_head_passes`), made now; None
        when the request is the app's to answer (nothing has changed then). Its answer may leave
        once `pending` (None when nothing is left to wait for) is done. `loop`: the running loop,
        when the caller knows it."""
        if len(body) > MAX_BODY_BYTES or json_needs_a_look(body):
            return None
        content_type = authorization = b""
        for name, value in headers:
            if name == b"content-type":
                content_type = content_type or value
            elif name == b"authorization":
                authorization = authorization or value
        rid = request_id(headers)
        token = logs.request_id.set(rid)  # for whatever is logged while the check is made
        try:
            made = verify.front_door_check(self.verifier, self.clock.now(), content_type, authorization, body)
            if made is None:
                return None
            answer, ticket = made
            try:
                pending = self.verifier.log.recorded_soon(ticket, loop)
            except LogFull as exc:
                return SingleCheck(rid, verify.unavailable(str(exc)), None, self.fixed)
            return SingleCheck(rid, answer, pending, self.fixed)
        finally:
            logs.request_id.reset(token)

    def head_passes(self, headers: list[tuple[bytes, bytes]], raw_path: bytes) -> bool:
        """Whether a single check's head is one this door may take (see the class docstring)."""
        return _head_passes(headers, raw_path)

    def observe(self, status: int, seconds: float) -> None:
        """Count an answered single check, as the ops middleware counts every other request."""
        self.metrics.observe("POST", VERIFY, status, seconds)


def _head_passes(headers: list[tuple[bytes, bytes]], raw_path: bytes) -> bool:
    """No NUL anywhere in the headers, and the head within MAX_HEAD_BYTES (the guard's limits)."""
    flat = b"\n".join(chain.from_iterable(headers))
    return b"\x00" not in flat and len(flat) + 2 * len(headers) + 1 + len(raw_path) <= MAX_HEAD_BYTES


class SingleCheck:
    """A single check made at the front door: its answer, to leave once `pending` is done."""

    __slots__ = ("answer", "fixed", "pending", "rid")

    def __init__(
        self,
        rid: str,
        answer: verify.Answer,
        pending: asyncio.Future[None] | None,
        fixed: list[tuple[bytes, bytes]],
    ) -> None:
        self.rid = rid
        self.answer = answer
        self.pending = pending
        self.fixed = fixed

    def response(self) -> verify.Answer:
        """Status, headers (the request id and the security headers added) and body to send, once
        `pending` is done: the check's answer, or the 503 of a check whose record failed."""
        pending = self.pending
        if pending is not None and (pending.cancelled() or pending.exception() is not None):
            status, headers, body = verify.unavailable(NOT_RECORDED)
        else:
            status, headers, body = self.answer
        return status, [*headers, (REQUEST_ID, self.rid.encode()), *self.fixed], body

    def failed(self) -> list[tuple[bytes, bytes]]:
        """The headers of the 500 answered when sending the answer itself failed."""
        out = [(b"content-type", PROBLEM.encode()), (b"content-length", str(len(_500)).encode())]
        return [*out, (REQUEST_ID, self.rid.encode()), *self.fixed]


def _replay(message: Message, receive: Receive) -> Receive:
    """`receive` for the stack: the message read here, then the server's."""
    pending = [message]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay


class IdguardAPI(FastAPI):
    """FastAPI with `FrontDoor` in front of its middleware stack, built (as FastAPI builds its
    stack) at the first request, once every feature has installed itself: it needs the
    verifier, the clock and the ops middleware's metrics and headers. FastAPI's native
    OpenTelemetry is off (api/server.TELEMETRY_OFF)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("telemetry", TELEMETRY_OFF)
        super().__init__(**kwargs)

    def build_middleware_stack(self) -> ASGIApp:
        stack = super().build_middleware_stack()
        ops = _find(stack, OpsMiddleware)
        verifier: Any = getattr(self.state, "verifier", None)
        if ops is None or not isinstance(verifier, Verifier):
            return stack
        return FrontDoor(stack, verifier=verifier, clock=self.state.clock, ops=ops)


def _find(app: Any, kind: type[OpsMiddleware]) -> OpsMiddleware | None:
    """The middleware of `kind` in a built stack (each layer keeps the next as `.app`)."""
    for _ in range(50):
        if isinstance(app, kind):
            return app
        app = getattr(app, "app", None)
        if app is None:
            return None
    return None
