"""The console's accountability pages: the monthly table with levels, opening a case, the case
with the unit's answer and the decision, and the charts (SVG with title and description, and the
same numbers as a table) — reads for supervisors and auditors, writes for supervisors, through
accountability's use-cases, audited, CSRF-checked, refused with the field named."""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from idguard.accountability.models import Case
from idguard.accountability.rules import CaseStatus, Decision
from idguard.console.routes import accountability as accountability_pages
from idguard.db.common import AuditEntry
from idguard.verification.models import Unit as UnitRow
from tests.functional.accountability.conftest import CheckLog, Unit, number
from tests.functional.conftest import Counter
from tests.functional.console.conftest import Browser

MONTH = "2026-06"  # the test clock's month (China Standard Time)


def _unchecked(unit: Unit, n: int) -> None:
    for _ in range(n):
        assert unit.one(number())["status"] == "accepted"


def test_the_monthly_table_shows_counts_rates_and_levels(
    browser: Browser, counter: Counter, session_factory: sessionmaker[Session]
) -> None:
    bank = Unit(counter, "BANK-A")
    Unit(counter, "BANK-B")
    _unchecked(bank, 3)
    browser.sign_in("auditor")
    page = browser.get("/console/accountability")
    assert page.status_code == 200
    assert MONTH in page.text
    assert "尚未封存" in page.text
    row = re.search(r"<tr>\s*<td><a href=[^>]*><code>BANK-A</code></a>.*?</tr>", page.text, re.S)
    assert row is not None
    cells = re.findall(r"<td>([^<]*)</td>", row.group(0))
    # transactions, compliant, unchecked, checked_after, accepted_invalid, ignored_alert, violations, rate
    assert cells[:8] == ["3", "0", "3", "0", "0", "0", "3", "100.00%"]
    assert "正常" in row.group(0)  # 3 violations: below every rung's count
    assert 'action="/console/accountability/cases"' not in page.text  # an auditor reads only
    assert browser.get("/console/accountability", params={"month": "2026-13"}).status_code == 422


def test_a_unit_s_month_lists_its_violations_with_paging(
    browser: Browser, counter: Counter, monkeypatch: pytest.MonkeyPatch
) -> None:
    bank = Unit(counter, "BANK-A")
    refs = [bank.one(number(), minutes=-n)["ref"] for n in range(3)]
    monkeypatch.setattr(accountability_pages, "PAGE", 2)
    browser.sign_in("auditor")
    assert (
        'href="/console/accountability/units/BANK-A?month=2026-06"'
        in browser.get("/console/accountability").text
    )
    page = browser.get("/console/accountability/units/BANK-A", params={"month": MONTH})
    assert page.status_code == 200
    shown = re.findall(r"<td><code>(T-\d+)</code></td><td>未核查</td>", page.text)
    assert shown == [refs[2], refs[1]]  # oldest first
    found = re.search(r'href="([^"]+)" rel="next"', page.text)
    assert found is not None
    rest = browser.get(found.group(1).replace("&amp;", "&"))
    assert re.findall(r"<td><code>(T-\d+)</code></td>", rest.text) == [refs[0]]
    assert 'rel="next"' not in rest.text
    r = browser.get("/console/accountability/units/BANK-A", params={"after": "bogus"})
    assert r.status_code == 422
    assert "after" in r.text
    assert browser.get("/console/accountability/units/NOSUCH").status_code == 404


def test_a_supervisor_opens_and_decides_a_case_after_the_hearing(
    browser: Browser, counter: Counter, session_factory: sessionmaker[Session]
) -> None:
    bank = Unit(counter, "BANK-A")
    _unchecked(bank, 2)
    browser.sign_in("supervisor")
    page = browser.get("/console/accountability", params={"unit": "BANK-A"})
    assert 'action="/console/accountability/cases"' in page.text
    assert '<option value="BANK-A" selected>' in page.text
    form = {"unit": "BANK-A", "month": MONTH, "finding": "two accounts opened unchecked"}
    assert browser.post("/console/accountability/cases", form, csrf=False).status_code == 403
    r = browser.post("/console/accountability/cases", {**form, "finding": ""})
    assert r.status_code == 422
    assert "finding" in r.text
    r = browser.post("/console/accountability/cases", {**form, "unit": ""})
    assert r.status_code == 422
    assert "unit" in r.text
    r = browser.post("/console/accountability/cases", {**form, "unit": "NOSUCH"})
    assert r.status_code == 404
    with session_factory() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(Case)) == 0

    r = browser.post("/console/accountability/cases", form)
    assert r.status_code == 303, r.text
    case_no = r.headers["location"].split("/")[-1].split("?")[0]
    page = browser.get(r.headers["location"])
    assert "已立案" in page.text
    assert form["finding"] in page.text
    with session_factory() as s:
        assert s.get(Case, case_no) is not None
        assert s.scalars(sa.select(AuditEntry).where(AuditEntry.action == "case.open")).one()

    # Not heard yet: a warning is refused by the rule, shown on the page.
    r = browser.post(f"/console/cases/{case_no}/decision", {"decision": "warning", "note": "first"})
    assert r.status_code == 409
    assert "not been heard" in r.text
    r = browser.post(f"/console/cases/{case_no}/decision", {"decision": "bogus", "note": ""})
    assert r.status_code == 422
    assert "decision" in r.text
    answer = bank.post(f"/api/v1/cases/{case_no}/responses", {"statement": "branch 12's reader was broken"})
    assert answer.status_code == 201, answer.text
    page = browser.get(f"/console/cases/{case_no}")
    assert "branch 12&#39;s reader was broken" in page.text
    assert "单位陈述申辩" in page.text
    r = browser.post(f"/console/cases/{case_no}/decision", {"decision": "warning", "note": "first finding"})
    assert r.status_code == 303, r.text
    page = browser.get(r.headers["location"])
    assert "已作出决定" in page.text
    assert "警告" in page.text
    assert "first finding" in page.text
    assert 'action="/console/cases/' not in page.text  # decided once
    with session_factory() as s:
        case = s.get(Case, case_no)
        assert case is not None
        assert case.status is CaseStatus.DECIDED
        assert case.decision is Decision.WARNING
        assert s.scalars(sa.select(AuditEntry).where(AuditEntry.action == "case.decide")).one()
    listing = browser.get("/console/cases", params={"unit": "BANK-A"})
    assert case_no in listing.text
    assert "已决定" in listing.text


def test_a_suspension_decided_here_stops_the_unit(
    browser: Browser, counter: Counter, session_factory: sessionmaker[Session]
) -> None:
    bank = Unit(counter, "BANK-A")
    browser.sign_in("supervisor")
    r = browser.post("/console/accountability/cases", {"unit": "BANK-A", "month": MONTH, "finding": "x"})
    case_no = r.headers["location"].split("/")[-1].split("?")[0]
    assert bank.post(f"/api/v1/cases/{case_no}/responses", {"statement": "we disagree"}).status_code == 201
    r = browser.post(f"/console/cases/{case_no}/decision", {"decision": "suspension", "note": "repeated"})
    assert r.status_code == 303, r.text
    with session_factory() as s:
        assert s.get(UnitRow, "BANK-A").status.value == "suspended"  # type: ignore[union-attr]
    assert bank.get("/api/v1/cases").status_code == 401
    # Reinstated from the units page: recorded on the case.
    assert browser.post("/console/units/BANK-A/reinstate", {"reason": "appeal upheld"}).status_code == 303
    page = browser.get(f"/console/cases/{case_no}")
    assert "恢复核查" in page.text
    assert "appeal upheld" in page.text


def test_the_charts_draw_the_numbers_they_tabulate(
    browser: Browser, counter: Counter, session_factory: sessionmaker[Session]
) -> None:
    bank, hotel = Unit(counter, "BANK-A"), Unit(counter, "HOTEL-A", sector="hotel")
    log = CheckLog(session_factory)
    for _ in range(3):
        log.add(bank, number(), -5)
    log.add(bank, number(), -5, "invalid")
    log.add(hotel, number(), -5, "mismatch")
    _unchecked(bank, 2)
    browser.sign_in("auditor")
    page = browser.get("/console/accountability/charts")
    assert page.status_code == 200
    html = page.text
    for chart in ("chart-checks", "chart-rates", "chart-violations"):
        assert re.search(
            rf'<svg class="chart" id="{chart}"[^>]*role="img"[^>]*aria-labelledby="{chart}-title {chart}-desc"',
            html,
        )
        assert f'<title id="{chart}-title">' in html
        assert f'<desc id="{chart}-desc">' in html
    # Per day and sector: the day's bank and hotel bars, with their numbers as titles and in the table.
    assert "<title>06-15 · bank: 4</title>" in html
    assert "<title>06-15 · hotel: 1</title>" in html
    assert "<title>BANK-A · 无效率: 25%</title>" in html
    assert "<title>HOTEL-A · 不一致率: 100%</title>" in html
    assert "<title>BANK-A · 违规笔数: 2</title>" in html
    rate_row = re.search(r"<tr><th scope=\"row\"><code>BANK-A</code></th><td>bank</td>(.*?)</tr>", html)
    assert rate_row is not None
    assert re.findall(r"<td>([^<]*)</td>", rate_row.group(1)) == ["4", "0", "1", "25.00%", "0", "0.00%"]
    assert 'style="' not in html  # the CSP allows no inline style

    r = browser.get("/console/accountability/charts", params={"from": "yesterday"})
    assert r.status_code == 422
    assert "from" in r.text
    r = browser.get("/console/accountability/charts", params={"from": "2026-01-01", "to": "2026-06-15"})
    assert r.status_code == 422
    assert "92" in r.text
