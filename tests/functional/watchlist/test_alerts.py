"""Alerts in the verify answer (API.md part 2): `blacklisted`, `person_check_required` and
`known_impersonator`, in single and batch answers, recorded in the check log; the blacklist's
rules (one active entry, lifting, the end date)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from idguard.core.clock import FixedClock
from idguard.verification.models import Check
from tests.factories import NOW
from tests.functional.conftest import Counter, assert_problem
from tests.functional.watchlist.helpers import Bank, blacklist, gallery_holds, listed, protect, settle
from tests.prints import LEFT_THUMB, THUMB, capture, enrolment

TODAY = dt.date(2026, 6, 15)  # NOW in China Standard Time


def test_a_listed_holder_s_card_answers_blacklisted_in_single_and_batch_answers(counter: Counter) -> None:
    bank = Bank(counter)
    listed_card = counter.card(counter.person(name="王五"))
    other = counter.card(counter.person())
    entry = listed(counter, listed_card["id_number"])
    assert entry["status"] == "active"
    assert entry["listed_on"] == TODAY.isoformat()
    assert entry["until"] is None
    settle(counter)

    answer = bank.verify(listed_card).json()
    assert answer["result"] == "valid"  # the result is unchanged
    assert answer["alerts"] == ["blacklisted"]
    assert "alerts" not in bank.verify(other).json()

    r = counter.client.post(
        "/api/v1/verify/batch",
        json={"items": [_item(other), _item(listed_card), _item(listed_card, name="李四")]},
        headers=bank.headers(),
    )
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert "alerts" not in results[0]
    assert results[1]["alerts"] == ["blacklisted"]
    assert results[2] == results[2] | {"result": "mismatch"}
    assert "alerts" not in results[2]  # a mismatch says nothing about whose number it is


def test_an_invalid_card_of_a_listed_holder_also_answers_blacklisted(counter: Counter) -> None:
    bank = Bank(counter)
    card = counter.card(counter.person())
    assert counter.report(card).status_code == 201
    listed(counter, card["id_number"])
    settle(counter)
    answer = bank.verify(card).json()
    assert (answer["result"], answer["reason"], answer["alerts"]) == (
        "invalid",
        "reported_lost",
        ["blacklisted"],
    )


def test_lifting_ends_the_alert_and_the_history_keeps_every_step(counter: Counter) -> None:
    bank = Bank(counter)
    card = counter.card(counter.person())
    entry = listed(counter, card["id_number"])
    settle(counter)
    assert bank.verify(card).json()["alerts"] == ["blacklisted"]

    path = f"/api/v1/blacklist/{entry['entry_no']}/lift"
    assert_problem(counter.post(path, {}, as_="supervisor"), 422, field="reason")
    r = counter.post(path, {"reason": "court found no impersonation"}, as_="supervisor")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "lifted"
    assert [h["action"] for h in r.json()["history"]] == ["listed", "lifted"]
    settle(counter)
    assert "alerts" not in bank.verify(card).json()
    assert_problem(counter.post(path, {"reason": "again"}, as_="supervisor"), 409, says="not active")

    # lifted: the person may be listed again, and the list shows both entries by status
    again = listed(counter, card["id_number"])
    active = counter.get("/api/v1/blacklist", as_="auditor", status="active").json()["items"]
    assert [e["entry_no"] for e in active if e["id_number"] == card["id_number"]] == [again["entry_no"]]
    lifted = counter.get("/api/v1/blacklist", as_="auditor", status="lifted").json()["items"]
    assert entry["entry_no"] in [e["entry_no"] for e in lifted]


def test_an_entry_ends_by_itself_after_its_last_day(counter: Counter, clock: FixedClock) -> None:
    bank = Bank(counter)
    card = counter.card(counter.person())
    last_day = TODAY + dt.timedelta(days=2)
    entry = listed(counter, card["id_number"], until=last_day)
    settle(counter)
    clock.advance(dt.timedelta(days=2))  # the last day: still listed
    assert bank.verify(card).json()["alerts"] == ["blacklisted"]
    clock.advance(dt.timedelta(days=1))  # the day after: ended, nothing needed to run
    assert "alerts" not in bank.verify(card).json()
    expired = counter.get("/api/v1/blacklist", as_="supervisor", status="expired").json()["items"]
    assert entry["entry_no"] in [e["entry_no"] for e in expired]
    # the sweeper writes it down (history, flags, ledger): the writer thread's round may have done
    # it already; then the person can be listed again
    assert counter.client.app.state.incident_writer.sweep() in (0, 1)  # type: ignore[attr-defined]
    settle(counter)
    assert "alerts" not in bank.verify(card).json()
    history = counter.get("/api/v1/blacklist", as_="supervisor", status="expired").json()["items"]
    mine = next(e for e in history if e["entry_no"] == entry["entry_no"])
    assert [h["action"] for h in mine["history"]] == ["listed", "expired"]
    assert mine["history"][1]["by"] is None
    listed(counter, card["id_number"])


def test_blacklist_rules(counter: Counter) -> None:
    number = counter.person()
    counter.card(number)
    listed(counter, number)
    assert_problem(blacklist(counter, number), 409, says="already has an active")
    assert_problem(blacklist(counter, "110105199001011232"), 404)
    assert_problem(
        blacklist(counter, counter.person(), until=TODAY - dt.timedelta(days=1)), 409, says="in the past"
    )
    r = counter.post(
        "/api/v1/blacklist", {"id_number": number, "reason": "gossip", "case_no": "1"}, as_="supervisor"
    )
    assert_problem(r, 422, field="reason")
    r = counter.post("/api/v1/blacklist", {"id_number": number, "reason": "impersonation"}, as_="supervisor")
    assert_problem(r, 422, field="case_no")
    assert_problem(blacklist(counter, number, as_="clerk_a"), 403)


def test_listing_is_idempotent_under_a_key(counter: Counter) -> None:
    number = counter.person()
    body = {"id_number": number, "reason": "impersonation", "case_no": "A-1"}
    first = counter.post("/api/v1/blacklist", body, as_="supervisor", **{"Idempotency-Key": "bl-1"})
    again = counter.post("/api/v1/blacklist", body, as_="supervisor", **{"Idempotency-Key": "bl-1"})
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    assert again.headers["Idempotent-Replayed"] == "true"


def test_protection_requires_the_holder_s_matching_finger(counter: Counter) -> None:
    bank = Bank(counter)
    number = counter.person()
    card = counter.card(number, fingerprints=enrolment(101))
    r = protect(counter, number)
    assert r.status_code == 200, r.text
    answer = r.json()
    propagation = answer.pop("propagation")  # every worker applied it before the answer
    assert propagation["confirmed"] == propagation["workers"] >= 1
    assert answer == {"id_number": number, "person_check_required": True}

    assert bank.verify(card).json()["alerts"] == ["person_check_required"]
    with_finger = bank.verify(card, fingerprint=capture(101, THUMB)).json()
    assert with_finger["fingerprint_match"] is True
    assert "alerts" not in with_finger
    wrong = bank.verify(card, fingerprint=capture(202, THUMB)).json()
    assert wrong["fingerprint_match"] is False
    assert wrong["alerts"] == ["person_check_required"]

    assert protect(counter, number, as_="clerk_b").status_code == 403  # not the hukou office
    assert protect(counter, number, False, as_="supervisor").status_code == 200
    settle(counter)
    assert "alerts" not in bank.verify(card).json()


def test_known_impersonator_a_listed_person_s_finger_on_someone_else_s_card(counter: Counter) -> None:
    bank = Bank(counter)
    impostor = counter.person(name="冒用人")
    counter.card(impostor, fingerprints=enrolment(303))
    victim = counter.person(name="受害人")
    victim_card = counter.card(victim, fingerprints=enrolment(404))
    listed(counter, impostor)
    gallery_holds(counter, 2)

    answer = bank.verify(victim_card, fingerprint=capture(303, LEFT_THUMB)).json()
    assert answer["result"] == "valid"
    assert answer["fingerprint_match"] is False
    assert answer["alerts"] == ["known_impersonator"]
    # a stranger's finger is not an impersonator's
    stranger = bank.verify(victim_card, fingerprint=capture(505, THUMB)).json()
    assert stranger["fingerprint_match"] is False
    assert "alerts" not in stranger

    # lifted: the gallery forgets the fingers
    entry = counter.get("/api/v1/blacklist", as_="supervisor", status="active").json()["items"][0]
    r = counter.post(f"/api/v1/blacklist/{entry['entry_no']}/lift", {"reason": "acquitted"}, as_="supervisor")
    assert r.status_code == 200, r.text
    gallery_holds(counter, 0)
    assert "alerts" not in bank.verify(victim_card, fingerprint=capture(303, LEFT_THUMB)).json()


def test_alerts_are_recorded_with_the_check(counter: Counter, engine: sa.Engine) -> None:
    bank = Bank(counter)
    number = counter.person()
    card = counter.card(number)
    plain = counter.card(counter.person())
    listed(counter, number)
    protect(counter, number)
    settle(counter)
    flagged = bank.verify(card).json()
    assert flagged["alerts"] == ["blacklisted", "person_check_required"]
    quiet = bank.verify(plain).json()
    settle(counter)
    with engine.connect() as conn:
        rows = dict(
            conn.execute(
                sa.select(Check.id, Check.alerts).where(
                    Check.id.in_([_uuid(flagged["check_id"]), _uuid(quiet["check_id"])])
                )
            ).all()
        )
    assert rows == {
        _uuid(flagged["check_id"]): "blacklisted,person_check_required",
        _uuid(quiet["check_id"]): None,
    }


def _uuid(value: str) -> Any:
    import uuid

    return uuid.UUID(value)


def _item(card: dict[str, Any], **over: Any) -> dict[str, Any]:
    return {
        "id_number": card["id_number"],
        "name": card["name"],
        "issued_on": card["issued_on"],
        "expires_on": card["expires_on"],
        "purpose": "account_opening",
        "operator": "teller-7",
        **over,
    }


assert NOW.date() == TODAY
