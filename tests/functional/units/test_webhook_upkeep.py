"""Issue 18's webhook follow-ups: the dispatcher keeps a unit's opened secrets until the units
version moves (and never signs with one past its overlap), a secret that no longer opens fails
the attempt instead of posting unsigned, old messages and attempts are purged after the
retention, case notices are retried frozen, and `idguard unit roll-webhook-secret`."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from idguard import uow
from idguard.app import create_app
from idguard.cli.main import app as cli
from idguard.config import Environment, Settings
from idguard.core import sealing
from idguard.core.clock import FixedClock
from idguard.db.engine import make_engine, make_sessionmaker
from idguard.verification import units as units_service
from idguard.verification.models import UnitWebhookSecret, WebhookCursor, WebhookDelivery, WebhookMessage
from idguard.verification.runtime.webhooks import DEFAULT_RETENTION_DAYS, NO_SECRET
from idguard.verification.units import secret_sealer, signing_secrets
from idguard.verification.verifier import Verifier
from tests.factories import NOW, SECRET
from tests.functional.accountability.test_case_notices import open_case
from tests.functional.conftest import Counter, assert_problem
from tests.functional.units.test_webhooks import HookedUnit, Receiver, accepted, signatures
from tests.functional.verification.test_notifications import lost_then_replaced

runner = CliRunner()


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


@pytest.fixture
def opens(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every sealed value opened (its context), counted where the dispatcher would pay for it."""
    seen: list[str] = []
    real = sealing.Sealer.open

    def counting(self: sealing.Sealer, sealed: str, *, context: str) -> str:
        seen.append(context)
        return real(self, sealed, context=context)

    monkeypatch.setattr(sealing.Sealer, "open", counting)
    return seen


def webhook_opens(opens: list[str]) -> int:
    return sum(1 for c in opens if c.startswith("webhook-secret/"))


def test_the_dispatcher_opens_secrets_once_per_units_version_and_honours_the_overlap(
    counter: Counter, receiver: Receiver, verifier: Verifier, clock: FixedClock, opens: list[str]
) -> None:
    unit = HookedUnit(counter, receiver.url)
    lost_then_replaced(counter, unit)
    verifier.follower.poll()  # the key ring knows the unit's version
    dispatcher = verifier.dispatcher
    receiver.answers = [500, 500, 500]  # keep the batch retrying: one POST per step
    assert dispatcher.run_once() == 1
    assert webhook_opens(opens) == 1
    clock.advance(dt.timedelta(seconds=2))
    assert dispatcher.run_once() == 1  # the retry: signed from the cache, nothing opened
    assert webhook_opens(opens) == 1
    assert all(accepted(unit.secret, g, clock.now()) for g in receiver.received)

    rolled = counter.post(
        f"/api/v1/units/{unit.code}/webhook-secret", {"overlap_seconds": 60}, as_="supervisor"
    )
    assert rolled.status_code == 201, rolled.text
    new = rolled.json()["webhook_secret"]
    verifier.follower.poll()  # the roll moved the units version: the cache is dropped
    clock.advance(dt.timedelta(seconds=5))
    assert dispatcher.run_once() == 1
    during = receiver.received[-1]
    assert len(signatures(during)) == 2
    assert accepted(new, during, clock.now())
    assert accepted(unit.secret, during, clock.now())
    opened_after_roll = webhook_opens(opens)
    assert opened_after_roll == 3  # both live secrets, once

    # Past the overlap's end, with no version change: the cached old secret stops signing.
    clock.advance(dt.timedelta(seconds=60))
    assert dispatcher.run_once() == 1
    after = receiver.received[-1]
    assert len(signatures(after)) == 1
    assert accepted(new, after, clock.now())
    assert not accepted(unit.secret, after, clock.now())
    assert webhook_opens(opens) == opened_after_roll


def test_a_secret_that_does_not_open_fails_the_attempt_instead_of_posting_unsigned(
    counter: Counter,
    receiver: Receiver,
    verifier: Verifier,
    clock: FixedClock,
    session_factory: sessionmaker[Session],
) -> None:
    unit = HookedUnit(counter, receiver.url)
    lost_then_replaced(counter, unit)
    with uow.transaction(session_factory) as session:  # as after IDGUARD_SECRET_KEY changed
        row = session.scalars(sa.select(UnitWebhookSecret)).one()
        row.sealed = secret_sealer("another-secret-key-0123456789").seal(
            unit.secret, context=f"webhook-secret/{unit.code}/{row.id}"
        )
    verifier.follower.poll()
    assert verifier.dispatcher.run_once() == 1
    assert receiver.received == []
    (attempt,) = unit.deliveries()["items"]
    assert (attempt["delivered"], attempt["error"]) == (False, NO_SECRET)
    assert_problem(unit.call("/webhook/test"), 409, says="roll")

    new = unit.call("/webhook-secret", {"overlap_seconds": 3600}).json()["webhook_secret"]
    verifier.follower.poll()
    clock.advance(dt.timedelta(seconds=5))
    assert verifier.dispatcher.run_once() == 1
    (got,) = receiver.received
    assert len(signatures(got)) == 1  # only the new one can sign
    assert accepted(new, got, clock.now())


def _old(session: Session, message: str | uuid.UUID, days: int) -> None:
    """Make a message and its attempts `days` old."""
    message_id, at = uuid.UUID(str(message)), NOW - dt.timedelta(days=days)
    session.execute(sa.update(WebhookMessage).where(WebhookMessage.id == message_id).values(created_at=at))
    session.execute(sa.update(WebhookDelivery).where(WebhookDelivery.message_id == message_id).values(at=at))


def test_messages_and_attempts_are_purged_after_the_retention(
    counter: Counter,
    receiver: Receiver,
    verifier: Verifier,
    session_factory: sessionmaker[Session],
) -> None:
    dispatcher = verifier.dispatcher
    assert dispatcher.retention_days == DEFAULT_RETENTION_DAYS == 30
    unit = HookedUnit(counter, receiver.url)
    expired, kept, resent = (unit.call("/webhook/test").json()["delivery_id"] for _ in range(3))
    lost_then_replaced(counter, unit)
    receiver.answers = [500]
    assert dispatcher.run_once() == 1  # a batch left retrying
    with uow.transaction(session_factory) as session:
        retrying = session.scalars(sa.select(WebhookCursor.pending_message)).one()
        assert retrying is not None
        _old(session, expired, 31)
        _old(session, kept, 29)
        _old(session, resent, 40)
        _old(session, retrying, 45)
    assert unit.call(f"/webhook/deliveries/{resent}/resend").json()["delivered"] is True  # a new attempt

    assert dispatcher.purge(NOW) == (3, 1)  # the old attempts; only the message nothing needs
    with session_factory() as session:
        left = set(session.scalars(sa.select(WebhookMessage.id)))
        attempts = session.scalars(sa.select(WebhookDelivery.message_id)).all()
    assert {str(m) for m in left} == {kept, resent, str(retrying)}
    assert sorted(str(m) for m in attempts) == sorted([kept, resent])
    assert_problem(unit.call(f"/webhook/deliveries/{expired}/resend"), 404)
    assert dispatcher.purge(NOW) == (0, 0)  # nothing more: a second worker's purge is harmless

    # Delivered at last, the retried message goes with the retention like any other.
    assert unit.call(f"/webhook/deliveries/{retrying}/resend").json()["delivered"] is True
    assert dispatcher.purge(NOW + dt.timedelta(days=31)) == (3, 3)


def test_the_retention_is_a_setting(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"webhook_retention_days": 7}))
    assert app.state.verifier.dispatcher.retention_days == 7
    with pytest.raises(ValueError, match="webhook_retention_days"):
        Settings(database_url=settings.database_url, env=Environment.TEST, webhook_retention_days=0)


def test_a_failed_case_notice_batch_is_retried_frozen(
    counter: Counter, receiver: Receiver, verifier: Verifier, clock: FixedClock
) -> None:
    unit = HookedUnit(counter, receiver.url, "HOOK-CASE")
    verifier.follower.poll()
    case_no = open_case(counter, unit.code)
    receiver.answers = [503]
    assert verifier.dispatcher.run_once() == 1
    decided = counter.post(
        f"/api/v1/cases/{case_no}/decision", {"decision": "dismissed", "note": "ok"}, as_="supervisor"
    )
    assert decided.status_code == 200, decided.text
    clock.advance(dt.timedelta(seconds=10))
    assert verifier.dispatcher.run_once() == 1  # the same message again, without the decision
    assert verifier.dispatcher.run_once() == 1  # then the decision, in a message of its own
    first, retry, then = receiver.received
    assert first["headers"]["Webhook-Id"] == retry["headers"]["Webhook-Id"] != then["headers"]["Webhook-Id"]
    assert first["body"] == retry["body"]
    assert [c["event"] for c in json.loads(retry["body"])["cases"]] == ["opened"]
    assert [c["event"] for c in json.loads(then["body"])["cases"]] == ["decided"]
    assert all(accepted(unit.secret, g, clock.now()) for g in (retry, then))
    assert verifier.dispatcher.run_once() == 0
    log = unit.deliveries()["items"]
    assert [(d["delivery_id"], d["attempt"], d["delivered"]) for d in log] == [
        (then["headers"]["Webhook-Id"], 1, True),
        (retry["headers"]["Webhook-Id"], 2, True),
        (retry["headers"]["Webhook-Id"], 1, False),
    ]


# --- idguard unit roll-webhook-secret -------------------------------------------------------------


@pytest.fixture
def registry(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[sessionmaker[Session]]:
    """The test database (SQLite or PostgreSQL) as the command sees it, through the environment."""
    monkeypatch.setenv("IDGUARD_DATABASE_URL", database_url)
    monkeypatch.setenv("IDGUARD_ENV", "test")
    monkeypatch.setenv("IDGUARD_SECRET_KEY", SECRET)
    engine = make_engine(Settings(database_url=database_url, env=Environment.TEST, secret_key=SECRET))
    yield make_sessionmaker(engine)
    engine.dispose()


def _onboard(sessions: sessionmaker[Session]) -> str:
    with uow.transaction(sessions) as session:
        issued = units_service.onboard(
            session,
            actor=None,
            now=NOW,
            secret_key=SECRET,
            code="CLI-1",
            name="命令行银行",
            sector="bank",
            purposes=["account_opening"],
            rate_limit=10,
            webhook_url="https://hooks.example/idguard",
        )
    assert issued.webhook_secret is not None
    return issued.webhook_secret


def _signing(sessions: sessionmaker[Session], at: dt.datetime) -> list[str]:
    with sessions() as session:
        return signing_secrets(session, secret_key=SECRET, code="CLI-1", now=at)


def test_cli_rolls_a_webhook_secret_and_prints_it_once(registry: sessionmaker[Session]) -> None:
    old = _onboard(registry)
    result = runner.invoke(cli, ["unit", "roll-webhook-secret", "CLI-1", "--overlap-hours", "2"])
    assert result.exit_code == 0, result.output
    new = result.output.strip().splitlines()[-1]
    assert new.startswith("whsec_")
    assert new != old
    assert result.output.count(new) == 1
    assert "signs too until" in result.output
    now = dt.datetime.now(dt.UTC)
    assert _signing(registry, now) == [new, old]
    assert _signing(registry, now + dt.timedelta(hours=2, minutes=1)) == [new]

    again = runner.invoke(cli, ["unit", "roll-webhook-secret", "CLI-1", "--overlap-hours", "0"])
    assert again.exit_code == 0, again.output
    newest = again.output.strip().splitlines()[-1]
    assert "no overlap" in again.output
    assert _signing(registry, dt.datetime.now(dt.UTC)) == [newest]


def test_cli_roll_refuses_an_unknown_unit_and_a_long_overlap(registry: sessionmaker[Session]) -> None:
    _onboard(registry)
    unknown = runner.invoke(cli, ["unit", "roll-webhook-secret", "NO-SUCH"])
    assert unknown.exit_code == 1
    assert "NO-SUCH" in unknown.output
    too_long = runner.invoke(cli, ["unit", "roll-webhook-secret", "CLI-1", "--overlap-hours", "169"])
    assert too_long.exit_code == 2
    assert len(_signing(registry, dt.datetime.now(dt.UTC))) == 1  # nothing rolled
