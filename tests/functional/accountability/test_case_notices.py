"""Case notices reach the unit on every channel: the poll (own cursor), the event stream (an
event of its own; Last-Event-ID resumes both positions) and the signed webhook (retried)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from idguard.core.clock import FixedClock
from idguard.verification.verifier import Verifier
from tests.functional.accountability.conftest import Unit
from tests.functional.conftest import Counter
from tests.functional.verification.test_notifications import HookedBank, Receiver, read_events


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def open_case(counter: Counter, code: str) -> str:
    r = counter.post(
        f"/api/v1/units/{code}/cases", {"month": "2026-05", "finding": "too many unchecked"}, as_="supervisor"
    )
    assert r.status_code == 201, r.text
    return str(r.json()["case_no"])


def test_stream_sends_case_events_and_resumes_both_cursors(counter: Counter, bank: Unit) -> None:
    case_no = open_case(counter, bank.code)
    with counter.client.stream(
        "GET", "/api/v1/notifications/stream", params={"max_seconds": 30}, headers=bank.headers
    ) as r:
        assert r.status_code == 200
        [event], _ = read_events(r, 1)
    assert event["event"] == "case"
    assert event["data"]["case_no"] == case_no
    assert event["data"]["event"] == "opened"
    _ledger, _, cases = event["id"].partition(".")
    assert int(cases) == event["data"]["cursor"]
    # Resuming after it: nothing more until the decision.
    r = counter.post(
        f"/api/v1/cases/{case_no}/decision", {"decision": "dismissed", "note": "ok"}, as_="supervisor"
    )
    assert r.status_code == 200, r.text
    with counter.client.stream(
        "GET",
        "/api/v1/notifications/stream",
        params={"max_seconds": 30},
        headers={**bank.headers, "Last-Event-ID": event["id"]},
    ) as r:
        [event], _ = read_events(r, 1)
    assert (event["data"]["event"], event["data"]["decision"]) == ("decided", "dismissed")
    bad = counter.client.get("/api/v1/notifications/stream", headers={**bank.headers, "Last-Event-ID": "x.1"})
    assert bad.status_code == 422


def test_webhook_carries_case_notices(counter: Counter, receiver: Receiver, clock: FixedClock) -> None:
    unit = HookedBank(counter, receiver.url, code="HOOK-CASE")
    receiver.secret = unit.secret
    verifier: Verifier = counter.client.app.state.verifier  # type: ignore[attr-defined]
    verifier.follower.poll()
    case_no = open_case(counter, unit.code)
    receiver.answers = [503]
    verifier.dispatcher.run_once()
    verifier.dispatcher.run_once()  # backing off: not sent again at once
    assert len(receiver.received) == 1
    clock.advance(dt.timedelta(seconds=10))
    verifier.dispatcher.run_once()
    assert len(receiver.received) == 2
    body = receiver.received[-1]["body"]
    assert receiver.received[-1]["signed"]
    assert body["unit"] == "HOOK-CASE"
    assert [(c["case_no"], c["event"]) for c in body["cases"]] == [(case_no, "opened")]
    verifier.dispatcher.run_once()  # delivered: nothing more to send
    assert len(receiver.received) == 2
