"""Who may manage units and their keys (supervisors), who may list them (supervisors, auditors,
admins), and the unit routes' own key (core/grants.py GRANTS, API.md)."""

from __future__ import annotations

import pytest

from tests.factories import auth
from tests.functional.conftest import Counter, assert_problem
from tests.functional.verification.test_verify import Bank, sync


@pytest.fixture
def bank(counter: Counter) -> Bank:
    return Bank(counter, code="BANK-KEYS")


def still_works(counter: Counter, bank: Bank) -> None:
    card = counter.card(counter.person())
    sync(counter)
    r = bank.verify(card)
    assert r.status_code == 200, r.text
    assert r.json()["result"] == "valid"


@pytest.mark.parametrize("role", ["clerk_a", "clerk_b", "auditor", "admin"])
def test_only_a_supervisor_may_rotate_a_units_key(counter: Counter, bank: Bank, role: str) -> None:
    r = counter.post(f"/api/v1/units/{bank.code}/keys/rotate", {"grace_seconds": 0}, as_=role)
    assert_problem(r, 403, says="onboard units")
    assert "api_key" not in r.text
    still_works(counter, bank)  # the key in use was not cut short


@pytest.mark.parametrize("role", ["clerk_a", "clerk_b", "auditor", "admin"])
def test_only_a_supervisor_may_revoke_a_units_keys(counter: Counter, bank: Bank, role: str) -> None:
    assert_problem(
        counter.post(f"/api/v1/units/{bank.code}/keys/revoke", {}, as_=role), 403, says="onboard units"
    )
    still_works(counter, bank)


def test_a_supervisor_rotates_and_revokes_and_an_unknown_unit_is_404(counter: Counter, bank: Bank) -> None:
    assert_problem(counter.post("/api/v1/units/NO-SUCH-UNIT/keys/rotate", {}, as_="supervisor"), 404)
    assert_problem(counter.post("/api/v1/units/NO-SUCH-UNIT/keys/revoke", {}, as_="supervisor"), 404)
    r = counter.post(f"/api/v1/units/{bank.code}/keys/rotate", {"grace_seconds": 0}, as_="supervisor")
    assert r.status_code == 201, r.text
    new = r.json()["api_key"]
    card = counter.card(counter.person())
    sync(counter)
    assert_problem(bank.verify(card), 401)  # no grace: the old key stopped
    assert bank.verify(card, key=new).status_code == 200
    assert counter.post(f"/api/v1/units/{bank.code}/keys/revoke", {}, as_="supervisor").status_code == 200
    assert_problem(bank.verify(card, key=new), 401)


@pytest.mark.parametrize("role", ["supervisor", "auditor", "admin"])
def test_supervisors_auditors_and_admins_list_the_units(counter: Counter, bank: Bank, role: str) -> None:
    r = counter.get("/api/v1/units", as_=role)
    assert r.status_code == 200, r.text
    assert [u["code"] for u in r.json()] == ["BANK-KEYS"]
    assert r.json()[0]["status"] == "active"


@pytest.mark.parametrize("role", ["clerk_a", "clerk_b"])
def test_a_clerk_may_not_list_the_units(counter: Counter, bank: Bank, role: str) -> None:
    r = counter.get("/api/v1/units", as_=role)
    assert_problem(r, 403, says="read units")
    assert "BANK-KEYS" not in r.text


def test_the_notification_stream_needs_a_units_key(counter: Counter, bank: Bank) -> None:
    client = counter.client
    assert_problem(client.get("/api/v1/notifications/stream"), 401)
    assert_problem(
        client.get("/api/v1/notifications/stream", headers={"Authorization": "Bearer idg_wrong"}), 401
    )
    # A member of staff is not a unit.
    staff = client.get("/api/v1/notifications/stream", headers=auth("supervisor"))
    assert_problem(staff, 401)
    with client.stream(
        "GET", "/api/v1/notifications/stream", params={"max_seconds": 0.1}, headers=bank.headers()
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
