"""Networked verification as a bank integrates it: onboard, check, every answer, the check log."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from idguard.domain.clock import FixedClock
from tests.factories import NOW
from tests.functional.conftest import Counter, assert_problem


class Bank:
    """A unit's view: its key and a way to check."""

    def __init__(
        self,
        counter: Counter,
        code: str = "BANK-1",
        purposes: tuple[str, ...] = ("account_opening",),
        rate_limit: int = 1000,
    ) -> None:
        self.counter = counter
        r = counter.post(
            "/api/v1/units",
            {
                "code": code,
                "name": "测试银行",
                "sector": "bank",
                "purposes": list(purposes),
                "rate_limit": rate_limit,
            },
            as_="supervisor",
        )
        assert r.status_code == 201, r.text
        self.code = code
        self.key = r.json()["api_key"]

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}"}

    def verify(self, card: dict[str, Any], key: str | None = None, **over: Any) -> Any:
        body = {
            "id_number": card["id_number"],
            "name": card["name"],
            "issued_on": card["issued_on"],
            "expires_on": card["expires_on"],
            "purpose": "account_opening",
            "operator": "teller-7",
            **over,
        }
        return self.counter.client.post("/api/v1/verify", json=body, headers=self.headers(key))


def sync(counter: Counter) -> None:
    """Let this worker's index catch up with the ledger now (the follower polls every 20 ms)."""
    counter.client.app.state.verifier.follower.poll()  # type: ignore[attr-defined]


def flush(counter: Counter) -> None:
    counter.client.app.state.verifier.log.flush()  # type: ignore[attr-defined]


@pytest.fixture
def bank(counter: Counter) -> Bank:
    return Bank(counter)


def test_valid_card(counter: Counter, bank: Bank) -> None:
    card = counter.card(counter.person())
    sync(counter)
    r = bank.verify(card)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["result"] == "valid"
    assert "reason" not in body
    assert body["check_id"]
    assert float(r.headers["X-Index-Age"]) < 5


@pytest.mark.parametrize(("action", "reason"), [("lost", "reported_lost"), ("stolen", "reported_stolen")])
def test_reported_card_is_invalid(counter: Counter, bank: Bank, action: str, reason: str) -> None:
    card = counter.card(counter.person())
    counter.report(card, action)
    sync(counter)
    assert bank.verify(card).json() | {"check_id": None, "checked_at": None} == {
        "result": "invalid",
        "reason": reason,
        "check_id": None,
        "checked_at": None,
    }


def test_superseded_and_revoked(counter: Counter, bank: Bank) -> None:
    number = counter.person()
    old = counter.card(number, issued_on="2020-01-01", as_="admin")
    new = counter.card(number, kind="renewal")
    sync(counter)
    assert bank.verify(old).json()["reason"] == "superseded"
    assert bank.verify(new).json()["result"] == "valid"
    counter.post(f"/api/v1/persons/{number}/revocations", {"reason": "deceased"})
    sync(counter)
    assert bank.verify(new).json()["reason"] == "revoked"


def test_expired_by_date_in_china(counter: Counter, bank: Bank, clock: FixedClock) -> None:
    card = counter.card(counter.person(dt.date(2012, 1, 1)))  # 5-year card, expires 2031-06-15
    sync(counter)
    # 2031-06-15 15:59 UTC is 23:59 in Beijing: still the expiry day, still valid.
    clock.at = dt.datetime(2031, 6, 15, 15, 59, tzinfo=dt.UTC)
    assert bank.verify(card).json()["result"] == "valid"
    clock.at = dt.datetime(2031, 6, 15, 16, 1, tzinfo=dt.UTC)  # 00:01 on the 16th in Beijing
    assert bank.verify(card).json() | {"check_id": 0, "checked_at": 0} == {
        "result": "invalid",
        "reason": "expired",
        "check_id": 0,
        "checked_at": 0,
    }


@pytest.mark.parametrize(
    "change",
    [
        {"name": "李四"},
        {"issued_on": "2026-06-16"},
        {"expires_on": "2046-06-16"},
        {"expires_on": None},
        {"chip_serial": "00000000000000000000000000000000"},
        {"id_number": "11010519491231002X"},  # well formed, no such card
    ],
)
def test_anything_that_does_not_match_is_mismatch(
    counter: Counter, bank: Bank, change: dict[str, Any]
) -> None:
    card = counter.card(counter.person())
    sync(counter)
    body = bank.verify(card, **change).json()
    assert body["result"] == "mismatch"
    assert "reason" not in body


def test_chip_serial_when_read_must_match(counter: Counter, bank: Bank) -> None:
    card = counter.card(counter.person())
    sync(counter)
    assert bank.verify(card, chip_serial=card["chip_serial"].lower()).json()["result"] == "valid"


def test_answers_carry_no_personal_data(counter: Counter, bank: Bank) -> None:
    card = counter.card(counter.person(name="欧阳明"))
    counter.report(card)
    sync(counter)
    for r in (bank.verify(card), bank.verify(card, name="欧阳"), bank.verify(card, watch=True)):
        text = r.text + json.dumps(dict(r.headers))
        assert card["id_number"] not in text
        assert card["id_number"][:14] not in text
        assert "欧阳" not in text
        assert set(r.json()) <= {"result", "reason", "check_id", "checked_at"}


def test_purpose_not_allowed_is_403_and_bad_fields_422(counter: Counter, bank: Bank) -> None:
    card = counter.card(counter.person())
    assert_problem(bank.verify(card, purpose="hotel_checkin"), 403, says="purpose")
    r = bank.verify(card, id_number="12345", issued_on="yesterday")
    assert_problem(r, 422)
    assert {"id_number", "issued_on"} <= {e["field"] for e in r.json()["errors"]}


def test_keys_unknown_revoked_and_rotated(counter: Counter, bank: Bank, clock: FixedClock) -> None:
    card = counter.card(counter.person())
    sync(counter)
    assert_problem(bank.verify(card, key="idg_" + "x" * 43), 401)
    assert_problem(bank.verify(card, key="not-a-key"), 401)
    # A staff token is not a unit key.
    staff = counter.client.post("/api/v1/verify", json={}, headers={"Authorization": "Bearer nope"})
    assert staff.status_code == 401
    old = bank.key
    r = counter.post(f"/api/v1/units/{bank.code}/keys/rotate", {"grace_seconds": 3600}, as_="supervisor")
    assert r.status_code == 201, r.text
    new = r.json()["api_key"]
    assert new != old
    assert bank.verify(card, key=old).status_code == 200  # grace period
    assert bank.verify(card, key=new).status_code == 200
    clock.at = NOW + dt.timedelta(hours=1, seconds=1)
    assert_problem(bank.verify(card, key=old), 401)
    assert bank.verify(card, key=new).status_code == 200
    r = counter.post(f"/api/v1/units/{bank.code}/keys/revoke", {}, as_="supervisor")
    assert r.status_code == 200, r.text
    assert_problem(bank.verify(card, key=new), 401)  # at once


def test_only_supervisors_onboard(counter: Counter) -> None:
    body = {"code": "HOTEL-1", "name": "酒店", "sector": "hotel", "purposes": ["hotel_checkin"]}
    for role in ("clerk_a", "auditor", "admin"):
        assert_problem(counter.post("/api/v1/units", body, as_=role), 403)
    assert_problem(
        counter.post("/api/v1/units", {**body, "purposes": ["spying"]}, as_="supervisor"),
        422,
        field="purposes",
    )
    assert counter.post("/api/v1/units", body, as_="supervisor").status_code == 201
    assert_problem(counter.post("/api/v1/units", body, as_="supervisor"), 409)


def test_rate_limit_gives_429_with_retry_after(counter: Counter) -> None:
    slow = Bank(counter, code="SLOW", rate_limit=2)
    card = counter.card(counter.person())
    statuses = [slow.verify(card).status_code for _ in range(4)]
    assert statuses[:2] == [200, 200]
    assert 429 in statuses[2:]
    r = slow.verify(card)
    assert_problem(r, 429)
    assert r.json()["title"] == "Too many requests"
    assert int(r.headers["Retry-After"]) >= 1


def test_batch_keeps_order_and_reports_bad_items(counter: Counter, bank: Bank) -> None:
    good = counter.card(counter.person())
    lost = counter.card(counter.person())
    counter.report(lost)
    sync(counter)

    def item(card: dict[str, Any], **over: Any) -> dict[str, Any]:
        return {
            "id_number": card["id_number"],
            "name": card["name"],
            "issued_on": card["issued_on"],
            "expires_on": card["expires_on"],
            "purpose": "account_opening",
            "operator": "t1",
            **over,
        }

    items = [
        item(good),
        {"id_number": "bad"},
        item(lost),
        item(good, purpose="ticketing"),
        item(good, name="x"),
    ]
    r = counter.client.post("/api/v1/verify/batch", json={"items": items}, headers=bank.headers())
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x.get("result") for x in results] == ["valid", None, "invalid", None, "mismatch"]
    assert results[1]["error"]["status"] == 422
    assert "name" in {e["field"] for e in results[1]["error"]["errors"]}
    assert results[3]["error"]["status"] == 403
    assert_problem(
        counter.client.post(
            "/api/v1/verify/batch", json={"items": [item(good)] * 1001}, headers=bank.headers()
        ),
        422,
        field="items",
    )


def test_check_log_unit_sees_its_own_masked(counter: Counter, bank: Bank) -> None:
    other = Bank(counter, code="BANK-2")
    card = counter.card(counter.person())
    sync(counter)
    bank.verify(card)
    bank.verify(card, name="nobody")
    other.verify(card)
    flush(counter)
    mine = counter.client.get("/api/v1/checks", headers=bank.headers()).json()["items"]
    assert {c["unit"] for c in mine} == {"BANK-1"}
    assert sorted(c["result"] for c in mine) == ["mismatch", "valid"]
    assert all(c["id_number"] == card["id_number"][:6] + "********" + card["id_number"][14:] for c in mine)
    assert (
        counter.client.get("/api/v1/checks", params={"result": "mismatch"}, headers=bank.headers()).json()[
            "items"
        ][0]["operator"]
        == "teller-7"
    )
    everyone = counter.get("/api/v1/checks", as_="auditor").json()["items"]
    assert {c["unit"] for c in everyone} == {"BANK-1", "BANK-2"}
    assert_problem(counter.get("/api/v1/checks", as_="clerk_a"), 403)
    page = counter.client.get("/api/v1/checks", params={"limit": 1}, headers=bank.headers()).json()
    second = counter.client.get(
        "/api/v1/checks", params={"limit": 1, "cursor": page["next"]}, headers=bank.headers()
    ).json()
    assert page["items"][0]["check_id"] != second["items"][0]["check_id"]
    assert second["next"] is None


def test_unit_cannot_use_staff_routes(counter: Counter, bank: Bank) -> None:
    r = counter.client.get(f"/api/v1/persons/{counter.person()}", headers=bank.headers())
    assert_problem(r, 401)


def test_same_day_replacement_answers_invalid_unless_the_chip_tells_them_apart(
    counter: Counter, bank: Bank
) -> None:
    """Two cards with the same printed data (replaced the day it was issued): when in doubt, invalid."""
    number = counter.person()
    lost = counter.card(number)
    counter.report(lost)
    new = counter.card(number, kind="replacement")
    sync(counter)
    assert bank.verify(new).json()["result"] == "invalid"
    assert bank.verify(new, chip_serial=new["chip_serial"]).json()["result"] == "valid"
    assert bank.verify(lost, chip_serial=lost["chip_serial"]).json()["reason"] == "reported_lost"
