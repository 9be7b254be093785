"""Every check must be accountable: when the check log cannot take a request's checks (the
database has not been writing them), the request is refused with 503 and nothing is answered or
recorded; what still fits is answered (docs/rules.md, "Networked verification")."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from idguard.verification.models import Check
from idguard.verification.runtime import checklog
from tests.functional.conftest import Counter, assert_problem
from tests.functional.verification.test_verify import Bank, flush, sync


def item(card: dict[str, Any], operator: str) -> dict[str, Any]:
    return {
        "id_number": card["id_number"],
        "name": card["name"],
        "issued_on": card["issued_on"],
        "expires_on": card["expires_on"],
        "purpose": "account_opening",
        "operator": operator,
    }


def recorded(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        return sorted(conn.scalars(sa.select(Check.operator)))


def test_a_full_check_log_refuses_with_503_and_records_nothing(
    counter: Counter, engine: sa.Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    bank = Bank(counter, code="BANK-FULL")
    card = counter.card(counter.person())
    sync(counter)
    client = counter.client

    # Room for two unwritten checks: a batch of three does not fit, whatever is pending.
    monkeypatch.setattr(checklog, "MAX_BUFFERED", 2)
    r = client.post(
        "/api/v1/verify/batch",
        json={"items": [item(card, "refused-1"), item(card, "refused-2"), item(card, "refused-3")]},
        headers=bank.headers(),
    )
    assert_problem(r, 503)
    assert int(r.headers["Retry-After"]) >= 1
    assert "result" not in r.text

    # Nothing else is waiting, so a batch of exactly two fits.
    r = client.post(
        "/api/v1/verify/batch",
        json={"items": [item(card, "fits-1"), item(card, "fits-2")]},
        headers=bank.headers(),
    )
    assert r.status_code == 200, r.text
    assert [x["result"] for x in r.json()["results"]] == ["valid", "valid"]

    # No room at all: a single check is refused too.
    monkeypatch.setattr(checklog, "MAX_BUFFERED", 0)
    r = client.post("/api/v1/verify", json=item(card, "refused-4"), headers=bank.headers())
    assert_problem(r, 503)
    assert int(r.headers["Retry-After"]) >= 1

    flush(counter)
    assert recorded(engine) == ["fits-1", "fits-2"]
