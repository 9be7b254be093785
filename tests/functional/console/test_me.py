"""The citizen's console (/me) and the clerk's activation code: a code printed at the counter,
activation, sign-in and sign-out, the session kept apart from staff and unit sessions, who
checked my card and the dispute, who read my record, the lock, the emergency report and the
loss declaration with its public, verifying page — each written through the same use-cases as
the API (the API then sees the change)."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from idguard import uow
from idguard.citizens.models import LossDeclaration
from idguard.core.clock import FixedClock
from idguard.core.idnumber import mask
from idguard.db.common import AuditEntry
from idguard.registry.models import LossReport
from idguard.verification.models import PersonFlags
from idguard.watchlist.models import Incident
from tests.functional.citizens.conftest import CITIZEN_PASSWORD, Unit, flush
from tests.functional.conftest import Counter
from tests.functional.console.conftest import Browser

_CODE = re.compile(r'id="activation-code">([^<]+)<')


def person_page(clerk: Browser, number: str) -> str:
    r = clerk.post("/console/search", {"id_number": number})
    assert r.status_code == 303, r.text
    return str(r.headers["location"])


def print_code(web: TestClient, number: str) -> str:
    """A clerk at the counter prints the person's activation code (the console's receipt)."""
    clerk = Browser(web)
    clerk.sign_in("clerk_a")
    person = person_page(clerk, number)
    page = clerk.get(person)
    assert f'action="{person}/activation-code"' in page.text
    r = clerk.post(f"{person}/activation-code", {})
    assert r.status_code == 200, r.text
    assert "figure" in r.text
    assert "<svg" in r.text
    found = _CODE.search(r.text)
    assert found is not None
    return found.group(1)


def activate(browser: Browser, number: str, code: str, password: str = CITIZEN_PASSWORD) -> Any:
    browser.get("/me/activate")
    return browser.post(
        "/me/activate",
        {"id_number": number, "activation_code": code, "password": password, "password_again": password},
    )


def citizen(web: TestClient, counter: Counter, name: str = "王芳") -> tuple[Browser, str, dict[str, Any]]:
    """A person with a valid card who opened an account in the console and is signed in."""
    number = counter.person(name=name)
    card = counter.card(number)
    me = Browser(web)
    r = activate(me, number, print_code(web, number))
    assert r.status_code == 303, r.text
    assert r.headers["location"] == "/me?activated=1"
    assert me.get("/me").status_code == 200  # the signed-in page: its CSRF token
    return me, number, card


def test_the_counter_prints_a_code_and_the_citizen_opens_the_account(
    web: TestClient, counter: Counter, session_factory: sessionmaker[Session]
) -> None:
    me, number, card = citizen(web, counter)
    page = me.get("/me?activated=1")
    assert page.status_code == 200
    assert "王芳" in page.text
    assert number in page.text
    assert card["card_id"] in page.text
    assert "账户已开通" in page.text
    with session_factory() as s:
        actions = s.scalars(sa.select(AuditEntry.action)).all()
    assert "citizen.activation_code" in actions  # the printed code is audited on the record
    # The code worked once.
    other = Browser(web)
    r = activate(other, number, "XXXX-XXXX-XXXX-XXXX")
    assert r.status_code == 401
    assert "不匹配" in r.text


def test_a_used_code_and_a_bad_password_are_refused_naming_the_field(
    web: TestClient, counter: Counter
) -> None:
    number = counter.person()
    code = print_code(web, number)
    me = Browser(web)
    r = activate(me, number, code, password="short")
    assert r.status_code == 422
    assert 'id="password"' in r.text
    assert 'aria-invalid="true"' in r.text
    r = me.post(
        "/me/activate",
        {"id_number": number, "activation_code": code, "password": CITIZEN_PASSWORD, "password_again": "x"},
    )
    assert r.status_code == 422
    assert "不一致" in r.text
    assert activate(me, number, code).status_code == 303
    again = Browser(web)
    r = activate(again, number, code)
    assert r.status_code == 409
    assert "used already" in r.text


def test_sign_in_sign_out_and_the_wrong_password(web: TestClient, counter: Counter) -> None:
    me, number, _ = citizen(web, counter)
    r = me.post("/me/logout", {})
    assert r.headers["location"] == "/me/login?bye=1"
    assert me.get("/me").headers["location"] == "/me/login"
    login = me.get("/me/login?bye=1")
    assert "您已退出登录" in login.text
    r = me.post("/me/login", {"id_number": number, "password": "not the password"})
    assert r.status_code == 401
    r = me.post("/me/login", {"id_number": number, "password": CITIZEN_PASSWORD})
    assert r.status_code == 303
    assert r.headers["location"] == "/me"
    assert me.get("/me").status_code == 200
    assert me.get("/me/login").headers["location"] == "/me"  # already signed in


def test_citizen_sign_in_is_throttled_like_the_api(web: TestClient, counter: Counter) -> None:
    number = counter.person()
    me = Browser(web)
    me.get("/me/login")
    statuses = [
        me.post("/me/login", {"id_number": number, "password": f"wrong {n}"}).status_code for n in range(12)
    ]
    assert statuses[0] == 401
    assert statuses[-1] == 429
    # The same bucket as the API's: the API refuses this account from here too.
    r = web.post("/api/v1/citizen/token", json={"id_number": number, "password": "again wrong"})
    assert r.status_code == 429


def test_forms_need_the_csrf_token(web: TestClient, counter: Counter) -> None:
    me, _, card = citizen(web, counter)
    r = me.post("/me/protection", {"required": "1"}, csrf=False)
    assert r.status_code == 403
    r = me.post(f"/me/cards/{card['card_id']}/loss-report", {"reason": "lost", "csrf": "forged"}, csrf=False)
    assert r.status_code == 403
    assert counter.cards(card["id_number"])[0]["status"] == "valid"


def test_citizen_staff_and_unit_sessions_are_kept_apart(web: TestClient, counter: Counter) -> None:
    me, _, _ = citizen(web, counter)
    assert me.get("/console").headers["location"] == "/console/login"
    assert me.get("/unit").headers["location"] == "/unit/login"
    assert me.get("/unit/compliance").headers["location"] == "/unit/login"
    staff = Browser(web)
    staff.sign_in("clerk_a")
    bank = Unit(counter, "ME-BANK")
    teller = Browser(web)
    teller.teller(bank.key)
    for who in (staff, teller, Browser(web)):
        for path in ("/me", "/me/checks", "/me/accesses"):
            r = who.get(path)
            assert (r.status_code, r.headers.get("location")) == (303, "/me/login"), path
        r = who.post("/me/protection", {"required": "1"})
        assert r.headers["location"] == "/me/login"
    # An htmx request is told where to go instead of being redirected.
    r = staff.get("/me", headers={"HX-Request": "true"})
    assert r.status_code == 204
    assert r.headers["HX-Redirect"] == "/me/login"


def test_idle_timeout_and_a_reset_account_end_the_session(
    web: TestClient, counter: Counter, clock: FixedClock
) -> None:
    me, number, _ = citizen(web, counter)
    clock.advance(dt.timedelta(minutes=14))
    assert me.get("/me").status_code == 200
    clock.advance(dt.timedelta(minutes=16))
    assert me.get("/me").headers["location"] == "/me/login?expired=1"
    # Signed in again; then the counter resets the account (a new code, activated elsewhere).
    me.get("/me/login")
    assert me.post("/me/login", {"id_number": number, "password": CITIZEN_PASSWORD}).status_code == 303
    assert me.get("/me").status_code == 200
    phone = Browser(web)
    assert activate(phone, number, print_code(web, number), "a brand new passphrase 7").status_code == 303
    assert me.get("/me").headers["location"].startswith("/me/login")


def test_who_checked_my_card_and_this_was_not_me(
    web: TestClient, counter: Counter, session_factory: sessionmaker[Session]
) -> None:
    me, _number, card = citizen(web, counter)
    bank = Unit(counter, "ME-BANK", name="工商银行朝阳支行")
    r = bank.verify(card)
    assert r.status_code == 200, r.text
    check_id = r.json()["check_id"]
    flush(web)
    page = me.get("/me/checks")
    assert page.status_code == 200
    assert "工商银行朝阳支行" in page.text
    assert check_id in page.text
    r = me.post(f"/me/checks/{check_id}/dispute", {}, csrf=False)
    assert r.status_code == 403
    page = me.get("/me/checks")
    form_key = re.search(r'name="form_key" value="([^"]+)"', page.text)
    assert form_key is not None
    r = me.post(f"/me/checks/{check_id}/dispute", {"form_key": form_key.group(1)})
    assert r.status_code == 303, r.text
    incident_no = r.headers["location"].split("disputed=")[1]
    # The same form sent again is the same write: one incident, the same answer.
    again = me.post(f"/me/checks/{check_id}/dispute", {"form_key": form_key.group(1)})
    assert again.headers["location"] == r.headers["location"]
    with session_factory() as s:
        incidents = s.scalars(sa.select(Incident)).all()
    assert [(i.incident_no, i.kind.value, i.check_id, i.count) for i in incidents] == [
        (incident_no, "disputed_by_holder", check_id, 1)
    ]
    page = me.get(r.headers["location"])
    assert incident_no in page.text
    assert f'action="/me/checks/{check_id}/dispute"' not in page.text  # disputed already
    assert "本人提出异议" in me.get("/me").text  # the incident on my page


def test_another_persons_check_cannot_be_disputed(web: TestClient, counter: Counter) -> None:
    me, _, _ = citizen(web, counter)
    other_card = counter.card(counter.person(name="李四"))
    bank = Unit(counter, "ME-BANK")
    check_id = bank.verify(other_card).json()["check_id"]
    flush(web)
    r = me.post(f"/me/checks/{check_id}/dispute", {})
    assert r.status_code == 404
    assert me.post("/me/checks/not-a-uuid/dispute", {}).status_code == 404


def test_who_read_my_record_names_the_office_and_role_never_the_person(
    web: TestClient, counter: Counter
) -> None:
    me, number, _ = citizen(web, counter)
    clerk = Browser(web)
    clerk.sign_in("clerk_a")
    clerk.get(person_page(clerk, number))  # an audited read
    page = me.get("/me/accesses")
    assert page.status_code == 200
    assert "person.read" in page.text
    assert "查阅户籍信息" in page.text
    assert "窗口民警" in page.text or "clerk" in page.text.lower()
    assert "clerk_a" not in page.text  # the member of staff is never named


def test_the_lock_is_written_through_the_watchlist_and_lifted_again(
    web: TestClient, counter: Counter, session_factory: sessionmaker[Session]
) -> None:
    me, _, _ = citizen(web, counter)
    r = me.post("/me/protection", {"required": "1"})
    assert r.headers["location"] == "/me?locked=1"
    with session_factory() as s:
        assert s.scalars(sa.select(PersonFlags.person_check_required)).one() is True
    assert 'value="0"' in me.get("/me?locked=1").text  # the page now offers to unlock
    r = me.post("/me/protection", {"required": "0"})
    assert r.headers["location"] == "/me?unlocked=1"
    with session_factory() as s:
        assert s.scalars(sa.select(PersonFlags.person_check_required)).one() is False


def _form_key(html: str, action: str) -> str:
    found = re.search(re.escape(f'action="{action}"') + r'.*?name="form_key" value="([^"]+)"', html, re.S)
    assert found is not None, action
    return found.group(1)


def test_emergency_report_then_a_declaration_with_its_public_verifying_page(
    web: TestClient, counter: Counter, session_factory: sessionmaker[Session], clock: FixedClock
) -> None:
    me, number, card = citizen(web, counter, name="欧阳娜娜")
    action = f"/me/cards/{card['card_id']}/loss-report"
    key = _form_key(me.get("/me").text, action)
    r = me.post(action, {"reason": "stolen", "form_key": key})
    assert r.status_code == 303, r.text
    report_no = r.headers["location"].split("reported=")[1]
    assert me.post(action, {"reason": "stolen", "form_key": key}).headers["location"] == r.headers["location"]
    with session_factory() as s:
        assert s.scalars(sa.select(LossReport.report_no)).all() == [report_no]  # once
    assert counter.cards(number)[0]["status"] == "reported_stolen"
    page = me.get(r.headers["location"])
    assert report_no in page.text
    assert f'href="/receipt/{report_no}"' in page.text
    assert action not in page.text  # no second report of a reported card

    declare = f"/me/cards/{card['card_id']}/declaration"
    tomorrow = (clock.now() + dt.timedelta(days=2)).date().isoformat()
    r = me.post(declare, {"lost_on": tomorrow, "place": "北京西站", "form_key": "k1"})
    assert r.status_code == 422
    assert 'id="lost-on-' in r.text
    assert 'aria-invalid="true"' in r.text
    r = me.post(declare, {"lost_on": card["issued_on"], "place": "北京西站", "form_key": "k2"})
    assert r.status_code == 303, r.text
    own = r.headers["location"]
    number_ld = own.rsplit("/", 1)[1]
    assert number_ld.startswith("LD")
    page = me.get(own)
    assert page.status_code == 200
    assert "<svg" in page.text
    assert f"/declaration/{number_ld}" in page.text
    assert 'data-verified="yes"' in page.text
    assert "欧***" in page.text
    assert mask(number) in page.text
    public = Browser(web).get(f"/declaration/{number_ld}")
    assert public.status_code == 200
    assert 'data-verified="yes"' in public.text
    assert "欧阳娜娜" not in public.text
    assert number not in public.text
    # The API serves the same signed declaration.
    assert web.get(f"/api/v1/declarations/{number_ld}").json()["place"] == "北京西站"
    # A tampered declaration does not verify on the public page.
    with uow.transaction(session_factory) as s:
        row = s.get(LossDeclaration, number_ld)
        assert row is not None
        row.payload = row.payload.replace("北京西站", "上海南站")
    assert 'data-verified="no"' in Browser(web).get(f"/declaration/{number_ld}").text
    # Only its holder opens the printable page; anyone else's is as if there were none.
    stranger, _, _ = citizen(web, counter, name="赵六")
    assert stranger.get(own).status_code == 404
    assert Browser(web).get("/declaration/LDNOSUCH").status_code == 404


@pytest.mark.parametrize("lang", ["zh-CN", "en"])
def test_every_citizen_page_renders_in_both_languages(web: TestClient, counter: Counter, lang: str) -> None:
    me, _, _card = citizen(web, counter)
    me.get(f"/me?lang={lang}")
    for path in ("/me", "/me/checks", "/me/accesses"):
        r = me.get(path)
        assert r.status_code == 200, path
        assert f'<html lang="{lang}">' in r.text
    anonymous = Browser(web)
    for path in ("/me/login", "/me/activate"):
        r = anonymous.get(f"{path}?lang={lang}")
        assert r.status_code == 200
        assert f'<html lang="{lang}">' in r.text


def test_the_staff_sign_in_page_links_the_citizens(browser: Browser) -> None:
    assert 'href="/me/login"' in browser.get("/").text


def test_every_state_a_page_names_has_its_words() -> None:
    """Pages name some messages by a value (`me.incident.<kind>`): every value has its words."""
    from idguard.accountability.rules import CaseEventKind, CaseStatus, Decision, Level, TxClass
    from idguard.console import i18n
    from idguard.watchlist.rules import EntryStatus, IncidentKind, IncidentStatus

    families = {
        "me.incident.": IncidentKind,
        "me.incident_state.": IncidentStatus,
        "me.listing_state.": EntryStatus,
        "teller.class.": TxClass,
        "teller.level.": Level,
        "teller.decision.": Decision,
        "teller.case_event.": CaseEventKind,
        "teller.case_status.": CaseStatus,
    }
    for lang in i18n.LANGUAGES:
        catalog = i18n.catalog(lang)
        missing = [p + v.value for p, enum in families.items() for v in enum if p + v.value not in catalog]
        assert not missing, (lang, missing)
