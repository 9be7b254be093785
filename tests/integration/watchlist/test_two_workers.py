"""The watchlist across worker processes, with real servers (as tests/integration/test_multiworker.py):

- a listing accepted through one worker makes another answer `blacklisted` within the bound of a
  loss report, and a lifting ends it there as fast;
- a lost card presented at one worker reaches the incident stream served by another within a
  second of the check.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

from tests.integration.test_multiworker import (
    PROPAGATION_LIMIT,
    SUPERVISOR,
    Counter,
    Server,
    _answer,
    _until,
    database,  # noqa: F401 - a fixture
    servers,  # noqa: F401 - a fixture
)

INCIDENT_LIMIT = 1.0  # seconds from the check to the incident on another worker's stream


def _alerts(server: Server, key: str, card: dict[str, Any]) -> list[str] | None:
    answer = _answer(server, key, card)
    return None if answer is None else list(answer.get("alerts", []))


def test_a_listing_through_one_worker_alerts_on_another(
    servers: Callable[..., list[Server]],  # noqa: F811 - the fixture
) -> None:
    a, b = servers("a", "b")
    counter = Counter(a)
    key = counter.onboard(a, "BANK-WL")
    card = counter.person_with_card(a, "钱多多")
    _until("B knows the card", lambda: _alerts(b, key, card) == [], timeout=PROPAGATION_LIMIT)

    r = a.client.post(
        "/api/v1/blacklist",
        json={"id_number": card["id_number"], "reason": "impersonation", "case_no": "MW-1"},
        headers=counter.auth(SUPERVISOR),
    )
    assert r.status_code == 201, r.text
    _, listed_in = _until(
        "B answers blacklisted", lambda: _alerts(b, key, card) == ["blacklisted"], timeout=PROPAGATION_LIMIT
    )
    r = a.client.post(
        f"/api/v1/blacklist/{r.json()['entry_no']}/lift",
        json={"reason": "acquitted"},
        headers=counter.auth(SUPERVISOR),
    )
    assert r.status_code == 200, r.text
    _, lifted_in = _until("B stops", lambda: _alerts(b, key, card) == [], timeout=PROPAGATION_LIMIT)
    print(f"listing seen by B after {listed_in * 1000:.1f} ms, lifting after {lifted_in * 1000:.1f} ms")


def test_an_incident_reaches_another_worker_s_stream_within_a_second(
    servers: Callable[..., list[Server]],  # noqa: F811 - the fixture
) -> None:
    a, b = servers("a", "b")
    counter = Counter(a)
    key = counter.onboard(a, "BANK-INC")
    other_key = counter.onboard(a, "BANK-INC-2")
    card = counter.person_with_card(a, "孙丽")
    counter.report_lost(a, card)
    # The first unit's check shows A has the report (and opens that unit's incident); the one
    # timed is the second unit's: a (card, kind, unit, day) of its own, so a new incident.
    _until(
        "A answers invalid",
        lambda: (x := _answer(a, key, card)) is not None and x["result"] == "invalid",
        timeout=PROPAGATION_LIMIT,
    )
    _until("A knows the second unit", lambda: _answer(a, other_key, {**card, "name": "x"}), timeout=2)

    events: list[tuple[float, dict[str, Any]]] = []
    opened = threading.Event()

    def listen() -> None:
        with b.client.stream(
            "GET",
            "/api/v1/incidents/stream",
            params={"max_seconds": 5},
            headers=counter.auth(SUPERVISOR),
        ) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                opened.set()
                if line.startswith("data: "):
                    events.append((time.monotonic(), json.loads(line[6:])))
                    return

    listener = threading.Thread(target=listen)
    listener.start()
    assert opened.wait(5)
    time.sleep(0.3)  # the stream has read its starting point
    checked = time.monotonic()
    answer = _answer(a, other_key, card)
    assert answer is not None
    assert answer["reason"] == "reported_lost", answer
    listener.join(timeout=10)
    assert events, "no incident on B's stream"
    at, incident = events[0]
    assert (incident["kind"], incident["check_id"]) == ("lost_card_presented", answer["check_id"])
    assert at - checked < INCIDENT_LIMIT, f"the incident reached B's stream after {at - checked:.2f} s"
    print(f"incident on B's stream {1000 * (at - checked):.0f} ms after the check on A")
