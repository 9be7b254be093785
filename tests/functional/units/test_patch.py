"""PATCH /api/v1/units/{code}: each field, the errors naming it, a harmless retry, the audit; and
the `offline` grant set through POST and PATCH, which the offline routes obey at once."""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from idguard.db.common import AuditEntry
from idguard.verification.verifier import Verifier
from tests.functional.conftest import Counter, assert_problem
from tests.functional.verification.test_verify import Bank, sync

UNIT = {"code": "BANK-P", "name": "测试银行", "sector": "bank", "purposes": ["account_opening"]}


def patch(counter: Counter, body: dict[str, Any], code: str = "BANK-P", **headers: str) -> Any:
    from tests.factories import auth

    # json.dumps escapes a lone surrogate (`\ud800`), as a hostile client would send it.
    return counter.client.patch(
        f"/api/v1/units/{code}",
        content=json.dumps(body),
        headers={**auth("supervisor"), "Content-Type": "application/json", **headers},
    )


@pytest.fixture
def unit(counter: Counter) -> Bank:
    return Bank(counter, "BANK-P")


def audits(sessions: sessionmaker[Session], action: str) -> list[str | None]:
    with sessions() as session:
        return list(session.scalars(sa.select(AuditEntry.detail).where(AuditEntry.action == action)))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", "新名字银行"),
        ("purposes", ["account_opening", "hotel_checkin"]),
        ("rate_limit", 7),
        ("webhook_url", "https://hooks.example/idguard"),
    ],
)
def test_each_field_changes_alone_and_is_audited(
    counter: Counter, unit: Bank, session_factory: sessionmaker[Session], field: str, value: Any
) -> None:
    before = patch(counter, {}).json()["unit"]
    r = patch(counter, {field: value})
    assert r.status_code == 200, r.text
    after = r.json()["unit"]
    assert r.json()["changed"] == [field]
    assert after[field] == value
    assert {k: v for k, v in after.items() if k != field} == {k: v for k, v in before.items() if k != field}
    assert audits(session_factory, "unit.update") == [f"BANK-P: {field}"]
    listed = {u["code"]: u for u in counter.get("/api/v1/units", as_="supervisor").json()}
    assert listed["BANK-P"][field] == value


def test_the_webhook_url_is_removed_with_null_and_a_retry_changes_nothing(
    counter: Counter, unit: Bank, session_factory: sessionmaker[Session]
) -> None:
    assert patch(counter, {"webhook_url": "https://hooks.example/a"}).json()["changed"] == ["webhook_url"]
    r = patch(counter, {"webhook_url": None})
    assert (r.json()["changed"], r.json()["unit"]["webhook_url"]) == (["webhook_url"], None)
    again = patch(counter, {"webhook_url": None})  # a retry: already so
    assert (again.status_code, again.json()["changed"]) == (200, [])
    assert len(audits(session_factory, "unit.update")) == 2
    first = patch(counter, {"name": "甲"}, **{"Idempotency-Key": "p-1"})
    replay = patch(counter, {"name": "甲"}, **{"Idempotency-Key": "p-1"})
    assert replay.headers["Idempotent-Replayed"] == "true"
    answer = first.json()
    # Every worker applied the change before the first answer; a replay changed nothing.
    assert answer.pop("propagation")["confirmed"] >= 1
    assert replay.json() == answer


def test_new_rate_and_purposes_apply_at_once(counter: Counter, unit: Bank) -> None:
    verifier: Verifier = counter.client.app.state.verifier  # type: ignore[attr-defined]
    card = counter.card(counter.person())
    sync(counter)
    assert_problem(unit.verify(card, purpose="hotel_checkin"), 403)
    r = patch(counter, {"purposes": ["hotel_checkin", "account_opening"], "rate_limit": 9})
    assert r.json()["changed"] == ["purposes", "rate_limit"]
    view = verifier.keyring.unit("BANK-P")
    assert view is not None
    assert view.rate_limit == 9
    assert unit.verify(card, purpose="hotel_checkin").json()["result"] == "valid"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"purposes": ["no_such_purpose"]}, "purposes"),
        ({"purposes": []}, "purposes"),
        ({"purposes": None}, "purposes"),
        ({"webhook_url": "ftp://x"}, "webhook_url"),
        ({"rate_limit": 0}, "rate_limit"),
        ({"name": None}, "name"),
        ({"name": ""}, "name"),
        ({"offline": None}, "offline"),
        ({"offline": "yes"}, "offline"),
        ({"sector": "hotel"}, "sector"),
        ({"code": "OTHER"}, "code"),
        ({"name": "a\x00b"}, "name"),  # hostile text (as tests/functional/test_hostile_fields.py)
        ({"name": "a\ud800b"}, "name"),
        ({"webhook_url": "https://a\x00b"}, "webhook_url"),
        ({"purposes": ["a\x00b"]}, "purposes.0"),
        ({"name": "a" * 10_000}, "name"),
    ],
)
def test_errors_name_the_field_and_change_nothing(
    counter: Counter, unit: Bank, session_factory: sessionmaker[Session], body: dict[str, Any], field: str
) -> None:
    before = patch(counter, {}).json()["unit"]
    r = patch(counter, body)
    assert r.status_code in (400, 422), r.text
    assert_problem(r, r.status_code, field=field)
    assert patch(counter, {}).json()["unit"] == before
    assert audits(session_factory, "unit.update") == []


def test_an_unknown_unit_is_404(counter: Counter) -> None:
    assert_problem(patch(counter, {"name": "x"}, code="NO-SUCH"), 404)


def test_offline_granted_at_onboarding_and_withdrawn_by_patch(
    counter: Counter, session_factory: sessionmaker[Session]
) -> None:
    r = counter.post("/api/v1/units", {**UNIT, "code": "RAIL-P", "offline": True}, as_="supervisor")
    assert r.status_code == 201, r.text
    assert r.json()["unit"]["offline"] is True
    key = {"Authorization": f"Bearer {r.json()['api_key']}"}
    assert counter.client.get("/api/v1/offline/snapshot", headers=key).status_code == 200

    r = patch(counter, {"offline": False}, code="RAIL-P")
    assert (r.json()["changed"], r.json()["unit"]["offline"]) == (["offline"], False)
    assert_problem(counter.client.get("/api/v1/offline/snapshot", headers=key), 403)
    assert patch(counter, {"offline": False}, code="RAIL-P").json()["changed"] == []

    r = patch(counter, {"offline": True, "rate_limit": 5}, code="RAIL-P")
    assert r.json()["changed"] == ["rate_limit", "offline"]
    assert counter.client.get("/api/v1/offline/snapshot", headers=key).status_code == 200
    listed = {u["code"]: u["offline"] for u in counter.get("/api/v1/units", as_="supervisor").json()}
    assert listed["RAIL-P"] is True
    assert audits(session_factory, "unit.offline") == ["RAIL-P", "RAIL-P"]
    assert audits(session_factory, "unit.offline_withdrawn") == ["RAIL-P"]


def test_a_failing_field_rolls_back_the_offline_grant_too(counter: Counter, unit: Bank) -> None:
    r = patch(counter, {"offline": True, "purposes": ["no_such_purpose"]})
    assert_problem(r, 422, field="purposes")
    assert patch(counter, {}).json()["unit"]["offline"] is False


def test_rotation_takes_no_body_and_revoke_says_what_it_did(counter: Counter, unit: Bank) -> None:
    from tests.factories import auth

    r = counter.client.post("/api/v1/units/BANK-P/keys/rotate", headers=auth("supervisor"))
    assert r.status_code == 201, r.text
    assert r.json()["api_key"].startswith("idg_")
    assert r.json()["webhook_secret"] is None  # the webhook secret is rolled on its own
    r = counter.post("/api/v1/units/BANK-P/keys/revoke", {}, as_="supervisor")
    assert r.status_code == 200, r.text
    assert r.json()["keys_revoked"] == 2
    assert "status" not in r.json()
    assert "active" not in r.text
    assert counter.post("/api/v1/units/BANK-P/keys/revoke", {}, as_="supervisor").json()["keys_revoked"] == 0
