"""Issue a card with two fingerprint files, a temporary card, lost and found, the supervisor's
units page (the key shown once), and the read-only logs."""

from __future__ import annotations

import re
import uuid

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from idguard.biometrics.models import Fingerprint
from idguard.db.common import AuditEntry
from idguard.registry.models import Card, FoundCard
from tests import prints
from tests.factories import OFFICE_A
from tests.functional.conftest import Counter
from tests.functional.console.conftest import Browser


def person_id(browser: Browser, number: str) -> str:
    r = browser.post("/console/search", {"id_number": number})
    assert r.status_code == 303, r.text
    return str(r.headers["location"].rsplit("/", 1)[1])


def test_issue_a_card_with_two_finger_files(
    browser: Browser, counter: Counter, session_factory: sessionmaker[Session]
) -> None:
    number = counter.person()
    browser.sign_in("clerk_a")
    pid = person_id(browser, number)
    form = browser.get(f"/console/persons/{pid}/issue")
    assert form.status_code == 200
    r = browser.post(
        f"/console/persons/{pid}/issue",
        {"kind": "first", "office": OFFICE_A, "finger_1": "1", "finger_2": "6"},
        files={
            "fingerprint_1": ("r.iso", prints.record(41, 1, impression=0), "application/octet-stream"),
            "fingerprint_2": ("l.iso", prints.record(41, 6, impression=0), "application/octet-stream"),
        },
    )
    assert r.status_code == 303, r.text
    page = browser.get(r.headers["location"])
    assert "新证已签发" in page.text
    assert "已登记（两枚）" in page.text
    with session_factory() as s:
        card = s.scalars(sa.select(Card).where(Card.id_number == number)).one()
        fingers = s.scalars(sa.select(Fingerprint.finger).where(Fingerprint.card_id == card.id)).all()
    assert sorted(fingers) == [1, 6]


def test_one_finger_file_is_not_enough(browser: Browser, counter: Counter) -> None:
    number = counter.person()
    browser.sign_in("clerk_a")
    pid = person_id(browser, number)
    r = browser.post(
        f"/console/persons/{pid}/issue",
        {"kind": "first", "office": OFFICE_A, "finger_1": "1", "finger_2": "6"},
        files={"fingerprint_1": ("r.iso", prints.record(41, 1, impression=0), "application/octet-stream")},
    )
    assert r.status_code == 422
    assert "fingerprint_2" in r.text or 'aria-invalid="true"' in r.text


def test_renewal_supersedes_and_a_temporary_card(browser: Browser, counter: Counter) -> None:
    card = counter.card(counter.person())
    browser.sign_in("clerk_a")
    pid = person_id(browser, card["id_number"])
    r = browser.post(f"/console/persons/{pid}/issue", {"kind": "renewal", "office": OFFICE_A})
    assert r.status_code == 303, r.text
    page = browser.get(r.headers["location"])
    assert "已换领/补领作废" in page.text  # the old card
    r = browser.post(f"/console/persons/{pid}/temporary-card", {})
    assert r.status_code == 303
    assert "临时居民身份证已签发" in browser.get(r.headers["location"]).text


def test_a_found_card_is_handed_in_and_returned(
    browser: Browser, counter: Counter, session_factory: sessionmaker[Session]
) -> None:
    card = counter.card(counter.person(name="钱七"))
    counter.report(card)
    browser.sign_in("clerk_a")
    assert browser.get("/console/found-cards").status_code == 200
    r = browser.post(
        "/console/found-cards",
        {
            "id_number": card["id_number"],
            "issued_on": card["issued_on"],
            "finder_name": "孙八",
            "office": OFFICE_A,
        },
    )
    assert r.status_code == 303, r.text
    found = re.fullmatch(r"/console/receipts/(FC\w+)", r.headers["location"])
    assert found
    receipt = browser.get(r.headers["location"])
    assert "招领登记回执" in receipt.text
    assert "保管待领" in receipt.text
    listing = browser.get("/console/found-cards")
    assert found.group(1) in listing.text
    assert "钱七" in listing.text
    r = browser.post(
        f"/console/found-cards/{found.group(1)}/return", {"claimant_id_number": card["id_number"]}
    )
    assert r.status_code == 303, r.text
    with session_factory() as s:
        assert s.get(FoundCard, found.group(1)).disposition.value == "returned"  # type: ignore[union-attr]


def test_a_wrong_claimant_is_refused(browser: Browser, counter: Counter) -> None:
    card = counter.card(counter.person())
    other = counter.person()
    counter.report(card)
    browser.sign_in("clerk_a")
    r = browser.post(
        "/console/found-cards",
        {"id_number": card["id_number"], "issued_on": card["issued_on"], "finder_name": "孙八"},
    )
    number = r.headers["location"].rsplit("/", 1)[1]
    r = browser.post(f"/console/found-cards/{number}/return", {"claimant_id_number": other})
    assert r.status_code == 409
    assert 'role="alert"' in r.text


def test_supervisor_onboards_rotates_and_revokes(browser: Browser) -> None:
    browser.sign_in("supervisor")
    r = browser.post(
        "/console/units",
        {"code": "HOTEL-1", "name": "测试饭店", "sector": "hotel", "purposes": ["hotel_checkin"]},
    )
    assert r.status_code == 200, r.text
    key = re.search(r'id="api-key">(idg_[^<]+)<', r.text)
    assert key
    assert key.group(1) not in browser.get("/console/units").text  # shown once
    r = browser.post("/console/units/HOTEL-1/rotate", {})
    rotated = re.search(r'id="api-key">(idg_[^<]+)<', r.text)
    assert rotated
    assert rotated.group(1) != key.group(1)
    r = browser.post("/console/units/HOTEL-1/revoke", {})
    assert r.status_code == 303
    r = browser.post(
        "/console/units", {"code": "!", "name": "x", "sector": "x", "purposes": ["hotel_checkin"]}
    )
    assert r.status_code == 422


def test_auditor_reads_the_logs_and_the_reading_is_recorded(
    browser: Browser, counter: Counter, session_factory: sessionmaker[Session]
) -> None:
    card = counter.card(counter.person())
    counter.get(f"/api/v1/persons/{card['id_number']}")
    browser.sign_in("auditor")
    page = browser.get("/console/audit")
    assert page.status_code == 200
    assert "person.read" in page.text
    assert card["id_number"] not in page.text  # masked
    assert browser.get("/console/comparisons").status_code == 200
    assert browser.get("/console/checks").status_code == 200
    with session_factory() as s:
        assert s.scalar(sa.select(sa.func.count()).where(AuditEntry.action == "audit_log.read")) == 1
    assert uuid.UUID(card["card_id"])


def test_revocation_at_the_hukou_office(browser: Browser, counter: Counter) -> None:
    card = counter.card(counter.person())
    browser.sign_in("clerk_a")
    pid = person_id(browser, card["id_number"])
    r = browser.post(f"/console/persons/{pid}/revoke", {"reason": "deceased"})
    assert r.status_code == 303, r.text
    page = browser.get(r.headers["location"])
    assert "登记已注销" in page.text
    assert "s-revoked" in page.text


def test_revocation_elsewhere_is_refused(browser: Browser, counter: Counter) -> None:
    card = counter.card(counter.person())
    browser.sign_in("clerk_b")
    pid = person_id(browser, card["id_number"])
    r = browser.post(f"/console/persons/{pid}/revoke", {"reason": "deceased"})
    assert r.status_code in (403, 409)
