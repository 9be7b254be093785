"""Authorization of the citizens' routes as a table (unioned into the central one by
tests/functional/test_authorization.py), with one more caller: a citizen with their own token.
And a citizen's token tried on every staff and unit route of the central table: never allowed.

`OK` means allowed (anything but 401 and 403, never a server error). Every request is minimal and
valid, so its status says who sent it, not what was sent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient

from tests.functional.citizens.conftest import CITIZEN_PASSWORD, Citizens
from tests.functional.test_authorization import (
    CALLERS as STAFF_CALLERS,
)
from tests.functional.test_authorization import (
    OK,
    Expected,
    Request,
    Row,
    World,
    by_path,
    document_operations,
    misjudgements,
    row_of,
    send,
    world,  # noqa: F401 - the central world fixture (offices, cards, units, a suspended unit), extended here
)
from tests.functional.test_authorization import (
    TABLE as STAFF_TABLE,
)

CALLERS = (*STAFF_CALLERS, "citizen")


@dataclass
class CitizenWorld:
    base: World
    citizen: str  # the citizen's id number (has an account and a valid card)
    card_id: str
    activating: str  # a person with a fresh activation code
    code: str
    issuing: str  # a person whose card is lost: certificates are issued to them
    certificate_no: str
    keys: dict[str, str]


CRow = Callable[[CitizenWorld], Request]


def row(*expected: Expected, request: CRow) -> Row:
    """A row: one expected status per caller, in CALLERS order."""
    return row_of(CALLERS, *expected, request=request)


def _me(path: str, body: dict[str, object] | None = None) -> CRow:
    return lambda w: Request(f"/api/v1/me{path}", body=body)


N = 401  # not this caller: no valid credentials of the right kind
# fmt: off
TABLE: dict[tuple[str, str], Row] = {
    #                                                         anon clerk other sup  aud admin unit susp citizen
    # A clerk (any office: the citizen stands at the counter) or an admin prints the code.
    ("POST", "/api/v1/persons/{id_number}/citizen-activation"): row(N, OK, OK, 403, 403, OK, N, N, N,
        request=lambda w: Request(f"/api/v1/persons/{w.activating}/citizen-activation")),
    # Public: anyone with a code (the first caller uses it; the others get 409) or a password.
    ("POST", "/api/v1/citizen/activate"):                    row(OK, OK, OK, OK,  OK, OK,  OK, OK,  OK,
        request=lambda w: Request("/api/v1/citizen/activate", body={
            "id_number": w.activating, "activation_code": w.code, "password": CITIZEN_PASSWORD})),
    ("POST", "/api/v1/citizen/token"):                       row(OK, OK, OK, OK,  OK, OK,  OK, OK,  OK,
        request=lambda w: Request("/api/v1/citizen/token", body={
            "id_number": w.citizen, "password": CITIZEN_PASSWORD})),
    # The citizen's own view: a citizen token only.
    ("GET", "/api/v1/me"):                                   row(N,  N,  N,  N,   N,  N,   N,  N,   OK, request=_me("")),
    ("GET", "/api/v1/me/cards"):                             row(N,  N,  N,  N,   N,  N,   N,  N,   OK, request=_me("/cards")),
    ("GET", "/api/v1/me/checks"):                            row(N,  N,  N,  N,   N,  N,   N,  N,   OK, request=_me("/checks")),
    ("GET", "/api/v1/me/accesses"):                          row(N,  N,  N,  N,   N,  N,   N,  N,   OK, request=_me("/accesses")),
    ("POST", "/api/v1/me/totp"):                             row(N,  N,  N,  N,   N,  N,   N,  N,   OK, request=_me("/totp")),
    ("POST", "/api/v1/me/totp/confirm"):                     row(N,  N,  N,  N,   N,  N,   N,  N,   OK,
        request=_me("/totp/confirm", {"otp": "123456"})),
    ("POST", "/api/v1/me/checks/{check_id}/dispute"):        row(N,  N,  N,  N,   N,  N,   N,  N,   OK,
        request=_me("/checks/00000000-0000-4000-8000-000000000001/dispute")),
    ("PUT", "/api/v1/me/protection"):                        row(N,  N,  N,  N,   N,  N,   N,  N,   OK,
        request=_me("/protection", {"person_check_required": False})),
    ("POST", "/api/v1/me/loss-reports"):                     row(N,  N,  N,  N,   N,  N,   N,  N,   OK,
        request=lambda w: Request("/api/v1/me/loss-reports", body={"card_id": w.card_id, "reason": "lost"})),
    ("POST", "/api/v1/me/loss-declarations"):                row(N,  N,  N,  N,   N,  N,   N,  N,   OK,
        request=lambda w: Request("/api/v1/me/loss-declarations", body={
            "card_id": w.card_id, "lost_on": "2026-06-15", "place": "北京"})),
    # Public declarations.
    ("GET", "/api/v1/declarations/keys"):                    row(OK, OK, OK, OK,  OK, OK,  OK, OK,  OK,
        request=lambda w: Request("/api/v1/declarations/keys")),
    ("GET", "/api/v1/declarations/{declaration_no}"):        row(OK, OK, OK, OK,  OK, OK,  OK, OK,  OK,
        request=lambda w: Request("/api/v1/declarations/LDNOSUCHNUMBER")),
    # Travel certificates: a clerk at their own office (A named), an admin; checked by a unit.
    ("POST", "/api/v1/persons/{id_number}/travel-certificates"): row(N, OK, 403, 403, 403, OK, N, N, N,
        request=lambda w: Request(f"/api/v1/persons/{w.issuing}/travel-certificates",
                                  body={"office": "110105001", "purpose": "rail", "valid_on": "2026-06-15"})),
    ("POST", "/api/v1/verify/certificate"):                  row(N,  N,  N,  N,   N,  N,   OK, N,   N,
        request=lambda w: Request("/api/v1/verify/certificate", body={
            "certificate_no": w.certificate_no, "name": "张三", "purpose": "account_opening", "operator": "x"})),
}
# fmt: on


@pytest.fixture
def citizens_world(world: World, citizens: Citizens) -> CitizenWorld:  # noqa: F811 - the imported fixture
    citizen = citizens.new(name="张三")
    activating = citizens.counter.person()
    issuing = citizens.new(name="张三")
    r = issuing.post("/me/loss-reports", {"card_id": issuing.card["card_id"], "reason": "lost"})
    assert r.status_code == 201, r.text
    r = citizens.counter.post(
        f"/api/v1/persons/{issuing.id_number}/travel-certificates",
        {"office": "110105001", "purpose": "rail", "valid_on": "2026-06-15"},
    )
    assert r.status_code == 201, r.text
    return CitizenWorld(
        base=world,
        citizen=citizen.id_number,
        card_id=citizen.card["card_id"],
        activating=activating,
        code=citizens.code(activating),
        issuing=issuing.id_number,
        certificate_no=r.json()["certificate_no"],
        keys={**world.keys, "citizen": f"Bearer {citizen.token}"},
    )


def test_who_may_call_each_citizens_operation(client: TestClient, citizens_world: CitizenWorld) -> None:
    operations = document_operations(client.get("/api/v1/openapi.json").json())
    wrong: list[str] = []
    for (method, path), entry in by_path(TABLE):
        assert (method, path) in operations, f"{method} {path}: a row for an operation the app does not have"
        request = entry.request(citizens_world)  # type: ignore[arg-type]
        wrong += misjudgements(client, method, path, request, CALLERS, entry.expected, citizens_world.keys)
    assert wrong == []


def test_a_citizen_token_opens_no_staff_or_unit_route(
    client: TestClient, citizens_world: CitizenWorld
) -> None:
    """Every route of the central table that an anonymous caller may not use refuses a citizen."""
    wrong: list[str] = []
    for (method, path), entry in sorted(STAFF_TABLE.items()):
        if entry.expected[0] == OK:  # public: health, staff sign-in, found-card lookup
            continue
        status = send(
            client,
            method,
            entry.request(citizens_world.base),
            {"Authorization": citizens_world.keys["citizen"]},
        )
        if status not in (401, 403):
            wrong.append(f"{method} {path} as a citizen: {status}")
    assert wrong == []
