import datetime as dt

import httpx2 as httpx
import jwt
from fastapi.testclient import TestClient

from tests.factories import PASSWORD, SECRET, auth
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
        {"sub": "00000000-0000-0000-0000-000000000004", "exp": past}, SECRET, algorithm="HS256"
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
