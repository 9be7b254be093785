"""The single check's front door and the unit's side of issue 18.

- `FrontDoor` (ops/middleware.py) answers a plain `POST /api/v1/verify` with verification's
  `front_door`, before FastAPI's stack: held to FastAPI's declared route on generated requests
  (the same request sent as `application/json`, which the door takes, and as `…+json`, which
  only FastAPI's route reads), and shown to answer the plain check itself.
- `RateLimit-Limit/Remaining/Reset` on the answers that count against the unit's rate, both
  ways; a batch larger than the rate borrows (never a 429 forever), and one larger than a minute
  of it is a 422 `batch_exceeds_rate` at once.
- 403 `purpose_not_allowed` lists the unit's purposes; 401s say what is wrong with the key;
  card dates are YYYY-MM-DD only; verify's OpenAPI lists 403, 429 and 503 with examples.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from idguard.core.clock import FixedClock
from idguard.core.ratelimit import RateLimiter
from idguard.verification import harvesting
from idguard.verification.routes import verify as verify_routes
from tests.factories import NOW, auth
from tests.functional.conftest import Counter, assert_problem
from tests.functional.verification.test_verify import Bank, sync
from tests.unit.verification.test_fast_paths import FIELD_VALUES, FIELDS

DECLARED = "application/x-idguard+json"  # read by FastAPI's route only (the door takes application/json)
SAME_EVERY_ANSWER = ("content-type", "x-content-type-options", "referrer-policy", "ratelimit-limit")


@pytest.fixture
def bank(counter: Counter) -> Bank:
    return Bank(counter)


class Door:
    """Counts what the front door answered itself."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.answered = 0
        real = verify_routes.front_door_check

        def counted(*args: Any) -> Any:
            made = real(*args)
            self.answered += made is not None
            return made

        monkeypatch.setattr(verify_routes, "front_door_check", counted)


class StillClock:
    """The rate limiter's clock, moved by the test only."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _limiter(counter: Counter) -> StillClock:
    clock = StillClock()
    counter.client.app.state.verifier.limiter = RateLimiter(1, clock=clock)  # type: ignore[attr-defined]
    return clock


def _body(card: dict[str, Any], **over: Any) -> dict[str, Any]:
    return {
        "id_number": card["id_number"],
        "name": card["name"],
        "issued_on": card["issued_on"],
        "expires_on": card["expires_on"],
        "purpose": "account_opening",
        "operator": "teller-7",
        **over,
    }


def _post(
    counter: Counter, bank: Bank, body: Any, content_type: str = "application/json", **headers: str
) -> Any:
    return counter.client.post(
        "/api/v1/verify",
        content=json.dumps(body, ensure_ascii=False),
        headers={**bank.headers(), "Content-Type": content_type, **headers},
    )


def _shape(r: Any) -> tuple[Any, ...]:
    """An answer with what differs between any two answers taken out: the check id, the request
    id, the rate limit's remaining tokens and reset."""
    text = re.sub(r'"check_id":"[0-9a-f-]{36}"', '"check_id":"…"', r.text)
    same = tuple(r.headers.get(name) for name in SAME_EVERY_ANSWER)
    present = tuple(
        name in r.headers
        for name in ("x-index-age", "x-request-id", "ratelimit-remaining", "ratelimit-reset")
    )
    return r.status_code, text, same, present, r.headers.get("www-authenticate"), r.headers.get("retry-after")


def test_the_front_door_answers_a_plain_check_itself(
    counter: Counter, bank: Bank, monkeypatch: pytest.MonkeyPatch
) -> None:
    door = Door(monkeypatch)
    card = counter.card(counter.person())
    sync(counter)
    r = _post(counter, bank, _body(card))
    assert r.status_code == 200, r.text
    assert door.answered == 1
    assert r.json()["result"] == "valid"
    assert r.headers["x-request-id"]
    assert r.headers["x-content-type-options"] == "nosniff"
    # What it leaves to FastAPI's stack: a query, another content type, a fingerprint, no key.
    _post(counter, bank, _body(card), DECLARED)
    counter.client.post("/api/v1/verify?x=1", json=_body(card), headers=bank.headers())
    _post(counter, bank, _body(card, fingerprint="Rk1SACAyMAA="))
    _post(counter, bank, _body(card), Authorization="Basic eDp5")
    assert door.answered == 1
    # An id of the client's own is kept, as the ops middleware keeps it.
    r = _post(counter, bank, _body(card), **{"X-Request-Id": "branch-7.req-42"})
    assert r.headers["x-request-id"] == "branch-7.req-42"
    assert door.answered == 2


def test_the_front_door_answers_as_fastapis_route(
    counter: Counter, clock: FixedClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Made-up printed data on purpose, many mismatches: harvesting detection is not the point here.
    monkeypatch.setattr(harvesting, "MIN_CHECKS", 10**9)
    door = Door(monkeypatch)
    bank = Bank(counter, code="BANK-DOOR", rate_limit=100_000)
    cards = [counter.card(counter.person()) for _ in range(3)]
    counter.report(cards[1])
    sync(counter)
    keys = [bank.key, "idg_" + "x" * 43, "", "nope"]

    @settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.data())
    def check(data: st.DataObject) -> None:
        card = data.draw(st.sampled_from(cards))
        body: Any = _body(card, operator=data.draw(st.sampled_from(["t1", " 柜员 ", "a\tb"])))
        if data.draw(st.booleans()):
            for field in data.draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=2)):
                body[field] = data.draw(FIELD_VALUES[field])
        if data.draw(st.integers(0, 9)) == 0:
            body = data.draw(st.sampled_from([[], "x", None, 7]))
        key = data.draw(st.sampled_from(keys)) if data.draw(st.integers(0, 4)) == 0 else bank.key
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        answers = []
        for content_type in ("application/json", DECLARED):
            r = counter.client.post(
                "/api/v1/verify",
                content=json.dumps(body, ensure_ascii=data.draw(st.booleans())),
                headers={**headers, "Content-Type": content_type},
            )
            answers.append(_shape(r))
        assert answers[0] == answers[1], (body, answers)

    check()
    assert door.answered > 0  # the generated mix holds plain checks: the door took them


def test_rate_limit_headers_on_every_counted_answer(counter: Counter) -> None:
    bank = Bank(counter, code="BANK-RL", rate_limit=3)
    clock = _limiter(counter)
    card = counter.card(counter.person())
    sync(counter)
    for content_type in ("application/json", DECLARED):
        seen = []
        for _ in range(3):
            r = _post(counter, bank, _body(card), content_type)
            assert r.status_code == 200, r.text
            assert r.headers["RateLimit-Limit"] == "3"
            seen.append((r.headers["RateLimit-Remaining"], r.headers["RateLimit-Reset"]))
        assert seen == [("2", "1"), ("1", "1"), ("0", "1")]
        r = _post(counter, bank, _body(card), content_type)
        assert_problem(r, 429)
        assert r.json()["code"] == "rate_limited"
        assert r.json()["title"] == "Too many requests"
        assert r.headers["RateLimit-Remaining"] == "0"
        assert r.headers["RateLimit-Reset"] == r.headers["Retry-After"] == "1"
        clock.t += 1.0
    r = counter.client.post("/api/v1/verify/batch", json={"items": [_body(card)] * 2}, headers=bank.headers())
    assert r.status_code == 200, r.text
    assert (r.headers["RateLimit-Limit"], r.headers["RateLimit-Remaining"]) == ("3", "1")


def test_a_batch_larger_than_the_rate_borrows_and_one_far_larger_is_refused_at_once(counter: Counter) -> None:
    bank = Bank(counter, code="BANK-SLOW", rate_limit=5)
    clock = _limiter(counter)
    card = counter.card(counter.person())
    sync(counter)
    batch = {"items": [_body(card)] * 20}

    def send_batch(body: dict[str, Any]) -> Any:
        return counter.client.post("/api/v1/verify/batch", json=body, headers=bank.headers())

    assert _post(counter, bank, _body(card)).status_code == 200  # the bucket is no longer full
    r = send_batch(batch)
    assert_problem(r, 429)
    assert r.headers["Retry-After"] == "1"
    clock.t += 0.2  # full again: the batch takes it all and borrows the other 15
    r = send_batch(batch)
    assert r.status_code == 200, r.text
    assert len(r.json()["results"]) == 20
    assert r.headers["RateLimit-Remaining"] == "0"
    r = _post(counter, bank, _body(card))  # the debt is paid back at 5/s first
    assert_problem(r, 429)
    assert r.headers["Retry-After"] == "4"  # (15 + 1) / 5 = 3.2 s
    clock.t += 3.2
    assert _post(counter, bank, _body(card)).status_code == 200
    # More than a minute of the rate (5 x 61 = 305 items) is refused at once, whatever the bucket.
    clock.t += 100
    r = send_batch({"items": [_body(card)] * 306})
    assert_problem(r, 422)
    body = r.json()
    assert (body["code"], body["param"]) == ("batch_exceeds_rate", "items")
    assert "at most 305 items" in body["detail"]
    assert send_batch({"items": [_body(card)] * 305}).status_code == 200


def test_single_checks_at_half_the_rate_never_starve_a_large_batch() -> None:
    """The rule a large batch lives by (core/ratelimit.py): single checks arriving at half the
    rate, and a 50-item batch at 10/s retried as Retry-After says: admitted, in bounded time."""
    clock = StillClock()
    limiter = RateLimiter(clock=clock)
    admitted_at = None
    retry_at = clock.t
    for step in range(400):  # 40 s in 0.1 s steps
        clock.t = 1000.0 + step / 10
        if step % 2 == 0:
            limiter.take("unit", 10.0)  # 5 a second
        if clock.t >= retry_at:
            wait = limiter.take("unit", 10.0, n=50)
            if wait == 0:
                admitted_at = clock.t - 1000.0
                break
            retry_at = clock.t + wait
    assert admitted_at is not None
    assert admitted_at <= 3.0


def test_purpose_not_allowed_lists_the_units_purposes(counter: Counter) -> None:
    bank = Bank(counter, code="HOTEL-BANK", purposes=("account_opening", "hotel_checkin"))
    card = counter.card(counter.person())
    sync(counter)
    for content_type in ("application/json", DECLARED):
        for extra in ({}, {"fingerprint": "Rk1SACAyMAA="}):
            r = _post(counter, bank, _body(card, purpose="ticketing", **extra), content_type)
            assert_problem(r, 403, says="it may check for: account_opening, hotel_checkin")
            assert (r.json()["code"], r.json()["param"]) == ("purpose_not_allowed", "purpose")


def test_unit_routes_say_what_is_wrong_with_the_key(counter: Counter, bank: Bank, clock: FixedClock) -> None:
    card = counter.card(counter.person())
    sync(counter)

    def refused(headers: dict[str, str]) -> str:
        r = counter.client.post("/api/v1/verify", json=_body(card), headers=headers)
        assert_problem(r, 401)
        assert r.json()["code"] == "unauthorized"
        assert r.headers["WWW-Authenticate"] == "Bearer"
        return str(r.json()["detail"])

    assert "no Authorization header" in refused({})
    assert "must be `Bearer <unit API key>`" in refused({"Authorization": "Basic eDp5"})
    assert "not a staff token" in refused(auth("clerk_a"))
    assert "not a unit API key" in refused({"Authorization": "Bearer nope"})
    assert "unknown API key" in refused({"Authorization": "Bearer idg_" + "x" * 43})
    assert "unknown API key" in refused({"Authorization": f"Bearer {bank.key[:-2]}xx"})  # its prefix, not it
    old = bank.key
    r = counter.post(f"/api/v1/units/{bank.code}/keys/rotate", {"grace_seconds": 60}, as_="supervisor")
    assert r.status_code == 201, r.text
    new = r.json()["api_key"]
    clock.at = NOW + dt.timedelta(seconds=61)
    detail = refused(bank.headers(old))
    assert "expired at" in detail
    assert (NOW + dt.timedelta(seconds=60)).isoformat(timespec="seconds") in detail
    assert counter.post(f"/api/v1/units/{bank.code}/keys/revoke", {}, as_="supervisor").status_code == 200
    sync(counter)
    assert "revoked at" in refused(bank.headers(new))


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("issued_on", "2015-03-01T00:00:00", "YYYY-MM-DD"),
        ("issued_on", "2015-03-01T00:00:00+08:00", "YYYY-MM-DD"),
        ("issued_on", 1425168000, "YYYY-MM-DD"),
        ("issued_on", "20150301", "YYYY-MM-DD"),
        ("expires_on", "长期", "null for a long-term (长期) card"),
        ("expires_on", "2035-03-01T00:00:00Z", "null for a long-term (长期) card"),
    ],
)
def test_card_dates_are_yyyy_mm_dd_only(
    counter: Counter, bank: Bank, field: str, value: Any, says: str
) -> None:
    card = counter.card(counter.person())
    sync(counter)
    for content_type in ("application/json", DECLARED):
        r = _post(counter, bank, _body(card, **{field: value}), content_type)
        assert_problem(r, 422, field=field)
        error = next(e for e in r.json()["errors"] if e["field"] == field)
        assert error["code"] == "invalid_date"
        assert says in error["detail"]
    assert _post(counter, bank, _body(card)).status_code == 200


def test_verify_openapi_lists_every_answer(counter: Counter) -> None:
    document = counter.client.get("/api/v1/openapi.json").json()
    for path in ("/api/v1/verify", "/api/v1/verify/batch"):
        responses = document["paths"][path]["post"]["responses"]
        assert {"401", "422", "429", "503"} <= set(responses), path
        example = responses["429"]["content"]["application/problem+json"]["example"]
        assert (example["title"], example["code"], example["status"]) == (
            "Too many requests",
            "rate_limited",
            429,
        )
        assert responses["503"]["content"]["application/problem+json"]["example"]["status"] == 503
        assert "comparison_unavailable" in responses["503"]["description"]
        assert {"RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"} <= set(
            responses["200"]["headers"]
        )
    forbidden = document["paths"]["/api/v1/verify"]["post"]["responses"]["403"]
    assert forbidden["content"]["application/problem+json"]["example"]["code"] == "purpose_not_allowed"
    out = document["components"]["schemas"]["VerifyOut"]["properties"]["fingerprint_reason"]
    assert "comparison_unavailable" in out["description"]
