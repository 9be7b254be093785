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
"""

from __future__ import annotations

import json
import os
import re
import time

from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from idguard import logs
from idguard.api.errors import PROBLEM, problem_body
from idguard.ops.metrics import UNMATCHED, Metrics

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
    return os.urandom(16).hex()  # as random as a uuid4, at a fraction of its cost


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
