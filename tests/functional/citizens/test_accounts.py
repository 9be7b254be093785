"""Citizen accounts over HTTP: the counter's code, activation (expired, reused, wrong, throttled),
sign-in, the TOTP second factor, and tokens that open nothing but the citizen's own view."""

from __future__ import annotations

import datetime as dt

import jwt
import pyotp
import pytest

from idguard.core.clock import FixedClock
from tests.factories import STAFF, TOKEN_KEY, auth
from tests.functional.citizens.conftest import CITIZEN_PASSWORD, Citizens
from tests.functional.conftest import Counter, assert_problem


def test_a_code_from_the_counter_opens_the_account_and_sign_in_gives_a_token(citizens: Citizens) -> None:
    number = citizens.counter.person(name="王五")
    code = citizens.code(number)
    assert len(code.replace("-", "")) == 16  # 80 bits, typable from a receipt
    r = citizens.activate(number, code.lower().replace("-", " "))  # as a citizen may type it
    assert r.status_code == 201, r.text
    assert r.json()["id_number"] == number[:6] + "********" + number[-4:]
    r = citizens.sign_in(number)
    assert r.status_code == 200, r.text
    token = r.json()["access_token"]
    me = citizens.client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200
    assert me.json()["id_number"] == number
    assert me.json()["name"] == "王五"


def test_a_code_works_once(citizens: Citizens) -> None:
    number = citizens.counter.person()
    code = citizens.code(number)
    assert citizens.activate(number, code).status_code == 201
    assert_problem(citizens.activate(number, code, "another good passphrase"), 409, says="used already")
    # The first password still signs in; the refused second one does not.
    assert citizens.sign_in(number).status_code == 200
    assert citizens.sign_in(number, "another good passphrase").status_code == 401


def test_an_expired_code_is_refused(citizens: Citizens, clock: FixedClock) -> None:
    number = citizens.counter.person()
    code = citizens.code(number)
    clock.advance(dt.timedelta(hours=72, seconds=1))
    assert_problem(citizens.activate(number, code), 409, says="expired")
    assert citizens.sign_in(number).status_code == 401


def test_a_code_only_for_its_own_person_and_a_new_code_replaces_the_old(citizens: Citizens) -> None:
    first, second = citizens.counter.person(), citizens.counter.person()
    code = citizens.code(first)
    assert citizens.activate(second, code).status_code == 401  # not this person's code
    newer = citizens.code(first)
    assert_problem(citizens.activate(first, code), 409, says="replaced")
    assert citizens.activate(first, newer).status_code == 201


def test_wrong_codes_are_throttled_and_the_owner_still_gets_in_from_elsewhere(citizens: Citizens) -> None:
    number = citizens.counter.person()
    code = citizens.code(number)
    statuses = [citizens.activate(number, "0000-0000-0000-0000").status_code for _ in range(11)]
    assert statuses[:10] == [401] * 10
    assert statuses[10] == 429
    r = citizens.activate(number, code)
    assert r.status_code == 429  # from this address, even the right code waits: no oracle
    assert int(r.headers["Retry-After"]) >= 1


def test_password_policy_names_the_field(citizens: Citizens) -> None:
    number = citizens.counter.person()
    code = citizens.code(number)
    for weak in ("short1", "qwertyuiop", "aaaaaaaaaaaa", number + "x"):
        assert_problem(citizens.activate(number, code, weak), 422, field="password")
    assert citizens.activate(number, code).status_code == 201  # the code was not used up


def test_sign_in_failures_are_throttled(citizens: Citizens) -> None:
    citizen = citizens.new()
    statuses = [citizens.sign_in(citizen.id_number, "wrong password!!").status_code for _ in range(11)]
    assert statuses == [401] * 10 + [429]


def test_second_factor_enrol_confirm_and_sign_in(citizens: Citizens, clock: FixedClock) -> None:
    citizen = citizens.new()
    r = citizen.post("/me/totp")
    assert r.status_code == 201, r.text
    secret = r.json()["secret"]
    assert r.json()["otpauth_uri"].startswith("otpauth://totp/")
    totp = pyotp.TOTP(secret)
    # Not yet confirmed: sign-in without a code still works.
    assert citizens.sign_in(citizen.id_number).status_code == 200
    assert_problem(citizen.post("/me/totp/confirm", {"otp": "000000"}), 422, field="otp")
    at = clock.now().timestamp()
    r = citizen.post("/me/totp/confirm", {"otp": totp.at(at)})
    assert r.status_code == 200, r.text
    assert citizen.get("/me").json()["second_factor"] is True

    r = citizens.sign_in(citizen.id_number)
    assert r.status_code == 401
    assert "otp" in r.json()["detail"]
    clock.advance(dt.timedelta(seconds=30))
    at = clock.now().timestamp()
    assert (
        citizens.sign_in(citizen.id_number, otp="123456" if totp.at(at) != "123456" else "654321").status_code
        == 401
    )
    assert citizens.sign_in(citizen.id_number, otp=totp.at(at)).status_code == 200
    # The same code is accepted once.
    assert citizens.sign_in(citizen.id_number, otp=totp.at(at)).status_code == 401


def test_a_new_code_resets_the_account_and_ends_older_tokens(citizens: Citizens) -> None:
    citizen = citizens.new()
    assert citizen.get("/me").status_code == 200
    r = citizens.activate(citizen.id_number, citizens.code(citizen.id_number), "a brand new passphrase")
    assert r.status_code == 201
    assert citizen.get("/me").status_code == 401  # the old token stopped
    assert citizens.sign_in(citizen.id_number).status_code == 401
    assert citizens.sign_in(citizen.id_number, "a brand new passphrase").status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/persons/{number}"),
        ("GET", "/api/v1/persons/{number}/cards"),
        ("POST", "/api/v1/persons/{number}/citizen-activation"),
        ("GET", "/api/v1/checks"),
        ("GET", "/api/v1/units"),
        ("GET", "/api/v1/notifications"),
        ("POST", "/api/v1/verify"),
    ],
)
def test_a_citizen_token_opens_no_staff_or_unit_route(citizens: Citizens, method: str, path: str) -> None:
    citizen = citizens.new()
    r = citizens.client.request(
        method, path.format(number=citizen.id_number), headers=citizen.headers, json={}
    )
    assert r.status_code in (401, 403), r.text


def test_a_staff_token_is_not_a_citizen_token(citizens: Citizens, counter: Counter) -> None:
    for who in ("clerk_a", "supervisor", "auditor", "admin"):
        assert citizens.client.get("/api/v1/me", headers=auth(who)).status_code == 401


def test_only_clerks_and_admins_issue_codes(citizens: Citizens) -> None:
    number = citizens.counter.person()
    for who in ("supervisor", "auditor"):
        r = citizens.counter.post(f"/api/v1/persons/{number}/citizen-activation", {}, as_=who)
        assert r.status_code == 403
    assert citizens.client.post(f"/api/v1/persons/{number}/citizen-activation").status_code == 401


def test_issuing_a_code_is_on_the_record_and_the_code_is_never_replayed(citizens: Citizens) -> None:
    number = citizens.counter.person()
    headers = {"Idempotency-Key": "receipt-1"}
    first = citizens.counter.post(f"/api/v1/persons/{number}/citizen-activation", {}, **headers)
    again = citizens.counter.post(f"/api/v1/persons/{number}/citizen-activation", {}, **headers)
    assert first.status_code == again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["activation_code"] is None
    assert citizens.activate(number, first.json()["activation_code"], CITIZEN_PASSWORD).status_code == 201


def test_a_token_that_is_not_typed_staff_never_passes_as_staff(citizens: Citizens) -> None:
    """Even signed with the staff key, a token whose `typ` is not `staff` opens no staff route."""
    clerk = next(s for s in STAFF if s.username == "clerk_a")
    now = int(dt.datetime.now(dt.UTC).timestamp())
    number = citizens.counter.person()
    for typ in ("citizen", None):
        claims = {"sub": str(clerk.id), "role": "clerk", "iat": now, "exp": now + 600}
        if typ is not None:
            claims["typ"] = typ
        forged = jwt.encode(claims, TOKEN_KEY, algorithm="HS256")
        r = citizens.client.get(f"/api/v1/persons/{number}", headers={"Authorization": f"Bearer {forged}"})
        assert r.status_code == 401
