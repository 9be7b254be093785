"""The citizen's own view over HTTP: their record and cards, every check of their cards (after real
checks by units), every staff read of their record (after real reads), and never anyone else's."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from idguard.app import create_app
from idguard.config import Settings
from idguard.core.clock import FixedClock
from tests.factories import OFFICE_A
from tests.functional.citizens.conftest import Citizens, Unit, flush, sync
from tests.functional.conftest import Counter


@pytest.fixture
def bank(counter: Counter) -> Unit:
    return Unit(counter, "BANK-1", name="工商银行", sector="bank")


@pytest.fixture
def other_worker(settings: Settings, clock: FixedClock) -> Iterator[TestClient]:
    """A second server process's view: its own index, key ring and check log on the same database."""
    app = create_app(settings, clock=clock)
    with TestClient(app) as client:
        yield client
    app.state.engine.dispose()


def test_me_and_my_cards_with_their_ledger(citizens: Citizens, counter: Counter) -> None:
    citizen = citizens.new(name="李雷")
    me = citizen.get("/me").json()
    assert me["name"] == "李雷"
    assert me["hukou_office"] == OFFICE_A
    assert me["second_factor"] is False
    cards = citizen.get("/me/cards").json()["items"]
    assert [c["card_id"] for c in cards] == [citizen.card["card_id"]]
    assert cards[0]["status"] == "valid"
    assert [e["event"] for e in cards[0]["ledger"]] == ["issued:first"]
    assert "actor" not in cards[0]["ledger"][0]  # staff are not named, not even by id


def test_every_check_of_my_card_appears_newest_first_with_the_units_name_and_sector(
    citizens: Citizens, bank: Unit, counter: Counter, clock: FixedClock
) -> None:
    citizen = citizens.new()
    hotel = Unit(counter, "HOTEL-1", name="如家酒店", sector="hotel", purposes=("hotel_checkin",))
    first = bank.verify(citizen.card).json()
    clock.advance(dt.timedelta(minutes=5))
    second = hotel.verify(citizen.card, name="冒名顶替").json()  # a wrong name: mismatch
    assert second["result"] == "mismatch"
    flush(citizens.client)
    page = citizen.get("/me/checks").json()
    assert [i["check_id"] for i in page["items"]] == [second["check_id"], first["check_id"]]
    newest, oldest = page["items"]
    assert (newest["unit_name"], newest["sector"], newest["purpose"], newest["result"]) == (
        "如家酒店",
        "hotel",
        "hotel_checkin",
        "mismatch",
    )
    assert (oldest["unit_name"], oldest["sector"], oldest["result"], oldest["fingerprint_used"]) == (
        "工商银行",
        "bank",
        "valid",
        False,
    )
    assert oldest["document"] == "card"
    assert page["retention_months"] == 24
    assert page["reaches_back_to"].startswith("2024-06-15")
    assert page["next"] is None


def test_checks_page_with_a_cursor_and_no_cap(citizens: Citizens, bank: Unit) -> None:
    citizen = citizens.new()
    ids = [bank.verify(citizen.card).json()["check_id"] for _ in range(7)]
    flush(citizens.client)
    seen: list[str] = []
    after = None
    while True:
        params = {"limit": 3, **({"after": after} if after else {})}
        page = citizen.get("/me/checks", **params).json()
        seen += [i["check_id"] for i in page["items"]]
        after = page["next"]
        if after is None:
            break
    assert sorted(seen) == sorted(ids)
    assert len(seen) == len(set(seen)) == 7
    r = citizen.get("/me/checks", after="not-a-cursor")
    assert r.status_code == 422


def test_a_second_citizen_sees_nothing_of_the_first(citizens: Citizens, bank: Unit, counter: Counter) -> None:
    first = citizens.new(name="张三")
    second = citizens.new(name="李四")
    bank.verify(first.card)
    assert counter.get(f"/api/v1/persons/{first.id_number}").status_code == 200
    flush(citizens.client)
    assert len(first.get("/me/checks").json()["items"]) == 1
    assert second.get("/me/checks").json()["items"] == []
    assert [c["card_id"] for c in second.get("/me/cards").json()["items"]] == [second.card["card_id"]]
    assert second.get("/me").json()["id_number"] == second.id_number
    first_actions = [a["action"] for a in first.get("/me/accesses").json()["items"]]
    second_actions = [a["action"] for a in second.get("/me/accesses").json()["items"]]
    assert "person.read" in first_actions
    assert "person.read" not in second_actions
    # Another's check cannot be disputed, another's card not reported or declared.
    check_id = first.get("/me/checks").json()["items"][0]["check_id"]
    assert second.post(f"/me/checks/{check_id}/dispute").status_code == 404
    assert (
        second.post("/me/loss-reports", {"card_id": first.card["card_id"], "reason": "lost"}).status_code
        == 404
    )
    declaration = {"card_id": first.card["card_id"], "lost_on": "2026-06-15", "place": "北京"}
    assert second.post("/me/loss-declarations", declaration).status_code == 404


def test_staff_reads_appear_with_office_and_role_never_the_name(citizens: Citizens, counter: Counter) -> None:
    citizen = citizens.new()
    assert counter.get(f"/api/v1/persons/{citizen.id_number}", as_="clerk_b").status_code == 200
    assert counter.get(f"/api/v1/persons/{citizen.id_number}/cards", as_="supervisor").status_code == 200
    assert counter.get(f"/api/v1/cards/{citizen.card['card_id']}/events", as_="auditor").status_code == 200
    r = citizen.get("/me/accesses")
    assert r.status_code == 200
    items = r.json()["items"]
    assert [(i["action"], i["role"], i["office"]) for i in items[:3]] == [
        ("card.events", "auditor", None),
        ("person.cards", "supervisor", None),
        ("person.read", "clerk", "310101002"),
    ]
    actions = {i["action"] for i in items}
    assert {"person.register", "citizen.activation_code"} <= actions
    for username in ("clerk_a", "clerk_b"):  # (the other accounts are named like their roles)
        assert username not in r.text
    assert set(items[0]) == {"at", "office", "role", "action"}


def test_accesses_page_with_a_cursor(citizens: Citizens, counter: Counter) -> None:
    citizen = citizens.new()
    for _ in range(4):
        counter.get(f"/api/v1/persons/{citizen.id_number}")
    everything = citizen.get("/me/accesses").json()["items"]
    seen = []
    after = None
    while True:
        page = citizen.get("/me/accesses", limit=2, **({"after": after} if after else {})).json()
        seen += page["items"]
        after = page["next"]
        if after is None:
            break
    assert seen == everything
    assert citizen.get("/me/accesses", after="bm9wZQ==").status_code == 422


def test_a_certificate_or_check_answer_never_carries_personal_data_in_me_checks(
    citizens: Citizens, bank: Unit
) -> None:
    citizen = citizens.new()
    bank.verify(citizen.card)
    flush(citizens.client)
    text = citizen.get("/me/checks").text
    assert citizen.id_number not in text  # the citizen knows it; the answer does not need it


def test_the_log_lag_is_bridged_by_the_index_on_another_worker(
    citizens: Citizens, bank: Unit, other_worker: TestClient
) -> None:
    """A check answered by another worker shows once that worker's log has written it."""
    citizen = citizens.new()
    sync(other_worker)
    r = bank.verify(citizen.card, client=other_worker)
    assert r.json()["result"] == "valid"
    flush(other_worker)
    assert [i["check_id"] for i in citizen.get("/me/checks").json()["items"]] == [r.json()["check_id"]]


def test_dispute_opens_an_incident_the_holder_sees(citizens: Citizens, bank: Unit, counter: Counter) -> None:
    citizen = citizens.new()
    check = bank.verify(citizen.card).json()
    flush(citizens.client)
    r = citizen.post(f"/me/checks/{check['check_id']}/dispute", {"note": "I was at home"})
    assert r.status_code == 201, r.text
    incident_no = r.json()["incident_no"]
    incidents = citizen.get("/me").json()["incidents"]
    assert [(i["incident_no"], i["kind"], i["check_id"]) for i in incidents] == [
        (incident_no, "disputed_by_holder", check["check_id"])
    ]
    # The hukou office's clerk sees it in the incident list.
    listed = counter.get("/api/v1/incidents", kind="disputed_by_holder").json()["items"]
    assert incident_no in [i["incident_no"] for i in listed]
    assert citizen.post("/me/checks/00000000-0000-4000-8000-000000000000/dispute").status_code == 404


def test_the_lock_reaches_another_worker(citizens: Citizens, bank: Unit, other_worker: TestClient) -> None:
    citizen = citizens.new()
    r = citizen.put("/me/protection", {"person_check_required": True})
    assert r.status_code == 200, r.text
    assert r.json()["person_check_required"] is True
    assert citizen.get("/me").json()["person_check_required"] is True
    sync(other_worker)
    answer = bank.verify(citizen.card, client=other_worker).json()
    assert answer["result"] == "valid"
    assert "person_check_required" in answer.get("alerts", [])
    r = citizen.put("/me/protection", {"person_check_required": False})
    assert r.status_code == 200
    sync(other_worker)
    assert "person_check_required" not in bank.verify(citizen.card, client=other_worker).json().get(
        "alerts", []
    )


def test_citizen_routes_need_a_citizen_token(citizens: Citizens) -> None:
    for path in ("/api/v1/me", "/api/v1/me/cards", "/api/v1/me/checks", "/api/v1/me/accesses"):
        assert citizens.client.get(path).status_code == 401
        assert citizens.client.get(path, headers={"Authorization": "Bearer nonsense"}).status_code == 401


def test_a_listed_person_sees_their_listing_and_where_to_turn(citizens: Citizens, counter: Counter) -> None:
    citizen = citizens.new()
    assert citizen.get("/me").json()["blacklist"] == []
    body = {
        "id_number": citizen.id_number,
        "reason": "impersonation",
        "case_no": "京公(2026)1号",
        "until": "2026-12-31",
    }
    r = counter.post("/api/v1/blacklist", body, as_="supervisor")
    assert r.status_code == 201, r.text
    listed = citizen.get("/me").json()["blacklist"]
    assert [(e["status"], e["listed_on"], e["until"], e["turn_to_office"]) for e in listed] == [
        ("active", "2026-06-15", "2026-12-31", OFFICE_A)
    ]
