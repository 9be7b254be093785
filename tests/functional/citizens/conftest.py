"""Citizens as they use the service: a code from the counter, activation, sign-in, /me."""

from __future__ import annotations

from typing import Any

import httpx2 as httpx
import pytest
from fastapi.testclient import TestClient

from tests.functional.conftest import Counter

CITIZEN_PASSWORD = "plum blossom river 42"


class Unit:
    """An ID-using unit with its key (onboarded by the supervisor over HTTP)."""

    def __init__(
        self,
        counter: Counter,
        code: str,
        *,
        sector: str = "bank",
        purposes: tuple[str, ...] = ("account_opening",),
        name: str = "测试银行",
    ) -> None:
        r = counter.post(
            "/api/v1/units",
            {"code": code, "name": name, "sector": sector, "purposes": list(purposes), "rate_limit": 1000},
            as_="supervisor",
        )
        assert r.status_code == 201, r.text
        self.counter = counter
        self.code = code
        self.name = name
        self.purpose = purposes[0]
        self.key = r.json()["api_key"]
        sync(counter.client)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def verify(self, card: dict[str, Any], client: TestClient | None = None, **over: Any) -> httpx.Response:
        body = {
            "id_number": card["id_number"],
            "name": card["name"],
            "issued_on": card["issued_on"],
            "expires_on": card["expires_on"],
            "purpose": self.purpose,
            "operator": "teller-7",
            **over,
        }
        return (client or self.counter.client).post("/api/v1/verify", json=body, headers=self.headers)


def sync(client: TestClient) -> None:
    """This worker's index and key ring catch up with the database now (the follower polls every 20 ms)."""
    client.app.state.verifier.follower.poll()  # type: ignore[attr-defined]


def flush(client: TestClient) -> None:
    """Write the checks answered so far to the database now (the log writes within a second)."""
    client.app.state.verifier.log.flush()  # type: ignore[attr-defined]


class Citizen:
    def __init__(self, client: TestClient, id_number: str, token: str, card: dict[str, Any]) -> None:
        self.client = client
        self.id_number = id_number
        self.token = token
        self.card = card

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def get(self, path: str, **params: Any) -> httpx.Response:
        return self.client.get(f"/api/v1{path}", headers=self.headers, params=params)

    def post(self, path: str, body: dict[str, Any] | None = None, **headers: str) -> httpx.Response:
        return self.client.post(f"/api/v1{path}", json=body, headers={**self.headers, **headers})

    def put(self, path: str, body: dict[str, Any]) -> httpx.Response:
        return self.client.put(f"/api/v1{path}", json=body, headers=self.headers)


class Citizens:
    def __init__(self, counter: Counter) -> None:
        self.counter = counter
        self.client = counter.client

    def code(self, id_number: str, *, as_: str = "clerk_a") -> str:
        r = self.counter.post(f"/api/v1/persons/{id_number}/citizen-activation", {}, as_=as_)
        assert r.status_code == 201, r.text
        return str(r.json()["activation_code"])

    def activate(self, id_number: str, code: str, password: str = CITIZEN_PASSWORD) -> httpx.Response:
        return self.client.post(
            "/api/v1/citizen/activate",
            json={"id_number": id_number, "activation_code": code, "password": password},
        )

    def sign_in(
        self, id_number: str, password: str = CITIZEN_PASSWORD, otp: str | None = None
    ) -> httpx.Response:
        body = {"id_number": id_number, "password": password}
        if otp is not None:
            body["otp"] = otp
        return self.client.post("/api/v1/citizen/token", json=body)

    def new(self, name: str = "张三", **card: Any) -> Citizen:
        """A registered person with a valid card (issued today) and an activated account."""
        number = self.counter.person(name=name)
        issued = self.counter.card(number, **card)
        r = self.activate(number, self.code(number))
        assert r.status_code == 201, r.text
        r = self.sign_in(number)
        assert r.status_code == 200, r.text
        return Citizen(self.client, number, r.json()["access_token"], issued)


@pytest.fixture
def citizens(counter: Counter) -> Citizens:
    return Citizens(counter)
