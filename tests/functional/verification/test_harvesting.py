"""Harvesting (issue 9, item 4): a key that checks made-up numbers is noticed from its written
checks, audited, throttled on every worker, and a supervisor clears it."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from idguard.db.common import AuditEntry
from idguard.verification.harvesting import MIN_CHECKS, SUSPECTED_RATE
from tests.factories import id_number
from tests.functional.conftest import Counter, assert_problem
from tests.functional.verification.test_verify import Bank, flush, sync


def made_up(n: int) -> list[dict[str, object]]:
    return [
        {
            "id_number": id_number(dt.date(1980, 1, 1) + dt.timedelta(days=i)),
            "name": "某某",
            "issued_on": "2020-01-01",
            "expires_on": "2040-01-01",
            "purpose": "account_opening",
            "operator": "teller-1",
        }
        for i in range(n)
    ]


def test_made_up_numbers_get_the_unit_throttled_until_a_supervisor_clears_it(
    counter: Counter, engine: sa.Engine
) -> None:
    bank = Bank(counter, code="HARVEST-1", rate_limit=10_000)
    r = counter.client.post(
        "/api/v1/verify/batch", json={"items": made_up(MIN_CHECKS)}, headers=bank.headers()
    )
    assert r.status_code == 200, r.text
    flush(counter)  # written: the writer judges what it wrote
    sync(counter)
    units = {u["code"]: u for u in counter.get("/api/v1/units", as_="supervisor").json()}
    assert units["HARVEST-1"]["harvesting"] is not None
    assert "matched no card" in units["HARVEST-1"]["harvesting"]["reason"]
    with engine.connect() as conn:
        audit = conn.scalars(
            sa.select(AuditEntry.detail).where(AuditEntry.action == "unit.harvesting_suspected")
        ).all()
    assert any(d.startswith("HARVEST-1") for d in audit)

    # throttled to SUSPECTED_RATE checks a second: one more batch empties the bucket, the next waits
    statuses = [
        counter.client.post(
            "/api/v1/verify/batch", json={"items": made_up(SUSPECTED_RATE + 5)}, headers=bank.headers()
        ).status_code
        for _ in range(2)
    ]
    assert statuses[-1] == 429, statuses
    throttled = counter.client.post(
        "/api/v1/verify/batch", json={"items": made_up(2)}, headers=bank.headers()
    )
    assert_problem(throttled, 429, says="suspected of harvesting")

    path = "/api/v1/units/HARVEST-1/harvesting/clear"
    assert_problem(counter.post(path, {}, as_="auditor"), 403)
    cleared = counter.post(path, {}, as_="supervisor")
    assert cleared.status_code == 200, cleared.text
    assert cleared.json()["harvesting"] is None
    assert_problem(counter.post(path, {}, as_="supervisor"), 409, says="not suspected")
    sync(counter)
    r = counter.client.post("/api/v1/verify/batch", json={"items": made_up(50)}, headers=bank.headers())
    assert r.status_code == 200, r.text


def test_a_bank_checking_real_cards_is_left_alone(counter: Counter) -> None:
    bank = Bank(counter, code="REAL-1", rate_limit=10_000)
    card = counter.card(counter.person())
    sync(counter)
    body = {
        "id_number": card["id_number"],
        "name": card["name"],
        "issued_on": card["issued_on"],
        "expires_on": card["expires_on"],
        "purpose": "account_opening",
    }
    items = [{**body, "operator": f"teller-{i}"} for i in range(MIN_CHECKS * 2)]
    assert (
        counter.client.post("/api/v1/verify/batch", json={"items": items}, headers=bank.headers()).status_code
        == 200
    )
    flush(counter)
    sync(counter)
    units = {u["code"]: u for u in counter.get("/api/v1/units", as_="supervisor").json()}
    assert units["REAL-1"]["harvesting"] is None
