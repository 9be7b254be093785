"""The console as a browser without JavaScript sees it: pages, forms with their CSRF token, the
session cookie. Over https (the test settings are not development, so the cookie is Secure)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx2 as httpx
import pytest
from fastapi.testclient import TestClient

from idguard.app import create_app
from idguard.config import Settings
from idguard.core.clock import FixedClock
from tests.factories import PASSWORD
from tests.functional.conftest import Counter

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture
def web(settings: Settings, clock: FixedClock) -> Iterator[TestClient]:
    app = create_app(settings, clock=clock)
    with TestClient(app, base_url="https://testserver", follow_redirects=False) as client:
        yield client
    app.state.engine.dispose()


@pytest.fixture
def counter(web: TestClient) -> Counter:
    """The staff API on the same app, for setting the scene."""
    return Counter(web)


class Browser:
    """One person's browser: its cookie jar, and forms submitted with the page's CSRF token."""

    def __init__(self, web: TestClient) -> None:
        # A client of its own on the same app (already started): its own cookie jar.
        self.client = TestClient(web.app, base_url="https://testserver", follow_redirects=False)
        self.csrf = ""

    @property
    def cookies(self) -> httpx.Cookies:
        return self.client.cookies

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        r = self.client.get(path, **kwargs)
        self._keep(r)
        return r

    def post(
        self, path: str, data: dict[str, Any] | None = None, *, csrf: bool = True, **kwargs: Any
    ) -> httpx.Response:
        if not self.csrf:
            self.get("/console/login")
        fields = {"csrf": self.csrf, **(data or {})} if csrf else dict(data or {})
        r = self.client.post(path, data=fields, **kwargs)
        self._keep(r)
        return r

    def _keep(self, r: httpx.Response) -> None:
        found = _CSRF.search(r.text) if r.headers.get("content-type", "").startswith("text/html") else None
        if found:
            self.csrf = found.group(1)

    def sign_in(self, username: str, password: str = PASSWORD) -> httpx.Response:
        self.get("/console/login")
        r = self.post("/console/login", {"username": username, "password": password})
        assert r.status_code == 303, r.text
        assert r.headers["location"] == "/console"
        self.get("/console")
        return r

    def teller(self, key: str, operator: str = "teller-0042") -> httpx.Response:
        self.get("/unit/login")
        r = self.post("/unit/login", {"api_key": key, "operator": operator})
        assert r.status_code == 303, r.text
        self.get("/unit")
        return r


@pytest.fixture
def browser(web: TestClient) -> Browser:
    return Browser(web)
