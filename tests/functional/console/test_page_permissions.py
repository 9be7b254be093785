"""Every console page asks the same GRANTS as the API: the expected answer of each page for each
role is computed from core/grants.py's table, not written by hand, so the console cannot drift
from the API. Anonymous callers and unit tellers are sent to sign in."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from idguard.core.grants import GRANTS, Actor, Permission, Role
from idguard.watchlist import rules as watch_rules
from tests.factories import OFFICE_A
from tests.functional.conftest import Counter
from tests.functional.console.conftest import Browser
from tests.functional.verification.test_verify import Bank


@dataclass
class Scene:
    person_id: str
    card_id: str
    report_no: str
    unit: str
    unit_key: str


@dataclass(frozen=True)
class Page:
    permission: Permission | None  # None: any member of staff
    path: Callable[[Scene], str]
    form: Callable[[Scene], dict[str, str]] | None = None  # a POST with this form
    # A page whose rule is more than one permission (watchlist/rules.py): who may, from GRANTS.
    allowed: Callable[[Role], bool] | None = None


def _actor(role: Role) -> Actor:
    return Actor(staff_id=uuid.uuid4(), username="x", role=role, office=OFFICE_A)


def _reads_incidents(role: Role) -> bool:
    return watch_rules.reads_every_office(_actor(role)) or watch_rules.is_office_clerk(_actor(role))


def _protects_or_closes(role: Role) -> bool:
    return watch_rules.may_manage_blacklist(_actor(role)) or watch_rules.is_office_clerk(_actor(role))


PAGES: dict[tuple[str, str], Page] = {
    ("GET", "/console"): Page(None, lambda s: "/console"),
    ("POST", "/console/search"): Page(
        Permission.REGISTRY_READ, lambda s: "/console/search", lambda s: {"id_number": "x"}
    ),
    ("GET", "/console/persons/{person_id}"): Page(
        Permission.REGISTRY_READ, lambda s: f"/console/persons/{s.person_id}"
    ),
    ("GET", "/console/cards/{card_id}/loss-report"): Page(
        Permission.REGISTRY_WRITE, lambda s: f"/console/cards/{s.card_id}/loss-report"
    ),
    ("POST", "/console/cards/{card_id}/loss-report"): Page(
        Permission.REGISTRY_WRITE,
        lambda s: f"/console/cards/{s.card_id}/loss-report",
        lambda s: {"reason": "bogus", "applicant_id_number": "", "office": OFFICE_A},
    ),
    ("POST", "/console/loss-reports/{report_no}/cancel"): Page(
        Permission.REGISTRY_WRITE, lambda s: "/console/loss-reports/LRNONE/cancel", lambda s: {}
    ),
    ("GET", "/console/receipts/{number}"): Page(
        Permission.REGISTRY_READ, lambda s: f"/console/receipts/{s.report_no}"
    ),
    ("GET", "/console/persons/{person_id}/issue"): Page(
        Permission.REGISTRY_WRITE, lambda s: f"/console/persons/{s.person_id}/issue"
    ),
    ("POST", "/console/persons/{person_id}/issue"): Page(
        Permission.REGISTRY_WRITE,
        lambda s: f"/console/persons/{s.person_id}/issue",
        lambda s: {"kind": "bogus"},
    ),
    ("POST", "/console/persons/{person_id}/temporary-card"): Page(
        Permission.REGISTRY_WRITE,
        lambda s: f"/console/persons/{s.person_id}/temporary-card",
        lambda s: {},
    ),
    ("POST", "/console/persons/{person_id}/revoke"): Page(
        Permission.REGISTRY_WRITE,
        lambda s: f"/console/persons/{s.person_id}/revoke",
        lambda s: {"reason": "bogus"},
    ),
    ("POST", "/console/persons/{person_id}/activation-code"): Page(
        Permission.REGISTRY_WRITE, lambda s: "/console/persons/not-a-record/activation-code", lambda s: {}
    ),
    ("GET", "/console/found-cards"): Page(Permission.REGISTRY_WRITE, lambda s: "/console/found-cards"),
    ("POST", "/console/found-cards"): Page(
        Permission.REGISTRY_WRITE, lambda s: "/console/found-cards", lambda s: {"issued_on": "bad"}
    ),
    ("POST", "/console/found-cards/{found_no}/return"): Page(
        Permission.REGISTRY_WRITE, lambda s: "/console/found-cards/FCNONE/return", lambda s: {}
    ),
    ("POST", "/console/found-cards/{found_no}/destroy"): Page(
        Permission.REGISTRY_WRITE, lambda s: "/console/found-cards/FCNONE/destroy", lambda s: {}
    ),
    ("GET", "/console/audit"): Page(Permission.READ_CHECK_LOG, lambda s: "/console/audit"),
    ("GET", "/console/comparisons"): Page(Permission.REGISTRY_READ, lambda s: "/console/comparisons"),
    ("GET", "/console/checks"): Page(Permission.READ_CHECK_LOG, lambda s: "/console/checks"),
    ("GET", "/console/units"): Page(Permission.READ_UNITS, lambda s: "/console/units"),
    ("POST", "/console/units"): Page(
        Permission.ONBOARD_UNITS, lambda s: "/console/units", lambda s: {"code": "!"}
    ),
    ("POST", "/console/units/{code}/rotate"): Page(
        Permission.ONBOARD_UNITS, lambda s: "/console/units/NOSUCH/rotate", lambda s: {}
    ),
    ("POST", "/console/units/{code}/revoke"): Page(
        Permission.ONBOARD_UNITS, lambda s: "/console/units/NOSUCH/revoke", lambda s: {}
    ),
    # watchlist and accountability (console/routes/watchlist.py, accountability.py, units.py)
    ("POST", "/console/units/{code}/suspend"): Page(
        Permission.ONBOARD_UNITS, lambda s: "/console/units/NOSUCH/suspend", lambda s: {"reason": "x"}
    ),
    ("POST", "/console/units/{code}/reinstate"): Page(
        Permission.ONBOARD_UNITS, lambda s: "/console/units/NOSUCH/reinstate", lambda s: {"reason": "x"}
    ),
    ("GET", "/console/incidents"): Page(None, lambda s: "/console/incidents", allowed=_reads_incidents),
    ("GET", "/console/incidents/{incident_no}"): Page(
        None, lambda s: "/console/incidents/INCNONE", allowed=_reads_incidents
    ),
    ("POST", "/console/incidents/{incident_no}/close"): Page(
        None,
        lambda s: "/console/incidents/INCNONE/close",
        lambda s: {"outcome": "bogus"},
        _protects_or_closes,
    ),
    ("GET", "/console/blacklist"): Page(Permission.READ_CHECK_LOG, lambda s: "/console/blacklist"),
    ("POST", "/console/blacklist/{entry_no}/lift"): Page(
        Permission.ONBOARD_UNITS, lambda s: "/console/blacklist/BLNONE/lift", lambda s: {"reason": ""}
    ),
    ("POST", "/console/persons/{person_id}/blacklist"): Page(
        Permission.ONBOARD_UNITS,
        lambda s: f"/console/persons/{s.person_id}/blacklist",
        lambda s: {"reason": "x"},
    ),
    ("POST", "/console/persons/{person_id}/protection"): Page(
        None,
        lambda s: f"/console/persons/{s.person_id}/protection",
        lambda s: {"required": "x"},
        _protects_or_closes,
    ),
    ("GET", "/console/accountability"): Page(Permission.READ_CHECK_LOG, lambda s: "/console/accountability"),
    ("POST", "/console/accountability/cases"): Page(
        Permission.ONBOARD_UNITS, lambda s: "/console/accountability/cases", lambda s: {"month": "x"}
    ),
    ("GET", "/console/accountability/charts"): Page(
        Permission.READ_CHECK_LOG, lambda s: "/console/accountability/charts"
    ),
    ("GET", "/console/accountability/units/{code}"): Page(
        Permission.READ_CHECK_LOG, lambda s: f"/console/accountability/units/{s.unit}"
    ),
    ("GET", "/console/cases"): Page(Permission.READ_CHECK_LOG, lambda s: "/console/cases"),
    ("GET", "/console/cases/{case_no}"): Page(Permission.READ_CHECK_LOG, lambda s: "/console/cases/ACNONE"),
    ("POST", "/console/cases/{case_no}/decision"): Page(
        Permission.ONBOARD_UNITS, lambda s: "/console/cases/ACNONE/decision", lambda s: {"decision": "x"}
    ),
}
# Pages anyone may open (sign-in, the public receipt status) or the unit teller's own.
OPEN = {
    ("GET", "/"),
    ("GET", "/console/login"),
    ("POST", "/console/login"),
    ("POST", "/console/logout"),
    ("GET", "/unit/login"),
    ("POST", "/unit/login"),
    ("POST", "/unit/logout"),
    ("GET", "/receipt/{number}"),
    ("GET", "/api/v1/docs"),
    # the citizens' sign-in and activation, and a loss declaration's public page (routes/me.py)
    ("GET", "/me/login"),
    ("POST", "/me/login"),
    ("GET", "/me/activate"),
    ("POST", "/me/activate"),
    ("POST", "/me/logout"),
    ("GET", "/declaration/{number}"),
}
UNIT_PAGES = {
    ("GET", "/unit"),
    ("POST", "/unit/check"),
    ("GET", "/unit/history"),
    ("GET", "/unit/batch"),
    ("POST", "/unit/batch"),
    ("GET", "/unit/notifications"),
    ("GET", "/unit/transactions"),
    ("POST", "/unit/transactions"),
    ("GET", "/unit/compliance"),
    ("POST", "/unit/cases/{case_no}/response"),
}
# The citizen's own pages (routes/me.py): a citizen session only; (path, form or None).
ME_PAGES: dict[tuple[str, str], tuple[str, dict[str, str] | None]] = {
    ("GET", "/me"): ("/me", None),
    ("GET", "/me/checks"): ("/me/checks", None),
    ("GET", "/me/accesses"): ("/me/accesses", None),
    ("POST", "/me/protection"): ("/me/protection", {"required": "1"}),
    ("POST", "/me/cards/{card_id}/loss-report"): ("/me/cards/x/loss-report", {"reason": "lost"}),
    ("POST", "/me/cards/{card_id}/declaration"): ("/me/cards/x/declaration", {"place": "x"}),
    ("POST", "/me/checks/{check_id}/dispute"): ("/me/checks/x/dispute", {}),
    ("GET", "/me/declarations/{number}"): ("/me/declarations/LDNONE", None),
}
STAFF = {Role.CLERK: "clerk_a", Role.SUPERVISOR: "supervisor", Role.AUDITOR: "auditor", Role.ADMIN: "admin"}


def test_every_console_page_is_in_the_table(web: TestClient) -> None:
    routes = {
        (method, route.path)
        for route in web.app.routes  # type: ignore[attr-defined]
        if isinstance(route, APIRoute) and not route.include_in_schema
        for method in route.methods
    }
    assert routes - OPEN - UNIT_PAGES - ME_PAGES.keys() - PAGES.keys() == set()


@pytest.fixture
def scene(counter: Counter, browser: Browser) -> Scene:
    card = counter.card(counter.person())
    report = counter.report(card).json()["report_no"]
    bank = Bank(counter)
    clerk = Browser(browser.client)
    clerk.sign_in("clerk_a")
    r = clerk.post("/console/search", {"id_number": card["id_number"]})
    return Scene(r.headers["location"].rsplit("/", 1)[1], card["card_id"], report, bank.code, bank.key)


SIGN_IN = 0  # a redirect to a sign-in page


def _call(browser: Browser, page: Page, scene: Scene) -> int:
    path = page.path(scene)
    r = browser.get(path) if page.form is None else browser.post(path, page.form(scene))
    if r.status_code == 303 and r.headers["location"].split("?")[0] in ("/console/login", "/unit/login"):
        return SIGN_IN
    return r.status_code


@pytest.mark.parametrize("role", list(STAFF))
def test_each_role_gets_what_grants_says(role: Role, scene: Scene, web: TestClient) -> None:
    browser = Browser(web)
    browser.sign_in(STAFF[role])
    for key, page in PAGES.items():
        status = _call(browser, page, scene)
        allowed = page.permission is None or page.permission in GRANTS[role]
        if page.allowed is not None:
            allowed = page.allowed(role)
        assert (status != 403) if allowed else (status == 403), (role, key, status)
        assert status < 500, (role, key, status)
        assert status != SIGN_IN, (role, key, status)


def test_anonymous_and_tellers_are_sent_to_sign_in(scene: Scene, web: TestClient) -> None:
    anonymous, teller = Browser(web), Browser(web)
    anonymous.get("/")
    teller.teller(scene.unit_key)
    for page in PAGES.values():
        for who in (anonymous, teller):
            assert _call(who, page, scene) == SIGN_IN
    staff = Browser(web)
    staff.sign_in("clerk_a")
    assert staff.get("/unit").headers["location"] == "/unit/login"


def test_citizen_pages_refuse_anonymous_staff_and_tellers(scene: Scene, web: TestClient) -> None:
    anonymous, teller, staff = Browser(web), Browser(web), Browser(web)
    anonymous.get("/")
    teller.teller(scene.unit_key)
    staff.sign_in("admin")
    for path, form in ME_PAGES.values():
        for who in (anonymous, teller, staff):
            r = who.get(path) if form is None else who.post(path, form)
            assert (r.status_code, r.headers.get("location")) == (303, "/me/login"), (path, r.status_code)


def test_unit_pages_refuse_citizens(web: TestClient, counter: Counter) -> None:
    from tests.functional.console.test_me import citizen

    me, _, _ = citizen(web, counter)
    for method, path in UNIT_PAGES:
        concrete = path.replace("{case_no}", "ACNONE")
        r = me.get(concrete) if method == "GET" else me.post(concrete, {})
        assert (r.status_code, r.headers.get("location")) == (303, "/unit/login"), (path, r.status_code)
    nowhere = Scene("x", "x", "x", "x", "x")
    for page in PAGES.values():  # and staff pages too
        path = page.path(nowhere)
        r = me.get(path) if page.form is None else me.post(path, {})
        assert (r.status_code, r.headers.get("location")) == (303, "/console/login"), r.status_code
