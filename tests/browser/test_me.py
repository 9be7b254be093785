"""The citizen's console in a real browser: a clerk prints the activation code, a teller checks
the card, the citizen activates, sees that check and disputes it; then reports the card and
publishes a loss declaration whose QR code opens the public, verifying page. Every page of
/me, the clerk's code receipt and the teller's notifications, transactions and compliance pages
load with every other host blocked and pass axe-core (no serious or critical violation). The
screenshots in docs/console/ (me-*, activation-code, teller-*) are made here."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.browser.conftest import Server, guarded_page
from tests.browser.test_console import Api, open_person, shot, sign_in, unit_sign_in

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")
PASSWORD = "plum blossom river 42"


@pytest.fixture(scope="module")
def api(server: Server) -> Iterator[Api]:
    client = Api(server)
    yield client
    client.http.close()


def new_context(chromium: Any) -> Any:
    return chromium.new_context(locale="zh-CN", viewport={"width": 1280, "height": 900})


def print_code(chromium: Any, server: Server, number: str, *, screenshot: bool = False) -> str:
    """The clerk opens the person's page and prints the activation code."""
    ctx = new_context(chromium)
    try:
        page = ctx.new_page()
        sign_in(page, server, "clerk_a")
        open_person(page, number)
        page.click("#citizen-account summary")
        page.click("#citizen-account button[type=submit]")
        page.wait_for_selector("#activation-code")
        assert page.locator("figure.qr svg").count() == 1
        if screenshot:
            shot(page, "activation-code")
        return str(page.locator("#activation-code").inner_text())
    finally:
        ctx.close()


def teller_checks(chromium: Any, server: Server, key: str, card: dict[str, Any], name: str) -> None:
    ctx = new_context(chromium)
    try:
        t = ctx.new_page()
        unit_sign_in(t, server, key, "teller-0042")
        t.fill("#id_number", card["id_number"])
        t.fill("#name", name)
        t.fill("#issued_on", card["issued_on"])
        if card["expires_on"]:
            t.fill("#expires_on", card["expires_on"])
        else:
            t.check("input[name=long_term]")
        t.click("button:has-text('核查')")
        t.wait_for_selector("#result")
        assert t.locator("#result").get_attribute("data-result") == "valid"
    finally:
        ctx.close()


def activate(page: Any, server: Server, number: str, code: str) -> None:
    page.goto(server.url + "/me/login")
    page.click("a[href='/me/activate']")
    page.fill("#id_number", number)
    page.fill("#activation_code", code)
    page.fill("#password", PASSWORD)
    page.fill("#password_again", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r".*/me\?activated=1$"))


def test_a_citizen_activates_sees_the_tellers_check_and_disputes_it(
    server: Server, api: Api, chromium: Any
) -> None:
    card = api.demo_card("林静")
    key = api.unit_key("ME-BROWSER-BANK")
    code = print_code(chromium, server, card["id_number"], screenshot=True)
    teller_checks(chromium, server, key, card, "林静")
    ctx = new_context(chromium)
    try:
        page = ctx.new_page()
        page.on("dialog", lambda dialog: dialog.accept())  # the confirm() of data-confirm
        activate(page, server, card["id_number"], code)
        assert page.locator(f"#card-{card['card_id']} .status.s-valid").count() == 1
        shot(page, "me-home")
        page.click("nav >> text=核查记录")
        page.wait_for_url(server.url + "/me/checks")
        deadline = time.monotonic() + 15
        while page.locator("tbody tr").count() == 0:  # the check log is written within a second
            assert time.monotonic() < deadline, "the teller's check never appeared"
            time.sleep(0.3)
            page.reload()
        row = page.locator("tbody tr").first
        assert "演示银行" in row.inner_text()
        row.locator("button:has-text('提出异议')").click()
        page.wait_for_url(re.compile(r".*/me/checks\?disputed=.+"))
        assert page.locator("#disputed").is_visible()
        assert page.locator("tbody tr").first.locator("button").count() == 0  # disputed already
        shot(page, "me-checks")
        page.click("nav >> text=查阅记录")
        page.wait_for_url(server.url + "/me/accesses")
        assert page.locator("tbody tr").count() >= 1  # the clerk's audited read of the record
        shot(page, "me-accesses")
    finally:
        ctx.close()


def test_the_citizen_reports_the_card_and_prints_a_verifiable_declaration(
    server: Server, api: Api, chromium: Any
) -> None:
    card = api.demo_card("何平")
    code = print_code(chromium, server, card["id_number"])
    ctx = new_context(chromium)
    try:
        page = ctx.new_page()
        page.on("dialog", lambda dialog: dialog.accept())
        activate(page, server, card["id_number"], code)
        box = page.locator(f"section:has(#card-{card['card_id']})")
        box.locator("summary:has-text('紧急挂失')").click()
        box.locator("button:has-text('立即挂失')").click()
        page.wait_for_url(re.compile(r".*/me\?reported=LR\w+$"))
        assert page.locator("#reported").is_visible()
        box = page.locator(f"section:has(#card-{card['card_id']})")
        assert box.locator(".status.s-reported_lost").count() == 1
        box.locator("summary:has-text('遗失声明')").click()
        box.locator("input[name=lost_on]").fill(card["issued_on"])
        box.locator("input[name=place]").fill("北京西站候车室")
        box.locator("button:has-text('发布声明')").click()
        page.wait_for_url(re.compile(r".*/me/declarations/LD\w+$"))
        assert page.locator("#signature-state").get_attribute("data-verified") == "yes"
        assert page.locator("figure.qr svg").count() == 1
        assert "何平" not in page.locator("article.receipt").inner_text()  # masked: 何*
        shot(page, "me-declaration")
        number = page.url.rsplit("/", 1)[1]
    finally:
        ctx.close()
    anyone = new_context(chromium)
    try:
        public = anyone.new_page()
        public.goto(f"{server.url}/declaration/{number}")
        assert public.locator("#signature-state").get_attribute("data-verified") == "yes"
    finally:
        anyone.close()


def test_the_activation_form_works_by_keyboard_alone(server: Server, api: Api, chromium: Any) -> None:
    card = api.demo_card("宋佳")
    code = print_code(chromium, server, card["id_number"])
    ctx = new_context(chromium)
    try:
        page = ctx.new_page()
        page.goto(server.url + "/me/activate")
        assert page.evaluate("document.activeElement.id") == "id_number"
        page.keyboard.type(card["id_number"])
        for value in (code, PASSWORD, PASSWORD):
            page.keyboard.press("Tab")
            page.keyboard.type(value)
        page.keyboard.press("Enter")
        page.wait_for_url(re.compile(r".*/me\?activated=1$"))
    finally:
        ctx.close()


def _citizen_pages(server: Server, api: Api, chromium: Any) -> tuple[list[str], str, str]:
    """The paths of every citizen page type (signed in), and the citizen's number and password."""
    card = api.demo_card("高远")
    code = print_code(chromium, server, card["id_number"])
    ctx = new_context(chromium)
    try:
        page = ctx.new_page()
        page.on("dialog", lambda dialog: dialog.accept())
        activate(page, server, card["id_number"], code)
        box = page.locator(f"section:has(#card-{card['card_id']})")
        box.locator("summary:has-text('紧急挂失')").click()
        box.locator("button:has-text('立即挂失')").click()
        page.wait_for_url(re.compile(r".*/me\?reported=LR\w+$"))
        box = page.locator(f"section:has(#card-{card['card_id']})")
        box.locator("summary:has-text('遗失声明')").click()
        box.locator("input[name=lost_on]").fill(card["issued_on"])
        box.locator("input[name=place]").fill("地铁")
        box.locator("button:has-text('发布声明')").click()
        page.wait_for_url(re.compile(r".*/me/declarations/LD\w+$"))
        declaration = urlsplit(page.url).path
    finally:
        ctx.close()
    pages = ["/me", "/me/checks", "/me/accesses", declaration, "/me?lang=en"]
    return pages, card["id_number"], declaration


def test_every_new_page_type_loads_with_other_hosts_blocked_and_passes_axe(
    server: Server, api: Api, chromium: Any
) -> None:
    mine, number, declaration = _citizen_pages(server, api, chromium)
    key = api.unit_key("AXE-ME-BANK")
    code_person = api.demo_card("钱多")
    pages: list[tuple[str, str | None]] = [
        ("/me/login", None),
        ("/me/activate", None),
        (declaration.replace("/me/declarations/", "/declaration/"), None),
        *((path, "citizen") for path in mine),
        ("/unit/notifications", "unit"),
        ("/unit/transactions", "unit"),
        ("/unit/compliance", "unit"),
        ("activation-code", "clerk_a"),
    ]
    problems: list[str] = []
    for path, who in pages:
        with guarded_page(chromium, server) as guarded:
            page = guarded.page
            if who == "citizen":
                page.goto(server.url + "/me/login")
                page.fill("#id_number", number)
                page.fill("#password", PASSWORD)
                page.click("button[type=submit]")
                page.wait_for_url(server.url + "/me")
            elif who == "unit":
                unit_sign_in(page, server, key, "axe")
            if path == "activation-code":  # a POST's answer: the printed receipt
                sign_in(page, server, "clerk_a")
                open_person(page, code_person["id_number"])
                page.click("#citizen-account summary")
                page.click("#citizen-account button[type=submit]")
                page.wait_for_selector("#activation-code")
                page.wait_for_load_state("networkidle")
            else:
                response = page.goto(server.url + path, wait_until="networkidle")
                assert response is not None, path
                assert response.status == 200, (path, response.status)
            if path in ("/unit/notifications", "/unit/transactions", "/unit/compliance"):
                shot(page, "teller-" + path.rsplit("/", 1)[1])
            problems += guarded.problems(path)
    assert not problems, "\n".join(problems)
