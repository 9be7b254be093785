import datetime as dt

import pytest

from idguard.core.clock import FixedClock
from tests.factories import NOW, OFFICE_A, OFFICE_B
from tests.functional.conftest import Counter, assert_problem

TODAY = dt.date(2026, 6, 15)  # NOW in Beijing


@pytest.mark.parametrize(
    ("birth", "expires"),
    [
        (dt.date(2016, 6, 16), "2031-06-15"),  # 9 years old: 5 years
        (dt.date(2010, 6, 15), "2036-06-15"),  # 16 today: 10 years
        (dt.date(2000, 6, 15), "2046-06-15"),  # 26 today: 20 years
        (dt.date(1980, 6, 16), "2046-06-15"),  # 45: 20 years
        (dt.date(1980, 6, 15), None),  # 46 today: long-term
    ],
)
def test_first_card_validity_follows_age_at_issue(
    counter: Counter, birth: dt.date, expires: str | None
) -> None:
    card = counter.card(counter.person(birth))
    assert card["issued_on"] == TODAY.isoformat()
    assert card["expires_on"] == expires
    assert card["status"] == "valid"
    assert card["kind"] == "first"


def test_first_issue_twice_is_409_and_renewal_without_card_is_409(counter: Counter) -> None:
    number = counter.person()
    assert_problem(counter.issue(number, "renewal"), 409, says="first card")
    counter.card(number)
    assert_problem(counter.issue(number), 409, says="already holds a card")


@pytest.mark.parametrize("kind", ["renewal", "replacement", "correction"])
def test_new_card_supersedes_the_previous(counter: Counter, kind: str) -> None:
    number = counter.person()
    old = counter.card(number)
    new = counter.card(number, kind=kind, office=OFFICE_B, as_="clerk_b")
    cards = {c["card_id"]: c for c in counter.cards(number)}
    assert cards[old["card_id"]]["status"] == "superseded"
    assert cards[old["card_id"]]["superseded_by"] == new["card_id"]
    assert cards[new["card_id"]]["status"] == "valid"
    assert [e["event"] for e in counter.events(old["card_id"])] == ["issued:first", "superseded"]


def test_replacing_a_lost_card_keeps_its_loss_reason(counter: Counter) -> None:
    number = counter.person()
    old = counter.card(number)
    assert counter.report(old, "stolen").status_code == 201
    counter.card(number, kind="replacement")
    status = {c["card_id"]: c["status"] for c in counter.cards(number)}
    assert status[old["card_id"]] == "reported_stolen"
    assert list(status.values()).count("valid") == 1


def test_stale_previous_card_id_is_409(counter: Counter) -> None:
    number = counter.person()
    first = counter.card(number)
    counter.card(number, kind="renewal", previous_card_id=first["card_id"])
    r = counter.issue(number, "renewal", previous_card_id=first["card_id"])
    assert_problem(r, 409, says="newer card")


def test_issued_on_is_admin_only(counter: Counter) -> None:
    number = counter.person(dt.date(1960, 1, 1))
    assert_problem(counter.issue(number, issued_on="2010-03-01"), 403, says="admin")
    # The flag follows stored fingers; nobody may set it without them.
    assert_problem(
        counter.issue(number, fingerprints_registered=True, as_="admin"), 422, field="fingerprints_registered"
    )
    r = counter.issue(number, issued_on="2000-03-01", as_="admin")
    assert r.status_code == 201, r.text
    # 40 at issue: 20 years, so it expired on 2020-03-01 and is answered as expired.
    assert r.json()["expires_on"] == "2020-03-01"
    assert r.json()["status"] == "expired"
    assert_problem(
        counter.issue(number, "renewal", issued_on="2030-01-01", as_="admin"), 422, field="issued_on"
    )


def test_card_expires_by_date_without_any_job(counter: Counter, clock: FixedClock) -> None:
    number = counter.person(dt.date(2012, 1, 1))  # 14: a 5-year card
    card = counter.card(number)
    clock.at = NOW + dt.timedelta(days=5 * 365 + 1)  # the expiry day itself (2031-06-15)
    assert counter.cards(number)[0]["status"] == "valid"
    clock.at = NOW + dt.timedelta(days=5 * 365 + 2)
    assert counter.cards(number)[0]["status"] == "expired"
    renewed = counter.card(number, kind="renewal")
    assert renewed["expires_on"] == "2041-06-16"  # 19 at renewal: 10 years from the renewal date
    assert counter.events(card["card_id"])[-1]["status_after"] == "superseded"


def test_temporary_card_is_three_months_and_coexists(counter: Counter) -> None:
    number = counter.person()
    regular = counter.card(number)
    r = counter.post(f"/api/v1/persons/{number}/temporary-cards", {"office": OFFICE_A})
    assert r.status_code == 201, r.text
    temp = r.json()
    assert temp["temporary"] is True
    assert temp["expires_on"] == "2026-09-15"
    person = counter.get(f"/api/v1/persons/{number}").json()
    assert person["current_card"]["card_id"] == regular["card_id"]
    assert person["temporary_card"]["card_id"] == temp["card_id"]
    second = counter.post(f"/api/v1/persons/{number}/temporary-cards", {"office": OFFICE_A}).json()
    status = {c["card_id"]: c["status"] for c in counter.cards(number)}
    assert status == {regular["card_id"]: "valid", temp["card_id"]: "superseded", second["card_id"]: "valid"}


def test_revocation_invalidates_cards_and_blocks_new_ones(counter: Counter) -> None:
    number = counter.person()
    card = counter.card(number)
    counter.post(f"/api/v1/persons/{number}/temporary-cards", {"office": OFFICE_A})
    assert_problem(
        counter.post(f"/api/v1/persons/{number}/revocations", {"reason": "deceased"}, as_="clerk_b"), 403
    )
    r = counter.post(f"/api/v1/persons/{number}/revocations", {"reason": "deceased"})
    assert r.status_code == 201, r.text
    assert {c["status"] for c in r.json()["cards"]} == {"revoked"}
    assert counter.get(f"/api/v1/persons/{number}").json()["revoked_reason"] == "deceased"
    assert_problem(counter.issue(number, "renewal"), 409, says="revoked")
    assert_problem(counter.post(f"/api/v1/persons/{number}/temporary-cards", {"office": OFFICE_A}), 409)
    assert_problem(counter.post(f"/api/v1/persons/{number}/revocations", {"reason": "fraud"}), 409)
    assert counter.events(card["card_id"])[-1]["reason"] == "deceased"
    assert_problem(
        counter.post(f"/api/v1/persons/{number}/revocations", {"reason": "bored"}), 422, field="reason"
    )


def test_ledger_is_ordered_with_global_gap_free_seq(counter: Counter) -> None:
    a = counter.person()
    b = counter.person()
    card_a = counter.card(a)
    counter.card(b)
    counter.report(card_a)
    counter.card(a, kind="replacement")
    events = counter.events(card_a["card_id"])
    assert [e["event"] for e in events] == ["issued:first", "reported_lost", "superseded"]
    assert [e["seq"] for e in events] == [1, 3, 4]
    assert events[1]["status_before"] == "valid"
    assert events[1]["status_after"] == "reported_lost"
    assert events[1]["office"] == OFFICE_A
    assert events[1]["actor"] == "00000000-0000-0000-0000-000000000001"
    assert counter.client.get("/api/v1/health").json()["ledger_seq"] == 5


def test_unknown_card_events_404_and_bad_uuid_422(counter: Counter) -> None:
    assert_problem(counter.get("/api/v1/cards/6f1c2b0e-8d3a-4c1e-9a8b-1f2e3d4c5b6a/events"), 404)
    assert_problem(counter.get("/api/v1/cards/not-a-uuid/events"), 422, field="card_id")


@pytest.mark.parametrize("role", ["auditor", "supervisor"])
def test_read_only_roles_cannot_issue(counter: Counter, role: str) -> None:
    number = counter.person()
    assert_problem(counter.issue(number, as_=role), 403)
