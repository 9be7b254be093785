"""Incidents (冒用线索), each kind from a real check over HTTP; one per (card, kind, unit, day);
who sees them (masked numbers for a clerk of another office), the stream, closing."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from idguard import uow
from idguard.core.clock import FixedClock
from idguard.core.idnumber import mask
from idguard.verification.harvesting import MIN_CHECKS
from idguard.watchlist import incidents as incident_cases
from tests.factories import NOW, OFFICE_A, OFFICE_B
from tests.functional.conftest import Counter, assert_problem
from tests.functional.verification.test_harvesting import made_up
from tests.functional.watchlist.helpers import Bank, gallery_holds, incidents, listed, settle
from tests.prints import THUMB, capture, enrolment


def _kinds(counter: Counter, number: str) -> list[tuple[str, int]]:
    return sorted((i["kind"], i["count"]) for i in incidents(counter) if i["id_number"] == number)


def test_a_lost_card_presented_opens_one_incident_a_day_with_a_count(
    counter: Counter, clock: FixedClock
) -> None:
    bank = Bank(counter)
    other_bank = Bank(counter, code="BANK-2")
    card = counter.card(counter.person())
    assert counter.report(card, "stolen").status_code == 201
    settle(counter)
    answers = [bank.verify(card).json() for _ in range(20)]  # a bank retrying twenty times
    assert {a["reason"] for a in answers} == {"reported_stolen"}
    assert all("alerts" not in a for a in answers)  # an incident is never the unit's business
    settle(counter)
    items = [i for i in incidents(counter) if i["id_number"] == card["id_number"]]
    assert len(items) == 1
    incident = items[0]
    assert incident | {"incident_no": None} == {
        "incident_no": None,
        "kind": "lost_card_presented",
        "status": "open",
        "opened_at": answers[0]["checked_at"],
        "id_number": card["id_number"],
        "unit_code": "BANK-1",
        "check_id": answers[0]["check_id"],
        "office": OFFICE_A,
        "count": 20,
        "last_at": answers[0]["checked_at"],
        "closed_at": None,
        "note": None,
        "detail": None,
    }
    for _ in range(5):  # five more in another round of the writer: counted on the same incident
        bank.verify(card)
    settle(counter)
    other_bank.verify(card)  # another unit: its own incident
    clock.advance(dt.timedelta(days=1))
    bank.verify(card)  # another day: a new incident
    settle(counter)
    assert _kinds(counter, card["id_number"]) == [
        ("lost_card_presented", 1),
        ("lost_card_presented", 1),
        ("lost_card_presented", 25),
    ]


def test_a_failed_person_card_check_opens_an_incident(counter: Counter) -> None:
    bank = Bank(counter)
    card = counter.card(counter.person(), fingerprints=enrolment(611))
    settle(counter)
    assert bank.verify(card, fingerprint=capture(611, THUMB)).json()["fingerprint_match"] is True
    assert bank.verify(card, fingerprint=capture(612, THUMB)).json()["fingerprint_match"] is False
    settle(counter)
    assert _kinds(counter, card["id_number"]) == [("person_check_failed", 1)]


def test_a_listed_holder_s_own_card_checked_opens_an_incident(counter: Counter) -> None:
    bank = Bank(counter)
    card = counter.card(counter.person())
    assert counter.report(card).status_code == 201
    listed(counter, card["id_number"])
    settle(counter)
    assert bank.verify(card).json()["alerts"] == ["blacklisted"]
    r = counter.client.post(
        "/api/v1/verify/batch",
        json={"items": [_item(card)]},
        headers=bank.headers(),
    )
    assert r.json()["results"][0]["alerts"] == ["blacklisted"]
    settle(counter)
    assert _kinds(counter, card["id_number"]) == [
        ("blacklisted_holder_checked", 2),
        ("lost_card_presented", 2),
    ]


def test_a_known_impersonator_opens_an_incident_owned_by_the_victim_s_office(counter: Counter) -> None:
    bank = Bank(counter)
    impostor = counter.person(office=OFFICE_B, as_="clerk_b")
    counter.card(impostor, office=OFFICE_B, as_="clerk_b", fingerprints=enrolment(711))
    victim = counter.person()
    victim_card = counter.card(victim, fingerprints=enrolment(712))
    listed(counter, impostor)
    gallery_holds(counter, 2)
    answer = bank.verify(victim_card, fingerprint=capture(711, THUMB)).json()
    assert answer["alerts"] == ["known_impersonator"]
    settle(counter)
    mine = [i for i in incidents(counter) if i["id_number"] == victim]
    assert sorted(i["kind"] for i in mine) == ["known_impersonator", "person_check_failed"]
    assert {i["office"] for i in mine} == {OFFICE_A}
    assert "impostor" not in json.dumps(mine)


def test_a_disputed_check_opens_an_incident_and_the_holder_sees_theirs(
    counter: Counter, session_factory: sessionmaker[Session]
) -> None:
    """The citizens' dispute route calls open_incident (citizens/); here it is called directly."""
    bank = Bank(counter)
    card = counter.card(counter.person())
    settle(counter)
    check_id = bank.verify(card).json()["check_id"]
    with uow.transaction(session_factory) as session:
        first = incident_cases.open_incident(
            session,
            kind="disputed_by_holder",
            id_number=card["id_number"],
            unit_code="BANK-1",
            check_id=check_id,
            at=NOW,
        )
        again = incident_cases.open_incident(
            session,
            kind="disputed_by_holder",
            id_number=card["id_number"],
            unit_code="BANK-1",
            check_id=check_id,
            at=NOW,
        )
    assert first == again
    with session_factory() as session:
        own = incident_cases.for_person(session, id_number=card["id_number"])
    assert own == [
        {
            "incident_no": first,
            "kind": "disputed_by_holder",
            "status": "open",
            "opened_at": NOW,
            "unit_code": "BANK-1",
            "check_id": check_id,
            "count": 2,
        }
    ]


def test_harvesting_opens_an_incident_for_supervisors_and_closing_it_lifts_the_throttle(
    counter: Counter,
) -> None:
    bank = Bank(counter, code="HARVEST-9", rate_limit=10_000)
    r = counter.client.post(
        "/api/v1/verify/batch", json={"items": made_up(MIN_CHECKS)}, headers=bank.headers()
    )
    assert r.status_code == 200, r.text
    settle(counter)
    found = [i for i in incidents(counter) if i["kind"] == "harvesting_suspected"]
    assert len(found) == 1
    assert (found[0]["unit_code"], found[0]["id_number"], found[0]["office"]) == ("HARVEST-9", None, None)
    assert "matched no card" in found[0]["detail"]
    assert not [i for i in incidents(counter, as_="clerk_a") if i["kind"] == "harvesting_suspected"]
    path = f"/api/v1/incidents/{found[0]['incident_no']}/close"
    assert_problem(counter.post(path, {"outcome": "confirmed", "note": "x"}, as_="clerk_a"), 403)
    r = counter.post(path, {"outcome": "confirmed", "note": "made-up numbers"}, as_="supervisor")
    assert r.status_code == 200, r.text
    units = {u["code"]: u for u in counter.get("/api/v1/units", as_="supervisor").json()}
    assert units["HARVEST-9"]["harvesting"] is None


def test_who_sees_which_incident_and_which_number(counter: Counter) -> None:
    bank = Bank(counter)
    card = counter.card(counter.person())  # a holder of office A
    assert counter.report(card).status_code == 201
    settle(counter)
    bank.verify(card)
    settle(counter)
    number = card["id_number"]

    def numbers(as_: str, **params: Any) -> list[str | None]:
        return [i["id_number"] for i in incidents(counter, as_=as_, **params) if i["office"] == OFFICE_A]

    assert number in numbers("supervisor")
    assert number in numbers("auditor")
    assert number in numbers("clerk_a")
    assert numbers("clerk_b") == []  # another office's holders are not in a clerk's list
    masked = numbers("clerk_b", office=OFFICE_A)  # asked for: masked
    assert masked
    assert set(masked) == {mask(number)}
    assert number not in json.dumps(incidents(counter, as_="clerk_b", office=OFFICE_A))
    assert_problem(counter.get("/api/v1/incidents", as_="admin"), 403)

    # the stream, with the same rules
    for as_, expected in (("clerk_a", number), ("clerk_b", None), ("supervisor", number)):
        lines = _stream(counter, as_)
        shown = [json.loads(line[6:])["id_number"] for line in lines if line.startswith("data: ")]
        if expected is None:
            assert number not in "".join(lines)
            assert mask(number) not in "".join(lines)  # clerk_b's stream: own office only
        else:
            assert expected in shown


def test_reads_of_incidents_are_audited(counter: Counter, engine: sa.Engine) -> None:
    from idguard.db.common import AuditEntry

    bank = Bank(counter)
    card = counter.card(counter.person())
    assert counter.report(card).status_code == 201
    settle(counter)
    bank.verify(card)
    settle(counter)
    incidents(counter, as_="clerk_a")
    incidents(counter, as_="clerk_b", office=OFFICE_A)  # masked: not a read of personal data
    with engine.connect() as conn:
        actions = conn.execute(
            sa.select(AuditEntry.staff_id, AuditEntry.action).where(AuditEntry.action == "incident.read")
        ).all()
    assert [str(staff) for staff, _ in actions] == ["00000000-0000-0000-0000-000000000001"]


def test_closing_an_incident(counter: Counter) -> None:
    bank = Bank(counter)
    card = counter.card(counter.person())
    assert counter.report(card).status_code == 201
    settle(counter)
    bank.verify(card)
    settle(counter)
    incident = next(i for i in incidents(counter) if i["id_number"] == card["id_number"])
    path = f"/api/v1/incidents/{incident['incident_no']}/close"
    assert_problem(counter.post(path, {"outcome": "confirmed", "note": "n"}, as_="clerk_b"), 403)
    assert_problem(counter.post(path, {"outcome": "confirmed", "note": "n"}, as_="auditor"), 403)
    assert_problem(counter.post(path, {"outcome": "maybe", "note": "n"}, as_="clerk_a"), 422, field="outcome")
    r = counter.post(path, {"outcome": "dismissed", "note": "the holder's own spare check"}, as_="clerk_a")
    assert r.status_code == 200, r.text
    assert (r.json()["status"], r.json()["note"]) == ("dismissed", "the holder's own spare check")
    assert_problem(counter.post(path, {"outcome": "confirmed", "note": "n"}, as_="supervisor"), 409)
    assert_problem(
        counter.post(
            "/api/v1/incidents/INCNOPE/close", {"outcome": "confirmed", "note": "n"}, as_="supervisor"
        ),
        404,
    )
    closed = incidents(counter, status="dismissed")
    assert incident["incident_no"] in [i["incident_no"] for i in closed]
    assert incident["incident_no"] not in [i["incident_no"] for i in incidents(counter, status="open")]


def test_the_list_pages_with_a_cursor(counter: Counter) -> None:
    bank = Bank(counter)
    cards = [counter.card(counter.person()) for _ in range(3)]
    for card in cards:
        assert counter.report(card).status_code == 201
    settle(counter)
    for card in cards:
        bank.verify(card)
    settle(counter)
    seen: list[str] = []
    after = None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"after": after} if after else {})
        page = counter.get("/api/v1/incidents", as_="supervisor", **params).json()
        seen += [i["incident_no"] for i in page["items"]]
        after = page["next"]
        if after is None:
            break
    assert len(seen) == len(set(seen)) == 3
    assert_problem(counter.get("/api/v1/incidents", as_="supervisor", after="bm9wZQ=="), 422, field="after")


def test_an_incident_reaches_the_stream(counter: Counter) -> None:
    bank = Bank(counter)
    card = counter.card(counter.person())
    assert counter.report(card).status_code == 201
    settle(counter)
    answer = bank.verify(card).json()
    settle(counter)
    lines = _stream(counter, "supervisor")
    events = [json.loads(line[6:]) for line in lines if line.startswith("data: ")]
    assert answer["check_id"] in [e["check_id"] for e in events]
    assert any(line.startswith("id: ") for line in lines)
    assert "event: incident" in lines


def _stream(counter: Counter, as_: str) -> list[str]:
    from tests.factories import auth

    with counter.client.stream(
        "GET", "/api/v1/incidents/stream", params={"after": 0, "max_seconds": 0.5}, headers=auth(as_)
    ) as r:
        assert r.status_code == 200
        return list(r.iter_lines())


def _item(card: dict[str, Any]) -> dict[str, Any]:
    return {
        "id_number": card["id_number"],
        "name": card["name"],
        "issued_on": card["issued_on"],
        "expires_on": card["expires_on"],
        "purpose": "account_opening",
        "operator": "teller-7",
    }
