"""Webhooks as integrators expect them (issue 18): a random per-unit secret, rolled with an
overlap during which every delivery carries both signatures, a delivery id, a test event on
demand and a resend — all against a real HTTP receiver, verified with docs/webhooks.md's recipe."""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from idguard import uow
from idguard.core.clock import FixedClock
from idguard.db.common import AuditEntry
from idguard.verification.models import UnitWebhookSecret, WebhookMessage
from idguard.verification.units import legacy_webhook_secret
from idguard.verification.verifier import Verifier
from tests.factories import NOW, SECRET
from tests.functional.conftest import Counter, assert_problem
from tests.functional.verification.test_notifications import lost_then_replaced, notes
from tests.functional.verification.test_verify import Bank

DOC = Path(__file__).parents[3] / "docs" / "webhooks.md"


def documented_recipe() -> Callable[..., bool]:
    """`verify_webhook` exactly as docs/webhooks.md shows it (the first Python block after
    "## Verifying a delivery"), so the docs cannot drift from what idguard sends."""
    text = DOC.read_text()
    section = text[text.index("## Verifying a delivery") :]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert code is not None
    namespace: dict[str, Any] = {}
    exec(compile(code.group(1), str(DOC), "exec"), namespace)  # noqa: S102 - our own documentation
    recipe: Callable[..., bool] = namespace["verify_webhook"]
    return recipe


verify_webhook = documented_recipe()


class Receiver:
    """A unit's webhook endpoint: a real local HTTP server keeping every request as sent."""

    def __init__(self) -> None:
        self.answers: list[int] = []
        self.received: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    receiver.received.append({"headers": dict(self.headers.items()), "body": body})
                    status = receiver.answers.pop(0) if receiver.answers else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
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


@pytest.fixture
def verifier(counter: Counter) -> Verifier:
    verifier: Verifier = counter.client.app.state.verifier  # type: ignore[attr-defined]
    verifier.dispatcher.stop()  # the tests drive deliveries (run_once)
    verifier.dispatcher.horizon.settle = 0.0
    return verifier


class HookedUnit(Bank):
    def __init__(self, counter: Counter, url: str, code: str = "HOOK-1") -> None:
        self.counter = counter
        body = {"code": code, "name": "挂钩银行", "sector": "bank", "purposes": ["account_opening"]}
        r = counter.post("/api/v1/units", {**body, "webhook_url": url}, as_="supervisor")
        assert r.status_code == 201, r.text
        self.code = code
        self.key = r.json()["api_key"]
        self.secret = str(r.json()["webhook_secret"])

    def call(self, path: str, body: dict[str, Any] | None = None, **headers: str) -> Any:
        return self.counter.client.post(
            f"/api/v1/units/{self.code}{path}", json=body, headers={**self.headers(), **headers}
        )

    def deliveries(self) -> Any:
        r = self.counter.client.get("/api/v1/notifications/deliveries", headers=self.headers())
        assert r.status_code == 200, r.text
        return r.json()


def signatures(got: dict[str, Any]) -> list[str]:
    header = got["headers"]["Idguard-Signature"]
    return [v for k, v in (p.split("=", 1) for p in header.split(",")) if k == "v1"]


def accepted(secret: str, got: dict[str, Any], now: dt.datetime = NOW) -> bool:
    return verify_webhook(secret, got["headers"]["Idguard-Signature"], got["body"], now=now.timestamp())


def test_the_secret_is_random_per_unit_and_kept_only_sealed(
    counter: Counter, receiver: Receiver, session_factory: sessionmaker[Session]
) -> None:
    one, two = HookedUnit(counter, receiver.url, "HOOK-1"), HookedUnit(counter, receiver.url, "HOOK-2")
    assert one.secret.startswith("whsec_")
    assert len(one.secret) == 6 + 64
    assert one.secret != two.secret
    assert one.secret != legacy_webhook_secret(SECRET, "HOOK-1")  # not derived any more
    with session_factory() as session:
        stored = session.scalars(sa.select(UnitWebhookSecret.sealed)).all()
    assert len(stored) == 2
    assert not any(one.secret in s or one.secret[6:] in s for s in stored)


def test_a_test_event_arrives_signed_with_a_delivery_id(
    counter: Counter, receiver: Receiver, verifier: Verifier
) -> None:
    unit = HookedUnit(counter, receiver.url)
    r = unit.call("/webhook/test")
    assert r.status_code == 200, r.text
    answer = r.json()
    assert (answer["kind"], answer["delivered"], answer["status_code"], answer["error"]) == (
        "test",
        True,
        200,
        None,
    )
    (got,) = receiver.received
    assert got["headers"]["Webhook-Id"] == answer["delivery_id"]
    assert json.loads(got["body"]) == {
        "unit": "HOOK-1",
        "test": True,
        "items": [],
        "sent_at": "2026-06-15T02:00:00Z",
    }
    assert accepted(unit.secret, got)
    assert not accepted("whsec_" + "0" * 64, got)  # the recipe can say no
    assert not accepted(unit.secret, {**got, "body": got["body"] + b" "})
    assert not accepted(unit.secret, got, now=NOW + dt.timedelta(minutes=6))  # stale
    (attempt,) = unit.deliveries()["items"]
    assert (attempt["delivery_id"], attempt["delivered"]) == (answer["delivery_id"], True)


def test_rolling_the_secret_signs_with_both_during_the_overlap_then_only_the_new(
    counter: Counter,
    receiver: Receiver,
    verifier: Verifier,
    clock: FixedClock,
    session_factory: sessionmaker[Session],
) -> None:
    unit = HookedUnit(counter, receiver.url)
    old = unit.secret
    r = unit.call("/webhook-secret", {"overlap_seconds": 3600})  # the unit itself rolls it
    assert r.status_code == 201, r.text
    new = r.json()["webhook_secret"]
    assert new.startswith("whsec_")
    assert new != old
    assert r.json()["previous_expires_at"] == "2026-06-15T03:00:00Z"

    assert unit.call("/webhook/test").json()["delivered"] is True
    during = receiver.received[-1]
    assert len(signatures(during)) == 2
    assert accepted(new, during)
    assert accepted(old, during)
    # The first scheme's header stays under the old secret until the overlap ends.
    legacy = during["headers"]["X-Idguard-Signature"]
    t = during["headers"]["X-Idguard-Timestamp"]
    assert verify_webhook(
        old, f"t={t},v1={legacy.removeprefix('sha256=')}", during["body"], now=NOW.timestamp()
    )

    clock.advance(dt.timedelta(seconds=3601))
    later = NOW + dt.timedelta(seconds=3601)
    assert unit.call("/webhook/test").json()["delivered"] is True
    after = receiver.received[-1]
    assert len(signatures(after)) == 1
    assert accepted(new, after, later)
    assert not accepted(old, after, later)

    with session_factory() as session:
        actions = session.scalars(
            sa.select(AuditEntry.detail).where(AuditEntry.action == "unit.webhook_secret_rolled")
        ).all()
    assert actions == ["HOOK-1: by the unit, overlap 3600 s"]


def test_a_roll_with_no_overlap_stops_the_old_secret_at_once(counter: Counter, receiver: Receiver) -> None:
    unit = HookedUnit(counter, receiver.url)
    r = counter.post(f"/api/v1/units/{unit.code}/webhook-secret", {"overlap_seconds": 0}, as_="supervisor")
    assert r.status_code == 201, r.text
    assert r.json()["previous_expires_at"] is None
    assert unit.call("/webhook/test").json()["delivered"] is True
    (got,) = receiver.received
    assert signatures(got)
    assert accepted(r.json()["webhook_secret"], got)
    assert not accepted(unit.secret, got)


def test_a_replayed_roll_shows_no_secret_and_none_is_stored(counter: Counter, receiver: Receiver) -> None:
    unit = HookedUnit(counter, receiver.url)
    first = unit.call("/webhook-secret", {}, **{"Idempotency-Key": "roll-1"})
    again = unit.call("/webhook-secret", {}, **{"Idempotency-Key": "roll-1"})
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["webhook_secret"] is None
    assert "shown once" in again.json()["notice"]
    assert again.json()["previous_expires_at"] == first.json()["previous_expires_at"]
    assert_problem(unit.call("/webhook-secret", {"overlap_seconds": -1}), 422, field="overlap_seconds")
    assert_problem(unit.call("/webhook-secret", {"overlap_seconds": 8 * 86400}), 422, field="overlap_seconds")


def test_a_unit_onboarded_with_a_derived_secret_keeps_it_until_it_rolls(
    counter: Counter, receiver: Receiver, session_factory: sessionmaker[Session]
) -> None:
    unit = HookedUnit(counter, receiver.url)
    with uow.transaction(session_factory) as session:  # as a unit onboarded before 0010 is
        session.execute(sa.delete(UnitWebhookSecret))
    derived = legacy_webhook_secret(SECRET, unit.code)
    unit.call("/webhook/test")
    assert accepted(derived, receiver.received[-1])
    new = unit.call("/webhook-secret", {}).json()["webhook_secret"]
    unit.call("/webhook/test")
    assert accepted(derived, receiver.received[-1])
    assert accepted(new, receiver.received[-1])


def test_a_failed_batch_is_retried_as_the_same_message_and_can_be_resent(
    counter: Counter, receiver: Receiver, verifier: Verifier, session_factory: sessionmaker[Session]
) -> None:
    unit = HookedUnit(counter, receiver.url)
    lost_then_replaced(counter, unit)
    dispatcher = verifier.dispatcher
    receiver.answers = [503, 500]
    assert dispatcher.run_once() == 1  # failed: backing off
    log = unit.deliveries()
    (failed,) = log["items"]
    assert (failed["delivered"], log["delivered_cursor"]) == (False, 0)

    r = unit.call(f"/webhook/deliveries/{failed['delivery_id']}/resend")  # the endpoint is "fixed"
    assert r.status_code == 200, r.text
    assert (r.json()["delivered"], r.json()["status_code"]) == (False, 500)  # not yet
    r = unit.call(f"/webhook/deliveries/{failed['delivery_id']}/resend")
    assert (r.json()["delivery_id"], r.json()["kind"], r.json()["delivered"]) == (
        failed["delivery_id"],
        "notifications",
        True,
    )
    first, second, third = receiver.received
    assert {g["headers"]["Webhook-Id"] for g in (first, second, third)} == {failed["delivery_id"]}
    assert first["body"] == second["body"] == third["body"]  # byte for byte
    assert all(accepted(unit.secret, g) for g in (first, second, third))
    items = notes(unit)["items"]
    assert json.loads(third["body"]) == {"unit": unit.code, "items": items}

    # Delivered: the cursor moved at once, the backoff is over, nothing is sent twice.
    log = unit.deliveries()
    assert (log["delivered_cursor"], log["failures"], log["next_attempt_at"]) == (
        items[-1]["cursor"],
        0,
        None,
    )
    assert [(d["attempt"], d["delivered"]) for d in log["items"]] == [(3, True), (2, False), (1, False)]
    assert dispatcher.run_once() == 0
    with session_factory() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(WebhookMessage)) == 1


def test_a_retry_by_the_dispatcher_keeps_the_webhook_id(
    counter: Counter, receiver: Receiver, verifier: Verifier, clock: FixedClock
) -> None:
    unit = HookedUnit(counter, receiver.url)
    lost_then_replaced(counter, unit)
    receiver.answers = [500]
    assert verifier.dispatcher.run_once() == 1
    clock.advance(dt.timedelta(seconds=2))
    assert verifier.dispatcher.run_once() == 1
    first, second = receiver.received
    assert first["headers"]["Webhook-Id"] == second["headers"]["Webhook-Id"]
    assert first["body"] == second["body"]
    assert first["headers"]["Idguard-Signature"] != second["headers"]["Idguard-Signature"]  # new t
    assert unit.deliveries()["items"][0]["delivery_id"] == first["headers"]["Webhook-Id"]


def test_resend_and_test_refusals(counter: Counter, receiver: Receiver, verifier: Verifier) -> None:
    unit = HookedUnit(counter, receiver.url)
    other = HookedUnit(counter, receiver.url, "HOOK-2")
    theirs = other.call("/webhook/test").json()["delivery_id"]
    assert_problem(unit.call(f"/webhook/deliveries/{theirs}/resend"), 404)  # not this unit's
    assert_problem(unit.call("/webhook/deliveries/not-a-uuid/resend"), 404)
    no_hook = Bank(counter, "PLAIN-1")
    r = counter.post(f"/api/v1/units/{no_hook.code}/webhook/test", {}, as_="supervisor")
    assert_problem(r, 409, says="webhook_url")
    assert_problem(counter.post("/api/v1/units/NO-SUCH/webhook/test", {}, as_="supervisor"), 404)
