import datetime as dt

import httpx2 as httpx
import jwt
import pytest
from fastapi.testclient import TestClient

from idguard.core.ratelimit import RateLimiter
from idguard.registry.routes import auth as auth_routes
from tests.factories import PASSWORD, SECRET, TOKEN_KEY, auth
from tests.functional.conftest import Counter, assert_problem


def test_token_from_json_works_as_bearer(client: TestClient) -> None:
    r = client.post("/api/v1/auth/token", json={"username": "auditor", "password": PASSWORD})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 3600
    r = client.get(
        "/api/v1/persons/11010519491231002X", headers={"Authorization": f"Bearer {body['access_token']}"}
    )
    assert r.status_code == 404  # authenticated; the person just does not exist


def test_token_from_oauth2_form(client: TestClient) -> None:
    r = client.post("/api/v1/auth/token", data={"username": "clerk_a", "password": PASSWORD})
    assert r.status_code == 200, r.text
    assert r.json()["access_token"]


def test_wrong_password_and_unknown_user_get_the_same_401(client: TestClient) -> None:
    wrong = client.post("/api/v1/auth/token", json={"username": "clerk_a", "password": "nope-nope"})
    unknown = client.post("/api/v1/auth/token", json={"username": "nobody", "password": "nope-nope"})
    assert_problem(wrong, 401)
    assert_problem(unknown, 401)
    assert wrong.json()["detail"] == unknown.json()["detail"]


def test_token_request_missing_field_names_it(client: TestClient) -> None:
    assert_problem(client.post("/api/v1/auth/token", json={"username": "x"}), 422, field="password")


def test_missing_garbage_and_expired_tokens_are_401(client: TestClient) -> None:
    path = "/api/v1/persons/11010519491231002X"
    assert_problem(client.get(path), 401)
    assert_problem(client.get(path, headers={"Authorization": "Bearer not-a-token"}), 401)
    past = int((dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)).timestamp())
    expired = jwt.encode(
        {"sub": "00000000-0000-0000-0000-000000000004", "exp": past}, TOKEN_KEY, algorithm="HS256"
    )
    assert_problem(client.get(path, headers={"Authorization": f"Bearer {expired}"}), 401)
    forged = jwt.encode(
        {"sub": "00000000-0000-0000-0000-000000000004", "exp": past + 99999}, "x" * 32, algorithm="HS256"
    )
    assert_problem(client.get(path, headers={"Authorization": f"Bearer {forged}"}), 401)


def test_health_needs_no_auth(client: TestClient) -> None:
    r = client.get("/api/v1/health")
    assert r.status_code == 200
    assert r.json()["database"] == "ok"
    assert r.json()["ledger_seq"] == 0


def test_openapi_documents_every_route(client: TestClient) -> None:
    spec = client.get("/api/v1/openapi.json").json()
    paths = spec["paths"]
    for path in (
        "/api/v1/persons",
        "/api/v1/persons/{id_number}",
        "/api/v1/persons/{id_number}/cards",
        "/api/v1/cards/{card_id}/events",
        "/api/v1/loss-reports",
        "/api/v1/loss-reports/{report_no}/cancel",
        "/api/v1/persons/{id_number}/temporary-cards",
        "/api/v1/persons/{id_number}/revocations",
        "/api/v1/found-cards",
        "/api/v1/found-cards/{found_no}/return",
        "/api/v1/auth/token",
        "/api/v1/health",
    ):
        assert path in paths, path
        for operation in paths[path].values():
            assert operation.get("description"), f"{path} has no description for integrators"
    assert client.get("/api/v1/docs").status_code == 200
    assert auth("clerk_a")  # the token helper itself works


def test_login_attempts_are_throttled_per_account(counter: Counter) -> None:
    def attempt(username: str, password: str = "wrong password") -> httpx.Response:  # noqa: S107
        return counter.client.post("/api/v1/auth/token", json={"username": username, "password": password})

    for _ in range(10):
        assert attempt("clerk_a").status_code == 401
    r = attempt("clerk_a", PASSWORD)  # even the right password: the account's burst is spent
    assert_problem(r, 429, says="this account")
    assert int(r.headers["Retry-After"]) >= 1
    assert attempt("clerk_b", PASSWORD).status_code == 200  # another account is not affected


def _from(counter: Counter, address: str) -> TestClient:
    """A client at another address (same app, same buckets)."""
    return TestClient(counter.client.app, client=(address, 40000))


@pytest.fixture
def frozen_throttle(counter: Counter, monkeypatch: pytest.MonkeyPatch) -> None:
    """Buckets that do not refill while a test runs, however slow the machine (no wall clock)."""
    monkeypatch.setattr(counter.client.app.state, "throttle", RateLimiter(1, clock=lambda: 0.0))  # type: ignore[attr-defined]


@pytest.mark.usefixtures("frozen_throttle")
def test_a_guesser_slows_itself_not_the_accounts_owner(counter: Counter) -> None:
    """Issue 9, item 8: one address hammering a clerk's account with wrong passwords is refused
    before any password is checked; the clerk signs in from another address at the first try."""
    attacker = _from(counter, "203.0.113.7")
    statuses = [
        attacker.post("/api/v1/auth/token", json={"username": "clerk_a", "password": "guess"}).status_code
        for _ in range(30)
    ]
    assert statuses[:10] == [401] * 10
    assert set(statuses[10:]) == {429}
    owner = _from(counter, "198.51.100.20")
    r = owner.post("/api/v1/auth/token", json={"username": "clerk_a", "password": PASSWORD})
    assert r.status_code == 200, r.text
    # and the owner's successful sign-ins are never counted against anyone
    for _ in range(15):
        assert (
            owner.post("/api/v1/auth/token", json={"username": "clerk_a", "password": PASSWORD}).status_code
            == 200
        )


@pytest.mark.usefixtures("frozen_throttle")
def test_guesses_spread_over_many_addresses_stop_at_the_account(
    counter: Counter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(auth_routes, "LOGIN_BURST", 2)  # 20 failures per account, 2 per address pair
    for i in range(20):
        r = _from(counter, f"192.0.2.{i}").post(
            "/api/v1/auth/token", json={"username": "clerk_a", "password": "guess"}
        )
        assert r.status_code == 401, (i, r.text)
    r = _from(counter, "192.0.2.200").post(
        "/api/v1/auth/token", json={"username": "clerk_a", "password": PASSWORD}
    )
    assert_problem(r, 429, says="for this account")
    assert (
        _from(counter, "192.0.2.201")
        .post("/api/v1/auth/token", json={"username": "clerk_b", "password": PASSWORD})
        .status_code
        == 200
    )


def test_a_token_signed_with_the_service_secret_itself_is_refused(client: TestClient) -> None:
    """Issue 9, item 11: staff tokens are signed with their own derived key, not the secret that
    other keys (the check log's hash) are derived from."""
    future = int((dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).timestamp())
    claims = {"sub": "00000000-0000-0000-0000-000000000004", "exp": future, "typ": "staff"}
    with_secret = jwt.encode(claims, SECRET, algorithm="HS256")
    assert_problem(
        client.get("/api/v1/persons/11010519491231002X", headers={"Authorization": f"Bearer {with_secret}"}),
        401,
    )
    with_token_key = jwt.encode(claims, TOKEN_KEY, algorithm="HS256")
    r = client.get(
        "/api/v1/persons/11010519491231002X", headers={"Authorization": f"Bearer {with_token_key}"}
    )
    assert r.status_code != 401, r.text


def test_each_job_has_its_own_key_and_the_token_key_rotates_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    from idguard.config import Environment, Settings

    base = Settings(database_url="sqlite://", env=Environment.TEST, secret_key=SECRET)
    keys = {base.token_key, base.check_hash_key, base.secret_key}
    assert len(keys) == 3
    monkeypatch.setenv("IDGUARD_TOKEN_KEY", "a-new-token-key-0123456789")
    rotated = Settings(database_url="sqlite://", env=Environment.TEST, secret_key=SECRET)
    assert rotated.token_key == "a-new-token-key-0123456789"
    assert rotated.check_hash_key == base.check_hash_key  # every citizen's check history still found
