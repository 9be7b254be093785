"""Networked verification as a bank integrates it: onboard, check, every answer, the check log."""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from idguard.api.errors import field_name
from idguard.core.clock import FixedClock, today_cst
from idguard.core.text import faults as text_faults
from idguard.verification import harvesting
from idguard.verification.models import Watch
from idguard.verification.runtime import checklog
from idguard.verification.schemas import VerifyIn
from tests.factories import NOW
from tests.functional.conftest import Counter, assert_problem
from tests.unit.verification.test_fast_paths import FIELD_VALUES, FIELDS


class Bank:
    """A unit's view: its key and a way to check."""

    def __init__(
        self,
        counter: Counter,
        code: str = "BANK-1",
        purposes: tuple[str, ...] = ("account_opening",),
        rate_limit: int = 1000,
    ) -> None:
        self.counter = counter
        r = counter.post(
            "/api/v1/units",
            {
                "code": code,
                "name": "测试银行",
                "sector": "bank",
                "purposes": list(purposes),
                "rate_limit": rate_limit,
            },
            as_="supervisor",
        )
        assert r.status_code == 201, r.text
        self.code = code
        self.key = r.json()["api_key"]

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}"}

    @staticmethod
    def body(card: dict[str, Any], **over: Any) -> dict[str, Any]:
        """A single check's body for `card` (`over` replaces or adds fields)."""
        return {
            "id_number": card["id_number"],
            "name": card["name"],
            "issued_on": card["issued_on"],
            "expires_on": card["expires_on"],
            "purpose": "account_opening",
            "operator": "teller-7",
            **over,
        }

    def verify(self, card: dict[str, Any], key: str | None = None, **over: Any) -> Any:
        body = self.body(card, **over)
        return self.counter.client.post("/api/v1/verify", json=body, headers=self.headers(key))


def sync(counter: Counter) -> None:
    """Let this worker's index catch up with the ledger now (the follower polls every 20 ms)."""
    counter.client.app.state.verifier.follower.poll()  # type: ignore[attr-defined]


def flush(counter: Counter) -> None:
    counter.client.app.state.verifier.log.flush()  # type: ignore[attr-defined]


@pytest.fixture
def bank(counter: Counter) -> Bank:
    return Bank(counter)


def test_valid_card(counter: Counter, bank: Bank) -> None:
    card = counter.card(counter.person())
    sync(counter)
    r = bank.verify(card)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["result"] == "valid"
    assert "reason" not in body
    assert body["check_id"]
    assert float(r.headers["X-Index-Age"]) < 5


@pytest.mark.parametrize(("action", "reason"), [("lost", "reported_lost"), ("stolen", "reported_stolen")])
def test_reported_card_is_invalid(counter: Counter, bank: Bank, action: str, reason: str) -> None:
    card = counter.card(counter.person())
    counter.report(card, action)
    sync(counter)
    assert bank.verify(card).json() | {"check_id": None, "checked_at": None} == {
        "result": "invalid",
        "reason": reason,
        "check_id": None,
        "checked_at": None,
    }


def test_superseded_and_revoked(counter: Counter, bank: Bank) -> None:
    number = counter.person()
    old = counter.card(number, issued_on="2020-01-01", as_="admin")
    new = counter.card(number, kind="renewal")
    sync(counter)
    assert bank.verify(old).json()["reason"] == "superseded"
    assert bank.verify(new).json()["result"] == "valid"
    counter.post(f"/api/v1/persons/{number}/revocations", {"reason": "deceased"})
    sync(counter)
    assert bank.verify(new).json()["reason"] == "revoked"


def test_expired_by_date_in_china(counter: Counter, bank: Bank, clock: FixedClock) -> None:
    card = counter.card(counter.person(dt.date(2012, 1, 1)))  # 5-year card, expires 2031-06-15
    sync(counter)
    # 2031-06-15 15:59 UTC is 23:59 in Beijing: still the expiry day, still valid.
    clock.at = dt.datetime(2031, 6, 15, 15, 59, tzinfo=dt.UTC)
    assert bank.verify(card).json()["result"] == "valid"
    clock.at = dt.datetime(2031, 6, 15, 16, 1, tzinfo=dt.UTC)  # 00:01 on the 16th in Beijing
    assert bank.verify(card).json() | {"check_id": 0, "checked_at": 0} == {
        "result": "invalid",
        "reason": "expired",
        "check_id": 0,
        "checked_at": 0,
    }


@pytest.mark.parametrize(
    "change",
    [
        {"name": "李四"},
        {"issued_on": "2026-06-16"},
        {"expires_on": "2046-06-16"},
        {"expires_on": None},
        {"chip_serial": "00000000000000000000000000000000"},
        {"id_number": "11010519491231002X"},  # well formed, no such card
    ],
)
def test_anything_that_does_not_match_is_mismatch(
    counter: Counter, bank: Bank, change: dict[str, Any]
) -> None:
    card = counter.card(counter.person())
    sync(counter)
    body = bank.verify(card, **change).json()
    assert body["result"] == "mismatch"
    assert "reason" not in body


def test_chip_serial_when_read_must_match(counter: Counter, bank: Bank) -> None:
    card = counter.card(counter.person())
    sync(counter)
    assert bank.verify(card, chip_serial=card["chip_serial"].lower()).json()["result"] == "valid"


def test_answers_carry_no_personal_data(counter: Counter, bank: Bank) -> None:
    card = counter.card(counter.person(name="欧阳明"))
    counter.report(card)
    sync(counter)
    for r in (bank.verify(card), bank.verify(card, name="欧阳"), bank.verify(card, watch=True)):
        text = r.text + json.dumps(dict(r.headers))
        assert card["id_number"] not in text
        assert card["id_number"][:14] not in text
        assert "欧阳" not in text
        assert set(r.json()) <= {"result", "reason", "check_id", "checked_at"}


def test_purpose_not_allowed_is_403_and_bad_fields_422(counter: Counter, bank: Bank) -> None:
    card = counter.card(counter.person())
    assert_problem(bank.verify(card, purpose="hotel_checkin"), 403, says="purpose")
    r = bank.verify(card, id_number="12345", issued_on="yesterday")
    assert_problem(r, 422)
    assert {"id_number", "issued_on"} <= {e["field"] for e in r.json()["errors"]}


def test_keys_unknown_revoked_and_rotated(counter: Counter, bank: Bank, clock: FixedClock) -> None:
    card = counter.card(counter.person())
    sync(counter)
    assert_problem(bank.verify(card, key="idg_" + "x" * 43), 401)
    assert_problem(bank.verify(card, key="not-a-key"), 401)
    # A staff token is not a unit key.
    staff = counter.client.post("/api/v1/verify", json={}, headers={"Authorization": "Bearer nope"})
    assert staff.status_code == 401
    old = bank.key
    r = counter.post(f"/api/v1/units/{bank.code}/keys/rotate", {"grace_seconds": 3600}, as_="supervisor")
    assert r.status_code == 201, r.text
    new = r.json()["api_key"]
    assert new != old
    assert bank.verify(card, key=old).status_code == 200  # grace period
    assert bank.verify(card, key=new).status_code == 200
    clock.at = NOW + dt.timedelta(hours=1, seconds=1)
    assert_problem(bank.verify(card, key=old), 401)
    assert bank.verify(card, key=new).status_code == 200
    r = counter.post(f"/api/v1/units/{bank.code}/keys/revoke", {}, as_="supervisor")
    assert r.status_code == 200, r.text
    assert_problem(bank.verify(card, key=new), 401)  # at once


def test_only_supervisors_onboard(counter: Counter) -> None:
    body = {"code": "HOTEL-1", "name": "酒店", "sector": "hotel", "purposes": ["hotel_checkin"]}
    for role in ("clerk_a", "auditor", "admin"):
        assert_problem(counter.post("/api/v1/units", body, as_=role), 403)
    assert_problem(
        counter.post("/api/v1/units", {**body, "purposes": ["spying"]}, as_="supervisor"),
        422,
        field="purposes",
    )
    assert counter.post("/api/v1/units", body, as_="supervisor").status_code == 201
    assert_problem(counter.post("/api/v1/units", body, as_="supervisor"), 409)


def test_rate_limit_gives_429_with_retry_after(counter: Counter) -> None:
    slow = Bank(counter, code="SLOW", rate_limit=2)
    card = counter.card(counter.person())
    statuses = [slow.verify(card).status_code for _ in range(4)]
    assert statuses[:2] == [200, 200]
    assert 429 in statuses[2:]
    r = slow.verify(card)
    assert_problem(r, 429)
    assert r.json()["title"] == "Too many requests"
    assert int(r.headers["Retry-After"]) >= 1


def test_batch_keeps_order_and_reports_bad_items(counter: Counter, bank: Bank) -> None:
    good = counter.card(counter.person())
    lost = counter.card(counter.person())
    counter.report(lost)
    sync(counter)

    def item(card: dict[str, Any], **over: Any) -> dict[str, Any]:
        return {
            "id_number": card["id_number"],
            "name": card["name"],
            "issued_on": card["issued_on"],
            "expires_on": card["expires_on"],
            "purpose": "account_opening",
            "operator": "t1",
            **over,
        }

    items = [
        item(good),
        {"id_number": "bad"},
        item(lost),
        item(good, purpose="ticketing"),
        item(good, name="x"),
    ]
    r = counter.client.post("/api/v1/verify/batch", json={"items": items}, headers=bank.headers())
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x.get("result") for x in results] == ["valid", None, "invalid", None, "mismatch"]
    assert results[1]["error"]["status"] == 422
    assert "name" in {e["field"] for e in results[1]["error"]["errors"]}
    assert results[3]["error"]["status"] == 403
    assert_problem(
        counter.client.post(
            "/api/v1/verify/batch", json={"items": [item(good)] * 1001}, headers=bank.headers()
        ),
        422,
        field="items",
    )


def test_check_log_unit_sees_its_own_masked(counter: Counter, bank: Bank) -> None:
    other = Bank(counter, code="BANK-2")
    card = counter.card(counter.person())
    sync(counter)
    bank.verify(card)
    bank.verify(card, name="nobody")
    other.verify(card)
    flush(counter)
    mine = counter.client.get("/api/v1/checks", headers=bank.headers()).json()["items"]
    assert {c["unit"] for c in mine} == {"BANK-1"}
    assert sorted(c["result"] for c in mine) == ["mismatch", "valid"]
    assert all(c["id_number"] == card["id_number"][:6] + "********" + card["id_number"][14:] for c in mine)
    assert (
        counter.client.get("/api/v1/checks", params={"result": "mismatch"}, headers=bank.headers()).json()[
            "items"
        ][0]["operator"]
        == "teller-7"
    )
    everyone = counter.get("/api/v1/checks", as_="auditor").json()["items"]
    assert {c["unit"] for c in everyone} == {"BANK-1", "BANK-2"}
    assert_problem(counter.get("/api/v1/checks", as_="clerk_a"), 403)
    page = counter.client.get("/api/v1/checks", params={"limit": 1}, headers=bank.headers()).json()
    second = counter.client.get(
        "/api/v1/checks", params={"limit": 1, "after": page["next"]}, headers=bank.headers()
    ).json()
    assert page["items"][0]["check_id"] != second["items"][0]["check_id"]
    assert second["next"] is None


def test_unit_cannot_use_staff_routes(counter: Counter, bank: Bank) -> None:
    r = counter.client.get(f"/api/v1/persons/{counter.person()}", headers=bank.headers())
    assert_problem(r, 401)


def test_same_day_replacement_answers_invalid_unless_the_chip_tells_them_apart(
    counter: Counter, bank: Bank
) -> None:
    """Two cards with the same printed data (replaced the day it was issued): when in doubt, invalid."""
    number = counter.person()
    lost = counter.card(number)
    counter.report(lost)
    new = counter.card(number, kind="replacement")
    sync(counter)
    assert bank.verify(new).json()["result"] == "invalid"
    assert bank.verify(new, chip_serial=new["chip_serial"]).json()["result"] == "valid"
    assert bank.verify(lost, chip_serial=lost["chip_serial"]).json()["reason"] == "reported_lost"


# --- the batch's fast paths answer as the plain way did -----------------------------------------


def _expected(raw: dict[str, Any], purposes: set[str], index_answer: Any) -> dict[str, Any]:
    """What the batch answered for an item before its fast paths: VerifyIn's errors, the 403 of a
    purpose not allowed, or the index's answer (check_id and checked_at aside)."""
    try:
        model = VerifyIn.model_validate(raw)
    except ValidationError as exc:
        errors = [{"field": field_name(tuple(e["loc"])), "detail": str(e["msg"])} for e in exc.errors()]
        detail = "invalid fields: " + ", ".join(e["field"] for e in errors)
        return {"error": {"status": 422, "title": "Invalid item", "detail": detail, "errors": errors}}
    if model.purpose not in purposes:
        detail = f"your unit may not check for purpose {model.purpose!r}"
        return {"error": {"status": 403, "title": "Forbidden", "detail": detail, "errors": []}}
    result, reason, _ = index_answer(model)
    return {"result": result.value} | ({"reason": reason.value} if reason is not None else {})


@st.composite
def _batch_items(draw: st.DrawFn, cards: list[dict[str, Any]], *, good: bool) -> dict[str, Any]:
    card = draw(st.sampled_from(cards))
    item: dict[str, Any] = {
        "id_number": card["id_number"],
        "name": card["name"],
        "issued_on": card["issued_on"],
        "expires_on": card["expires_on"],
        "purpose": "account_opening",
        "operator": draw(st.sampled_from(["t1", "t2", " 柜员 "])),
    }
    if draw(st.booleans()):
        item["chip_serial"] = draw(st.sampled_from([card["chip_serial"], card["chip_serial"].lower(), "00"]))
    if draw(st.booleans()):
        item["name"] = draw(st.sampled_from([card["name"] + " ", "李四"]))
    if draw(st.booleans()):
        item["watch"] = draw(st.booleans())
    if not good and draw(st.booleans()):
        for field in draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=2)):
            if field != "fingerprint":  # fingerprints have their own tests
                item[field] = draw(FIELD_VALUES[field])
    return item


def test_batch_answers_every_item_as_before(
    counter: Counter, clock: FixedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # This unit sends made-up printed data on purpose, hundreds of mismatches a minute: exactly what
    # harvesting detection throttles (tested in test_harvesting.py). Here the answers are the point.
    monkeypatch.setattr(harvesting, "MIN_CHECKS", 10**9)
    bank = Bank(counter, code="BANK-PROPS", rate_limit=100_000)
    cards = [counter.card(counter.person()) for _ in range(3)]
    counter.report(cards[1])
    sync(counter)
    verifier = counter.client.app.state.verifier  # type: ignore[attr-defined]
    today = today_cst(clock.now())
    checked_at = bank.verify(cards[0]).json()["checked_at"]

    def index_answer(m: VerifyIn) -> Any:
        return verifier.index.check(m.id_number, m.name, m.issued_on, m.expires_on, today, m.chip_serial)

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.data())
    def check(data: st.DataObject) -> None:
        good = data.draw(st.booleans())  # all good: the fast lane; else the declared way
        items = data.draw(st.lists(_batch_items(cards, good=good), min_size=1, max_size=12))
        body = json.dumps({"items": items})
        r = counter.client.post(  # NaN and Infinity too, as json.loads reads them
            "/api/v1/verify/batch",
            content=body,
            headers={**bank.headers(), "Content-Type": "application/json"},
        )
        unstorable = text_faults(json.loads(body))
        if unstorable:  # text no database can store is refused for the whole request, at the door
            assert_problem(r, 422)
            assert [e["field"] for e in r.json()["errors"]] == [field_name(p) for p, _ in unstorable]
            return
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/json"
        assert float(r.headers["X-Index-Age"]) < 5
        results = r.json()["results"]
        ids = [got.pop("check_id") for got in results if "result" in got]
        assert all(got.pop("checked_at") == checked_at for got in results if "result" in got)
        assert results == [_expected(raw, {"account_opening"}, index_answer) for raw in items]
        assert len(set(ids)) == len(ids)
        assert all(str(uuid.UUID(i)) == i for i in ids)

    check()


def test_fast_lane_and_declared_way_answer_alike(counter: Counter, bank: Bank) -> None:
    """The lane takes `application/json`; FastAPI's declared way also reads `…+json` bodies,
    which the lane leaves to it: the same request both ways gets the same answer."""
    card = counter.card(counter.person())
    counter.report(counter.card(counter.person()))
    sync(counter)
    body = {
        "id_number": card["id_number"],
        "name": card["name"],
        "issued_on": card["issued_on"],
        "expires_on": card["expires_on"],
        "purpose": "account_opening",
        "operator": "t",
    }
    requests = [
        ("/api/v1/verify", body),
        ("/api/v1/verify", {**body, "purpose": "hotel_checkin"}),  # 403
        ("/api/v1/verify", {**body, "issued_on": "2015-02-29"}),  # 422
        ("/api/v1/verify/batch", {"items": [body, {**body, "name": "李四"}]}),
        ("/api/v1/verify/batch", {"items": [body, {**body, "purpose": "ticketing"}, {"id_number": "x"}]}),
        ("/api/v1/verify/batch", {"items": []}),  # 422
    ]
    for path, sent in requests:
        answers = []
        for content_type in (
            "application/json",
            "application/json; charset=utf-8",
            "application/x-idguard+json",
        ):
            r = counter.client.post(
                path, content=json.dumps(sent), headers={**bank.headers(), "Content-Type": content_type}
            )
            text = re.sub(r'"check_id":"[0-9a-f-]{36}"', '"check_id":"…"', r.text)
            answers.append((r.status_code, r.headers["content-type"], text, "X-Index-Age" in r.headers))
        assert answers[0] == answers[1] == answers[2], (path, sent, answers)
    for headers in ({}, {"Authorization": "Bearer idg_" + "x" * 43}):  # no key, unknown key: 401 both ways
        assert_problem(counter.client.post("/api/v1/verify", json=body, headers=headers), 401)
        assert_problem(
            counter.client.post("/api/v1/verify/batch", json={"items": [body]}, headers=headers), 401
        )
    r = counter.client.post(
        "/api/v1/verify", content=b"{not json", headers={**bank.headers(), "Content-Type": "application/json"}
    )
    assert_problem(r, 400)
    assert r.json()["code"] == "invalid_json"


def test_check_log_keeps_any_operator(counter: Counter, bank: Bank, clock: FixedClock) -> None:
    """Operators are the units' free text: tabs, newlines, backslashes and quotes are all
    recorded. A NUL is refused at the door like any text the database cannot store (422 naming
    the field, tests/functional/test_hostile_input.py); should one reach the log all the same, it
    is kept as U+FFFD on PostgreSQL (whose text cannot hold NUL) and never stops the log."""
    card = counter.card(counter.person())
    sync(counter)
    operators = ["a\tb", "back\\slash", "line\nbreak", "quote\"'", "\\N", "柜员-7"]
    sent: dict[str, str] = {}
    for operator in operators:
        r = bank.verify(card, operator=operator)
        assert r.status_code == 200, r.text
        sent[r.json()["check_id"]] = operator
    assert_problem(bank.verify(card, operator="nul\x00byte"), 422, field="operator")
    item = {k: card[k] for k in ("id_number", "name", "issued_on", "expires_on")} | {
        "purpose": "account_opening"
    }
    r = counter.client.post(
        "/api/v1/verify/batch",
        json={"items": [{**item, "operator": operators[i % len(operators)]} for i in range(20)]},
        headers=bank.headers(),
    )
    assert r.status_code == 200, r.text
    for i, answer in enumerate(r.json()["results"]):
        sent[answer["check_id"]] = operators[i % len(operators)]
    # Defence in depth: a NUL handed to the log itself (no request can send one).
    verifier = counter.client.app.state.verifier  # type: ignore[attr-defined]
    check_id = str(uuid.uuid4())
    entry = (check_id, bank.code, "nul\x00byte", "account_opening", clock.now(), "valid", None)
    verifier.log.append([(*entry, card["id_number"], None, verifier.follower.seq, None, None)])
    sent[check_id] = "nul\x00byte"
    flush(counter)
    assert verifier.log.pending == 0
    logged = {
        c["check_id"]: c["operator"]
        for c in counter.client.get("/api/v1/checks", params={"limit": 500}, headers=bank.headers()).json()[
            "items"
        ]
    }
    postgres = counter.client.app.state.engine.dialect.name == "postgresql"  # type: ignore[attr-defined]
    assert logged == {k: v.replace("\x00", "\ufffd") if postgres else v for k, v in sent.items()}


def test_watches_are_written_first_and_shutdown_writes_everything(counter: Counter, bank: Bank) -> None:
    """A log that has fallen behind still writes a new watch in its next round (notifications
    rely on watches being written within a second), and stopping writes the whole backlog."""
    card = counter.card(counter.person())
    sync(counter)
    verifier = counter.client.app.state.verifier  # type: ignore[attr-defined]
    verifier.log.stop()  # no writer thread: this test writes round by round
    backlog = 2 * checklog.WRITE_ROWS_MIN + 10
    bulk = [bank_item(card, watch=False)] * backlog
    verifier.check_items(unit_view(verifier, bank), bulk)
    verifier.check_items(unit_view(verifier, bank), [bank_item(card, watch=True)])
    assert verifier.log.pending == backlog + 1
    assert verifier.log.flush() == checklog.WRITE_ROWS_MIN + 1  # the watch, then one transaction of the rest
    with counter.client.app.state.sessionmaker() as session:  # type: ignore[attr-defined]
        assert session.scalar(sa.select(sa.func.count()).select_from(Watch)) == 1
    verifier.log.stop()
    assert verifier.log.pending == 0
    assert verifier.log.written == backlog + 1


def bank_item(card: dict[str, Any], *, watch: bool) -> Any:
    return (
        card["id_number"],
        card["name"],
        dt.date.fromisoformat(card["issued_on"]),
        dt.date.fromisoformat(card["expires_on"]) if card["expires_on"] else None,
        "account_opening",
        "teller-7",
        None,
        watch,
    )


def unit_view(verifier: Any, bank: Bank) -> Any:
    return verifier.keyring.authenticate(bank.key, NOW)
