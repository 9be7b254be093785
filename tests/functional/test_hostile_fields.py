"""Every text field of every route, held to the same rules: generated, not chosen by hand.

The requests come from the authorization table (test_authorization.TABLE): one minimal, valid
request per operation, sent by a caller the table allows. Each text value in its JSON body and
query is replaced, one at a time, by hostile text, and every JSON body is also sent nested far too
deep. A route added to the app gets its row there, and so its fields are tried here too.

- a NUL or an unpaired surrogate: 422, naming that field (in a batch to verify: that item's error) (the registry cannot store either, and
  PostgreSQL fails on a NUL — the same answer on both databases);
- a million characters in a body: refused (413 or 422), never stored; ten thousand in a query: never
  a server error;
- a body nested 100,000 deep: a 4xx, not a crash of the parser.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

from fastapi.testclient import TestClient

from tests.functional.test_authorization import CALLERS, OK, TABLE, Request, World
from tests.functional.test_authorization import world as world  # the fixture, registered here too

NUL = "a\x00b"
LONE = "a\ud800b"
HUGE = "a" * 1_000_000
LONG = "a" * 10_000  # in a query: long, yet within the head limit (a longer head is a 431, tested apart)
# Who sends each operation: the first caller in this order that the table allows.
PREFERRED = ("admin", "supervisor", "clerk", "unit", "anonymous", "auditor")


def _caller(expected: tuple[object, ...]) -> str:
    allowed = {caller for caller, e in zip(CALLERS, expected, strict=True) if e == OK}
    return next(c for c in PREFERRED if c in allowed)


def _text_leaves(value: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    if isinstance(value, str):
        yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _text_leaves(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _text_leaves(item, (*path, i))


def _replaced(value: Any, path: tuple[str | int, ...], text: str) -> Any:
    if not path:
        return text
    copy = json.loads(json.dumps(value))
    target = copy
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = text
    return copy


def _variants(request: Request) -> Iterator[tuple[str, str, Request]]:
    """(field name as a 422 names it, the hostile text, the request with that one field replaced)."""
    for path in _text_leaves(request.body):
        name = ".".join(str(p) for p in path)
        for text in (NUL, LONE, HUGE):
            yield name, text, Request(request.path, request.params, _replaced(request.body, path, text))
    for key, value in (request.params or {}).items():
        if isinstance(value, str):
            for text in (NUL, LONE, LONG):
                yield key, text, Request(request.path, {**(request.params or {}), key: text}, request.body)


def _send(client: TestClient, method: str, request: Request, headers: dict[str, str]) -> Any:
    # Encoded here, not by the client: a lone surrogate is sent as a JSON escape in a body and as
    # its (invalid) UTF-8 bytes, percent-encoded, in a query.
    query = urlencode({k: str(v).encode("utf-8", "surrogatepass") for k, v in (request.params or {}).items()})
    url = f"{request.path}?{query}" if query else request.path
    content = None if request.body is None else json.dumps(request.body)
    headers = {**headers, "Content-Type": "application/json"} if content is not None else headers
    if request.path.endswith("/stream"):
        with client.stream(method, url, headers=headers) as r:
            return r
    return client.request(method, url, content=content, headers=headers)


def test_hostile_text_in_every_field_of_every_route(client: TestClient, world: World) -> None:
    wrong: list[str] = []
    tried = 0
    for (method, path), entry in sorted(TABLE.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        request = entry.request(world)
        caller = _caller(entry.expected)
        headers = {"Authorization": world.keys[caller]} if caller in world.keys else {}
        for field, text, hostile in _variants(request):
            tried += 1
            r = _send(client, method, hostile, headers)
            where = f"{method} {path} as {caller}, field {field}"
            if text is HUGE:
                if r.status_code == 200 and path == "/api/v1/verify/batch":
                    refused = r.json()["results"][0].get("error", {}).get("status") == 422
                    if not refused:
                        wrong.append(f"{where} = 1,000,000 characters: the item was not refused")
                elif r.status_code not in (413, 422):
                    wrong.append(f"{where} = 1,000,000 characters: {r.status_code}, expected 413 or 422")
                continue
            if text is LONG:
                if r.status_code >= 500:
                    wrong.append(f"{where} = 10,000 characters: {r.status_code}")
                continue
            if r.status_code == 200 and path == "/api/v1/verify/batch":  # item errors, per item
                named = {e["field"] for e in r.json()["results"][0].get("error", {}).get("errors", [])}
                field = field.removeprefix("items.0.")
            elif r.status_code != 422:
                wrong.append(f"{where} with NUL/surrogate: {r.status_code}, expected 422")
                continue
            else:
                named = {e["field"] for e in r.json().get("errors", [])}
            if field not in named:
                wrong.append(f"{where}: the 422 names {sorted(named)}, not the field")
    assert tried > 100, "the table's requests should hold well over a hundred text values"
    assert wrong == [], "\n".join(wrong)


def test_deeply_nested_body_on_every_route_with_a_body(client: TestClient, world: World) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    wrong: list[str] = []
    for (method, path), entry in sorted(TABLE.items()):
        request = entry.request(world)
        if request.body is None:
            continue
        caller = _caller(entry.expected)
        headers = {"Content-Type": "application/json"}
        if caller in world.keys:
            headers["Authorization"] = world.keys[caller]
        r = client.request(method, request.path, params=request.params, content=deep, headers=headers)
        if not 400 <= r.status_code < 500:
            wrong.append(f"{method} {path}: {r.status_code}")
    assert wrong == []
