"""Every answer carries a request id and the security headers, whoever answers it: a route, the
request guard's refusals, an unknown path, the console's pages (whose own headers stay), a
route that fails (500)."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from idguard.api.guard import MAX_HEAD_BYTES
from idguard.app import create_app
from idguard.config import Environment, Settings
from idguard.core.clock import FixedClock
from tests.factories import NOW, SECRET, auth, id_number

GENERATED = re.compile(r"[0-9a-f]{32}")


def assert_secure(r: httpx.Response, *, hsts: bool = True) -> None:
    assert r.headers.get_list("x-content-type-options") == ["nosniff"], r.headers
    assert r.headers.get_list("referrer-policy") == ["no-referrer"], r.headers
    if hsts:
        assert r.headers["strict-transport-security"] == "max-age=63072000; includeSubDomains"
    else:
        assert "strict-transport-security" not in r.headers
    assert len(r.headers.get_list("x-request-id")) == 1


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("GET", "/api/v1/health", {}, 200),
        ("GET", "/api/v1/persons/110105199001010012", {}, 401),
        ("GET", "/no/such/page", {}, 404),
        ("POST", "/api/v1/persons", {"content": b"{" * (2 * 1024 * 1024)}, 413),  # the guard
        ("GET", "/api/v1/health", {"headers": {"x-long": "a" * MAX_HEAD_BYTES}}, 431),  # the guard
        ("POST", "/api/v1/auth/token", {"json": {"username": "a\u0000", "password": "x"}}, 422),  # the guard
        ("GET", "/metrics", {}, 200),
    ],
)
def test_every_answer_has_the_headers(
    client: TestClient, method: str, path: str, kwargs: dict[str, object], status: int
) -> None:
    r = client.request(method, path, **kwargs)  # type: ignore[arg-type]
    assert r.status_code == status, r.text
    assert_secure(r)
    assert GENERATED.fullmatch(r.headers["x-request-id"])


def test_console_pages_keep_their_own_headers(client: TestClient) -> None:
    r = client.get("/")
    assert r.status_code == 200
    assert "default-src" in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY"
    assert_secure(r)  # nosniff and no-referrer once, not twice


def test_a_sane_request_id_is_echoed_and_anything_else_replaced(client: TestClient) -> None:
    for sane in ("abc-123", "7f3c9a1e.b2:retry_2", "x" * 64):
        r = client.get("/api/v1/health", headers={"X-Request-Id": sane})
        assert r.headers["x-request-id"] == sane
    for odd in (
        "",
        "has space",
        "x" * 65,
        "<script>",
        "café".encode(),
        id_number(NOW.date().replace(year=1990)),
    ):
        r = client.get("/api/v1/health", headers={"X-Request-Id": odd})  # type: ignore[dict-item]
        assert GENERATED.fullmatch(r.headers["x-request-id"]), odd
    ids = {client.get("/api/v1/health").headers["x-request-id"] for _ in range(5)}
    assert len(ids) == 5


def test_a_failing_route_answers_500_with_the_headers(settings: Settings, clock: FixedClock) -> None:
    app = create_app(settings, clock=clock)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("boom")

    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get("/boom", headers={"X-Request-Id": "req-500"})
        assert r.status_code == 500
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["status"] == 500
        assert r.headers["x-request-id"] == "req-500"
        assert_secure(r)
        r = client.get("/metrics", headers=auth("admin"))
        assert 'idguard_http_requests_total{method="GET",route="/boom",status="500"} 1.0' in r.text
    app.state.engine.dispose()


@pytest.fixture
def development(sqlite_template: Path, tmp_path: Path) -> Iterator[FastAPI]:
    path = tmp_path / "dev.db"
    shutil.copyfile(sqlite_template, path)
    settings = Settings(database_url=f"sqlite:///{path}", env=Environment.DEVELOPMENT, secret_key=SECRET)
    app = create_app(settings, clock=FixedClock(NOW))
    yield app
    app.state.engine.dispose()


def test_no_hsts_in_development(development: FastAPI) -> None:
    with TestClient(development) as client:
        assert_secure(client.get("/api/v1/health"), hsts=False)
