"""The console's impersonation pages: the person page's blacklist and protection forms, the
blacklist with lifting, the incidents queue (filters, paging, masked numbers) and closing an
incident, and a unit suspended and reinstated from the units page — each write through the
watchlist's (or verification's) use-case, audited, refused without the CSRF token, and refused
with the field named."""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from idguard.console.routes import watchlist as watch_pages
from idguard.core.idnumber import mask
from idguard.db.common import AuditEntry
from idguard.verification.models import PersonFlags, Unit
from idguard.watchlist.models import BlacklistEntry, Incident
from idguard.watchlist.rules import EntryStatus, IncidentStatus
from tests.functional.conftest import Counter
from tests.functional.console.conftest import Browser
from tests.functional.console.test_more_pages import person_id
from tests.functional.watchlist.helpers import Bank, settle


def _audited(factory: sessionmaker[Session], action: str) -> list[AuditEntry]:
    with factory() as s:
        return list(s.scalars(sa.select(AuditEntry).where(AuditEntry.action == action)))


def _lost_card_incident(counter: Counter, bank: Bank | None = None) -> dict[str, str]:
    """A stolen card of office A presented at a bank: one `lost_card_presented` incident."""
    bank = bank or Bank(counter)
    card = counter.card(counter.person())
    assert counter.report(card, "stolen").status_code == 201
    settle(counter)
    bank.verify(card)
    settle(counter)
    return card


def _incident_no(factory: sessionmaker[Session]) -> str:
    with factory() as s:
        return str(s.scalars(sa.select(Incident.incident_no).order_by(Incident.seq.desc())).first())


# ---- the blacklist ------------------------------------------------------------------------------
def test_a_supervisor_lists_a_person_and_lifts_the_entry(
    browser: Browser, counter: Counter, session_factory: sessionmaker[Session]
) -> None:
    number = counter.person()
    browser.sign_in("supervisor")
    pid = person_id(browser, number)
    page = browser.get(f"/console/persons/{pid}")
    assert 'action="/console/persons/' + pid + '/blacklist"' in page.text
    assert "未列入" in page.text

    form = {
        "reason": "impersonation",
        "case_no": "京公(朝)立字〔2026〕7号",
        "until": "",
        "note": "bank counter",
    }
    # Without the CSRF token: refused, nothing written.
    assert browser.post(f"/console/persons/{pid}/blacklist", form, csrf=False).status_code == 403
    # Without a case number: the form again, the field named.
    r = browser.post(f"/console/persons/{pid}/blacklist", {**form, "case_no": ""})
    assert r.status_code == 422
    assert "case_no" in r.text
    assert 'id="bl-case" name="case_no"' in r.text
    assert re.search(r'id="bl-case"[^>]*aria-invalid="true"', r.text)
    # An `until` in the past: the use-case's rule, shown on the form.
    r = browser.post(f"/console/persons/{pid}/blacklist", {**form, "until": "2020-01-01"})
    assert r.status_code == 409
    assert "past" in r.text
    with session_factory() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(BlacklistEntry)) == 0

    r = browser.post(f"/console/persons/{pid}/blacklist", form)
    assert r.status_code == 303, r.text
    assert r.headers["location"] == f"/console/persons/{pid}?done=blacklisted"
    page = browser.get(r.headers["location"])
    assert "已列入冒用身份证人员黑名单" in page.text
    assert "已列入" in page.text
    with session_factory() as s:
        entry = s.scalars(sa.select(BlacklistEntry)).one()
        assert entry.status is EntryStatus.ACTIVE
        assert entry.case_no == form["case_no"]
        flags = s.get(PersonFlags, entry.person_id)
        assert flags is not None
        assert flags.blacklisted
    [audit] = _audited(session_factory, "blacklist.listed")
    assert audit.detail is not None
    assert entry.entry_no in audit.detail

    # The blacklist page: the entry, the number masked for a reading role, the read audited.
    listing = browser.get("/console/blacklist")
    assert listing.status_code == 200
    assert entry.entry_no in listing.text
    assert mask(number) in listing.text
    assert number not in listing.text
    assert _audited(session_factory, "blacklist.read")

    r = browser.post(f"/console/blacklist/{entry.entry_no}/lift", {"reason": ""})
    assert r.status_code == 422
    assert "reason" in r.text
    r = browser.post(f"/console/blacklist/{entry.entry_no}/lift", {"reason": "court: not the person"})
    assert r.status_code == 303
    with session_factory() as s:
        assert s.get(BlacklistEntry, entry.entry_no).status is EntryStatus.LIFTED  # type: ignore[union-attr]
    assert len(_audited(session_factory, "blacklist.lifted")) == 1
    # Lifted already: the rule, on the page.
    r = browser.post(f"/console/blacklist/{entry.entry_no}/lift", {"reason": "again"})
    assert r.status_code == 409
    assert "not active" in r.text


def test_an_auditor_reads_the_blacklist_without_forms(browser: Browser, counter: Counter) -> None:
    number = counter.person()
    r = counter.post(
        "/api/v1/blacklist",
        {"id_number": number, "reason": "card_trafficking", "case_no": "C-1", "until": None, "note": None},
        as_="supervisor",
    )
    assert r.status_code == 201, r.text
    browser.sign_in("auditor")
    page = browser.get("/console/blacklist")
    assert r.json()["entry_no"] in page.text
    assert "买卖、出租、出借居民身份证" in page.text
    assert "/lift" not in page.text
    pid = person_id(browser, number)
    person = browser.get(f"/console/persons/{pid}").text
    assert f'action="/console/persons/{pid}/blacklist"' not in person  # no listing form
    assert "已列入" in person


def test_the_blacklist_cursor_is_checked(browser: Browser) -> None:
    browser.sign_in("supervisor")
    r = browser.get("/console/blacklist", params={"after": "not-a-cursor"})
    assert r.status_code == 422
    assert "after" in r.text


# ---- protection ---------------------------------------------------------------------------------
def test_a_clerk_of_the_hukou_office_sets_and_clears_protection(
    browser: Browser, counter: Counter, session_factory: sessionmaker[Session]
) -> None:
    number = counter.person()  # office A's
    browser.sign_in("clerk_a")
    pid = person_id(browser, number)
    assert "启用人证核验保护" in browser.get(f"/console/persons/{pid}").text
    form = {"required": "true", "reason": "the holder's card was misused"}
    assert browser.post(f"/console/persons/{pid}/protection", form, csrf=False).status_code == 403
    r = browser.post(f"/console/persons/{pid}/protection", {**form, "reason": ""})
    assert r.status_code == 422
    assert "reason" in r.text
    r = browser.post(f"/console/persons/{pid}/protection", {**form, "required": "maybe"})
    assert r.status_code == 422
    assert "required" in r.text

    r = browser.post(f"/console/persons/{pid}/protection", form)
    assert r.status_code == 303, r.text
    page = browser.get(r.headers["location"])
    assert "已启用人证核验保护" in page.text
    assert "解除人证核验保护" in page.text
    with session_factory() as s:
        flags = s.scalars(sa.select(PersonFlags)).one()
        assert flags.person_check_required
    assert len(_audited(session_factory, "protection.set")) == 1
    r = browser.post(f"/console/persons/{pid}/protection", {"required": "false", "reason": "resolved"})
    assert r.status_code == 303
    with session_factory() as s:
        assert not s.scalars(sa.select(PersonFlags)).one().person_check_required
    assert len(_audited(session_factory, "protection.cleared")) == 1


def test_a_clerk_of_another_office_may_not_protect(
    browser: Browser, counter: Counter, session_factory: sessionmaker[Session]
) -> None:
    number = counter.person()  # office A's
    browser.sign_in("clerk_b")
    pid = person_id(browser, number)
    assert "/protection" not in browser.get(f"/console/persons/{pid}").text
    r = browser.post(f"/console/persons/{pid}/protection", {"required": "true", "reason": "x"})
    assert r.status_code == 403
    with session_factory() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(PersonFlags)) == 0


# ---- incidents ----------------------------------------------------------------------------------
def test_the_queue_shows_numbers_as_the_api_does(browser: Browser, counter: Counter) -> None:
    card = _lost_card_incident(counter)
    number = card["id_number"]
    for who, shown in (("supervisor", number), ("auditor", number), ("clerk_a", number)):
        b = Browser(browser.client)
        b.sign_in(who)
        page = b.get("/console/incidents")
        assert page.status_code == 200
        assert "挂失证件被使用" in page.text, who
        assert shown in page.text, who
    # A clerk of another office: their own office's queue is empty; office A's, masked.
    other = Browser(browser.client)
    other.sign_in("clerk_b")
    assert number not in other.get("/console/incidents").text
    page = other.get("/console/incidents", params={"office": "110105001"})
    assert mask(number) in page.text
    assert number not in page.text
    admin = Browser(browser.client)
    admin.sign_in("admin")
    assert admin.get("/console/incidents").status_code == 403


def test_filters_and_paging(
    browser: Browser,
    counter: Counter,
    monkeypatch: pytest.MonkeyPatch,
    session_factory: sessionmaker[Session],
) -> None:
    bank = Bank(counter)
    first = _lost_card_incident(counter, bank)
    second = _lost_card_incident(counter, bank)
    monkeypatch.setattr(watch_pages, "PAGE", 1)
    browser.sign_in("supervisor")
    page = browser.get("/console/incidents")
    assert second["id_number"] in page.text
    assert first["id_number"] not in page.text
    found = re.search(r'href="(/console/incidents\?[^"]+)" rel="next"', page.text)
    assert found is not None
    page = browser.get(found.group(1).replace("&amp;", "&"))
    assert first["id_number"] in page.text
    assert second["id_number"] not in page.text
    assert 'rel="next"' not in page.text
    assert "没有符合条件的线索" in browser.get("/console/incidents", params={"status": "confirmed"}).text
    assert (
        "没有符合条件的线索" in browser.get("/console/incidents", params={"kind": "known_impersonator"}).text
    )
    r = browser.get("/console/incidents", params={"after": "bogus"})
    assert r.status_code == 422
    assert "after" in r.text


def test_the_owning_office_s_clerk_closes_an_incident(
    browser: Browser, counter: Counter, session_factory: sessionmaker[Session]
) -> None:
    _lost_card_incident(counter)
    number = _incident_no(session_factory)
    # An auditor reads it, without the form.
    auditor = Browser(browser.client)
    auditor.sign_in("auditor")
    page = auditor.get(f"/console/incidents/{number}")
    assert page.status_code == 200
    assert "/close" not in page.text
    assert (
        auditor.post(f"/console/incidents/{number}/close", {"outcome": "confirmed", "note": "x"}).status_code
        == 403
    )
    # A clerk of another office may not close it.
    other = Browser(browser.client)
    other.sign_in("clerk_b")
    r = other.post(f"/console/incidents/{number}/close", {"outcome": "confirmed", "note": "x"})
    assert r.status_code in (403, 404)

    browser.sign_in("clerk_a")
    page = browser.get(f"/console/incidents/{number}")
    assert f'action="/console/incidents/{number}/close"' in page.text
    form = {"outcome": "confirmed", "note": "the card was in a stranger s hands"}
    assert browser.post(f"/console/incidents/{number}/close", form, csrf=False).status_code == 403
    r = browser.post(f"/console/incidents/{number}/close", {**form, "note": ""})
    assert r.status_code == 422
    assert "note" in r.text
    r = browser.post(f"/console/incidents/{number}/close", {**form, "outcome": "maybe"})
    assert r.status_code == 422
    assert "outcome" in r.text
    r = browser.post(f"/console/incidents/{number}/close", form)
    assert r.status_code == 303, r.text
    page = browser.get(r.headers["location"])
    assert "线索已办结" in page.text
    assert form["note"] in page.text
    with session_factory() as s:
        incident = s.scalars(sa.select(Incident).where(Incident.incident_no == number)).one()
        assert incident.status is IncidentStatus.CONFIRMED
        assert incident.note == form["note"]
    [audit] = _audited(session_factory, "incident.closed")
    assert audit.detail == f"{number}: confirmed"
    assert _audited(session_factory, "incident.read")  # the whole number shown: an audited read
    r = browser.post(f"/console/incidents/{number}/close", {**form, "form_key": "another"})
    assert r.status_code == 409
    assert "already closed" in r.text


def test_an_unknown_incident_is_a_404(browser: Browser) -> None:
    browser.sign_in("supervisor")
    assert browser.get("/console/incidents/INCNONE").status_code == 404


# ---- units: suspend and reinstate ---------------------------------------------------------------
def test_a_supervisor_suspends_and_reinstates_a_unit(
    browser: Browser, counter: Counter, session_factory: sessionmaker[Session]
) -> None:
    bank = Bank(counter)
    card = counter.card(counter.person())
    browser.sign_in("supervisor")
    assert f'action="/console/units/{bank.code}/suspend"' in browser.get("/console/units").text
    assert browser.post(f"/console/units/{bank.code}/suspend", {"reason": "x"}, csrf=False).status_code == 403
    r = browser.post(f"/console/units/{bank.code}/suspend", {"reason": ""})
    assert r.status_code == 422
    assert "reason" in r.text
    r = browser.post(f"/console/units/{bank.code}/suspend", {"reason": "case pending"})
    assert r.status_code == 303, r.text
    assert "单位已暂停" in browser.get(r.headers["location"]).text
    with session_factory() as s:
        assert s.get(Unit, bank.code).status.value == "suspended"  # type: ignore[union-attr]
    assert bank.verify(card).status_code == 401  # its keys stop
    [audit] = _audited(session_factory, "unit.suspend")
    assert audit.detail == bank.code  # the reason is free text: sealed on the unit, not in the chain
    with session_factory() as s:
        assert s.get(Unit, bank.code).status_reason == "case pending"  # type: ignore[union-attr]
    r = browser.post(f"/console/units/{bank.code}/suspend", {"reason": "again"})
    assert r.status_code == 409
    assert "already suspended" in r.text

    page = browser.get("/console/units")
    assert f'action="/console/units/{bank.code}/reinstate"' in page.text
    r = browser.post(f"/console/units/{bank.code}/reinstate", {"reason": "appeal upheld"})
    assert r.status_code == 303
    with session_factory() as s:
        assert s.get(Unit, bank.code).status.value == "active"  # type: ignore[union-attr]
    assert bank.verify(card).status_code == 200
    assert [a.detail for a in _audited(session_factory, "unit.reinstate")] == [bank.code]
    with session_factory() as s:
        assert s.get(Unit, bank.code).status_reason == "appeal upheld"  # type: ignore[union-attr]


KEY = re.compile(r"\b(?:watch|acct|units)\.[a-z_]+\b")


def test_every_page_speaks_both_languages_without_a_raw_key(
    browser: Browser, counter: Counter, session_factory: sessionmaker[Session]
) -> None:
    """Dynamic keys (an incident's kind, a level, a decision) are in both catalogs: a missing one
    would show as its key."""
    bank = Bank(counter)
    card = _lost_card_incident(counter, bank)
    incident = _incident_no(session_factory)
    r = counter.post(
        "/api/v1/blacklist",
        {"id_number": card["id_number"], "reason": "fraudulent_application", "case_no": "C-9", "until": None},
        as_="supervisor",
    )
    assert r.status_code == 201, r.text
    case = counter.post(
        f"/api/v1/units/{bank.code}/cases", {"month": "2026-06", "finding": "unchecked"}, as_="supervisor"
    )
    assert case.status_code == 201, case.text
    browser.sign_in("supervisor")
    pid = person_id(browser, card["id_number"])
    pages = [
        "/console/incidents?status=all",
        f"/console/incidents/{incident}",
        "/console/blacklist?status=all",
        f"/console/persons/{pid}",
        "/console/units",
        "/console/accountability",
        "/console/accountability/charts",
        f"/console/accountability/units/{bank.code}",
        "/console/cases",
        f"/console/cases/{case.json()['case_no']}",
    ]
    for lang in ("en", "zh-CN"):
        for path in pages:
            page = browser.get(path + ("&" if "?" in path else "?") + f"lang={lang}")
            assert page.status_code == 200, (lang, path)
            assert f'lang="{lang}"' in page.text
            assert KEY.findall(page.text) == [], (lang, path)
