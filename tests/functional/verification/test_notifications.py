"""Notifications for watched cards as a bank integrates them: poll, event stream, signed webhook."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any, cast

import httpx2 as httpx
import pytest
import sqlalchemy as sa

from idguard.core.clock import FixedClock
from idguard.verification.models import Watch
from idguard.verification.notifications import NotificationHorizon
from idguard.verification.routes import notifications as routes
from idguard.verification.runtime.follower import IndexFollower
from idguard.verification.runtime.webhooks import MAX_BACKOFF, WebhookDispatcher, backoff
from idguard.verification.verifier import Verifier
from tests.factories import NOW, OFFICE_A
from tests.functional.conftest import Counter, assert_problem
from tests.functional.verification.test_verify import Bank, flush, sync

ITEM_FIELDS = {"cursor", "check_id", "status", "event", "at"}


@pytest.fixture
def verifier(counter: Counter) -> Verifier:
    """The app's verifier with notifications shown at once and the webhook thread stopped, so
    the tests drive deliveries themselves (`run_once`) and nothing happens behind their back."""
    verifier: Verifier = counter.client.app.state.verifier  # type: ignore[attr-defined]
    verifier.dispatcher.stop()
    verifier.dispatcher.horizon.settle = 0.0
    return verifier


@pytest.fixture
def bank(counter: Counter, verifier: Verifier) -> Bank:
    return Bank(counter)


def notes(bank: Bank, **params: Any) -> Any:
    r = bank.counter.client.get("/api/v1/notifications", params=params, headers=bank.headers())
    assert r.status_code == 200, r.text
    return r.json()


def watch(bank: Bank, card: dict[str, Any]) -> str:
    r = bank.verify(card, watch=True)
    assert r.status_code == 200, r.text
    assert r.json()["result"] != "mismatch"
    return str(r.json()["check_id"])


def lost_then_replaced(counter: Counter, bank: Bank) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """A card the bank watches, reported lost and then replaced; the card, check id, new card."""
    number = counter.person()
    # Issued years ago, so the new card's printed dates differ from the old one's.
    card = counter.card(number, issued_on="2020-01-01", as_="admin")
    sync(counter)
    check_id = watch(bank, card)
    # Reported before the check log is written: the watch still starts at the check.
    assert counter.report(card).status_code == 201
    flush(counter)
    new = counter.card(number, kind="replacement")
    sync(counter)
    return card, check_id, new


def test_lost_then_replaced_gives_two_notifications_in_order(counter: Counter, bank: Bank) -> None:
    card, check_id, _ = lost_then_replaced(counter, bank)
    page = notes(bank)
    items = page["items"]
    assert [(i["event"], i["status"]) for i in items] == [
        ("reported_lost", "reported_lost"),
        ("superseded", "reported_lost"),  # the lost card keeps its reason; a newer card exists
    ]
    assert all(set(i) == ITEM_FIELDS and i["check_id"] == check_id for i in items)
    assert items[0]["cursor"] < items[1]["cursor"] == page["next"]
    assert items[0]["at"].endswith("Z")
    text = json.dumps(page)
    assert card["id_number"] not in text
    assert card["card_id"] not in text
    assert card["name"] not in text


def test_cursor_paging_and_cancelled_report(counter: Counter, bank: Bank) -> None:
    card = counter.card(counter.person())
    sync(counter)
    watch(bank, card)
    flush(counter)
    report_no = counter.report(card).json()["report_no"]
    r = counter.post(f"/api/v1/loss-reports/{report_no}/cancel", {"office": OFFICE_A})
    assert r.status_code == 200, r.text
    sync(counter)
    first = notes(bank, limit=1)
    assert [i["event"] for i in first["items"]] == ["reported_lost"]
    second = notes(bank, after=first["next"], limit=1)
    assert [(i["event"], i["status"]) for i in second["items"]] == [("loss_report_cancelled", "valid")]
    assert second["next"] > first["next"]
    assert notes(bank, after=second["next"]) == {"items": [], "next": second["next"]}
    assert [i["cursor"] for i in notes(bank)["items"]] == [first["next"], second["next"]]


def test_only_a_unit_that_watched_the_card_hears(
    counter: Counter, bank: Bank, verifier: Verifier, session_factory: Any
) -> None:
    plain = Bank(counter, code="PLAIN")  # checks the same card, without watch
    other = Bank(counter, code="OTHER")  # watches a different card
    card = counter.card(counter.person())
    mismatched = counter.card(counter.person())
    untouched = counter.card(counter.person())
    sync(counter)
    check_id = watch(bank, card)
    assert plain.verify(card).json()["result"] == "valid"
    assert bank.verify(mismatched, name="somebody else", watch=True).json()["result"] == "mismatch"
    watch(other, untouched)
    flush(counter)
    counter.report(card)
    counter.report(mismatched, "stolen")
    sync(counter)
    assert [(i["check_id"], i["status"]) for i in notes(bank)["items"]] == [(check_id, "reported_lost")]
    assert notes(plain) == {"items": [], "next": 0}
    assert notes(other) == {"items": [], "next": 0}
    with session_factory() as session:
        watches = session.execute(sa.select(Watch.unit_code, Watch.check_id)).all()
    assert sorted(code for code, _ in watches) == ["BANK-1", "OTHER"]


def test_notifications_need_a_unit_key(counter: Counter, bank: Bank) -> None:
    for path in ("/api/v1/notifications", "/api/v1/notifications/deliveries"):
        assert_problem(counter.client.get(path), 401)
        assert_problem(counter.get(path, as_="auditor"), 401)
    assert_problem(
        counter.client.get("/api/v1/notifications", params={"after": -1}, headers=bank.headers()), 422
    )


def test_horizon_waits_until_every_earlier_check_is_logged() -> None:
    follower = SimpleNamespace(seq=7)
    horizon = NotificationHorizon(cast(IndexFollower, follower), settle=0.2)
    assert horizon.seq() == 0  # seq 7 was just seen: a watch from before it may still be unwritten
    time.sleep(0.25)
    follower.seq = 9
    assert horizon.seq() == 7  # seen 0.25 s ago; 9 only now
    time.sleep(0.25)
    assert horizon.seq() == 9


def test_a_change_shows_after_the_settle_time(counter: Counter, bank: Bank, verifier: Verifier) -> None:
    verifier.dispatcher.horizon.settle = 0.3
    card = counter.card(counter.person())
    sync(counter)
    watch(bank, card)
    flush(counter)
    counter.report(card)
    sync(counter)
    assert notes(bank)["items"] == []
    time.sleep(0.35)
    assert [i["event"] for i in notes(bank)["items"]] == ["reported_lost"]


# ---- server-sent events -----------------------------------------------------------------------
def read_events(response: httpx.Response, count: int) -> tuple[list[dict[str, Any]], list[str]]:
    """Parse the stream until `count` events arrived (or it ended); also return comment lines."""
    events: list[dict[str, Any]] = []
    comments: list[str] = []
    fields: dict[str, Any] = {}
    for line in response.iter_lines():
        if line.startswith(":"):
            comments.append(line)
        elif line:
            name, _, value = line.partition(": ")
            fields[name] = json.loads(value) if name == "data" else value
        elif "data" in fields:
            events.append(fields)
            fields = {}
            if len(events) == count:
                break
        else:
            fields = {}
    return events, comments


def test_stream_sends_each_notification_and_resumes(counter: Counter, bank: Bank) -> None:
    lost_then_replaced(counter, bank)
    items = notes(bank)["items"]
    started = time.monotonic()
    with counter.client.stream(
        "GET", "/api/v1/notifications/stream", params={"max_seconds": 60}, headers=bank.headers()
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["cache-control"] == "no-cache"
        events, _ = read_events(r, 1)
    assert events == [{"id": str(items[0]["cursor"]), "event": "notification", "data": items[0]}]
    # Reconnecting with Last-Event-ID resumes after it (and wins over `after` in the URL).
    with counter.client.stream(
        "GET",
        "/api/v1/notifications/stream",
        params={"max_seconds": 60, "after": 0},
        headers={**bank.headers(), "Last-Event-ID": str(items[0]["cursor"])},
    ) as r:
        events, _ = read_events(r, 1)
    assert [e["data"] for e in events] == [items[1]]
    # the events came at once, not at the end of a 60-second stream
    assert time.monotonic() - started < 30


def test_stream_with_nothing_to_say_keeps_alive_and_ends(
    counter: Counter, bank: Bank, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(routes, "HEARTBEAT_SECONDS", 0.1)
    started = time.monotonic()
    with counter.client.stream(
        "GET", "/api/v1/notifications/stream", params={"max_seconds": 0.5}, headers=bank.headers()
    ) as r:
        events, comments = read_events(r, 1)
    assert events == []
    assert ": keep-alive" in comments
    assert time.monotonic() - started >= 0.5  # it kept the stream open until max_seconds


def test_stream_stops_when_the_key_is_revoked(
    counter: Counter, bank: Bank, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(routes, "HEARTBEAT_SECONDS", 0.1)
    started = time.monotonic()
    with counter.client.stream(
        "GET", "/api/v1/notifications/stream", params={"max_seconds": 120}, headers=bank.headers()
    ) as r:
        assert counter.post(f"/api/v1/units/{bank.code}/keys/revoke", {}, as_="supervisor").status_code == 200
        read_events(r, 1)
    assert time.monotonic() - started < 60  # stopped by the revocation, not by max_seconds


# ---- webhooks ---------------------------------------------------------------------------------
class Receiver:
    """A bank's webhook endpoint: a real HTTP server that checks every signature."""

    def __init__(self) -> None:
        self.secret = ""
        self.answers: list[int] = []  # status codes to give, in turn; 200 when empty
        self.delay = 0.0
        self.received: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                timestamp = self.headers["X-Idguard-Timestamp"]
                expected = (
                    "sha256="
                    + hmac.new(
                        receiver.secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256
                    ).hexdigest()
                )
                time.sleep(receiver.delay)
                with receiver.lock:
                    receiver.received.append(
                        {
                            "signed": hmac.compare_digest(expected, self.headers["X-Idguard-Signature"]),
                            "timestamp": int(timestamp),
                            "body": json.loads(body),
                        }
                    )
                    status = receiver.answers.pop(0) if receiver.answers else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # quiet test output
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/idguard-hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


class HookedBank(Bank):
    """A unit onboarded with a webhook URL; keeps the signing secret it was given."""

    def __init__(self, counter: Counter, url: str, code: str = "HOOK-1") -> None:
        self.counter = counter
        r = counter.post(
            "/api/v1/units",
            {
                "code": code,
                "name": "挂钩银行",
                "sector": "bank",
                "purposes": ["account_opening"],
                "webhook_url": url,
            },
            as_="supervisor",
        )
        assert r.status_code == 201, r.text
        self.code = code
        self.key = r.json()["api_key"]
        self.secret = r.json()["webhook_secret"]

    def deliveries(self) -> Any:
        r = self.counter.client.get("/api/v1/notifications/deliveries", headers=self.headers())
        assert r.status_code == 200, r.text
        return r.json()


def test_webhook_is_signed_retried_with_backoff_and_logged(
    counter: Counter, verifier: Verifier, receiver: Receiver, clock: FixedClock
) -> None:
    hooked = HookedBank(counter, receiver.url)
    receiver.secret = hooked.secret
    Bank(counter)  # a unit without a webhook gets no POSTs and costs no attempts
    card, check_id, new = lost_then_replaced(counter, hooked)
    dispatcher = verifier.dispatcher

    receiver.answers = [500]
    assert dispatcher.run_once() == 1
    log = hooked.deliveries()
    assert [(d["attempt"], d["status_code"], d["delivered"]) for d in log["items"]] == [(1, 500, False)]
    assert log["failures"] == 1
    assert log["delivered_cursor"] == 0
    wait = dt.datetime.fromisoformat(log["next_attempt_at"]) - NOW
    assert dt.timedelta(seconds=0.8) <= wait <= dt.timedelta(seconds=1.2)  # first backoff: 1 s ±20%

    assert dispatcher.run_once() == 0  # not due yet
    clock.advance(dt.timedelta(seconds=1.5))
    assert dispatcher.run_once() == 1  # the retry, answered 200
    assert dispatcher.run_once() == 0  # nothing left

    items = notes(hooked)["items"]
    assert len(receiver.received) == 2
    for got in receiver.received:
        assert got["signed"]
        assert got["body"] == {"unit": "HOOK-1", "items": items}  # the same batch, sent again
    assert receiver.received[0]["timestamp"] == int(NOW.timestamp())
    assert [i["event"] for i in items] == ["reported_lost", "superseded"]
    assert {i["check_id"] for i in items} == {check_id}

    log = hooked.deliveries()
    assert [(d["attempt"], d["status_code"], d["delivered"], d["cursor"]) for d in log["items"]] == [
        (2, 200, True, items[-1]["cursor"]),
        (1, 500, False, items[-1]["cursor"]),
    ]
    assert (log["delivered_cursor"], log["failures"], log["next_attempt_at"]) == (
        items[-1]["cursor"],
        0,
        None,
    )
    older = counter.client.get(
        "/api/v1/notifications/deliveries", params={"limit": 1}, headers=hooked.headers()
    ).json()
    assert [d["attempt"] for d in older["items"]] == [2]
    rest = counter.client.get(
        "/api/v1/notifications/deliveries",
        params={"limit": 1, "before": older["next"]},
        headers=hooked.headers(),
    ).json()
    assert ([d["attempt"] for d in rest["items"]], rest["next"]) == ([1], None)

    # A later change goes out alone: the cursor moved past what was delivered.
    new_check = watch(hooked, new)
    flush(counter)
    r = counter.post(f"/api/v1/persons/{card['id_number']}/revocations", {"reason": "deceased"})
    assert r.status_code in (200, 201), r.text
    sync(counter)
    assert dispatcher.run_once() == 1
    (latest,) = receiver.received[2]["body"]["items"]
    assert (latest["check_id"], latest["event"], latest["status"]) == (new_check, "revoked", "revoked")
    assert latest["cursor"] > items[-1]["cursor"]


def test_webhook_unreachable_is_logged_as_an_error(
    counter: Counter, verifier: Verifier, receiver: Receiver
) -> None:
    url = receiver.url
    receiver.close()  # nobody listens there any more
    hooked = HookedBank(counter, url)
    card = counter.card(counter.person())
    sync(counter)
    watch(hooked, card)
    flush(counter)
    counter.report(card)
    sync(counter)
    assert verifier.dispatcher.run_once() == 1
    (attempt,) = hooked.deliveries()["items"]
    assert attempt["status_code"] is None
    assert attempt["delivered"] is False
    assert "Connection" in attempt["error"] or "refused" in attempt["error"].lower()


def test_two_workers_never_deliver_the_same_batch_twice(
    counter: Counter, verifier: Verifier, receiver: Receiver, clock: FixedClock
) -> None:
    hooked = HookedBank(counter, receiver.url)
    receiver.secret = hooked.secret
    receiver.delay = 0.3  # a slow endpoint: both workers look while the first POST is under way
    lost_then_replaced(counter, hooked)
    app = counter.client.app
    second = WebhookDispatcher(
        app.state.sessionmaker,  # type: ignore[attr-defined]
        verifier.keyring,
        verifier.dispatcher.horizon,
        secret_key=app.state.settings.secret_key,  # type: ignore[attr-defined]
        clock=clock,
    )
    attempts: list[int] = []
    threads = [
        threading.Thread(target=lambda d=d: attempts.append(d.run_once()))
        for d in (verifier.dispatcher, second)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert sorted(attempts) == [0, 1]
    assert len(receiver.received) == 1
    assert [d["delivered"] for d in hooked.deliveries()["items"]] == [True]


def test_backoff_doubles_up_to_five_minutes_with_jitter() -> None:
    for failures, base in [(1, 1), (2, 2), (3, 4), (9, 256), (10, MAX_BACKOFF), (60, MAX_BACKOFF)]:
        for _ in range(20):
            assert 0.8 * base <= backoff(failures) <= 1.2 * base
