"""Errors a program can branch on: a stable `code`, the `param` at fault, a `type`/`doc_url`
that resolves on the service, and the request shapes a client gets wrong first (a body that is
not JSON, a misspelt query parameter, a trailing slash)."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

from fastapi.testclient import TestClient

from idguard.api.problems import BY_STATUS, CODES, markdown
from idguard.registry.models import Staff
from idguard.registry.staff import issue_token
from tests.factories import STAFF, TOKEN_KEY, auth, id_number
from tests.functional.conftest import Counter
from tests.functional.verification.test_verify import Bank, sync

ROOT = Path(__file__).resolve().parents[2]


def _codes_raised_in_src() -> set[str]:
    found: set[str] = set()
    for path in (ROOT / "src" / "idguard").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        # code="…" (raise sites, class attributes), "code": "…" (dict literals) and the field
        # codes' table in api/errors.py ("date": "invalid_date").
        found |= set(re.findall(r'\bcode\s*=\s*"([a-z_]+)"', text))
        found |= set(re.findall(r'"code":\s*"([a-z_]+)"', text))
        if path.name == "errors.py":
            found |= set(re.findall(r'"[a-z_]+":\s*"(invalid_[a-z_]+)"', text))
    return found


def test_every_code_raised_is_documented_and_every_documented_code_is_used() -> None:
    raised = _codes_raised_in_src()
    assert raised - CODES.keys() == set(), "codes raised without an entry in api/problems.py"
    unused = CODES.keys() - raised - set(BY_STATUS.values())
    assert unused == set(), "documented codes nothing can answer"
    assert all(CODES[code].status == status for status, code in BY_STATUS.items())


def test_docs_errors_page_is_the_catalogue() -> None:
    assert (ROOT / "docs" / "errors.md").read_text(encoding="utf-8") == markdown(), (
        "docs/errors.md is stale: regenerate it with "
        "python -c \"from idguard.api.problems import markdown; open('docs/errors.md','w').write(markdown())\""
    )


def test_a_problem_names_its_code_param_and_a_page_that_describes_it(counter: Counter) -> None:
    r = counter.client.get("/api/v1/persons/110105199003072010", headers=auth("clerk_a"))
    body = r.json()
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    assert body["code"] == "invalid_id_number"
    assert body["param"] == "id_number"
    assert body["errors"][0] == {
        "field": "id_number",
        "code": "invalid_id_number",
        "detail": body["errors"][0]["detail"],
    }
    assert body["type"] == body["doc_url"] == "/api/v1/problems/invalid_id_number"
    page = counter.client.get(body["type"])
    assert page.status_code == 200
    assert page.json()["status"] == 422
    assert "GB 11643" in page.json()["meaning"]
    assert counter.client.get("/api/v1/problems/no_such_code").status_code == 404
    listed = {entry["code"] for entry in counter.client.get("/api/v1/problems").json()}
    assert listed == CODES.keys()


def test_a_body_that_is_not_json_is_415_naming_json(counter: Counter) -> None:
    for headers in ({"Content-Type": "text/plain"}, {}):
        r = counter.client.post(
            "/api/v1/persons", content='{"id_number": "x"}', headers={**auth("clerk_a"), **headers}
        )
        assert r.status_code == 415, r.text
        assert r.json()["code"] == "unsupported_media_type"
        assert "application/json" in r.json()["detail"]
    # A form where the route takes forms (an OAuth2 client's login) is not refused.
    r = counter.client.post("/api/v1/auth/token", data={"username": "clerk_a", "password": "wrong"})
    assert r.status_code == 401
    # JSON with a charset parameter, or a +json type, is JSON.
    r = counter.client.post(
        "/api/v1/persons",
        content="{}",
        headers={**auth("clerk_a"), "Content-Type": "application/json; charset=utf-8"},
    )
    assert r.status_code == 422


def test_invalid_json_says_where_in_words(counter: Counter) -> None:
    r = counter.client.post(
        "/api/v1/persons",
        content='{"id_number": "110105199003072010",}',
        headers={**auth("clerk_a"), "Content-Type": "application/json"},
    )
    assert r.status_code == 400
    body = r.json()
    assert body["code"] == "invalid_json"
    assert body["param"] == "body"
    assert "at character 35" in body["detail"]
    assert "double quotes" in body["detail"]


def test_an_unknown_query_parameter_is_400_naming_it(counter: Counter) -> None:
    r = counter.client.get("/api/v1/fingerprint-comparisons", params={"nxt": "abc"}, headers=auth("auditor"))
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["code"] == "unknown_parameter"
    assert body["param"] == "nxt"
    assert "nxt" in body["detail"]
    # Refused before the caller is known: a misspelling is the same mistake for everyone.
    assert counter.client.get("/api/v1/fingerprint-comparisons", params={"nxt": "abc"}).status_code == 400


def test_a_trailing_slash_is_a_404_naming_the_route_never_a_redirect(client: TestClient) -> None:
    r = client.post("/api/v1/verify/", json={}, follow_redirects=False)
    assert r.status_code == 404
    assert "location" not in r.headers
    assert r.json()["detail"].endswith("without the trailing slash: /api/v1/verify")


def test_a_401_on_a_staff_route_says_what_is_wrong(counter: Counter) -> None:
    path = f"/api/v1/persons/{id_number(dt.date(1990, 3, 7))}"

    def detail(headers: dict[str, str]) -> str:
        r = counter.client.get(path, headers=headers)
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == "Bearer"
        assert r.json()["code"] == "unauthorized"
        return str(r.json()["detail"])

    assert detail({}).startswith("no Authorization header")
    assert "must be `Bearer" in detail({"Authorization": "Basic YWxpY2U6c2VjcmV0"})
    assert "unit's API key" in detail({"Authorization": "Bearer idg_" + "x" * 43})
    assert "not a token this service issued" in detail({"Authorization": "Bearer not.a.jwt"})
    clerk = next(s for s in STAFF if s.username == "clerk_a")
    staff = Staff(id=clerk.id, username=clerk.username, role=clerk.role, office_code=clerk.office)
    two_hours_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    expired = issue_token(staff, secret=TOKEN_KEY, now=two_hours_ago, ttl_seconds=3600)
    assert "expired at" in detail({"Authorization": f"Bearer {expired}"})
    forged = issue_token(staff, secret="another key" * 4, now=dt.datetime.now(dt.UTC), ttl_seconds=3600)
    assert "sign in again" in detail({"Authorization": f"Bearer {forged}"})


def test_a_date_before_the_first_cards_is_refused_never_taken_for_long_term(counter: Counter) -> None:
    """The index packs a long-term expiry as day 0: an expiry of 1900-01-01 must not reach it."""
    bank = Bank(counter)
    birth = dt.date(1950, 1, 1)  # over 46 at issue: a long-term card
    card = counter.card(counter.person(birth))
    assert card["expires_on"] is None
    sync(counter)
    assert bank.verify(card).json()["result"] == "valid"
    for field in ("expires_on", "issued_on"):
        r = bank.verify(card, **{field: "1900-01-01"})
        assert r.status_code == 422, r.text
        assert r.json()["param"] == field
        r = counter.client.post(
            "/api/v1/verify/batch",
            json={"items": [{**_item(card), field: "1900-01-01"}]},
            headers=bank.headers(),
        )
        assert r.status_code == 200
        assert r.json()["results"][0]["error"]["status"] == 422


def _item(card: dict[str, object]) -> dict[str, object]:
    keys = ("id_number", "name", "issued_on", "expires_on")
    return {k: card[k] for k in keys} | {"purpose": "account_opening", "operator": "t"}
