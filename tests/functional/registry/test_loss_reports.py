import datetime as dt
import uuid

import sqlalchemy as sa

from idguard.registry.models import Card
from tests.factories import OFFICE_A, OFFICE_B
from tests.functional.conftest import Counter, assert_problem


def test_report_makes_card_invalid_at_once_with_a_receipt(counter: Counter) -> None:
    number = counter.person()
    card = counter.card(number)
    r = counter.report(card, "lost")
    assert r.status_code == 201, r.text
    assert r.json()["report_no"].startswith("LR")
    assert r.json()["card_status"] == "reported_lost"
    assert counter.cards(number)[0]["status"] == "reported_lost"


def test_stolen_report_at_any_office(counter: Counter) -> None:
    card = counter.card(counter.person())
    r = counter.report(card, "stolen", office=OFFICE_B, as_="clerk_b")
    assert r.status_code == 201, r.text
    assert r.json()["card_status"] == "reported_stolen"


def test_clerk_acts_only_for_own_office(counter: Counter) -> None:
    card = counter.card(counter.person())
    assert_problem(counter.report(card, office=OFFICE_A, as_="clerk_b"), 403, says="may not act for office")
    assert_problem(counter.report(card, as_="auditor"), 403)


def test_only_the_holder_or_a_guardian_of_a_minor(counter: Counter) -> None:
    adult = counter.person(dt.date(1990, 1, 1))
    parent = counter.person(dt.date(1980, 1, 1))
    child = counter.person(dt.date(2015, 1, 1))
    adult_card = counter.card(adult)
    child_card = counter.card(child)
    assert_problem(counter.report(adult_card, applicant=parent), 409, says="holder in person")
    r = counter.report(child_card, applicant=parent)
    assert r.status_code == 201, r.text
    assert r.json()["by_guardian"] is True
    # A guardian must themselves be a registered adult.
    other_child = counter.person(dt.date(2012, 1, 1))
    sibling_card = counter.card(counter.person(dt.date(2016, 1, 1)))
    assert_problem(counter.report(sibling_card, applicant=other_child), 409, says="adult")


def test_applicant_name_is_checked_when_sent(counter: Counter) -> None:
    card = counter.card(counter.person(name="张三"))
    assert_problem(counter.report(card, applicant_name="李四"), 409, says="name")
    assert counter.report(card, applicant_name="张三").status_code == 201


def test_only_a_valid_card_can_be_reported(counter: Counter) -> None:
    card = counter.card(counter.person())
    assert counter.report(card).status_code == 201
    assert_problem(counter.report(card, "stolen"), 409, says="reported_lost")


def test_bad_fields_are_named(counter: Counter) -> None:
    r = counter.post(
        "/api/v1/loss-reports",
        {"card_id": "nope", "reason": "misplaced", "office": OFFICE_A, "applicant_id_number": "123"},
    )
    assert_problem(r, 422)
    assert {"card_id", "reason", "applicant_id_number"} <= {e["field"] for e in r.json()["errors"]}
    unknown = {
        "card_id": "6f1c2b0e-8d3a-4c1e-9a8b-1f2e3d4c5b6a",
        "reason": "lost",
        "office": OFFICE_A,
        "applicant_id_number": "11010519491231002X",
    }
    assert_problem(counter.post("/api/v1/loss-reports", unknown), 404)


def test_cancel_at_accepting_office_makes_card_valid_again(counter: Counter) -> None:
    number = counter.person()
    card = counter.card(number)
    report_no = counter.report(card, office=OFFICE_B, as_="clerk_b").json()["report_no"]
    path = f"/api/v1/loss-reports/{report_no}/cancel"
    assert_problem(counter.post(path, {"office": OFFICE_A}), 409, says="office that accepted")
    r = counter.post(path, {"office": OFFICE_B}, as_="clerk_b")
    assert r.status_code == 200, r.text
    assert r.json()["card_status"] == "valid"
    assert r.json()["cancelled_at"] is not None
    assert_problem(counter.post(path, {"office": OFFICE_B}, as_="clerk_b"), 409, says="already cancelled")
    assert [e["event"] for e in counter.events(card["card_id"])][-1] == "loss_report_cancelled"


def test_cancel_after_replacement_is_409_and_card_stays_invalid(counter: Counter) -> None:
    number = counter.person()
    card = counter.card(number)
    report_no = counter.report(card).json()["report_no"]
    counter.card(number, kind="replacement")
    r = counter.post(f"/api/v1/loss-reports/{report_no}/cancel", {"office": OFFICE_A})
    assert_problem(r, 409, says="newer card")
    status = {c["card_id"]: c["status"] for c in counter.cards(number)}
    assert status[card["card_id"]] == "reported_lost"


def test_cancel_unknown_report_is_404(counter: Counter) -> None:
    assert_problem(counter.post("/api/v1/loss-reports/LRNOPE/cancel", {"office": OFFICE_A}), 404)


def test_idempotent_retry_returns_first_answer_and_writes_once(counter: Counter, session_factory) -> None:  # type: ignore[no-untyped-def]
    card = counter.card(counter.person())
    first = counter.report(card, headers={"Idempotency-Key": "retry-1"})
    again = counter.report(card, headers={"Idempotency-Key": "retry-1"})
    assert first.status_code == again.status_code == 201
    # The same report; how far the change had reached the workers is told once, by the answer
    # that made it (a replay changes nothing and waits for nothing).
    replayed = first.json()
    assert replayed.pop("propagation")["confirmed"] >= 1
    assert replayed == again.json()
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert [e["event"] for e in counter.events(card["card_id"])] == ["issued:first", "reported_lost"]
    # The same key for a different request is refused, not silently replayed.
    other = counter.report(card, "stolen", headers={"Idempotency-Key": "retry-1"})
    assert_problem(other, 422, field="Idempotency-Key")
    with session_factory() as s:
        assert (
            s.scalar(sa.select(Card.status).where(Card.id == uuid.UUID(card["card_id"]))) == "reported_lost"
        )


def test_failed_write_leaves_nothing_and_key_is_reusable(counter: Counter) -> None:
    number = counter.person()
    card = counter.card(number)
    assert counter.report(card).status_code == 201
    assert counter.report(card, headers={"Idempotency-Key": "k2"}).status_code == 409
    assert len(counter.events(card["card_id"])) == 2
    # Nothing was stored for the failed attempt: the key is still free for the real request.
    other = counter.card(counter.person())
    assert counter.report(other, headers={"Idempotency-Key": "k3"}).status_code == 201
