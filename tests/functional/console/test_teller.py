"""The unit teller's page: sign in with the unit's key, check one card, see the answer; the check
is in the unit's check log under the teller's operator id, like an API check."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from idguard.verification.models import Check
from tests import prints
from tests.functional.conftest import Counter
from tests.functional.console.conftest import Browser
from tests.functional.verification.test_verify import Bank, flush, sync


def printed(card: dict[str, str], **over: str) -> dict[str, str]:
    fields = {
        "id_number": card["id_number"],
        "name": card["name"],
        "issued_on": card["issued_on"],
        "expires_on": card["expires_on"] or "",
        "long_term": "" if card["expires_on"] else "1",
        "purpose": "account_opening",
    }
    return {**fields, **over}


def test_teller_checks_a_lost_card_and_sees_invalid(
    browser: Browser, counter: Counter, session_factory: sessionmaker[Session]
) -> None:
    card = counter.card(counter.person(name="赵六"))
    counter.report(card)
    bank = Bank(counter)
    sync(counter)
    browser.teller(bank.key, operator="teller-0042")
    r = browser.post("/unit/check", printed(card))
    assert r.status_code == 200
    assert 'data-result="invalid"' in r.text
    assert "reported_lost" in r.text
    assert "赵六" not in r.text.split('id="answer"')[1]  # the answer carries no personal data
    flush(counter)
    with session_factory() as s:
        check = s.scalars(sa.select(Check)).one()
    assert (check.unit_code, check.operator, check.result) == ("BANK-1", "teller-0042", "invalid")
    history = browser.get("/unit/history")
    assert str(check.id) in history.text
    assert card["id_number"] not in history.text  # masked


def test_valid_mismatch_and_htmx_partial(browser: Browser, counter: Counter) -> None:
    card = counter.card(counter.person())
    bank = Bank(counter)
    sync(counter)
    browser.teller(bank.key)
    r = browser.post("/unit/check", printed(card))
    assert 'data-result="valid"' in r.text
    r = browser.post("/unit/check", printed(card, name="别人"), headers={"HX-Request": "true"})
    assert 'data-result="mismatch"' in r.text
    assert "<html" not in r.text  # htmx gets the answer panel alone


def test_person_card_check_with_a_fingerprint_file(browser: Browser, counter: Counter) -> None:
    card = counter.card(counter.person(), fingerprints=prints.enrolment(31))
    bank = Bank(counter)
    sync(counter)
    browser.teller(bank.key)
    r = browser.post(
        "/unit/check",
        printed(card),
        files={
            "fingerprint": (
                "f.iso",
                prints.record(31, prints.THUMB, impression=2),
                "application/octet-stream",
            )
        },
    )
    assert 'data-result="valid"' in r.text
    assert "一致" in r.text


def test_bad_fields_are_named(browser: Browser, counter: Counter) -> None:
    bank = Bank(counter)
    browser.teller(bank.key)
    r = browser.post(
        "/unit/check", {"id_number": "123", "name": "", "issued_on": "", "purpose": "account_opening"}
    )
    assert r.status_code == 422
    assert 'aria-invalid="true"' in r.text


def test_a_purpose_the_unit_may_not_use(browser: Browser, counter: Counter) -> None:
    card = counter.card(counter.person())
    bank = Bank(counter)
    browser.teller(bank.key)
    r = browser.post("/unit/check", printed(card, purpose="hotel_checkin"))
    assert r.status_code == 403


def test_wrong_key_and_revoked_key(browser: Browser, counter: Counter, web: TestClient) -> None:
    bank = Bank(counter)
    r = browser.post("/unit/login", {"api_key": "idg_wrong", "operator": "t1"})
    assert r.status_code == 401
    browser.teller(bank.key)
    assert browser.get("/unit").status_code == 200
    r = counter.post(f"/api/v1/units/{bank.code}/keys/revoke", {}, as_="supervisor")
    assert r.status_code in (200, 201), r.text
    assert browser.get("/unit").status_code == 303  # the session ends with the key


def test_a_teller_session_is_not_a_staff_session(browser: Browser, counter: Counter) -> None:
    bank = Bank(counter)
    browser.teller(bank.key)
    assert browser.get("/console").status_code == 303


def test_batch_check_from_a_csv_file_shown_and_downloaded(
    browser: Browser, counter: Counter, session_factory: sessionmaker[Session]
) -> None:
    good = counter.card(counter.person(name="甲"))
    lost = counter.card(counter.person(name="乙"))
    counter.report(lost)
    bank = Bank(counter)
    sync(counter)
    browser.teller(bank.key, operator="batcher")
    assert browser.get("/unit/batch").status_code == 200
    lines = ["id_number,name,issued_on,expires_on,purpose"]
    for card in (good, lost):
        lines.append(
            f"{card['id_number']},{card['name']},{card['issued_on']},{card['expires_on'] or ''},account_opening"
        )
    lines.append("123,丙,2020-01-01,,account_opening")  # a bad row does not stop the others
    data = ("\ufeff" + "\n".join(lines)).encode()
    r = browser.post("/unit/batch", {}, files={"file": ("cards.csv", data, "text/csv")})
    assert r.status_code == 200
    assert "有效 1 · 失效 1 · 不符 0 · 有误 1" in r.text
    r = browser.post("/unit/batch", {"format": "csv"}, files={"file": ("cards.csv", data, "text/csv")})
    assert r.headers["content-type"].startswith("text/csv")
    rows = r.content.decode("utf-8-sig").splitlines()
    assert rows[0] == "id_number,name,issued_on,expires_on,purpose,result,reason,check_id,error"
    assert ",valid,," in rows[1]
    assert ",invalid,reported_lost," in rows[2]
    assert rows[3].endswith(",id_number")
    flush(counter)
    with session_factory() as s:
        operators = s.scalars(sa.select(Check.operator)).all()
    assert operators == ["batcher"] * 4


def test_batch_refuses_a_file_without_the_columns(browser: Browser, counter: Counter) -> None:
    bank = Bank(counter)
    browser.teller(bank.key)
    r = browser.post("/unit/batch", {}, files={"file": ("x.csv", b"a,b\n1,2\n", "text/csv")})
    assert r.status_code == 422
    assert 'role="alert"' in r.text
