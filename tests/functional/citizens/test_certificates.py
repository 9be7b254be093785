"""The one-trip temporary identity certificate (临时身份证明): issued at a counter after the finger
matches, valid on its day for its purpose only, every check logged and seen by the holder."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx2 as httpx
import pytest

from idguard.core.clock import FixedClock
from tests import prints
from tests.factories import OFFICE_A, OFFICE_B
from tests.functional.citizens.conftest import Citizen, Citizens, Unit, flush
from tests.functional.conftest import Counter, assert_problem

ALICE, BOB = 31, 32
TODAY = "2026-06-15"  # NOW in China Standard Time


@pytest.fixture
def railway(counter: Counter) -> Unit:
    return Unit(counter, "RAIL-1", name="中国铁路", sector="railway", purposes=("ticketing",))


def certificate(counter: Counter, number: str, *, as_: str = "clerk_a", **over: Any) -> httpx.Response:
    body = {"office": OFFICE_A, "purpose": "rail", "valid_on": TODAY, **over}
    return counter.post(f"/api/v1/persons/{number}/travel-certificates", body, as_=as_)


def check(unit: Unit, certificate_no: str, name: str, **over: Any) -> dict[str, Any]:
    body = {
        "certificate_no": certificate_no,
        "name": name,
        "purpose": unit.purpose,
        "operator": "gate-3",
        **over,
    }
    r = unit.counter.client.post("/api/v1/verify/certificate", json=body, headers=unit.headers)
    assert r.status_code == 200, r.text
    return dict(r.json())


def lost(citizens: Citizens, name: str = "张三", **card: Any) -> Citizen:
    citizen = citizens.new(name=name, **card)
    r = citizen.post("/me/loss-reports", {"card_id": citizen.card["card_id"], "reason": "lost"})
    assert r.status_code == 201, r.text
    return citizen


def test_valid_on_its_day_for_its_purpose_and_seen_by_the_holder(
    citizens: Citizens, counter: Counter, railway: Unit, clock: FixedClock
) -> None:
    citizen = lost(citizens, "张三")
    r = certificate(counter, citizen.id_number)
    assert r.status_code == 201, r.text
    issued = r.json()
    assert (issued["purpose"], issued["valid_on"], issued["fingerprint_matched"]) == ("rail", TODAY, None)
    answer = check(railway, issued["certificate_no"], "张三")
    assert answer["result"] == "valid"
    assert "reason" not in answer
    assert check(railway, issued["certificate_no"], "李四")["result"] == "mismatch"
    assert check(railway, "TCNOSUCHCERT", "张三")["result"] == "mismatch"
    airline = Unit(counter, "AIR-1", name="国航", sector="airline", purposes=("ticketing",))
    assert (check(airline, issued["certificate_no"], "张三")["reason"]) == "wrong_purpose"
    hotel = Unit(counter, "HOTEL-1", name="如家", sector="hotel", purposes=("hotel_checkin",))
    assert check(hotel, issued["certificate_no"], "张三")["result"] == "invalid"
    clock.advance(dt.timedelta(days=1))
    late = check(railway, issued["certificate_no"], "张三")
    assert (late["result"], late["reason"]) == ("invalid", "expired")

    flush(citizens.client)
    items = citizen.get("/me/checks").json()["items"]
    assert len(items) == 5  # every check of the holder's certificate except the unknown number
    assert {i["document"] for i in items} == {"certificate"}
    assert {i["certificate_no"] for i in items} == {issued["certificate_no"]}
    assert items[0]["result"] == "invalid"
    assert items[0]["unit_name"] == "中国铁路"
    # The first four were at the same instant (in no particular order among themselves).
    assert sorted(i["result"] for i in items[1:]) == ["invalid", "invalid", "mismatch", "valid"]
    assert [c["certificate_no"] for c in citizen.get("/me").json()["travel_certificates"]] == [
        issued["certificate_no"]
    ]
    assert "citizen.travel_certificate" in [a["action"] for a in citizen.get("/me/accesses").json()["items"]]


def test_a_certificate_for_a_later_day_is_not_yet_valid(
    citizens: Citizens, counter: Counter, railway: Unit
) -> None:
    citizen = lost(citizens, "王五")
    r = certificate(counter, citizen.id_number, valid_on="2026-06-17")
    assert r.status_code == 201, r.text
    answer = check(railway, r.json()["certificate_no"], "王五")
    assert (answer["result"], answer["reason"]) == ("invalid", "not_yet_valid")
    assert_problem(certificate(counter, citizen.id_number, valid_on="2026-06-14"), 422, field="valid_on")
    assert_problem(certificate(counter, citizen.id_number, valid_on="2026-06-23"), 422, field="valid_on")


def test_the_unit_checks_only_for_its_own_purposes(
    citizens: Citizens, counter: Counter, railway: Unit
) -> None:
    citizen = lost(citizens)
    number = certificate(counter, citizen.id_number).json()["certificate_no"]
    body = {"certificate_no": number, "name": "张三", "purpose": "account_opening", "operator": "x"}
    assert (
        citizens.client.post("/api/v1/verify/certificate", json=body, headers=railway.headers).status_code
        == 403
    )


def test_the_live_finger_must_match_where_the_person_has_fingers(
    citizens: Citizens, counter: Counter
) -> None:
    citizen = lost(citizens, fingerprints=prints.enrolment(ALICE))
    assert_problem(certificate(counter, citizen.id_number), 422, field="fingerprint")
    assert_problem(
        certificate(counter, citizen.id_number, fingerprint=prints.capture(BOB)), 409, says="match"
    )
    r = certificate(counter, citizen.id_number, fingerprint=prints.capture(ALICE, prints.LEFT_THUMB, 4))
    assert r.status_code == 201, r.text
    assert r.json()["fingerprint_matched"] is True


def test_not_for_a_person_who_holds_a_valid_card(citizens: Citizens, counter: Counter) -> None:
    number = counter.person()
    counter.card(number, issued_on="2020-01-02", as_="admin")
    assert_problem(certificate(counter, number), 409, says="valid card")
    fresh = counter.person()
    counter.card(fresh)  # issued today: may not be collected yet
    assert certificate(counter, fresh).status_code == 201


def test_a_clerk_issues_at_their_own_office(citizens: Citizens, counter: Counter) -> None:
    citizen = lost(citizens)
    assert certificate(counter, citizen.id_number, as_="clerk_b").status_code == 403
    assert certificate(counter, citizen.id_number, as_="clerk_b", office=OFFICE_B).status_code == 201
    assert certificate(counter, citizen.id_number, as_="auditor").status_code == 403
