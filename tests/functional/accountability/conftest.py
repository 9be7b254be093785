"""Units that report transactions, and check-log rows written where a test needs them.

Checks are put straight into the check log's table (with the same keyed hash the check log
writes): the classification edge cases need checks at exact instants, which a live /verify
call (answered at the clock's time) cannot give. One test per module goes through /verify.
"""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from typing import Any

import httpx2 as httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from idguard import uow
from idguard.core.idnumber import mask
from idguard.verification.models import Check
from idguard.verification.runtime.checklog import id_hash
from tests.factories import CHECK_HASH_KEY, NOW, id_number
from tests.functional.conftest import Counter

_refs = itertools.count(1)


def number() -> str:
    return id_number(dt.date(1988, 8, 8))


def at(minutes: float) -> str:
    """NOW shifted by `minutes` (negative: before), RFC 3339."""
    return (NOW + dt.timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


class Unit:
    def __init__(self, counter: Counter, code: str, sector: str = "bank") -> None:
        self.counter = counter
        self.code = code
        r = counter.post(
            "/api/v1/units",
            {"code": code, "name": code, "sector": sector, "purposes": ["account_opening", "hotel_checkin"]},
            as_="supervisor",
        )
        assert r.status_code == 201, r.text
        self.key = r.json()["api_key"]

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def post(self, path: str, body: dict[str, Any], **headers: str) -> httpx.Response:
        return self.counter.client.post(path, json=body, headers={**self.headers, **headers})

    def get(self, path: str, **params: Any) -> httpx.Response:
        return self.counter.client.get(path, headers=self.headers, params=params)

    def report(self, *items: dict[str, Any]) -> list[dict[str, Any]]:
        r = self.post("/api/v1/transactions", {"items": list(items)})
        assert r.status_code == 200, r.text
        return list(r.json()["results"])

    def one(self, id_number: str, minutes: float = 0, **extra: Any) -> dict[str, Any]:
        """Report one transaction at NOW + minutes; its result."""
        item = {
            "ref": f"T-{next(_refs)}",
            "at": at(minutes),
            "id_number": id_number,
            "purpose": "account_opening",
        }
        [result] = self.report({**item, **extra})
        return result


def tx(id_number: str, minutes: float = 0, **extra: Any) -> dict[str, Any]:
    return {
        "ref": f"T-{next(_refs)}",
        "at": at(minutes),
        "id_number": id_number,
        "purpose": "account_opening",
        **extra,
    }


class CheckLog:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def add(
        self,
        unit: Unit | str,
        id_number: str,
        minutes: float,
        result: str = "valid",
        *,
        reason: str | None = None,
        alerts: str | None = None,
        fingerprint_match: bool | None = None,
    ) -> None:
        """A check by `unit` at NOW + minutes."""
        code = unit.code if isinstance(unit, Unit) else unit
        with uow.transaction(self.sessions) as session:
            session.execute(
                sa.insert(Check),
                [
                    {
                        "id": uuid.uuid4(),
                        "unit_code": code,
                        "operator": "teller-1",
                        "purpose": "account_opening",
                        "at": NOW + dt.timedelta(minutes=minutes),
                        "result": result,
                        "reason": reason
                        if reason is not None
                        else ("reported_lost" if result == "invalid" else None),
                        "id_masked": mask(id_number),
                        "id_hash": id_hash(CHECK_HASH_KEY, id_number),
                        "watch": False,
                        "fingerprint_match": fingerprint_match,
                        "alerts": alerts,
                    }
                ],
            )


@pytest.fixture
def bank(counter: Counter) -> Unit:
    return Unit(counter, "BANK-A")


@pytest.fixture
def other(counter: Counter) -> Unit:
    return Unit(counter, "BANK-B")


@pytest.fixture
def checks(session_factory: sessionmaker[Session]) -> CheckLog:
    return CheckLog(session_factory)
