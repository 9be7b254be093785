"""Citizen accounts: the counter's activation code, activation, sign-in, the TOTP second factor."""

from __future__ import annotations

import datetime as dt
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.responses import Response

from idguard import uow
from idguard.api.deps import client_address, get_clock, get_settings
from idguard.api.schemas import STAFF_WRITE_ERRORS, IdNumberStr, problem_responses
from idguard.citizens import accounts
from idguard.citizens.accounts import SignIn
from idguard.citizens.routes.deps import CitizenTxDep, KeysDep
from idguard.citizens.schemas import (
    ActivateIn,
    ActivateOut,
    ActivationCodeOut,
    CitizenTokenIn,
    CitizenTokenOut,
    TotpConfirmIn,
    TotpEnrolOut,
    TotpOut,
)
from idguard.core import idnumber
from idguard.core.ratelimit import RateLimiter
from idguard.registry.routes.deps import TxDep

router = APIRouter(prefix="/api/v1", tags=["citizens"])

# As staff sign-ins (registry/routes/auth.py): failures only, per (account, address), per address
# and per account, so a guesser is refused at its own addresses while the owner signs in elsewhere.
BURST = 10
PER_MINUTE = 2.0
_THROTTLED: dict[int | str, dict[str, Any]] = {
    429: {"description": "too many failed attempts; see Retry-After"}
}


def _buckets(kind: str, account: str, address: str) -> tuple[tuple[str, float, int, str], ...]:
    return (
        (f"{kind}:{account}:{address}", PER_MINUTE, BURST, "for this account from this address"),
        (f"{kind}-address:{address}", PER_MINUTE * 5, BURST * 5, "from this address"),
        (f"{kind}-account:{account}", PER_MINUTE * 10, BURST * 10, "for this account"),
    )


def _refuse_if_throttled(
    request: Request, buckets: tuple[tuple[str, float, int, str], ...], what: str
) -> None:
    limiter: RateLimiter = request.app.state.throttle
    for key, per_minute, burst, where in buckets:
        wait = limiter.peek(key, per_minute / 60.0, burst=burst)
        if wait:
            raise HTTPException(
                429,
                f"too many failed {what} {where}; retry later",
                headers={"Retry-After": limiter.retry_after_header(wait)},
            )


def _count_failure(request: Request, buckets: tuple[tuple[str, float, int, str], ...]) -> None:
    limiter: RateLimiter = request.app.state.throttle
    for key, per_minute, burst, _ in buckets:
        limiter.take(key, per_minute / 60.0, burst=burst)


@router.post(
    "/persons/{id_number}/citizen-activation",
    status_code=201,
    response_model=ActivationCodeOut,
    responses=STAFF_WRITE_ERRORS,
)
def issue_activation_code(id_number: IdNumberStr, tx: TxDep, keys: KeysDep) -> Response:
    """Print a one-use activation code on the receipt of a citizen standing at the counter
    (identity checked there), valid 72 hours. Any earlier unused code of theirs stops working.
    The citizen then opens their own account at `POST /api/v1/citizen/activate`; a new code for
    someone who has an account resets its password and second factor. Audited on the record."""

    def run() -> ActivationCodeOut:
        code, expires_at = accounts.issue_activation_code(
            tx.session, actor=tx.actor, now=tx.now, id_number=id_number, code_key=keys.code_key
        )
        return ActivationCodeOut(activation_code=code, expires_at=expires_at)

    # The code is a secret shown once: never stored with an Idempotency-Key's answer (a replay
    # answers it null, with a notice).
    return tx.write(
        run,
        body=None,
        shown_once=("activation_code",),
        notice="the code is shown once: issue a new one (it replaces this one)",
    )


@router.post(
    "/citizen/activate",
    status_code=201,
    response_model=ActivateOut,
    responses={**problem_responses(401, 409, 422), **_THROTTLED},
)
async def activate(body: ActivateIn, request: Request, keys: KeysDep) -> ActivateOut:
    """Open your account with the code from the counter receipt and a password of your own (at
    least 10 characters, not a common one, not your id number or birth date). The code works
    once, for 72 hours. A wrong number or code answers 401 and counts towards a limit per
    account and per address (429 with Retry-After); a used, replaced or expired code is a 409
    saying so."""
    buckets = _buckets("activate", body.id_number, client_address(request))
    _refuse_if_throttled(request, buckets, "activations")
    now = get_clock(request).now()
    sessions = request.app.state.sessionmaker

    def run() -> ActivateOut | None:
        with uow.transaction(sessions) as session:
            account = accounts.activate(
                session,
                now=now,
                id_number=body.id_number,
                activation_code=body.activation_code,
                password=body.password,
                code_key=keys.code_key,
            )
            if account is None:
                return None
            return ActivateOut(
                id_number=idnumber.mask(body.id_number),
                activated_at=account.updated_at,
                second_factor=account.totp_enabled,
            )

    answer = await run_in_threadpool(run)  # argon2: tens of milliseconds of CPU
    if answer is None:
        _count_failure(request, buckets)
        raise HTTPException(401, "this id number and activation code do not belong together")
    return answer


@router.post(
    "/citizen/token",
    response_model=CitizenTokenOut,
    responses={**problem_responses(401, 422), **_THROTTLED},
)
async def token(body: CitizenTokenIn, request: Request, keys: KeysDep) -> CitizenTokenOut:
    """Sign in with your id number and password (and `otp`, the authenticator app's code, once
    you have set up a second factor) for a bearer token to the `/api/v1/me` routes. It opens
    nothing else: no staff or unit route takes it. Failures are limited per account and per
    address, as staff sign-ins are (429 with Retry-After)."""
    buckets = _buckets("citizen-login", body.id_number, client_address(request))
    _refuse_if_throttled(request, buckets, "sign-ins")
    now = get_clock(request).now()
    sessions = request.app.state.sessionmaker

    def run() -> tuple[SignIn, str | None]:
        with uow.transaction(sessions) as session:
            outcome, account = accounts.sign_in(
                session,
                now=now,
                id_number=body.id_number,
                password=body.password,
                otp=body.otp,
                totp_sealer=keys.totp_sealer,
            )
            if account is None:
                return outcome, None
            settings = get_settings(request)
            # PyJWT checks expiry against the wall clock, so the token is issued by it too.
            issued = accounts.issue_token(
                account,
                secret=keys.token_key,
                now=dt.datetime.now(dt.UTC),
                ttl_seconds=settings.citizen_token_ttl_seconds,
            )
            return outcome, issued

    outcome, issued = await run_in_threadpool(run)
    if outcome is SignIn.OTP_REQUIRED:
        raise HTTPException(
            401, "this account has a second factor: send `otp`, the code from your authenticator app"
        )
    if issued is None:
        _count_failure(request, buckets)
        what = "one-time code" if outcome is SignIn.OTP_WRONG else "id number or password"
        raise HTTPException(401, f"wrong {what}", headers={"WWW-Authenticate": "Bearer"})
    return CitizenTokenOut(access_token=issued, expires_in=get_settings(request).citizen_token_ttl_seconds)


@router.post("/me/totp", status_code=201, response_model=TotpEnrolOut, responses=problem_responses(401, 409))
def enrol_totp(tx: CitizenTxDep) -> TotpEnrolOut:
    """Start adding a second factor (TOTP, RFC 6238: 6 digits every 30 seconds): the answer has
    the secret and an `otpauth://` URI for an authenticator app. Nothing changes until you
    confirm with a code (`POST /api/v1/me/totp/confirm`); from then on sign-in needs `otp`.
    Lost the phone? A counter prints a new activation code, which resets the account."""

    def run() -> TotpEnrolOut:
        secret, uri = accounts.enrol_totp(
            tx.session, citizen=tx.citizen, now=tx.now, totp_sealer=tx.keys.totp_sealer
        )
        return TotpEnrolOut(secret=secret, otpauth_uri=uri)

    return tx.read(run)


@router.post("/me/totp/confirm", response_model=TotpOut, responses=problem_responses(401, 409, 422))
def confirm_totp(body: TotpConfirmIn, tx: CitizenTxDep) -> TotpOut:
    """Switch the second factor on with a current code from the app."""

    def run() -> TotpOut:
        accounts.confirm_totp(
            tx.session, citizen=tx.citizen, now=tx.now, otp=body.otp, totp_sealer=tx.keys.totp_sealer
        )
        return TotpOut(second_factor=True)

    return tx.read(run)
