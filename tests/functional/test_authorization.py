"""Authorization as a table: every operation of the OpenAPI document, every kind of caller.

TABLE is written by hand from docs/rules.md ("Staff and roles"), core/grants.py's GRANTS as
documented, and API.md: one row per (method, path), one expected status per caller. `OK` means
"allowed": anything but 401 and 403 (the use-case may still answer 2xx, 404, 409 or 422, and no
row guesses which). A route added to the app without a row here (or in a
feature's own table, tests/functional/<feature>/test_authorization.py) fails
`test_every_operation_has_a_row`.

Callers: no credentials; a clerk acting for their own office; a clerk of another office (the
requests below name office A wherever a request names an office, so clerk_b is "another
office"; on a route without an office both clerks are the same caller); supervisor; auditor;
admin; an active unit's API key; and a suspended unit's key. Units cannot be suspended through
the API yet (API.md's case decisions are a later issue): the unit's status is set in the
database, as such a decision would, and the key ring reloaded.

Every request is minimal and valid, so its status reflects who sent it, not what was sent.
"""

from __future__ import annotations

import datetime as dt
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from idguard import uow
from idguard.app import create_app
from idguard.core.clock import FixedClock
from idguard.verification.models import RegistryVersion, Unit
from idguard.verification.rules import UnitStatus
from tests.conftest import settings_for
from tests.factories import NOW, OFFICE_A, PASSWORD, auth, id_number
from tests.functional.conftest import Counter

OK = "allowed"  # anything but 401 / 403 (and never a server error)
Expected = int | str

CALLERS = ("anonymous", "clerk", "other_clerk", "supervisor", "auditor", "admin", "unit", "suspended_unit")


@dataclass
class World:
    """The resources the requests name: all of office A."""

    person: str  # with a valid card (reads, loss reports)
    card_id: str
    issuing: str  # a person to issue cards to
    revocable: str  # a person to revoke
    report_no: str  # a standing loss report accepted at office A
    found_no: str  # a found card held at office A
    holder: str  # its owner
    holder_name: str
    findable: dict[str, str]  # a card nobody has handed in yet
    target_unit: str  # a unit whose keys are rotated and revoked
    keys: dict[str, str]  # caller -> Authorization header value


@dataclass(frozen=True)
class Request:
    path: str
    params: dict[str, Any] | None = None
    body: dict[str, Any] | None = None


@dataclass(frozen=True)
class Row:
    expected: tuple[Expected, ...]  # in CALLERS order
    request: Callable[[World], Request]


def row(
    anonymous: Expected,
    clerk: Expected,
    other_clerk: Expected,
    supervisor: Expected,
    auditor: Expected,
    admin: Expected,
    unit: Expected,
    suspended_unit: Expected,
    *,
    request: Callable[[World], Request],
) -> Row:
    return Row((anonymous, clerk, other_clerk, supervisor, auditor, admin, unit, suspended_unit), request)


def row_of(callers: tuple[str, ...], *expected: Expected, request: Callable[[Any], Request]) -> Row:
    """A row of a feature's table whose callers are the central ones and more (`callers`, the
    expected statuses in their order, one each)."""
    assert len(expected) == len(callers), f"{len(expected)} statuses for {len(callers)} callers: {callers}"
    return Row(expected, request)


def _new_person() -> dict[str, Any]:
    birth = dt.date(1985, 3, 3)
    return {
        "id_number": id_number(birth),
        "name": "周八",
        "sex": "male",
        "ethnicity": "汉",
        "birth_date": birth.isoformat(),
        "address": "北京市朝阳区建国路2号",
        "hukou_office": OFFICE_A,
    }


def _check(w: World) -> dict[str, Any]:
    return {
        "id_number": w.person,
        "name": "张三",
        "issued_on": "2026-06-15",
        "expires_on": "2046-06-15",
        "purpose": "account_opening",
        "operator": "teller-1",
    }


_NEW_UNIT = {"code": "NEW-UNIT", "name": "新银行", "sector": "bank", "purposes": ["account_opening"]}

# fmt: off
TABLE: dict[tuple[str, str], Row] = {
    #                                                   anon clerk other  sup  aud admin unit susp
    ("GET", "/api/v1/health"):                      row(OK,  OK,   OK,   OK,  OK,  OK,  OK,  OK,
        request=lambda w: Request("/api/v1/health")),
    ("GET", "/api/v1/problems"):                    row(OK,  OK,   OK,   OK,  OK,  OK,  OK,  OK,
        request=lambda w: Request("/api/v1/problems")),
    ("GET", "/api/v1/problems/{code}"):             row(OK,  OK,   OK,   OK,  OK,  OK,  OK,  OK,
        request=lambda w: Request("/api/v1/problems/invalid_request")),
    ("POST", "/api/v1/auth/token"):                 row(OK,  OK,   OK,   OK,  OK,  OK,  OK,  OK,
        request=lambda w: Request("/api/v1/auth/token", body={"username": "auditor", "password": PASSWORD})),
    ("GET", "/api/v1/found-cards/lookup"):          row(OK,  OK,   OK,   OK,  OK,  OK,  OK,  OK,
        request=lambda w: Request("/api/v1/found-cards/lookup",
                                  params={"id_number": w.holder, "name": w.holder_name})),
    ("POST", "/api/v1/found-cards/lookup"):         row(OK,  OK,   OK,   OK,  OK,  OK,  OK,  OK,
        request=lambda w: Request("/api/v1/found-cards/lookup",
                                  body={"id_number": w.holder, "name": w.holder_name})),
    # Units: with their own key only.
    ("POST", "/api/v1/verify"):                     row(401, 401,  401,  401, 401, 401, OK,  401,
        request=lambda w: Request("/api/v1/verify", body=_check(w))),
    ("POST", "/api/v1/verify/batch"):               row(401, 401,  401,  401, 401, 401, OK,  401,
        request=lambda w: Request("/api/v1/verify/batch", body={"items": [_check(w)]})),
    ("GET", "/api/v1/notifications"):               row(401, 401,  401,  401, 401, 401, OK,  401,
        request=lambda w: Request("/api/v1/notifications")),
    ("GET", "/api/v1/notifications/stream"):        row(401, 401,  401,  401, 401, 401, OK,  401,
        request=lambda w: Request("/api/v1/notifications/stream", params={"max_seconds": 0.1})),
    ("GET", "/api/v1/notifications/deliveries"):    row(401, 401,  401,  401, 401, 401, OK,  401,
        request=lambda w: Request("/api/v1/notifications/deliveries")),
    # The check log: a unit its own; supervisors and auditors every unit's.
    ("GET", "/api/v1/checks"):                      row(401, 403,  403,  OK,  OK,  403, OK,  401,
        request=lambda w: Request("/api/v1/checks")),
    # Units, managed by supervisors; listed by supervisors, auditors and admins.
    ("GET", "/api/v1/units"):                       row(401, 403,  403,  OK,  OK,  OK,  401, 401,
        request=lambda w: Request("/api/v1/units")),
    ("POST", "/api/v1/units"):                      row(401, 403,  403,  OK,  403, 403, 401, 401,
        request=lambda w: Request("/api/v1/units", body=_NEW_UNIT)),
    ("POST", "/api/v1/units/{code}/keys/rotate"):   row(401, 403,  403,  OK,  403, 403, 401, 401,
        request=lambda w: Request(f"/api/v1/units/{w.target_unit}/keys/rotate", body={"grace_seconds": 60})),
    ("POST", "/api/v1/units/{code}/keys/revoke"):   row(401, 403,  403,  OK,  403, 403, 401, 401,
        request=lambda w: Request(f"/api/v1/units/{w.target_unit}/keys/revoke")),
    ("POST", "/api/v1/units/{code}/harvesting/clear"): row(401, 403, 403, OK,  403, 403, 401, 401,
        request=lambda w: Request(f"/api/v1/units/{w.target_unit}/harvesting/clear")),
    # Registry reads: every member of staff, any office (audited).
    ("GET", "/api/v1/persons/{id_number}"):         row(401, OK,   OK,   OK,  OK,  OK,  401, 401,
        request=lambda w: Request(f"/api/v1/persons/{w.person}")),
    ("GET", "/api/v1/persons/{id_number}/cards"):   row(401, OK,   OK,   OK,  OK,  OK,  401, 401,
        request=lambda w: Request(f"/api/v1/persons/{w.person}/cards")),
    ("GET", "/api/v1/cards/{card_id}/events"):      row(401, OK,   OK,   OK,  OK,  OK,  401, 401,
        request=lambda w: Request(f"/api/v1/cards/{w.card_id}/events")),
    # Comparisons: a clerk only their own office's (office A asked for).
    ("GET", "/api/v1/fingerprint-comparisons"):     row(401, OK,   403,  OK,  OK,  OK,  401, 401,
        request=lambda w: Request("/api/v1/fingerprint-comparisons", params={"office": OFFICE_A})),
    # Registry writes at office A: its clerk, or an admin.
    ("POST", "/api/v1/persons"):                    row(401, OK,   403,  403, 403, OK,  401, 401,
        request=lambda w: Request("/api/v1/persons", body=_new_person())),
    ("POST", "/api/v1/persons/{id_number}/cards"):  row(401, OK,   403,  403, 403, OK,  401, 401,
        request=lambda w: Request(f"/api/v1/persons/{w.issuing}/cards",
                                  body={"kind": "first", "office": OFFICE_A})),
    ("POST", "/api/v1/persons/{id_number}/temporary-cards"): row(401, OK, 403, 403, 403, OK, 401, 401,
        request=lambda w: Request(f"/api/v1/persons/{w.issuing}/temporary-cards", body={"office": OFFICE_A})),
    ("POST", "/api/v1/persons/{id_number}/revocations"): row(401, OK, 403, 403, 403, OK, 401, 401,
        request=lambda w: Request(f"/api/v1/persons/{w.revocable}/revocations",
                                  body={"reason": "deceased", "office": OFFICE_A})),
    ("POST", "/api/v1/loss-reports"):               row(401, OK,   403,  403, 403, OK,  401, 401,
        request=lambda w: Request("/api/v1/loss-reports", body={
            "card_id": w.card_id, "reason": "lost", "office": OFFICE_A, "applicant_id_number": w.person})),
    ("POST", "/api/v1/loss-reports/{report_no}/cancel"): row(401, OK, 403, 403, 403, OK, 401, 401,
        request=lambda w: Request(f"/api/v1/loss-reports/{w.report_no}/cancel", body={"office": OFFICE_A})),
    ("POST", "/api/v1/found-cards"):                row(401, OK,   403,  403, 403, OK,  401, 401,
        request=lambda w: Request("/api/v1/found-cards", body={**w.findable, "office": OFFICE_A,
                                                                "finder": {"name": "李四"}})),
    ("POST", "/api/v1/found-cards/{found_no}/return"): row(401, OK, 403, 403, 403, OK, 401, 401,
        request=lambda w: Request(f"/api/v1/found-cards/{w.found_no}/return",
                                  body={"claimant_id_number": w.holder, "office": OFFICE_A})),
    ("POST", "/api/v1/found-cards/{found_no}/destroy"): row(401, OK, 403, 403, 403, OK, 401, 401,
        request=lambda w: Request(f"/api/v1/found-cards/{w.found_no}/destroy", body={"office": OFFICE_A})),
}
# fmt: on


def document_operations(app_openapi: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in app_openapi["paths"].items()
        for method in item
        if method in {"get", "put", "post", "patch", "delete", "head", "options"}
    }


def feature_tables() -> dict[tuple[str, str], object]:
    """The tables of the features that test their own routes' callers (a citizen among them):
    `tests/functional/<feature>/test_authorization.py`, each with a TABLE keyed like this one."""
    rows: dict[tuple[str, str], object] = {}
    for path in sorted(Path(__file__).parent.glob("*/test_authorization.py")):
        module = importlib.import_module(f"tests.functional.{path.parent.name}.test_authorization")
        overlap = rows.keys() & module.TABLE.keys()
        assert not overlap, f"{path}: rows already in another feature's table: {sorted(overlap)}"
        rows.update(module.TABLE)
    return rows


def test_every_operation_has_a_row() -> None:
    """A new route needs its row (who may call it); a removed route takes its row away."""
    spec = create_app(settings_for("sqlite:///:memory:"), clock=FixedClock(NOW)).openapi()
    operations = document_operations(spec)
    features = feature_tables()
    assert not TABLE.keys() & features.keys(), "an operation with rows in two tables"
    rows = TABLE.keys() | features.keys()
    missing = sorted(operations - rows)
    assert not missing, f"operations without a row in TABLE or a feature's table: {missing}"
    stale = sorted(rows - operations)
    assert not stale, f"rows for operations the app no longer has: {stale}"


def _onboard(counter: Counter, code: str) -> str:
    r = counter.post(
        "/api/v1/units",
        {"code": code, "name": code, "sector": "bank", "purposes": ["account_opening"]},
        as_="supervisor",
    )
    assert r.status_code == 201, r.text
    return str(r.json()["api_key"])


@pytest.fixture
def world(counter: Counter, session_factory: sessionmaker[Session]) -> World:
    person = counter.person(name="张三")
    card = counter.card(person)
    reported = counter.card(counter.person())
    r = counter.report(reported)
    assert r.status_code == 201, r.text
    report_no = r.json()["report_no"]
    holder = counter.person(name="赵六")
    held = counter.card(holder)
    body = {
        "id_number": holder,
        "issued_on": held["issued_on"],
        "office": OFFICE_A,
        "finder": {"name": "李四"},
    }
    r = counter.post("/api/v1/found-cards", body)
    assert r.status_code == 201, r.text
    findable = counter.card(counter.person())

    unit_key = _onboard(counter, "UNIT-A")
    suspended_key = _onboard(counter, "UNIT-S")
    _onboard(counter, "UNIT-T")
    verifier = counter.client.app.state.verifier  # type: ignore[attr-defined]
    verifier.follower.poll()
    assert counter.client.get("/api/v1/notifications", headers=_bearer(suspended_key)).status_code == 200
    suspend_unit(session_factory, "UNIT-S")
    verifier.follower.poll()

    return World(
        person=person,
        card_id=card["card_id"],
        issuing=counter.person(),
        revocable=counter.person(),
        report_no=report_no,
        found_no=r.json()["found_no"],
        holder=holder,
        holder_name="赵六",
        findable={"id_number": findable["id_number"], "issued_on": findable["issued_on"]},
        target_unit="UNIT-T",
        keys={**staff_keys(), "unit": f"Bearer {unit_key}", "suspended_unit": f"Bearer {suspended_key}"},
    )


# The helpers every feature's table shares (tests/functional/<feature>/test_authorization.py).

_STAFF_CALLERS = {
    "clerk": "clerk_a",
    "other_clerk": "clerk_b",
    "supervisor": "supervisor",
    "auditor": "auditor",
    "admin": "admin",
}


def staff_keys() -> dict[str, str]:
    """The Authorization header value of each member of staff among CALLERS (clerk_b is the
    clerk of another office)."""
    return {caller: auth(user)["Authorization"] for caller, user in _STAFF_CALLERS.items()}


def suspend_unit(session_factory: sessionmaker[Session], code: str) -> None:
    """The unit suspended in the database, as a case decision would, and the units' registry
    version moved on, so that the key ring reloads at the verifier's next poll (the caller's)."""
    with uow.transaction(session_factory) as session:
        unit = session.get(Unit, code)
        assert unit is not None
        unit.status = UnitStatus.SUSPENDED
        session.execute(
            sa.update(RegistryVersion)
            .where(RegistryVersion.name == "units")
            .values(version=RegistryVersion.version + 1)
        )


def misjudged(expected: Expected, status: int) -> str | None:
    """What is wrong with `status` as the answer to a caller the table expects `expected` of
    (every feature's table judges the same way); None when it is right."""
    if expected == OK:
        return "expected to be allowed" if status in (401, 403) or status >= 500 else None
    return None if status == expected else f"expected {expected}"


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def send(client: TestClient, method: str, request: Request, headers: dict[str, str]) -> int:
    """The status of `request` sent with `headers`."""
    if request.path.endswith("/stream"):
        # An event stream answers its status at once and then stays open (max_seconds bounds it).
        with client.stream(method, request.path, params=request.params, headers=headers) as r:
            return r.status_code
    return client.request(
        method, request.path, params=request.params, json=request.body, headers=headers
    ).status_code


def credentials(keys: dict[str, str], caller: str) -> dict[str, str]:
    """The headers `caller` sends: its Authorization from `keys`, or none (anonymous)."""
    return {"Authorization": keys[caller]} if caller in keys else {}


def misjudgements(
    client: TestClient,
    method: str,
    path: str,
    request: Request,
    callers: tuple[str, ...],
    expected: tuple[Expected, ...],
    keys: dict[str, str],
) -> list[str]:
    """`request` sent by each of `callers` in turn (`keys`: their Authorization), a line for each
    answer that is not what the row expects of that caller."""
    wrong: list[str] = []
    for caller, expect in zip(callers, expected, strict=True):
        status = send(client, method, request, credentials(keys, caller))
        if (fault := misjudged(expect, status)) is not None:
            wrong.append(f"{method} {path} as {caller}: {status}, {fault}")
    return wrong


def by_path(table: dict[tuple[str, str], Row]) -> list[tuple[tuple[str, str], Row]]:
    """A table's rows in the order the tests send them: by path, then method."""
    return sorted(table.items(), key=lambda item: (item[0][1], item[0][0]))


def test_who_may_call_each_operation(client: TestClient, world: World) -> None:
    # The features that keep their own tables test their routes there, with their own callers.
    operations = document_operations(client.get("/api/v1/openapi.json").json()) - feature_tables().keys()
    wrong: list[str] = []
    for method, path in sorted(operations, key=lambda op: (op[1], op[0])):
        entry = TABLE.get((method, path))
        if entry is None:
            wrong.append(f"{method} {path}: no row")
            continue
        wrong += misjudgements(
            client, method, path, entry.request(world), CALLERS, entry.expected, world.keys
        )
    assert wrong == []
