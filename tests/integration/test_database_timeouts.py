"""A database that stops answering must not hold the service (issue 9, item 3): connections give
up, `/health` answers `degraded` without waiting for it, a request that finds no free connection
is a 503 with Retry-After."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from idguard.app import create_app
from idguard.config import Environment, Settings
from idguard.db import engine as engine_module
from idguard.db.engine import POOL_TIMEOUT_SECONDS, POSTGRES_TIMEOUTS, make_engine
from idguard.verification.routes import health as health_routes
from tests.conftest import POSTGRES_URL
from tests.factories import SECRET, auth


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A port that completes the TCP handshake (the kernel's backlog) and then never says a word:
    what a server behind a partition looks like to a client that is already past the firewall."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    yield listener.getsockname()[1]
    listener.close()


@pytest.mark.postgres
def test_every_postgres_connection_has_its_timeouts() -> None:
    if not POSTGRES_URL:
        pytest.skip("IDGUARD_TEST_POSTGRES_URL is not set: PostgreSQL tests skipped (CI always sets it)")
    engine = make_engine(Settings(database_url=POSTGRES_URL, env=Environment.TEST, secret_key=SECRET))
    with engine.connect() as conn:
        params = conn.connection.driver_connection.info.get_parameters()  # type: ignore[union-attr]
    engine.dispose()
    for name, value in POSTGRES_TIMEOUTS.items():
        assert params[name] == str(value), name
    assert engine.pool.timeout() == POOL_TIMEOUT_SECONDS  # type: ignore[attr-defined]


@pytest.mark.postgres
def test_a_silent_server_is_given_up_on(black_hole: int) -> None:
    if not POSTGRES_URL:
        pytest.skip("IDGUARD_TEST_POSTGRES_URL is not set: PostgreSQL tests skipped (CI always sets it)")
    engine = make_engine(
        Settings(
            database_url=f"postgresql://postgres@127.0.0.1:{black_hole}/x",
            env=Environment.TEST,
            secret_key=SECRET,
        )
    )
    outcome: list[BaseException | None] = []

    def connect() -> None:
        try:
            with engine.connect():
                outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout=60)  # generous: the connect timeout is 3 s
    engine.dispose()
    assert outcome, "the connection attempt to a silent server did not give up"
    assert isinstance(outcome[0], sa.exc.OperationalError)
    assert "timeout" in str(outcome[0]).lower()


def test_health_answers_degraded_while_the_database_hangs(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    released = threading.Event()

    def hanging(_sessions: object) -> int:
        released.wait(30)
        return 0

    monkeypatch.setattr(health_routes, "ledger_seq", hanging)
    try:
        r = client.get("/api/v1/health")
    finally:
        released.set()
    assert r.status_code == 200
    assert r.json()["status"] == "degraded"
    assert r.json()["database"] == "timeout"


def test_no_free_connection_is_a_503_with_retry_after(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    if settings.is_sqlite:
        pytest.skip("SQLite serialises writers on its busy timeout instead (sqlite_busy_timeout_ms)")
    monkeypatch.setattr(engine_module, "POOL_TIMEOUT_SECONDS", 0.2)
    app = create_app(settings)
    with TestClient(app) as c:
        engine: sa.Engine = app.state.engine
        held = [engine.connect() for _ in range(engine.pool.size() + engine.pool._max_overflow)]  # type: ignore[attr-defined]
        try:
            r = c.get("/api/v1/persons/11010519491231002X", headers=auth("clerk_a"))
        finally:
            for conn in held:
                conn.close()
        assert r.status_code == 503, r.text
        assert r.headers["Retry-After"] == "1"
        assert r.headers["content-type"].startswith("application/problem+json")
        # and once connections are free again, the service answers
        assert c.get("/api/v1/persons/11010519491231002X", headers=auth("clerk_a")).status_code != 503
