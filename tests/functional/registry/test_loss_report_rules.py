"""Who may report a loss (the holder in person; a registered adult guardian for a holder under
16), and the receipt, at the counter (docs/rules.md, "Loss reports")."""

from __future__ import annotations

import datetime as dt
import re

from tests.factories import OFFICE_A
from tests.functional.conftest import Counter, assert_problem

# Today is 2026-06-15 in Beijing (tests/factories.py NOW).
SIXTEEN_TODAY = dt.date(2010, 6, 15)
SIXTEEN_TOMORROW = dt.date(2010, 6, 16)
RECEIPT = re.compile(r"LR[ABCDEFGHJKLMNPQRSTUVWXYZ23456789]{12}")


def status_of(counter: Counter, number: str) -> str:
    return str(counter.cards(number)[0]["status"])


def test_a_guardian_may_not_report_for_a_holder_who_turns_16_today(counter: Counter) -> None:
    parent = counter.person(dt.date(1980, 1, 1), name="李四")
    holder = counter.person(SIXTEEN_TODAY, name="李小明")
    card = counter.card(holder)
    assert_problem(counter.report(card, applicant=parent), 409, says="holder in person")
    assert status_of(counter, holder) == "valid"
    # The holder, in person, may.
    assert counter.report(card).status_code == 201


def test_a_guardian_may_report_for_a_holder_who_turns_16_tomorrow(counter: Counter) -> None:
    parent = counter.person(dt.date(1980, 1, 1), name="李四")
    holder = counter.person(SIXTEEN_TOMORROW, name="李小明")
    card = counter.card(holder)
    r = counter.report(card, applicant=parent)
    assert r.status_code == 201, r.text
    assert r.json()["by_guardian"] is True
    assert status_of(counter, holder) == "reported_lost"


def test_a_guardian_whose_registration_is_revoked_may_not_report(counter: Counter) -> None:
    revoked = counter.person(dt.date(1980, 1, 1), name="李四")
    assert counter.post(f"/api/v1/persons/{revoked}/revocations", {"reason": "deceased"}).status_code == 201
    child = counter.person(dt.date(2015, 1, 1), name="李小明")
    card = counter.card(child)
    assert_problem(counter.report(card, applicant=revoked), 409, says="registered adult")
    assert status_of(counter, child) == "valid"
    # The same report by a guardian in good standing is accepted.
    other = counter.person(dt.date(1982, 1, 1), female=True, name="王芳")
    r = counter.report(card, applicant=other)
    assert r.status_code == 201, r.text
    assert r.json()["by_guardian"] is True


def test_an_unregistered_guardian_may_not_report(counter: Counter) -> None:
    card = counter.card(counter.person(dt.date(2015, 1, 1), name="李小明"))
    assert_problem(counter.report(card, applicant="11010519491231002X"), 409, says="not registered")


def test_a_guardians_name_is_checked_against_the_guardians_record(counter: Counter) -> None:
    parent = counter.person(dt.date(1980, 1, 1), name="李四")
    child = counter.person(dt.date(2015, 1, 1), name="李小明")
    card = counter.card(child)
    # The applicant is the guardian: the child's name (or any other) is not theirs.
    assert_problem(counter.report(card, applicant=parent, applicant_name="李小明"), 409, says="name")
    assert_problem(counter.report(card, applicant=parent, applicant_name="张三"), 409, says="name")
    assert status_of(counter, child) == "valid"
    r = counter.report(card, applicant=parent, applicant_name="李四")
    assert r.status_code == 201, r.text


def test_the_receipt_is_LR_and_12_unambiguous_characters(counter: Counter) -> None:  # noqa: N802
    receipts = set()
    for reason in ("lost", "stolen", "lost"):
        r = counter.report(counter.card(counter.person()), reason)
        assert r.status_code == 201, r.text
        assert RECEIPT.fullmatch(r.json()["report_no"]), r.json()["report_no"]
        receipts.add(r.json()["report_no"])
    assert len(receipts) == 3
    # The receipt names the report: it cancels it at the accepting office.
    report_no = receipts.pop()
    r = counter.post(f"/api/v1/loss-reports/{report_no}/cancel", {"office": OFFICE_A})
    assert r.status_code == 200, r.text
    assert r.json()["report_no"] == report_no
