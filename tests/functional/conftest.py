"""A thin client for the staff API, so tests read as procedures at the counter."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx2 as httpx
import pytest
from fastapi.testclient import TestClient

from tests.factories import OFFICE_A, auth, id_number


class Counter:
    def __init__(self, client: TestClient) -> None:
        self.client = client

    def post(
        self, path: str, body: dict[str, Any], *, as_: str = "clerk_a", **headers: str
    ) -> httpx.Response:
        return self.client.post(path, json=body, headers={**auth(as_), **headers})

    def get(self, path: str, *, as_: str = "clerk_a", **params: Any) -> httpx.Response:
        return self.client.get(path, headers=auth(as_), params=params)

    def person(
        self,
        birth: dt.date = dt.date(1990, 5, 4),
        *,
        female: bool = False,
        name: str = "张三",
        office: str = OFFICE_A,
        as_: str = "clerk_a",
    ) -> str:
        number = id_number(birth, female=female)
        body = {
            "id_number": number,
            "name": name,
            "sex": "female" if female else "male",
            "ethnicity": "汉",
            "birth_date": birth.isoformat(),
            "address": "北京市朝阳区建国路1号",
            "hukou_office": office,
        }
        r = self.post("/api/v1/persons", body, as_=as_)
        assert r.status_code == 201, r.text
        return number

    def issue(
        self, number: str, kind: str = "first", *, office: str = OFFICE_A, as_: str = "clerk_a", **extra: Any
    ) -> httpx.Response:
        return self.post(
            f"/api/v1/persons/{number}/cards", {"kind": kind, "office": office, **extra}, as_=as_
        )

    def card(self, number: str, **kwargs: Any) -> dict[str, Any]:
        r = self.issue(number, **kwargs)
        assert r.status_code == 201, r.text
        return dict(r.json())

    def report(
        self,
        card: dict[str, Any],
        reason: str = "lost",
        *,
        office: str = OFFICE_A,
        applicant: str | None = None,
        as_: str = "clerk_a",
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> httpx.Response:
        body = {
            "card_id": card["card_id"],
            "reason": reason,
            "office": office,
            "applicant_id_number": applicant or card["id_number"],
            **extra,
        }
        return self.post("/api/v1/loss-reports", body, as_=as_, **(headers or {}))

    def cards(self, number: str) -> list[dict[str, Any]]:
        r = self.get(f"/api/v1/persons/{number}/cards", as_="auditor")
        assert r.status_code == 200, r.text
        return list(r.json()["items"])

    def events(self, card_id: str) -> list[dict[str, Any]]:
        r = self.get(f"/api/v1/cards/{card_id}/events", as_="auditor")
        assert r.status_code == 200, r.text
        return list(r.json()["items"])


@pytest.fixture
def counter(client: TestClient) -> Counter:
    return Counter(client)


def assert_problem(
    r: httpx.Response, status: int, *, field: str | None = None, says: str | None = None
) -> None:
    """An RFC 9457 answer with the status, naming `field` in `errors` and `says` in `detail`."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == status
    assert body["title"]
    if field is not None:
        assert field in [e["field"] for e in body["errors"]], body
    if says is not None:
        assert says in body["detail"], body
