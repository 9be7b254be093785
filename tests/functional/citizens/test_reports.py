"""The emergency online report: invalid at once on every worker, never cancelled online, and
cancelled in person at the holder's hukou office (with the finger where the card has fingers)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from idguard.app import create_app
from idguard.config import Settings
from idguard.core.clock import FixedClock
from tests import prints
from tests.factories import OFFICE_A, OFFICE_B
from tests.functional.citizens.conftest import Citizens, Unit, sync
from tests.functional.conftest import Counter, assert_problem

ALICE, BOB = 21, 22


@pytest.fixture
def other_worker(settings: Settings, clock: FixedClock) -> Iterator[TestClient]:
    app = create_app(settings, clock=clock)
    with TestClient(app) as client:
        yield client
    app.state.engine.dispose()


def test_the_card_is_invalid_at_once_on_another_worker(
    citizens: Citizens, counter: Counter, other_worker: TestClient
) -> None:
    bank = Unit(counter, "BANK-1")
    citizen = citizens.new()
    sync(other_worker)
    assert bank.verify(citizen.card, client=other_worker).json()["result"] == "valid"
    r = citizen.post("/me/loss-reports", {"card_id": citizen.card["card_id"], "reason": "stolen"})
    assert r.status_code == 201, r.text
    report = r.json()
    assert report["card_status"] == "reported_stolen"
    assert report["cancel_at_office"] == OFFICE_A  # the hukou office
    sync(other_worker)
    answer = bank.verify(citizen.card, client=other_worker).json()
    assert (answer["result"], answer["reason"]) == ("invalid", "reported_stolen")
    ledger = citizen.get("/me/cards").json()["items"][0]["ledger"]
    assert (ledger[-1]["event"], ledger[-1]["office"], ledger[-1]["reference"]) == (
        "reported_stolen",
        "online",
        report["report_no"],
    )


def test_it_cannot_be_cancelled_online_only_at_the_hukou_office(citizens: Citizens, counter: Counter) -> None:
    citizen = citizens.new()
    report = citizen.post("/me/loss-reports", {"card_id": citizen.card["card_id"], "reason": "lost"}).json()
    path = f"/api/v1/loss-reports/{report['report_no']}/cancel"
    # No citizen route cancels, and the staff route does not take a citizen token.
    assert citizens.client.post(path, json={"office": OFFICE_A}, headers=citizen.headers).status_code == 401
    assert citizens.client.post(path, json={"office": "online"}, headers=citizen.headers).status_code == 401
    # Another office's clerk may not; the hukou office's clerk, with the holder there, may.
    assert_problem(counter.post(path, {"office": OFFICE_B}, as_="clerk_b"), 409, says="accepted it")
    r = counter.post(path, {"office": OFFICE_A})
    assert r.status_code == 200, r.text
    assert citizen.get("/me/cards").json()["items"][0]["status"] == "valid"


def test_a_card_with_fingers_is_reported_without_and_cancelled_with_the_finger(
    citizens: Citizens, counter: Counter
) -> None:
    citizen = citizens.new(fingerprints=prints.enrolment(ALICE))
    r = citizen.post("/me/loss-reports", {"card_id": citizen.card["card_id"], "reason": "lost"})
    assert r.status_code == 201, r.text
    path = f"/api/v1/loss-reports/{r.json()['report_no']}/cancel"
    assert_problem(counter.post(path, {"office": OFFICE_A}), 422, field="fingerprint")
    assert_problem(counter.post(path, {"office": OFFICE_A, "fingerprint": prints.capture(BOB)}), 409)
    r = counter.post(path, {"office": OFFICE_A, "fingerprint": prints.capture(ALICE, prints.THUMB, 3)})
    assert r.status_code == 200, r.text


def test_only_a_card_valid_today_and_only_once(citizens: Citizens, counter: Counter) -> None:
    citizen = citizens.new()
    body = {"card_id": citizen.card["card_id"], "reason": "lost"}
    assert citizen.post("/me/loss-reports", body).status_code == 201
    assert_problem(citizen.post("/me/loss-reports", body), 409, says="only a valid card")
    assert citizen.post("/me/loss-reports", {**body, "card_id": "not-a-uuid"}).status_code == 422
    assert_problem(citizen.post("/me/loss-reports", {**body, "reason": "misplaced"}), 422, field="reason")


def test_a_retry_with_the_same_idempotency_key_reports_once(citizens: Citizens) -> None:
    citizen = citizens.new()
    body = {"card_id": citizen.card["card_id"], "reason": "lost"}
    first = citizen.post("/me/loss-reports", body, **{"Idempotency-Key": "k1"})
    again = citizen.post("/me/loss-reports", body, **{"Idempotency-Key": "k1"})
    assert first.status_code == again.status_code == 201
    answer = first.json()
    assert answer.pop("propagation")["confirmed"] >= 1  # told by the answer that made the change
    assert answer == again.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len(citizen.get("/me/cards").json()["items"][0]["ledger"]) == 2
