"""The unit teller's other pages: notifications of watched cards and case notices, the
transactions upload (through accountability's use-case: per-row answers, idempotent per ref),
the unit's own compliance, and its statement on a case."""

from __future__ import annotations

import datetime as dt
import re

import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from idguard.accountability.models import CaseEvent, Transaction
from idguard.core.clock import FixedClock
from tests.functional.conftest import Counter
from tests.functional.console.conftest import Browser
from tests.functional.verification.test_verify import Bank, flush, sync

HEADER = "ref,at,id_number,purpose,check_id\n"


def rfc3339(at: dt.datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def csv_file(text: str) -> dict[str, tuple[str, bytes, str]]:
    return {"file": ("tx.csv", text.encode("utf-8"), "text/csv")}


def form_key(html: str) -> str:
    found = re.search(r'name="form_key" value="([^"]+)"', html)
    assert found is not None
    return found.group(1)


def test_notifications_show_a_watched_cards_change_and_case_notices(
    web: TestClient, counter: Counter, browser: Browser
) -> None:
    web.app.state.verifier.dispatcher.horizon.settle = 0.0  # type: ignore[attr-defined]
    card = counter.card(counter.person())
    bank = Bank(counter)
    sync(counter)
    r = bank.verify(card, watch=True)
    assert r.status_code == 200, r.text
    check_id = r.json()["check_id"]
    flush(counter)
    assert counter.report(card).status_code == 201
    sync(counter)
    browser.teller(bank.key)
    page = browser.get("/unit/notifications")
    assert page.status_code == 200
    assert check_id in page.text
    assert "s-reported_lost" in page.text
    assert card["id_number"] not in page.text
    assert card["name"] not in page.text
    r = counter.post(
        f"/api/v1/units/{bank.code}/cases",
        {"month": "2026-05", "finding": "未核查开户 1.9 %"},
        as_="supervisor",
    )
    assert r.status_code == 201, r.text
    page = browser.get("/unit/notifications")
    assert r.json()["case_no"] in page.text
    assert "未核查开户 1.9 %" in page.text
    # A later page starts after the cursor given: nothing is repeated.
    cursor = re.search(r"<td>(\d+)</td></tr>", page.text)
    assert cursor is not None
    later = browser.get(f"/unit/notifications?after={cursor.group(1)}")
    assert check_id not in later.text
    assert browser.get("/unit/notifications?after=-1").status_code == 422


def test_transactions_upload_answers_each_row_and_is_one_idempotent_write(
    web: TestClient,
    counter: Counter,
    browser: Browser,
    clock: FixedClock,
    session_factory: sessionmaker[Session],
) -> None:
    card = counter.card(counter.person())
    bank = Bank(counter)
    sync(counter)
    assert bank.verify(card).json()["result"] == "valid"
    flush(counter)
    browser.teller(bank.key)
    page = browser.get("/unit/transactions")
    assert page.status_code == 200
    soon = rfc3339(clock.now() + dt.timedelta(minutes=1))
    text = (
        HEADER
        + f"ACC-1,{soon},{card['id_number']},account_opening,\n"
        + f"ACC-2,2026-06-15 10:00:00,{card['id_number']},account_opening,\n"  # no time zone
        + f"ACC-3,{soon},{card['id_number']},bogus,\n"
    )
    key = form_key(page.text)
    r = browser.post("/unit/transactions", {"form_key": key}, files=csv_file(text))
    assert r.status_code == 200, r.text
    assert "已接收 1 条，退回 2 条" in r.text
    rows = re.findall(r'<tr data-status="(\w+)">(.*?)</tr>', r.text, re.S)
    assert [status for status, _ in rows] == ["accepted", "rejected", "rejected"]
    assert "合规" in rows[0][1]
    assert "<code>at</code>" in rows[1][1]
    assert "<code>purpose</code>" in rows[2][1]
    again = browser.post("/unit/transactions", {"form_key": key}, files=csv_file(text))
    assert again.status_code == 200
    assert "已接收 1 条，退回 2 条" in again.text
    other = text.replace(f"ACC-1,{soon}", f"ACC-1,{rfc3339(clock.now())}")
    r = browser.post("/unit/transactions", {"form_key": key}, files=csv_file(other))
    assert r.status_code == 422  # the same form key with another file is refused
    with session_factory() as s:
        stored = s.execute(sa.select(Transaction.ref, Transaction.unit_code, Transaction.id_masked)).all()
    assert [(ref, unit) for ref, unit, _ in stored] == [("ACC-1", bank.code)]
    assert card["id_number"] not in stored[0][2]  # stored masked
    # A new form with the same ref and other content: the ref names one transaction.
    r = browser.post("/unit/transactions", {"form_key": "fresh"}, files=csv_file(other))
    assert "ref already reported with other content" in r.text


def test_a_bad_file_is_refused_naming_the_file(browser: Browser, counter: Counter) -> None:
    bank = Bank(counter)
    sync(counter)
    browser.teller(bank.key)
    r = browser.post("/unit/transactions", {}, files=csv_file("ref,when\nA,1\n"))
    assert r.status_code == 422
    assert "the header names the columns" in r.text
    r = browser.post("/unit/transactions", {}, files=csv_file(HEADER))
    assert r.status_code == 422
    assert "no transaction" in r.text
    r = browser.post("/unit/transactions", {}, files=csv_file(HEADER + "A,x,y,z,\n"), csrf=False)
    assert r.status_code == 403


def test_own_compliance_and_a_statement_on_the_units_case(
    web: TestClient,
    counter: Counter,
    browser: Browser,
    clock: FixedClock,
    session_factory: sessionmaker[Session],
) -> None:
    card = counter.card(counter.person())
    bank = Bank(counter)
    sync(counter)
    browser.teller(bank.key)
    unchecked = rfc3339(clock.now() - dt.timedelta(minutes=5))
    page = browser.get("/unit/transactions")
    browser.post(
        "/unit/transactions",
        {"form_key": form_key(page.text)},
        files=csv_file(HEADER + f"ACC-9,{unchecked},{card['id_number']},account_opening,\n"),
    )
    page = browser.get("/unit/compliance?month=2026-06")
    assert page.status_code == 200
    assert "ACC-9" in page.text
    assert "未核查" in page.text
    assert "暂定" in page.text  # the month is not closed
    assert browser.get("/unit/compliance?month=June").status_code == 422
    r = counter.post(
        f"/api/v1/units/{bank.code}/cases", {"month": "2026-06", "finding": "unchecked"}, as_="supervisor"
    )
    case_no = r.json()["case_no"]
    page = browser.get("/unit/compliance?month=2026-06")
    action = f"/unit/cases/{case_no}/response"
    assert f'action="{action}"' in page.text
    r = browser.post(action, {"statement": "", "month": "2026-06", "form_key": "k0"})
    assert r.status_code == 422  # the statement is required: the field is named
    r = browser.post(action, {"statement": "读卡器故障，已修复", "month": "2026-06", "form_key": "k1"})
    assert r.status_code == 303
    assert r.headers["location"] == "/unit/compliance?month=2026-06&responded=1"
    with session_factory() as s:
        # sealed at rest (registry/sealed.py): opened through the model
        texts = [e.text for e in s.scalars(sa.select(CaseEvent).where(CaseEvent.case_no == case_no))]
    assert "读卡器故障，已修复" in texts
    # Another unit's teller cannot answer it: as if there were no such case.
    other = Bank(counter, code="BANK-2")
    sync(counter)
    stranger = Browser(web)
    stranger.teller(other.key)
    assert stranger.post(action, {"statement": "x", "form_key": "k2"}).status_code == 404
    assert case_no not in stranger.get("/unit/compliance?month=2026-06").text


def test_teller_pages_refuse_staff_and_anonymous(web: TestClient) -> None:
    staff, anonymous = Browser(web), Browser(web)
    staff.sign_in("supervisor")
    anonymous.get("/")
    for who in (staff, anonymous):
        for path in ("/unit/notifications", "/unit/transactions", "/unit/compliance"):
            assert who.get(path).headers["location"] == "/unit/login"
        r = who.post("/unit/transactions", {})
        assert r.headers["location"] == "/unit/login"
