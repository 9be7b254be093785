"""The request guard: what every request must satisfy before it is routed, whoever sends it.

A pure ASGI middleware (app.py installs it in front of every route, the verify fast lanes
included) that answers, before any route, dependency or login runs:

- 431 when the request line and headers together exceed MAX_HEAD_BYTES. A head that arrives in
  pieces is stopped earlier by the server (`idguard serve` runs uvicorn with api/server.py's
  protocol, which answers the same 431);
- 413 when the body exceeds the path's limit: refused from the Content-Length before reading,
  and otherwise counted while reading (no Content-Length, chunked, or a body longer than said),
  so at most the limit plus one chunk is ever held;
- 422 naming each field whose text the registry cannot store (core/text.py: a NUL, or an
  unpaired surrogate), in the JSON body (`finder.name`, `items.3.operator`), a form, the query
  (`name`, `unit`; also percent-encoded bytes that are not UTF-8), a path parameter (`id_number`) or a header (`idempotency-key`). The answer is
  the problem document of every 422 (api/errors.py), and the same on SQLite and PostgreSQL;
- 415 for a body in a media type the route's OpenAPI operation does not take (a JSON body is
  never refused here), and 400 naming a query parameter the operation does not declare (a
  misspelt cursor must not silently restart a listing at its first page).

The body is read here, in full up to its limit, and handed on as one message. The check costs
four byte scans (memchr) of a body without a backslash, a NUL, a 0xED byte or a `%` (nearly any
JSON a client writes with non-ASCII text left as UTF-8), and one regular-expression search of a
body with backslash escapes; only a body with a `\\u0000` or `\\udXXX` escape, a NUL or a
UTF-8-encoded surrogate (or a form with %00) is parsed, to name the fields, or to find it
harmless (`\\\\u0000` is a backslash and "u0000"; `\\ud83d\\ude00` an emoji).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import chain
from typing import Any
from urllib.parse import parse_qsl

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from idguard.api.errors import field_name, invalid_request, problem
from idguard.core.text import INVALID_UTF8_FAULT, NUL_FAULT, Path, fault, faults

log = logging.getLogger("idguard.api")

# The request line and headers. A legitimate request's are under 2 KiB (a staff token is about
# 400 bytes); 16 KiB is also h11's default and what most servers and proxies allow.
MAX_HEAD_BYTES = 16 * 1024
# The body of every path without a limit of its own. The largest such request is a card issue
# with two fingerprints (2 x 21,848 base64 characters, about 45 KB); 1 MiB leaves 20 times that.
MAX_BODY_BYTES = 1024 * 1024

# \u0000, and any \uD800..\uDFFF escape (a pair is harmless, but pairs are rare enough to parse).
_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")
_RAW_SURROGATE = re.compile(rb"\xed[\xa0-\xbf]")  # a surrogate encoded as UTF-8 (json.loads takes it)
_NO_TYPE = b"(none)"  # a body sent without a Content-Type
_FORMS = (b"application/x-www-form-urlencoded", b"multipart/form-data")


def json_needs_a_look(body: bytes) -> bool:
    """Whether the guard would parse this JSON body to look for text it refuses (a \\u0000 or
    surrogate escape, a NUL, a UTF-8-encoded surrogate): a body for which this is False passes
    the guard's text check unread (what a front door answering before the guard relies on)."""
    return (
        (b"\\" in body and _ESCAPE.search(body) is not None)
        or b"\x00" in body
        or (b"\xed" in body and _RAW_SURROGATE.search(body) is not None)
    )


class RequestGuard:
    def __init__(
        self,
        app: ASGIApp,
        *,
        body_limits: Mapping[str, int] | None = None,
        max_body: int = MAX_BODY_BYTES,
        max_head: int = MAX_HEAD_BYTES,
    ) -> None:
        self.app = app
        self.body_limits = dict(body_limits or {})
        self.max_body = max_body
        self.max_head = max_head
        self._paths: list[re.Pattern[str]] | None = None
        self._operations: _Operations | None = None

    def _templates(self, scope: Scope) -> list[re.Pattern[str]]:
        """The app's route templates as expressions, from its OpenAPI document (built once, when
        a path first needs naming: FastAPI's own route matching is not public)."""
        if self._paths is None:
            app: Any = scope.get("app")
            document: dict[str, Any] = app.openapi() if hasattr(app, "openapi") else {}
            self._paths = [compile_path(template)[0] for template in document.get("paths", {})]
        return self._paths

    def _operation(self, scope: Scope, path: str, method: str) -> _Operation | None:
        """What the OpenAPI document declares for this request's operation (None for a path it
        does not document, such as the console's pages)."""
        if self._operations is None:
            app: Any = scope.get("app")
            self._operations = _Operations(app.openapi() if hasattr(app, "openapi") else {})
        return self._operations.find(path, method)

    def _shape_fault(self, scope: Scope, flat: bytes, query: bytes, body: bytes) -> JSONResponse | None:
        """415 for a body that is not in a media type the route takes (a JSON body always passes:
        the hot path pays one header search); 400 naming query parameters the route does not take."""
        content_type = b""
        if body:
            at = _header(flat, b"content-type")
            content_type = at.split(b";", 1)[0].strip().lower() if at is not None else _NO_TYPE
            if content_type == b"application/json" or content_type.endswith(b"+json"):
                content_type = b""  # fine for any route with a body
        if not content_type and not query:
            return None
        operation = self._operation(scope, scope["path"], scope["method"])
        if operation is None:
            return None
        if content_type and operation.media and content_type.decode("latin-1") not in operation.media:
            takes = ", ".join(sorted(operation.media))
            sent = "no Content-Type" if content_type is _NO_TYPE else content_type.decode("latin-1")
            return problem(
                415,
                "Unsupported media type",
                f"this route takes {takes}; the request sent {sent}",
                code="unsupported_media_type",
                param="content-type",
            )
        if query:
            names = dict.fromkeys(
                name for name, _ in parse_qsl(query.decode("latin-1"), keep_blank_values=True)
            )
            unknown = [name for name in names if name not in operation.query]
            if unknown:
                takes = ", ".join(sorted(operation.query)) or "no query parameters"
                return problem(
                    400,
                    "Unknown query parameter",
                    f"unknown query parameter(s): {', '.join(unknown)}; this route takes {takes}",
                    code="unknown_parameter",
                    param=unknown[0],
                )
        return None

    def _path_faults(self, scope: Scope, path: str) -> list[dict[str, str]]:
        why = fault(path)
        if why is None:
            return []
        # Name the path parameter, as a 422 for any other fault of it would: the parameters that
        # `fault` refuses, of the first route template the path matches.
        for template in self._templates(scope):
            match = template.match(path)
            if match is not None:
                named = [
                    _error((name,), bad)
                    for name, value in match.groupdict().items()
                    if (bad := fault(value)) is not None
                ]
                if named:
                    return named
        return [{"field": "path", "detail": why}]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Every request passes here, the verify hot path included: a few C-level operations
        # (one join, memchr scans) for a request with nothing to refuse.
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        # "name\nvalue\nname\nvalue": a header value holds no line break (servers refuse one).
        flat = b"\n".join(chain.from_iterable(headers))
        path: str = scope["path"]
        query: bytes = scope["query_string"]
        head = len(flat) + 2 * len(headers) + 1 + len(query) + len(scope.get("raw_path") or path)
        if head > self.max_head:
            log.warning("request head of %d bytes refused (limit %d)", head, self.max_head)
            await _close_with(_head_too_large(self.max_head), scope, receive, send)
            return
        errors: list[dict[str, str]] = []
        if b"\x00" in flat:
            errors = [_header_fault(name) for name, value in headers if b"\x00" in name + value]
        if "\x00" in path or not path.isascii():
            errors += self._path_faults(scope, path)
        if query and (b"%" in query or b"\x00" in query):
            errors += _query_faults(query)
        limit = self.body_limits.get(path, self.max_body)
        if _declared(flat) > limit:  # said too long: refused before a byte of it is read
            await _close_with(_too_large(limit), scope, receive, send)
            return
        message = await receive()  # a request without a body has one empty message
        if message["type"] != "http.request":  # the client left: nobody to answer
            return
        body: bytes = message.get("body", b"")
        if message.get("more_body", False):  # a body in pieces: counted as they come
            whole = await _read_rest(body, limit, receive)
            if whole is None:
                return
            body = whole
            message = {"type": "http.request", "body": body, "more_body": False}
        if len(body) > limit:
            await _close_with(_too_large(limit), scope, receive, send)
            return
        if b"\\" in body or b"\x00" in body or b"\xed" in body or b"%" in body:  # four memchr
            errors += await _body_faults(scope, body)
        if errors:
            await invalid_request(errors)(scope, receive, send)
            return
        refusal = self._shape_fault(scope, flat, query, body)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self.app(scope, _replay(message, receive), send)


@dataclass(frozen=True, slots=True)
class _Operation:
    media: frozenset[str]  # the body's media types the route takes (empty: it declares no body)
    query: frozenset[str]  # the query parameters it takes


class _Operations:
    """The OpenAPI document's operations by path: a dict for fixed paths (the verify routes), the
    compiled templates for the rest."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.fixed: dict[str, dict[str, _Operation]] = {}
        self.templated: list[tuple[re.Pattern[str], dict[str, _Operation]]] = []
        for template, item in document.get("paths", {}).items():
            methods = {
                method.upper(): _Operation(
                    frozenset((operation.get("requestBody") or {}).get("content", {})),
                    frozenset(p["name"] for p in operation.get("parameters", []) if p.get("in") == "query"),
                )
                for method, operation in item.items()
                if isinstance(operation, dict)
            }
            if "{" in template:
                self.templated.append((compile_path(template)[0], methods))
            else:
                self.fixed[template] = methods

    def find(self, path: str, method: str) -> _Operation | None:
        methods = self.fixed.get(path)
        if methods is None:
            methods = next((m for pattern, m in self.templated if pattern.match(path)), None)
        return None if methods is None else methods.get(method)


def _header(flat: bytes, name: bytes) -> bytes | None:
    """A header's value from the headers joined as "name\nvalue\n…" (names are lower case)."""
    key = name + b"\n"
    at = flat.find(key)
    while at > 0 and flat[at - 1] != 10:  # inside another header's value: look further
        at = flat.find(key, at + 1)
    if at < 0:
        return None
    start = at + len(key)
    end = flat.find(b"\n", start)
    return flat[start : end if end >= 0 else None]


def _declared(flat: bytes) -> int:
    """The body length a Content-Length header says, from the headers joined as "name\nvalue\n…"
    (0 if none, or not a number: the server refuses those, h11 does, and a body is counted
    all the same). One search of a few hundred bytes."""
    at = flat.find(b"content-length\n")
    while at > 0 and flat[at - 1] != 10:  # inside another header's value: look further
        at = flat.find(b"content-length\n", at + 1)
    if at < 0:
        return 0
    start = at + len(b"content-length\n")
    end = flat.find(b"\n", start)
    try:
        return int(flat[start : end if end >= 0 else None])
    except ValueError:
        return 0


def _too_large(limit: int) -> JSONResponse:
    return problem(413, "Content too large", f"the request body exceeds {limit} bytes for this path")


def _head_too_large(limit: int) -> JSONResponse:
    return problem(
        431, "Request header fields too large", f"the request line and headers exceed {limit} bytes"
    )


async def _read_rest(first: bytes, limit: int, receive: Receive) -> bytes | None:
    """The body from `first` on, read until its end or until it passes `limit` (then what was
    read, longer than the limit); None if the client left."""
    chunks = [first]
    read = len(first)
    while read <= limit:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk: bytes = message.get("body", b"")
        chunks.append(chunk)
        read += len(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _close_with(response: JSONResponse, scope: Scope, receive: Receive, send: Send) -> None:
    """Answer and have the server close the connection: the rest of the request is not read."""
    response.headers["Connection"] = "close"
    await response(scope, receive, send)


def _replay(message: Message, receive: Receive) -> Receive:
    """`receive` for the app: the body read here as one message, then the server's (for the
    disconnect a streaming response waits for)."""
    pending = [message]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay


def _error(loc: Path, detail: str) -> dict[str, str]:
    return {"field": field_name(loc), "code": "invalid_text", "detail": detail}


def _header_fault(name: bytes) -> dict[str, str]:
    header = name.decode("latin-1")
    return {
        "field": header if "\x00" not in header else "headers",
        "code": "invalid_text",
        "detail": NUL_FAULT,
    }


def _query_faults(query: bytes) -> list[dict[str, str]]:
    errors = []
    # Percent-decoded to bytes (as latin-1), then held to UTF-8 strictly: Starlette would decode
    # invalid UTF-8 (a surrogate's bytes, %ED%A0%80, among them) into U+FFFD and search for that.
    for raw_name, raw_value in parse_qsl(query.decode("latin-1"), keep_blank_values=True, encoding="latin-1"):
        name, value = _utf8(raw_name), _utf8(raw_value)
        if name is None or fault(name) is not None:
            errors.append(_error(("query",), "a parameter name must be UTF-8 text without NUL"))
        elif value is None:
            errors.append(_error((name,), INVALID_UTF8_FAULT))
        elif (why := fault(value)) is not None:
            errors.append(_error((name,), why))
    return errors


def _utf8(latin: str) -> str | None:
    try:
        return latin.encode("latin-1").decode("utf-8")
    except UnicodeDecodeError:
        return None


async def _body_faults(scope: Scope, body: bytes) -> list[dict[str, str]]:
    """The fields of a body `fault` refuses. Parsed only when it may hold one: a JSON body with a
    \\u0000 or surrogate escape, a NUL or a UTF-8-encoded surrogate; a form (a staff login) with
    %00 or a NUL (Starlette decodes a form's invalid UTF-8 as U+FFFD: it cannot hold surrogates)."""
    content_type = next((value for name, value in scope["headers"] if name == b"content-type"), b"")
    if content_type.startswith(_FORMS):
        return await _form_faults(scope, body) if b"%00" in body or b"\x00" in body else []
    if json_needs_a_look(body):
        return _json_faults(body)
    return []


def _json_faults(body: bytes) -> list[dict[str, str]]:
    """The fields of a suspect body that `fault` refuses, parsed as the routes parse JSON (any
    body but a form); one that does not parse is the routes' to answer, as without the guard."""
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return []
    return [_error(path, why) for path, why in faults(value)]


async def _form_faults(scope: Scope, body: bytes) -> list[dict[str, str]]:
    """The fields of a suspect form, parsed as the routes parse it (Starlette's parser)."""
    try:
        form = await Request(scope, _replay({"type": "http.request", "body": body}, _no_more)).form()
    except Exception:  # a malformed form is the route's to answer, as it would without us
        return []
    errors = []
    for name, value in form.multi_items():
        if fault(name) is not None:
            errors.append(_error(("body",), "a field name must not contain NUL"))
        elif not isinstance(value, UploadFile) and (why := fault(value)) is not None:
            errors.append(_error((name,), why))
    await form.close()
    return errors


async def _no_more() -> Message:
    return {"type": "http.disconnect"}
