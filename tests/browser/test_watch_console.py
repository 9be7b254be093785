"""The supervisor's impersonation and accountability pages in a real browser: a supervisor lists a
person on the blacklist from the person page (the confirm dialog accepted) and sees the incident
a bank's check of a stolen card opened; every page type of these features loads with every other
host blocked and has no serious or critical accessibility violation (axe-core). The screenshots
in docs/console/ of these pages are made here."""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from idguard.demo import fingers
from tests.browser.conftest import Server, guarded_page
from tests.browser.test_console import Api, open_person, shot, sign_in
from tests.factories import auth, id_number

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


@pytest.fixture(scope="module")
def api(server: Server) -> Iterator[Api]:
    client = Api(server)
    yield client
    client.http.close()


@pytest.fixture
def context(chromium: Any) -> Iterator[Any]:
    ctx = chromium.new_context(locale="zh-CN", viewport={"width": 1280, "height": 900})
    yield ctx
    ctx.close()


def _stolen_card_checked(api: Api, code: str) -> tuple[dict[str, Any], str]:
    """A card reported stolen, then presented at a bank: the server opens an incident."""
    card = api.demo_card("孙磊")
    r = api.http.post(
        "/api/v1/loss-reports",
        json={
            "card_id": card["card_id"],
            "reason": "stolen",
            "office": card["issuing_office"],
            "applicant_id_number": card["id_number"],
            "fingerprint": fingers.live_sample(card["id_number"]),
        },
        headers=auth("clerk_a"),
    )
    assert r.status_code == 201, r.text
    key = api.unit_key(code)
    body = {
        "id_number": card["id_number"],
        "name": card["name"],
        "issued_on": card["issued_on"],
        "expires_on": card["expires_on"],
        "purpose": "account_opening",
        "operator": "teller-9",
    }
    deadline = time.monotonic() + 10
    while True:  # the index applies the report within its bound
        answer = api.http.post("/api/v1/verify", json=body, headers={"Authorization": f"Bearer {key}"}).json()
        if answer.get("result") == "invalid" or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert answer["result"] == "invalid", answer
    return card, key


def _transactions(api: Api, key: str, checked: str) -> None:
    """What the bank did on the strength of its checks: an account opened for the stolen card it
    was told is invalid, and two opened without any check (the month's table has violations)."""
    at = dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
    numbers = [checked, id_number(dt.date(1990, 1, 2)), id_number(dt.date(1991, 3, 4))]
    items = [
        {"ref": f"ACC-{n}", "at": at, "id_number": number, "purpose": "account_opening"}
        for n, number in enumerate(numbers)
    ]
    r = api.http.post(
        "/api/v1/transactions", json={"items": items}, headers={"Authorization": f"Bearer {key}"}
    )
    assert r.status_code == 200, r.text


def _wait_for_incident(api: Api, number: str) -> str:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        r = api.http.get("/api/v1/incidents", headers=auth("supervisor"))
        for item in r.json()["items"]:
            if item["id_number"] == number:
                return str(item["incident_no"])
        time.sleep(0.2)
    raise AssertionError("no incident was opened")


def test_supervisor_lists_a_person_and_sees_the_incident_queue(
    server: Server, api: Api, context: Any
) -> None:
    card, key = _stolen_card_checked(api, "WATCH-BANK")
    _transactions(api, key, card["id_number"])
    incident_no = _wait_for_incident(api, card["id_number"])
    impostor = api.demo_card("钱勇")
    page = context.new_page()
    page.on("dialog", lambda dialog: dialog.accept())  # the confirm before listing
    sign_in(page, server, "supervisor")
    open_person(page, impostor["id_number"])
    page.click("summary:has-text('列入黑名单')")
    page.select_option("#bl-reason", "impersonation")
    page.fill("#bl-case", "京公(朝)立字〔2026〕88号")
    page.fill("#bl-note", "used 孙磊's stolen card")
    shot(page, "person-watch")
    page.click("button:has-text('列入黑名单')")
    page.wait_for_url(re.compile(r".*/console/persons/.*\?done=blacklisted$"))
    assert page.locator(".notice").inner_text().startswith("已列入冒用身份证人员黑名单")
    page.click("nav >> text=黑名单")
    page.wait_for_url(server.url + "/console/blacklist")
    assert page.locator("td:text-is('京公(朝)立字〔2026〕88号')").count() == 1
    shot(page, "blacklist")

    page.click("nav >> text=冒用线索")
    page.wait_for_url(server.url + "/console/incidents")
    row = page.locator(f"a:has-text('{incident_no}')")
    assert row.count() == 1
    shot(page, "incidents")
    row.click()
    page.wait_for_url(server.url + f"/console/incidents/{incident_no}")
    assert page.locator("text=挂失证件被使用").first.is_visible()
    page.check("input[value=confirmed]")
    page.fill("#close-note", "the bank kept the card; case opened")
    shot(page, "incident")
    page.click("button:has-text('办结')")
    page.wait_for_url(re.compile(r".*\?done=closed$"))
    assert page.locator(".notice").inner_text() == "线索已办结。"

    page.click("nav >> text=责任追究")
    page.wait_for_url(server.url + "/console/accountability")
    row = page.locator("tr:has(code:text-is('WATCH-BANK'))")
    assert row.locator("td").nth(7).inner_text() == "3"  # violations: one accepted invalid, two unchecked
    shot(page, "accountability")
    page.click("a:has-text('统计图表')")
    page.wait_for_url(re.compile(r".*/console/accountability/charts$"))
    assert page.locator("svg#chart-checks title").first.text_content() == "每日各行业核查量"
    assert page.locator("svg#chart-checks rect").count() >= 1  # the checks made above
    shot(page, "charts")


def _case(api: Api, code: str) -> str:
    r = api.http.post(
        f"/api/v1/units/{code}/cases",
        json={"month": "2026-06", "finding": "accounts opened unchecked"},
        headers=auth("supervisor"),
    )
    assert r.status_code == 201, r.text
    return str(r.json()["case_no"])


def test_every_watch_and_accountability_page_passes_axe_with_other_hosts_blocked(
    server: Server, api: Api, chromium: Any
) -> None:
    card, _ = _stolen_card_checked(api, "AXE-WATCH-BANK")
    incident_no = _wait_for_incident(api, card["id_number"])
    case_no = _case(api, "AXE-WATCH-BANK")
    setup = chromium.new_context(locale="zh-CN")
    page = setup.new_page()
    sign_in(page, server, "supervisor")
    open_person(page, card["id_number"])
    person = urlsplit(page.url).path
    setup.close()
    pages = [
        ("/console/incidents", "supervisor"),
        (f"/console/incidents/{incident_no}", "supervisor"),
        ("/console/incidents", "clerk_a"),
        ("/console/blacklist", "supervisor"),
        (person, "supervisor"),
        (person, "clerk_a"),
        ("/console/units", "supervisor"),
        ("/console/accountability", "supervisor"),
        ("/console/accountability/charts", "auditor"),
        ("/console/accountability/units/AXE-WATCH-BANK", "auditor"),
        ("/console/cases", "auditor"),
        (f"/console/cases/{case_no}", "supervisor"),
        ("/console/accountability?lang=en", "supervisor"),
    ]
    problems: list[str] = []
    for path, who in pages:
        with guarded_page(chromium, server) as guarded:
            page = guarded.page
            sign_in(page, server, who)
            response = page.goto(server.url + path, wait_until="networkidle")
            assert response is not None, path
            assert response.status == 200, (path, response.status)
            if path.startswith("/console/cases/"):
                shot(page, "case")
            problems += guarded.problems(path, axe_where=f"{path} ({who})")
    assert not problems, "\n".join(problems)
