"""Onboarding and key rotation under an Idempotency-Key: a retry answers at once, and no secret
is ever kept in the stored answer (issue 18, defects 1 and 2)."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from idguard.config import Environment, Settings
from idguard.core.sealing import Sealer
from idguard.db.common import IdempotencyRecord
from tests.factories import SECRET
from tests.functional.conftest import Counter, assert_problem
from tests.functional.verification.test_verify import Bank, sync

UNIT = {
    "code": "ICBC-BJ",
    "name": "工商银行北京分行",
    "sector": "bank",
    "purposes": ["account_opening"],
    "rate_limit": 100,
}


def stored_bodies(engine: sa.Engine) -> list[str]:
    """The stored answers, opened as the service opens them (they are sealed at rest)."""
    sealer = Sealer(
        Settings(database_url="sqlite://", env=Environment.TEST, secret_key=SECRET).idempotency_key
    )
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(IdempotencyRecord.principal, IdempotencyRecord.key, IdempotencyRecord.body)
        )
        return [sealer.open(body, context=f"idempotency/{principal}/{key}") for principal, key, body in rows]


def onboard(counter: Counter, key: str = "onboard-icbc-bj-1", **over: Any) -> Any:
    return counter.post("/api/v1/units", {**UNIT, **over}, as_="supervisor", **{"Idempotency-Key": key})


def test_a_retried_onboarding_replays_at_once_without_the_secrets(
    counter: Counter, engine: sa.Engine
) -> None:
    first = onboard(counter)
    assert first.status_code == 201, first.text
    key, secret = first.json()["api_key"], first.json()["webhook_secret"]
    assert key.startswith("idg_")
    assert secret

    again = onboard(counter)  # the docs' own example: same key, same body
    assert again.status_code == 201, again.text
    assert again.headers["Idempotent-Replayed"] == "true"
    replay = again.json()
    assert replay["unit"] == first.json()["unit"]
    assert replay["api_key"] is None
    assert replay["webhook_secret"] is None
    assert "shown once" in replay["notice"]
    assert "/api/v1/units/ICBC-BJ/keys/rotate" in replay["notice"]
    assert "notice" not in first.json() or first.json()["notice"] is None

    bodies = stored_bodies(engine)
    assert bodies  # the answer was stored for the replay ...
    assert not any(key in b or secret in b for b in bodies)  # ... without the secrets
    assert not any(key[:16] in b for b in bodies)


def test_the_first_key_still_works_after_a_replay(counter: Counter) -> None:
    first = onboard(counter)
    onboard(counter)
    bank = Bank.__new__(Bank)
    bank.counter, bank.code, bank.key = counter, UNIT["code"], first.json()["api_key"]
    card = counter.card(counter.person())
    sync(counter)
    assert bank.verify(card).json()["result"] == "valid"


def test_a_retried_rotation_replays_without_the_new_key(counter: Counter, engine: sa.Engine) -> None:
    assert onboard(counter).status_code == 201
    path = f"/api/v1/units/{UNIT['code']}/keys/rotate"
    headers = {"Idempotency-Key": "rotate-1"}
    first = counter.post(path, {"grace_seconds": 60}, as_="supervisor", **headers)
    assert first.status_code == 201, first.text
    new_key = first.json()["api_key"]
    again = counter.post(path, {"grace_seconds": 60}, as_="supervisor", **headers)
    assert again.status_code == 201, again.text
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["api_key"] is None
    assert "rotate" in again.json()["notice"]
    assert not any(new_key in b for b in stored_bodies(engine))


@pytest.mark.parametrize("retry", ["same", "different"])
def test_a_write_after_a_replay_is_not_kept_waiting(counter: Counter, retry: str) -> None:
    """The replay's read ends its transaction (on SQLite it held the write lock, and the key
    refresh that follows an onboarding waited for it until the busy timeout: a 503)."""
    assert onboard(counter).status_code == 201
    if retry == "same":
        assert onboard(counter).status_code == 201
    else:
        assert_problem(onboard(counter, name="另一个名字"), 422, field="Idempotency-Key")
    second = counter.post("/api/v1/units", {**UNIT, "code": "ABC-SH"}, as_="supervisor")
    assert second.status_code == 201, second.text
