"""The watchlist seen from outside: police at the counter and a bank at its terminal."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from tests.functional.conftest import Counter
from tests.functional.verification.test_verify import Bank, sync


def settle(counter: Counter) -> None:
    """Let this worker catch up now instead of within its bounds: the index follows the ledger, the
    check log makes the checks durable (their signals reach the incident writer), the writer
    writes the incidents."""
    app: Any = counter.client.app
    sync(counter)
    app.state.verifier.log.flush()
    app.state.incident_writer.flush()


def gallery_holds(counter: Counter, fingers: int, timeout: float = 10.0) -> None:
    """Wait for the blacklist gallery's thread to have applied a listing or a lifting."""
    app: Any = counter.client.app
    sync(counter)
    deadline = time.monotonic() + timeout
    # Settled, not only the finger count: the count is reached before the card it belongs to is
    # filed, and a search in between finds no one.
    while not (app.state.verifier.gallery.settled() and len(app.state.verifier.gallery) == fingers):
        assert time.monotonic() < deadline, f"gallery holds {len(app.state.verifier.gallery)}, not {fingers}"
        time.sleep(0.01)


def blacklist(counter: Counter, number: str, *, until: dt.date | None = None, as_: str = "supervisor") -> Any:
    return counter.post(
        "/api/v1/blacklist",
        {
            "id_number": number,
            "reason": "impersonation",
            "case_no": "京公(朝)立字〔2026〕1号",
            "until": None if until is None else until.isoformat(),
            "note": "used a lost card at a bank",
        },
        as_=as_,
    )


def listed(counter: Counter, number: str, **kwargs: Any) -> dict[str, Any]:
    r = blacklist(counter, number, **kwargs)
    assert r.status_code == 201, r.text
    return dict(r.json())


def protect(counter: Counter, number: str, required: bool = True, *, as_: str = "clerk_a") -> Any:
    return counter.client.put(
        f"/api/v1/persons/{number}/protection",
        json={"person_check_required": required, "reason": "the holder's card was misused"},
        headers=counter.client.headers | _auth(as_),
    )


def _auth(as_: str) -> dict[str, str]:
    from tests.factories import auth

    return auth(as_)


def incidents(counter: Counter, *, as_: str = "supervisor", **params: Any) -> list[dict[str, Any]]:
    r = counter.get("/api/v1/incidents", as_=as_, **params)
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


__all__ = ["Bank", "blacklist", "gallery_holds", "incidents", "listed", "protect", "settle"]
