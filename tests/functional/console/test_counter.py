"""The counter in the console: sign in, find a person, the person page, a loss report with the
live finger ending on its receipt, the public status page its QR code opens, and cancellation."""

from __future__ import annotations

import re
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from idguard.biometrics.models import FingerprintComparison
from idguard.core.idnumber import mask
from idguard.db.common import AuditEntry
from idguard.registry.models import Card, LossReport
from tests import prints
from tests.factories import OFFICE_A
from tests.functional.conftest import Counter
from tests.functional.console.conftest import Browser

ALICE, BOB = 21, 22  # synthetic fingers (generator seeds)


def enrolled(counter: Counter, person: int = ALICE) -> dict[str, Any]:
    return counter.card(counter.person(name="李四"), fingerprints=prints.enrolment(person))


def person_page(browser: Browser, number: str) -> Any:
    r = browser.post("/console/search", {"id_number": number})
    assert r.status_code == 303, r.text
    assert number not in r.headers["location"]  # the URL names the record, never the number
    page = browser.get(r.headers["location"])
    assert page.status_code == 200
    return page


def report_no(location: str) -> str:
    found = re.fullmatch(r"/console/receipts/(LR\w+)", location)
    assert found, location
    return found.group(1)


def test_clerk_finds_a_person_and_the_read_is_audited(
    browser: Browser, counter: Counter, session_factory: sessionmaker[Session]
) -> None:
    card = counter.card(counter.person(name="王五"))
    browser.sign_in("clerk_a")
    page = person_page(browser, card["id_number"])
    assert "王五" in page.text
    assert card["id_number"] in page.text  # a clerk sees the whole number
    assert "有效" in page.text
    assert "首次申领签发" in page.text
    with session_factory() as s:
        actions = s.scalars(sa.select(AuditEntry.action).where(AuditEntry.person_id.is_not(None))).all()
    assert "person.read" in actions
    assert "card.events" in actions


def test_supervisor_sees_the_number_masked(browser: Browser, counter: Counter) -> None:
    card = counter.card(counter.person())
    browser.sign_in("supervisor")
    page = person_page(browser, card["id_number"])
    assert mask(card["id_number"]) in page.text
    assert card["id_number"] not in page.text


def test_search_for_an_unknown_or_malformed_number_says_so(browser: Browser) -> None:
    browser.sign_in("clerk_a")
    r = browser.post("/console/search", {"id_number": "110105199001011234"})
    assert r.status_code in (404, 422)
    assert 'role="alert"' in r.text
    r = browser.post("/console/search", {"id_number": "not a number"})
    assert r.status_code == 422


def test_loss_report_with_the_live_finger_ends_on_a_receipt(
    browser: Browser, counter: Counter, session_factory: sessionmaker[Session]
) -> None:
    card = enrolled(counter)
    browser.sign_in("clerk_a")
    form = browser.get(f"/console/cards/{card['card_id']}/loss-report")
    assert form.status_code == 200
    assert 'type="file"' in form.text
    live = prints.record(ALICE, prints.THUMB, impression=2)  # the raw ISO record, as a scanner saves it
    r = browser.post(
        f"/console/cards/{card['card_id']}/loss-report",
        {"reason": "lost", "applicant_id_number": card["id_number"], "office": OFFICE_A},
        files={"fingerprint": ("thumb.iso", live, "application/octet-stream")},
    )
    assert r.status_code == 303, r.text
    number = report_no(r.headers["location"])
    receipt = browser.get(r.headers["location"])
    assert receipt.status_code == 200
    assert number in receipt.text
    assert "朝阳区建国门派出所" in receipt.text
    assert "<svg" in receipt.text
    assert f"/receipt/{number}" in receipt.text
    assert "已挂失（遗失）" in receipt.text
    with session_factory() as s:
        stored = s.get(Card, uuid.UUID(card["card_id"]))
        assert stored is not None
        assert stored.status.value == "reported_lost"
        assert s.get(LossReport, number) is not None
    # What the QR code opens: public, no name, the number masked.
    public = Browser(browser.client).get(f"/receipt/{number}")
    assert public.status_code == 200
    assert mask(card["id_number"]) in public.text
    assert card["id_number"] not in public.text
    assert "李四" not in public.text


def test_base64_capture_file_is_accepted_too(browser: Browser, counter: Counter) -> None:
    card = enrolled(counter)
    browser.sign_in("clerk_a")
    r = browser.post(
        f"/console/cards/{card['card_id']}/loss-report",
        {"reason": "stolen", "applicant_id_number": card["id_number"], "office": OFFICE_A},
        files={"fingerprint": ("thumb.txt", prints.capture(ALICE, impression=3).encode(), "text/plain")},
    )
    assert r.status_code == 303, r.text


def test_another_persons_finger_is_refused_and_the_comparison_recorded(
    browser: Browser, counter: Counter, session_factory: sessionmaker[Session]
) -> None:
    card = enrolled(counter)
    browser.sign_in("clerk_a")
    r = browser.post(
        f"/console/cards/{card['card_id']}/loss-report",
        {"reason": "lost", "applicant_id_number": card["id_number"], "office": OFFICE_A},
        files={"fingerprint": ("thumb.iso", prints.record(BOB, prints.THUMB), "application/octet-stream")},
    )
    assert r.status_code == 409
    assert 'role="alert"' in r.text
    with session_factory() as s:
        assert s.get(Card, uuid.UUID(card["card_id"])).status.value == "valid"  # type: ignore[union-attr]
        matched = s.scalars(sa.select(FingerprintComparison.matched)).all()
    assert matched == [False]


def test_a_card_with_fingers_needs_the_live_finger(browser: Browser, counter: Counter) -> None:
    card = enrolled(counter)
    browser.sign_in("clerk_a")
    r = browser.post(
        f"/console/cards/{card['card_id']}/loss-report",
        {"reason": "lost", "applicant_id_number": card["id_number"], "office": OFFICE_A},
    )
    assert r.status_code == 422
    assert "fingerprint" in r.text


def test_cancellation_at_the_accepting_office(browser: Browser, counter: Counter) -> None:
    card = counter.card(counter.person())
    browser.sign_in("clerk_a")
    r = browser.post(
        f"/console/cards/{card['card_id']}/loss-report",
        {"reason": "lost", "applicant_id_number": card["id_number"], "office": OFFICE_A},
    )
    number = report_no(r.headers["location"])
    page = person_page(browser, card["id_number"])
    assert f"/console/loss-reports/{number}/cancel" in page.text
    r = browser.post(f"/console/loss-reports/{number}/cancel", {"office": OFFICE_A})
    assert r.status_code == 303, r.text
    receipt = browser.get(r.headers["location"])
    assert "解除挂失时间" in receipt.text
    assert "s-valid" in receipt.text


def test_a_clerk_of_another_office_cannot_cancel(browser: Browser, counter: Counter) -> None:
    card = counter.card(counter.person())
    number = counter.report(card).json()["report_no"]
    browser.sign_in("clerk_b")
    r = browser.post(f"/console/loss-reports/{number}/cancel", {})
    assert r.status_code in (403, 409)
    assert 'role="alert"' in r.text


def test_a_form_sent_twice_is_one_report_with_one_receipt(
    browser: Browser, counter: Counter, session_factory: sessionmaker[Session]
) -> None:
    card = counter.card(counter.person())
    browser.sign_in("clerk_a")
    form = browser.get(f"/console/cards/{card['card_id']}/loss-report")
    key = re.search(r'name="form_key" value="([^"]+)"', form.text)
    assert key
    fields = {
        "reason": "lost",
        "applicant_id_number": card["id_number"],
        "office": OFFICE_A,
        "form_key": key.group(1),
    }
    first = browser.post(f"/console/cards/{card['card_id']}/loss-report", fields)
    again = browser.post(f"/console/cards/{card['card_id']}/loss-report", fields)  # a double click
    assert first.status_code == again.status_code == 303
    assert first.headers["location"] == again.headers["location"]
    with session_factory() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(LossReport)) == 1
