"""A suspension decided through one worker stops the unit's key on another worker within the
propagation bound of a loss report (2 s), with a 401 saying so; reinstatement restores it the
same way. Real uvicorn processes on one database (tests/integration/test_multiworker.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx2 as httpx

from tests.integration.test_multiworker import PROPAGATION_LIMIT, SUPERVISOR, Counter, Server, _until


def _checks(server: Server, key: str) -> httpx.Response:
    return server.client.get("/api/v1/checks", headers={"Authorization": f"Bearer {key}"})


def _post(server: Server, counter: Counter, path: str, body: dict[str, Any]) -> httpx.Response:
    return server.client.post(path, json=body, headers=counter.auth(SUPERVISOR))


def test_suspension_and_reinstatement_reach_every_worker(servers: Callable[..., list[Server]]) -> None:
    a, b = servers("a", "b")
    counter = Counter(a)
    key = counter.onboard(a, "BANK-SUS")
    _until("B knows the key", lambda: _checks(b, key).status_code == 200, timeout=PROPAGATION_LIMIT)

    r = _post(a, counter, "/api/v1/units/BANK-SUS/cases", {"month": "2026-05", "finding": "excessive"})
    assert r.status_code == 201, r.text
    case_no = r.json()["case_no"]
    r = b.client.post(
        f"/api/v1/cases/{case_no}/responses",
        json={"statement": "we were heard"},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert r.status_code == 201, r.text

    r = _post(
        a, counter, f"/api/v1/cases/{case_no}/decision", {"decision": "suspension", "note": "third time"}
    )
    assert r.status_code == 200, r.text  # committed when this returns
    assert _checks(a, key).status_code == 401  # the deciding worker at once
    answer, elapsed = _until(
        "B refuses the suspended unit's key",
        lambda: (x := _checks(b, key)).status_code == 401 and x,
        timeout=PROPAGATION_LIMIT,
    )
    detail = answer.json()["detail"]
    assert "suspended" in detail
    assert case_no in detail
    assert "reinstate" in detail
    print(f"suspension through A refused by B after {elapsed * 1000:.1f} ms")

    r = _post(a, counter, "/api/v1/units/BANK-SUS/reinstate", {"note": "appeal upheld"})
    assert r.status_code == 200, r.text
    _, elapsed = _until(
        "B takes the key again", lambda: _checks(b, key).status_code == 200, timeout=PROPAGATION_LIMIT
    )
    print(f"reinstatement through A accepted by B after {elapsed * 1000:.1f} ms")
