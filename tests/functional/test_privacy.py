"""No verify answer and no log line carries a full id number or a name (DOMAIN.md; docs/rules.md).

Every logger the app can reach is turned up to DEBUG, then a unit checks cards in every way it
can (valid, invalid, mismatch, unknown number, malformed, batch with bad items, watch) and staff
do what puts id numbers in paths and query strings. Then every captured record and every verify
answer is searched for the numbers and names used.

Not covered here: uvicorn's access log, which TestClient never runs — the multi-worker test
(tests/integration/test_multiworker.py) reads a real server's output for that.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from idguard.app import create_app
from idguard.config import Settings
from idguard.core.clock import FixedClock
from tests.factories import id_number
from tests.functional.conftest import Counter
from tests.functional.verification.test_verify import Bank, flush, sync

# The test client's own loggers: they record the requests *we* send (full URLs, paths with id
# numbers), as any caller's HTTP library would on its side. They are not the server's logs.
CLIENT_LOGGERS = ("httpx", "httpx2", "httpcore", "httpcore2")
# SQLAlchemy's engine logging stays at its own default (WARNING): turning it up is SQL echo, a
# debugging switch that prints statement parameters, not a log line the service writes.
LEFT_ALONE = ("sqlalchemy",)


def _everything_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # the root logger and caplog's handler
    names = ["idguard", "uvicorn", "uvicorn.access", "uvicorn.error", "fastapi", "starlette", "multipart"]
    names += list(logging.root.manager.loggerDict)
    for name in dict.fromkeys(names):
        if not name.startswith(LEFT_ALONE + CLIENT_LOGGERS):
            caplog.set_level(logging.DEBUG, logger=name)


def _item(card: dict[str, Any], **over: Any) -> dict[str, Any]:
    return {
        "id_number": card["id_number"],
        "name": card["name"],
        "issued_on": card["issued_on"],
        "expires_on": card["expires_on"],
        "purpose": "account_opening",
        "operator": "teller-3",
        **over,
    }


def _leaks(text: str, numbers: list[str], names: list[str]) -> list[str]:
    found = [n for n in numbers if n in text or n.lower() in text]
    # The first 14 characters are region and birth date: enough to single a person out.
    found += [f"{n[:14]}… (region and birth date)" for n in numbers if n[:14] in text]
    found += [name for name in names if name in text]
    return found


@pytest.fixture
def counter(settings: Settings, clock: FixedClock, caplog: pytest.LogCaptureFixture) -> Iterator[Counter]:
    """Our own app, started after the loggers are turned up, so that its start-up is captured too
    (the shared `client` fixture starts the app before a test can set log levels)."""
    _everything_at_debug(caplog)
    app = create_app(settings, clock=clock)
    with TestClient(app) as client:
        yield Counter(client)
    app.state.engine.dispose()


def test_no_verify_answer_and_no_log_line_carries_an_id_number_or_a_name(
    counter: Counter, caplog: pytest.LogCaptureFixture
) -> None:
    bank = Bank(counter, code="BANK-PRIVACY")
    valid = counter.card(counter.person(name="欧阳明远"))
    lost = counter.card(counter.person(dt.date(1979, 2, 3), female=True, name="司马秀英"))
    counter.report(lost)
    sync(counter)
    unknown = id_number(dt.date(1966, 7, 8))  # well formed, never registered
    malformed = valid["id_number"][:17] + ("1" if valid["id_number"][17] != "1" else "2")  # bad check char
    numbers = [valid["id_number"], lost["id_number"], unknown]
    names = [valid["name"], lost["name"], "诸葛孔明"]

    # -- a unit checks cards -----------------------------------------------------------------
    answers = [
        bank.verify(valid),
        bank.verify(lost),
        bank.verify(valid, name="诸葛孔明"),  # mismatch
        bank.verify(valid, id_number=unknown),  # mismatch: no such number
        bank.verify(valid, watch=True),
        bank.verify(lost, watch=True),
        bank.verify(valid, id_number=valid["id_number"][:17] + "Y"),  # 422: malformed
        bank.verify(valid, purpose="hotel_checkin"),  # 403: purpose not allowed
        counter.client.post("/api/v1/verify", json=_item(valid)),  # 401: no key
        counter.client.post(
            "/api/v1/verify/batch",
            json={
                "items": [
                    _item(valid),
                    _item(lost, watch=True),
                    _item(valid, name="诸葛孔明"),
                    _item(valid, id_number=unknown),
                    _item(valid, id_number=valid["id_number"][:16]),  # malformed
                    {"id_number": lost["id_number"], "name": lost["name"]},  # fields missing
                    _item(valid, name="x" * 61),  # too long
                    _item(valid, purpose="ticketing"),  # purpose not allowed
                    _item(valid, extra=valid["id_number"]),  # unknown field
                ]
            },
            headers=bank.headers(),
        ),
    ]
    assert [r.status_code for r in answers] == [200, 200, 200, 200, 200, 200, 422, 403, 401, 200]
    results = answers[-1].json()["results"]
    assert [r.get("result") for r in results[:4]] == ["valid", "invalid", "mismatch", "mismatch"]
    assert all("error" in r for r in results[4:]), results
    flush(counter)  # the check log (with the watches) is written, and may log while doing so
    assert counter.client.get("/api/v1/checks", headers=bank.headers()).status_code == 200

    # -- staff and citizens put id numbers in paths and query strings -------------------------
    staff_errors = []
    for number in (valid["id_number"], lost["id_number"]):
        assert counter.get(f"/api/v1/persons/{number}").status_code == 200
        assert counter.get(f"/api/v1/persons/{number}/cards").status_code == 200
    assert counter.issue(lost["id_number"], "replacement").status_code == 201
    staff_errors.append(counter.get(f"/api/v1/persons/{unknown}"))  # 404
    staff_errors.append(counter.get(f"/api/v1/persons/{malformed}"))  # 422
    staff_errors.append(counter.issue(valid["id_number"]))  # 409: a first card again
    staff_errors.append(counter.report(lost))  # 409: superseded, no longer valid
    staff_errors.append(counter.report(valid, applicant=lost["id_number"]))  # 409: not the holder
    staff_errors.append(
        counter.post(f"/api/v1/persons/{unknown}/revocations", {"reason": "deceased"})  # 404
    )
    for number, name in (
        (lost["id_number"], lost["name"]),
        (unknown, "诸葛孔明"),
        (malformed, valid["name"]),
    ):
        r = counter.client.get("/api/v1/found-cards/lookup", params={"id_number": number, "name": name})
        assert r.status_code in (200, 422), r.text
    assert [r.status_code for r in staff_errors] == [404, 422, 409, 409, 409, 404], [
        r.text for r in staff_errors
    ]

    # -- nothing leaked -------------------------------------------------------------------------
    for r in answers:
        text = r.text + json.dumps(dict(r.headers), ensure_ascii=False)
        assert not _leaks(text, numbers, names), f"verify answer {r.status_code} leaks: {text}"
    # Problem details are masked too (docs/rules.md), though staff answers may carry numbers.
    for r in staff_errors:
        assert not _leaks(r.text, numbers, names), f"problem detail {r.status_code} leaks: {r.text}"

    records = [
        r
        for r in caplog.get_records("setup") + caplog.get_records("call")
        if not r.name.startswith(CLIENT_LOGGERS)
    ]
    # The app's own start-up line shows that the capture sees the app's loggers at all.
    assert any(r.name.startswith("idguard") for r in records), (
        "no idguard record captured: the check is broken"
    )
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    for record in records:
        line = formatter.format(record)  # the message with its arguments, and any traceback
        assert not _leaks(line, numbers, names), f"log line leaks: {line}"
