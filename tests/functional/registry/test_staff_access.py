"""Staff accounts: a disabled account stops at once, and logins are throttled per client address
and per account, each worker enforcing its share (docs/rules.md, "Staff and roles")."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import httpx2 as httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from idguard import uow
from idguard.app import create_app
from idguard.config import Settings
from idguard.core.clock import FixedClock
from idguard.core.ratelimit import RateLimiter
from idguard.registry.models import Staff
from idguard.registry.routes import auth as auth_routes
from tests.factories import PASSWORD, STAFF, auth, id_number
from tests.functional.conftest import assert_problem

CLERK_A = next(s for s in STAFF if s.username == "clerk_a")
UNKNOWN_PERSON = f"/api/v1/persons/{id_number(dt.date(1970, 1, 1))}"  # a well-formed number nobody has


def login(client: TestClient, username: str, password: str = PASSWORD) -> httpx.Response:
    return client.post("/api/v1/auth/token", json={"username": username, "password": password})


def stop_the_throttles_clock(client: TestClient) -> None:
    """The app's login buckets on a clock that stands still (RateLimiter's `clock`), so none refills
    while a test runs, however slowly; as many workers as the app was configured with."""
    app = client.app
    app.state.throttle = RateLimiter(app.state.throttle.workers, clock=lambda: 1000.0)  # type: ignore[attr-defined]


def test_a_disabled_account_stops_at_once(client: TestClient, session_factory: sessionmaker[Session]) -> None:
    r = login(client, "clerk_a")
    assert r.status_code == 200, r.text
    logged_in = {"Authorization": f"Bearer {r.json()['access_token']}"}
    assert client.get(UNKNOWN_PERSON, headers=logged_in).status_code == 404  # the token works
    assert client.get(UNKNOWN_PERSON, headers=auth("clerk_a")).status_code == 404

    with uow.transaction(session_factory) as session:
        staff = session.get(Staff, CLERK_A.id)
        assert staff is not None
        staff.active = False

    # Tokens issued before are still unexpired and correctly signed: the account is re-read.
    assert_problem(client.get(UNKNOWN_PERSON, headers=logged_in), 401)
    assert_problem(client.get(UNKNOWN_PERSON, headers=auth("clerk_a")), 401)
    assert_problem(login(client, "clerk_a"), 401)
    # Nobody else is affected.
    assert client.get(UNKNOWN_PERSON, headers=auth("clerk_b")).status_code == 404


def test_login_attempts_are_throttled_per_client_address(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    stop_the_throttles_clock(client)
    # 50 guesses from one address at 50 different usernames: no account's own burst is touched.
    # The password check (argon2, ~0.2 s each) answers "wrong" without hashing for these: it is
    # not what is under test, and the throttle runs before it.
    real_authenticate = auth_routes.authenticate
    monkeypatch.setattr(auth_routes, "authenticate", lambda *_, **__: None)
    for n in range(50):
        assert_problem(login(client, f"guess-{n}", "wrong password"), 401)
    monkeypatch.setattr(auth_routes, "authenticate", real_authenticate)

    # The address has spent its burst: even a right password for a fresh account waits.
    r = login(client, "auditor")
    assert_problem(r, 429, says="from this address")
    assert int(r.headers["Retry-After"]) >= 1
    # Another address is not affected (the same app, the same buckets).
    elsewhere = TestClient(client.app, client=("203.0.113.7", 50000))
    assert login(elsewhere, "auditor").status_code == 200


@pytest.fixture
def two_worker_client(settings: Settings, clock: FixedClock) -> Iterator[TestClient]:
    """The app as one of two server workers (`idguard serve --workers 2`)."""
    app = create_app(settings.model_copy(update={"workers": 2}), clock=clock)
    with TestClient(app) as client:
        yield client


def test_each_worker_allows_its_share_of_an_accounts_login_burst(two_worker_client: TestClient) -> None:
    assert two_worker_client.app.state.throttle.workers == 2  # type: ignore[attr-defined]
    stop_the_throttles_clock(two_worker_client)
    # A burst of 10 failed sign-ins at one account from one address for the service: 5 in each
    # of two workers.
    for _ in range(5):
        assert_problem(login(two_worker_client, "clerk_a", "wrong password"), 401)
    r = login(two_worker_client, "clerk_a")
    assert_problem(r, 429, says="this account")
    assert int(r.headers["Retry-After"]) >= 1
    assert login(two_worker_client, "clerk_b").status_code == 200
