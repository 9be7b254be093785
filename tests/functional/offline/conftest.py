"""Units granted `offline`, and the reader's HTTP transport over the test client."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx2 as httpx
from fastapi.testclient import TestClient

from idguard.offline.reader import Reader, Transport
from tests.functional.conftest import Counter


class OfflineUnit:
    """A unit onboarded by the supervisor, granted `offline` unless told otherwise."""

    def __init__(self, counter: Counter, code: str = "RAIL-1", *, offline: bool = True) -> None:
        self.counter = counter
        self.code = code
        r = counter.post(
            "/api/v1/units",
            {"code": code, "name": "铁路局", "sector": "railway", "purposes": ["ticketing"]},
            as_="supervisor",
        )
        assert r.status_code == 201, r.text
        self.key = str(r.json()["api_key"])
        if offline:
            self.grant(True)

    def grant(self, offline: bool) -> None:
        r = self.counter.client.put(
            f"/api/v1/units/{self.code}/offline",
            json={"offline": offline},
            headers=self.counter_auth("supervisor"),
        )
        assert r.status_code == 200, r.text
        assert r.json() == {"unit_code": self.code, "offline": offline}

    @staticmethod
    def counter_auth(who: str) -> dict[str, str]:
        from tests.factories import auth

        return auth(who)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def get(self, path: str, **params: Any) -> httpx.Response:
        return self.counter.client.get(path, headers=self.headers, params=params)

    def reader(self, directory: Path) -> Reader:
        return Reader(directory)


def transport(client: TestClient) -> Transport:
    """The reader's transport through the test client (the app in this process)."""

    def send(
        method: str, url: str, headers: Mapping[str, str], body: bytes | None
    ) -> tuple[int, Mapping[str, str], bytes]:
        r = client.request(method, url, headers=dict(headers), content=body)
        return r.status_code, {k.lower(): v for k, v in r.headers.items()}, r.content

    return send
