"""The console in a real browser: a clerk reports a demo card lost with the live finger and gets
the receipt, a teller checks that card and sees `invalid`; a supervisor onboards a unit; every
page type loads with every other host blocked, has no serious or critical accessibility
violation (axe-core), and the screenshots in docs/console/ are made here."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx2 as httpx
import pytest

from idguard.demo import fingers
from tests.browser.conftest import SCREENSHOTS, Server, guarded_page
from tests.factories import OFFICE_A, PASSWORD, auth, id_number

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


class Api:
    """The staff API over real HTTP, to set the scene."""

    def __init__(self, server: Server) -> None:
        self.http = httpx.Client(base_url=server.url, timeout=30)

    def demo_card(self, name: str) -> dict[str, Any]:
        """A person whose card registers the demo fingers (what `idguard demo` loads)."""
        number = id_number(dt.date(1988, 3, 9))
        person = {
            "id_number": number,
            "name": name,
            "sex": "male",
            "ethnicity": "汉",
            "birth_date": "1988-03-09",
            "address": "北京市朝阳区建国路1号",
            "hukou_office": OFFICE_A,
        }
        r = self.http.post("/api/v1/persons", json=person, headers=auth("clerk_a"))
        assert r.status_code == 201, r.text
        samples = [{"finger": f, "template": t} for f, t in fingers.enrolment_samples(number)]
        r = self.http.post(
            f"/api/v1/persons/{number}/cards",
            json={"kind": "first", "office": OFFICE_A, "fingerprints": samples},
            headers=auth("clerk_a"),
        )
        assert r.status_code == 201, r.text
        return dict(r.json())

    def unit_key(self, code: str) -> str:
        r = self.http.post(
            "/api/v1/units",
            json={"code": code, "name": "演示银行", "sector": "bank", "purposes": ["account_opening"]},
            headers=auth("supervisor"),
        )
        assert r.status_code == 201, r.text
        return str(r.json()["api_key"])


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


def shot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def sign_in(page: Any, server: Server, username: str) -> None:
    page.goto(server.url + "/")
    page.fill("#username", username)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(server.url + "/console")


def unit_sign_in(page: Any, server: Server, key: str, operator: str) -> None:
    page.goto(server.url + "/unit/login")
    page.fill("#api_key", key)
    page.fill("#operator", operator)
    page.click("button[type=submit]")
    page.wait_for_url(server.url + "/unit")


def open_person(page: Any, number: str) -> None:
    page.fill("#id_number", number)
    page.click("form[action='/console/search'] button")
    page.wait_for_url(re.compile(r".*/console/persons/.*"))


def test_clerk_reports_a_demo_card_lost_and_a_teller_sees_invalid(
    server: Server, api: Api, context: Any, chromium: Any
) -> None:
    card = api.demo_card("陈明")
    key = api.unit_key("BROWSER-BANK")
    page = context.new_page()
    page.goto(server.url + "/")
    assert page.locator("text=演示账号").count() == 1  # development: the demo accounts are listed
    shot(page, "sign-in")
    sign_in(page, server, "clerk_a")
    open_person(page, card["id_number"])
    assert page.locator(".status.s-valid").first.is_visible()
    shot(page, "person")
    page.click("text=挂失申报")
    page.wait_for_url(re.compile(r".*/loss-report$"))
    # The live finger, as the scanner software saved it.
    live = fingers.live_sample(card["id_number"], impression=2)
    page.set_input_files(
        "#fingerprint", files=[{"name": "thumb.txt", "mimeType": "text/plain", "buffer": live.encode()}]
    )
    shot(page, "loss-report")
    page.click("button:has-text('受理挂失')")
    page.wait_for_url(re.compile(r".*/console/receipts/LR\w+$"))
    number = page.url.rsplit("/", 1)[1]
    assert page.locator(f"text={number}").first.is_visible()
    assert page.locator("#card-status").inner_text() == "已挂失（遗失）"
    assert page.locator("figure.qr svg").count() == 1
    shot(page, "receipt")

    teller = context.browser.new_context(locale="zh-CN", viewport={"width": 1280, "height": 900})
    try:
        t = teller.new_page()
        unit_sign_in(t, server, key, "teller-0042")
        t.fill("#id_number", card["id_number"])
        t.fill("#name", "陈明")
        t.fill("#issued_on", card["issued_on"])
        if card["expires_on"]:
            t.fill("#expires_on", card["expires_on"])
        else:
            t.check("input[name=long_term]")
        t.click("button:has-text('核查')")
        t.wait_for_selector("#result")  # htmx swapped the answer in
        assert t.locator("#result").get_attribute("data-result") == "invalid"
        assert "reported_lost" in t.locator("#result").inner_text()
        shot(t, "unit-check")
    finally:
        teller.close()


def test_demo_capture_button_reports_with_the_demo_finger(server: Server, api: Api, context: Any) -> None:
    card = api.demo_card("周强")
    page = context.new_page()
    sign_in(page, server, "clerk_a")
    open_person(page, card["id_number"])
    page.click("text=挂失申报")
    page.click("button:has-text('演示采集')")
    page.wait_for_url(re.compile(r".*/console/receipts/LR\w+$"))
    assert page.locator("#card-status").inner_text() == "已挂失（遗失）"


def test_supervisor_onboards_a_unit_and_sees_the_key_once(server: Server, context: Any) -> None:
    page = context.new_page()
    sign_in(page, server, "supervisor")
    page.click("nav >> text=用证单位")
    page.fill("#code", "HOTEL-BJ-01")
    page.fill("#name", "北京饭店")
    page.fill("#sector", "hotel")
    page.check("input[value=hotel_checkin]")
    page.click("button:has-text('接入并生成密钥')")
    key = page.locator("#api-key").inner_text()
    assert key.startswith("idg_")
    shot(page, "units")
    page.goto(server.url + "/console/units")
    assert page.locator("#api-key").count() == 0  # shown once


def test_the_login_form_works_by_keyboard_alone(server: Server, context: Any) -> None:
    page = context.new_page()
    page.goto(server.url + "/console/login")
    assert page.evaluate("document.activeElement.id") == "username"  # autofocus: type at once
    page.keyboard.type("clerk_a")
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(server.url + "/console")


def _pages(server: Server, api: Api, context: Any) -> list[tuple[str, str | None]]:
    """(path, who is signed in) for one page of every type."""
    card = api.demo_card("吴刚")
    page = context.new_page()
    sign_in(page, server, "clerk_a")
    open_person(page, card["id_number"])
    person = urlsplit(page.url).path
    page.click("text=挂失申报")
    page.click("button:has-text('演示采集')")
    page.wait_for_url(re.compile(r".*/console/receipts/LR\w+$"))
    receipt = urlsplit(page.url).path
    page.close()
    return [
        ("/", None),
        ("/console/login?lang=en", None),
        ("/unit/login", None),
        ("/api/v1/docs", None),
        (f"/receipt/{receipt.rsplit('/', 1)[1]}", None),
        ("/console", "clerk_a"),
        (person, "clerk_a"),
        (f"/console/cards/{card['card_id']}/loss-report", "clerk_a"),
        (receipt, "clerk_a"),
        (f"{person}/issue", "clerk_a"),
        ("/console/found-cards", "clerk_a"),
        ("/console/units", "supervisor"),
        ("/console/audit", "auditor"),
        ("/console/comparisons", "auditor"),
        ("/console/checks", "auditor"),
        ("/unit", "unit"),
        ("/unit/history", "unit"),
        ("/unit/batch", "unit"),
    ]


def test_every_page_type_loads_with_other_hosts_blocked_and_passes_axe(
    server: Server, api: Api, chromium: Any
) -> None:
    setup = chromium.new_context(locale="zh-CN")
    pages = _pages(server, api, setup)
    setup.close()
    key = api.unit_key("AXE-BANK")
    problems: list[str] = []
    for path, who in pages:
        with guarded_page(chromium, server) as guarded:
            page = guarded.page
            if who == "unit":
                unit_sign_in(page, server, key, "axe")
            elif who is not None:
                sign_in(page, server, who)
            response = page.goto(server.url + path, wait_until="networkidle")
            assert response is not None, path
            assert response.status == 200, (path, response.status)
            if path == "/api/v1/docs":
                page.wait_for_selector(".swagger-ui .info .title", timeout=15000)
                page.screenshot(path=str(SCREENSHOTS / "api-docs.png"))  # the viewport: the page is long
            elif path in ("/console/audit", "/console/found-cards", "/unit/history"):
                shot(page, path.rsplit("/", 1)[1])
            # Swagger UI is a third-party page; the console's own pages are checked
            problems += guarded.problems(path, axe=path != "/api/v1/docs")
    assert not problems, "\n".join(problems)


def test_teller_batch_check_with_progress_and_download(server: Server, api: Api, context: Any) -> None:
    card = api.demo_card("郑华")
    key = api.unit_key("BATCH-BANK")
    csv_text = "id_number,name,issued_on,expires_on,purpose\n" + (
        f"{card['id_number']},郑华,{card['issued_on']},{card['expires_on'] or ''},account_opening\n"
    )
    page = context.new_page()
    unit_sign_in(page, server, key, "teller-7")
    page.click("nav >> text=批量核查")
    upload = [{"name": "cards.csv", "mimeType": "text/csv", "buffer": csv_text.encode()}]
    page.set_input_files("#file", files=upload)
    page.click("button:has-text('核查并显示')")
    page.wait_for_selector("#batch-results table")
    assert page.locator("#batch-progress").get_attribute("value") == "100"
    assert page.locator("#batch-results code.r-valid").count() == 1
    shot(page, "batch")
    page.set_input_files("#file", files=upload)
    with page.expect_download() as download:
        page.click("button:has-text('核查并下载 CSV')")
    assert download.value.suggested_filename == "checks.csv"
