"""The console's security: the session cookie's flags, CSRF on every form, the headers on every
page, idle timeout, sign-out, the sign-in throttle; and its languages."""

from __future__ import annotations

import datetime as dt
import re
from importlib import resources
from importlib.resources.abc import Traversable

import pytest
from fastapi.testclient import TestClient

from idguard.console import i18n
from idguard.core.clock import FixedClock
from tests.functional.console.conftest import Browser


def test_the_front_door_is_the_sign_in_page_with_the_security_headers(browser: Browser) -> None:
    r = browser.get("/")
    assert r.status_code == 200
    assert "工作人员登录" in r.text
    assert 'action="/console/login"' in r.text
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["cache-control"] == "no-store"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("__Host-idguard_console=")
    for flag in ("HttpOnly", "Secure", "SameSite=strict", "Path=/"):
        assert flag.lower() in cookie.lower()


def test_no_inline_script_or_style_and_nothing_from_another_host(browser: Browser) -> None:
    browser.sign_in("clerk_a")
    for path in ("/", "/console", "/api/v1/docs"):
        html = browser.get(path).text
        assert not re.search(r"<script(?![^>]*\ssrc=)[^>]*>", html), path  # every script is a file
        assert " style=" not in html, path
        assert "<style" not in html, path
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", html), path


def test_forms_without_the_csrf_token_are_refused(browser: Browser) -> None:
    r = browser.post("/console/login", {"username": "clerk_a", "password": "x"}, csrf=False)
    assert r.status_code == 403
    browser.sign_in("clerk_a")
    r = browser.post("/console/search", {"id_number": "110105199001011232"}, csrf=False)
    assert r.status_code == 403
    r = browser.post("/console/search", {"id_number": "110105199001011232", "csrf": "forged"}, csrf=False)
    assert r.status_code == 403


def test_another_browsers_token_does_not_work(web: TestClient) -> None:
    mine, theirs = Browser(web), Browser(web)
    mine.sign_in("clerk_a")
    theirs.get("/")
    r = mine.post("/console/search", {"id_number": "110105199001011232", "csrf": theirs.csrf}, csrf=False)
    assert r.status_code == 403


def test_wrong_password_then_the_throttle(browser: Browser) -> None:
    r = browser.post("/console/login", {"username": "clerk_a", "password": "wrong"})
    assert r.status_code == 401
    assert "用户名或密码错误" in r.text
    statuses = [
        browser.post("/console/login", {"username": "clerk_a", "password": "wrong"}).status_code
        for _ in range(12)
    ]
    assert statuses[-1] == 429


def test_pages_need_a_session(browser: Browser) -> None:
    for path in ("/console", "/console/units", "/unit"):
        r = browser.get(path)
        assert r.status_code == 303
        assert r.headers["location"] in ("/console/login", "/unit/login")


def test_idle_timeout_ends_the_session(browser: Browser, clock: FixedClock) -> None:
    browser.sign_in("clerk_a")
    clock.advance(dt.timedelta(minutes=14))
    assert browser.get("/console").status_code == 200  # used: the idle clock starts again
    clock.advance(dt.timedelta(minutes=14))
    assert browser.get("/console").status_code == 200
    clock.advance(dt.timedelta(minutes=16))
    r = browser.get("/console")
    assert r.status_code == 303
    assert r.headers["location"] == "/console/login?expired=1"
    assert "会话已超时" in browser.get(r.headers["location"]).text


def test_sign_out(browser: Browser) -> None:
    browser.sign_in("clerk_a")
    r = browser.post("/console/logout", {})
    assert r.status_code == 303
    assert browser.get("/console").status_code == 303


def test_a_tampered_cookie_is_no_session(browser: Browser) -> None:
    browser.sign_in("clerk_a")
    name = "__Host-idguard_console"
    value = browser.cookies.get(name)
    assert value
    browser.cookies.clear()
    browser.cookies.set(name, value[:-6] + ("AAAAAA" if not value.endswith("AAAAAA") else "BBBBBB"))
    assert browser.get("/console").status_code == 303


def test_a_disabled_account_is_signed_out_at_once(browser: Browser, web: TestClient) -> None:
    import sqlalchemy as sa

    from idguard import uow
    from idguard.registry.models import Staff

    browser.sign_in("clerk_a")
    with uow.transaction(web.app.state.sessionmaker) as s:  # type: ignore[attr-defined]
        s.execute(sa.update(Staff).where(Staff.username == "clerk_a").values(active=False))
    assert browser.get("/console").status_code == 303


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ({"params": {"lang": "en"}}, "Staff sign-in"),
        ({"headers": {"Accept-Language": "en-GB,en;q=0.9"}}, "Staff sign-in"),
        ({"headers": {"Accept-Language": "fr, zh-CN;q=0.5, en;q=0.4"}}, "工作人员登录"),
        ({}, "工作人员登录"),
    ],
)
def test_chinese_first_english_by_choice(
    browser: Browser, how: dict[str, dict[str, str]], expected: str
) -> None:
    r = browser.get("/", **how)
    assert expected in r.text


def test_the_language_chosen_is_kept(browser: Browser) -> None:
    browser.get("/?lang=en")
    browser.sign_in("clerk_a")
    assert "Find a person by id number" in browser.get("/console").text
    assert "按公民身份号码查询" in browser.get("/console?lang=zh-CN").text


def test_the_catalogs_have_the_same_messages_and_placeholders() -> None:
    zh, en = i18n.catalog("zh-CN"), i18n.catalog("en")
    assert zh.keys() == en.keys()
    for key in zh:
        assert set(re.findall(r"{(\w+)}", zh[key])) == set(re.findall(r"{(\w+)}", en[key])), key


def test_every_message_a_template_names_is_in_the_catalog() -> None:
    root = resources.files("idguard.console").joinpath("templates")
    names: set[str] = set()
    for path in _walk(root):
        names |= set(re.findall(r"""_\(["']([a-z_]+\.[a-z_.]*[a-z])["']\s*[,)]""", path.read_text("utf-8")))
    missing = sorted(names - i18n.catalog("zh-CN").keys())
    assert not missing


def _walk(root: Traversable) -> list[Traversable]:
    found: list[Traversable] = []
    for entry in root.iterdir():
        if entry.is_dir():
            found += _walk(entry)
        elif entry.name.endswith(".html"):
            found.append(entry)
    return found


def test_dates_are_shown_in_china_standard_time() -> None:
    at = dt.datetime(2026, 6, 14, 17, 30, tzinfo=dt.UTC)
    assert i18n.Translator("zh-CN").datetime(at) == "2026年6月15日 01:30"
    assert i18n.Translator("en").datetime(at) == "15 Jun 2026, 01:30"


def test_the_language_link_after_a_form_goes_to_a_page_that_exists(browser: Browser) -> None:
    browser.sign_in("clerk_a")
    r = browser.post("/console/search", {"id_number": "bad"})
    assert 'href="/?lang=en"' in r.text
    assert 'href="/console?lang=en"' in browser.get("/console").text
