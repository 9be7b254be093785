"""Citizen accounts: activation codes issued at a counter, activation, sign-in, the optional TOTP
second factor, and the tokens a citizen acts with.

A citizen token is signed with a key of its own (`citizen_token_key`, HKDF from the service
secret, never the staff key) and says `typ: citizen`; the staff token check refuses any token
that is not `typ: staff`, and unit keys are not JWTs at all. So a citizen token reaches only the
citizen routes, and only the account it names (`sub`).
"""

from __future__ import annotations

import datetime as dt
import hmac
import uuid
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache

import jwt
import pyotp
import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.orm import Session

from idguard.citizens import rules
from idguard.citizens.models import ActivationCode, CitizenAccount
from idguard.core import idnumber
from idguard.core.clock import today_cst
from idguard.core.errors import InvalidField, NotFound, RuleViolation
from idguard.core.grants import Actor, Permission
from idguard.core.sealing import Sealer, SealError
from idguard.db.common import AuditEntry
from idguard.registry.lookups import person_by_number
from idguard.registry.models import Person

_hasher = PasswordHasher()
TOKEN_ALGORITHM = "HS256"  # noqa: S105 - an algorithm name, not a secret
TOKEN_TYPE = "citizen"  # noqa: S105 - a claim value, not a secret
TOTP_ISSUER = "idguard"
TOTP_STEP = 30


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    # Verified against when there is no account, so both paths cost one argon2 verification.
    return _hasher.hash("no-such-citizen-account")


@dataclass(frozen=True, slots=True)
class Citizen:
    """The citizen on whose behalf a request acts (from a citizen token)."""

    person_id: uuid.UUID
    id_number: str
    name: str
    hukou_office: str


# --- activation codes (a clerk, at a counter) ----------------------------------------------------


def issue_activation_code(
    session: Session, *, actor: Actor, now: dt.datetime, id_number: str, code_key: bytes
) -> tuple[str, dt.datetime]:
    """A one-use code, valid ACTIVATION_TTL, printed on the receipt of a citizen who stood at the
    counter (their identity checked there). Any earlier unused code of theirs is withdrawn. The
    code is stored only as a keyed hash; the act is audited on the person's record."""
    actor.require(Permission.REGISTRY_WRITE)
    person = person_by_number(session, id_number, now=now)
    if person.revoked_reason is not None:
        raise RuleViolation("the person's registration is revoked: no account can be opened")
    session.execute(
        sa.update(ActivationCode)
        .where(
            ActivationCode.person_id == person.id,
            ActivationCode.used_at.is_(None),
            ActivationCode.withdrawn_at.is_(None),
        )
        .values(withdrawn_at=now)
    )
    code = rules.new_activation_code()
    normalised = rules.normalise_code(code)
    assert normalised is not None  # noqa: S101 - a fresh code is well formed
    expires_at = now + rules.ACTIVATION_TTL
    session.add(
        ActivationCode(
            person_id=person.id,
            code_hash=rules.code_hash(code_key, normalised),
            issued_by=actor.staff_id,
            office=actor.office,
            issued_at=now,
            expires_at=expires_at,
        )
    )
    session.add(
        AuditEntry(at=now, staff_id=actor.staff_id, action="citizen.activation_code", person_id=person.id)
    )
    session.flush()
    return code, expires_at


def _person(session: Session, id_number: str, now: dt.datetime) -> Person | None:
    number = idnumber.parse(id_number, today=today_cst(now)).value
    return session.scalars(sa.select(Person).where(Person.id_number == number)).one_or_none()


def activate(
    session: Session,
    *,
    now: dt.datetime,
    id_number: str,
    activation_code: str,
    password: str,
    code_key: bytes,
) -> CitizenAccount | None:
    """Open (or, with a new code from a counter, reset) the account: None when the number and
    code do not belong together (the route counts it as a failed attempt). An expired, used or
    withdrawn code is a RuleViolation saying so: only whoever holds the code learns it.

    A reset sets the new password, switches the second factor off (a lost phone is the usual
    reason to come to the counter) and ends every token issued before."""
    person = _person(session, id_number, now)
    normalised = rules.normalise_code(activation_code)
    if person is None or normalised is None:
        return None
    rules.check_password(password, id_number=person.id_number, birth_date=person.birth_date)
    digest = rules.code_hash(code_key, normalised)
    code = session.scalars(
        sa.select(ActivationCode)
        .where(ActivationCode.person_id == person.id, ActivationCode.code_hash == digest)
        .with_for_update()
    ).first()
    if code is None:
        return None
    if code.used_at is not None:
        raise RuleViolation("this activation code has been used already: ask a counter for a new one")
    if code.withdrawn_at is not None:
        raise RuleViolation("this activation code was replaced by a newer one: use the newest receipt")
    if code.expires_at <= now:
        raise RuleViolation("this activation code has expired (72 hours): ask a counter for a new one")
    if person.revoked_reason is not None:
        raise RuleViolation("the person's registration is revoked: no account can be opened")
    code.used_at = now
    password_hash = _hasher.hash(password)
    account = session.get(CitizenAccount, person.id, with_for_update=True)
    if account is None:
        account = CitizenAccount(
            person_id=person.id,
            password_hash=password_hash,
            totp_enabled=False,
            token_version=1,
            activated_at=now,
            updated_at=now,
        )
        session.add(account)
    else:
        account.password_hash = password_hash
        account.totp_secret = None
        account.totp_enabled = False
        account.totp_last_step = None
        account.token_version += 1
        account.updated_at = now
    session.flush()
    return account


# --- sign-in ---------------------------------------------------------------------------------


class SignIn(Enum):
    OK = "ok"
    WRONG = "wrong"  # no such account, or a wrong password
    OTP_REQUIRED = "otp_required"  # password right, the account has a second factor: send `otp`
    OTP_WRONG = "otp_wrong"


def sign_in(
    session: Session,
    *,
    now: dt.datetime,
    id_number: str,
    password: str,
    otp: str | None,
    totp_sealer: Sealer,
) -> tuple[SignIn, CitizenAccount | None]:
    """Check the password (one argon2 verification whether or not the account exists), then the
    one-time code when the account has a second factor. A code is accepted once."""
    try:
        person = _person(session, id_number, now)
    except InvalidField:
        person = None
    account = session.get(CitizenAccount, person.id) if person is not None else None
    usable = account is not None and person is not None and person.revoked_reason is None
    stored = account.password_hash if usable and account is not None else _dummy_hash()
    try:
        _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return SignIn.WRONG, None
    if not usable or account is None:
        return SignIn.WRONG, None
    if not account.totp_enabled:
        return SignIn.OK, account
    if otp is None:
        return SignIn.OTP_REQUIRED, None
    step = _totp_step(account, otp, now, totp_sealer)
    if step is None:
        return SignIn.OTP_WRONG, None
    account.totp_last_step = step
    session.flush()
    return SignIn.OK, account


def _totp_step(account: CitizenAccount, otp: str, now: dt.datetime, sealer: Sealer) -> int | None:
    """The time step `otp` belongs to (this one, or one either side for clock drift), if it is
    later than the last code used; None otherwise."""
    if account.totp_secret is None:
        return None
    totp = pyotp.TOTP(_open_secret(account, sealer), interval=TOTP_STEP)
    current = int(now.timestamp()) // TOTP_STEP
    for step in (current - 1, current, current + 1):
        if account.totp_last_step is not None and step <= account.totp_last_step:
            continue
        if hmac.compare_digest(totp.at(step * TOTP_STEP), otp.strip()):
            return step
    return None


def _open_secret(account: CitizenAccount, sealer: Sealer) -> str:
    assert account.totp_secret is not None  # noqa: S101 - checked by the callers
    try:
        return sealer.open(account.totp_secret, context=f"totp/{account.person_id}")
    except SealError:
        raise RuleViolation(
            "the second factor cannot be read (the service secret changed): a counter can reset the account"
        ) from None


def enrol_totp(
    session: Session, *, citizen: Citizen, now: dt.datetime, totp_sealer: Sealer
) -> tuple[str, str]:
    """Start adding a second factor: a new secret (sealed at rest) and its otpauth:// URI for an
    authenticator app. It takes effect once confirmed with a code (`confirm_totp`)."""
    account = _account(session, citizen)
    if account.totp_enabled:
        raise RuleViolation("a second factor is already set up")
    secret = pyotp.random_base32()
    account.totp_secret = totp_sealer.seal(secret, context=f"totp/{account.person_id}")
    account.totp_last_step = None
    account.updated_at = now
    session.flush()
    uri = pyotp.TOTP(secret, interval=TOTP_STEP).provisioning_uri(
        name=idnumber.mask(citizen.id_number), issuer_name=TOTP_ISSUER
    )
    return secret, uri


def confirm_totp(
    session: Session, *, citizen: Citizen, now: dt.datetime, otp: str, totp_sealer: Sealer
) -> None:
    """Switch the second factor on with a code from the app: from now on, sign-in needs `otp`."""
    account = _account(session, citizen)
    if account.totp_enabled:
        raise RuleViolation("a second factor is already set up")
    if account.totp_secret is None:
        raise RuleViolation("start with POST /api/v1/me/totp")
    step = _totp_step(account, otp, now, totp_sealer)
    if step is None:
        raise InvalidField("otp", "the code does not match: check the app's clock and try the next code")
    account.totp_enabled = True
    account.totp_last_step = step
    account.updated_at = now
    session.flush()


def _account(session: Session, citizen: Citizen) -> CitizenAccount:
    account = session.get(CitizenAccount, citizen.person_id, with_for_update=True)
    if account is None:
        raise NotFound("no account")
    return account


# --- tokens ------------------------------------------------------------------------------------


def issue_token(account: CitizenAccount, *, secret: str, now: dt.datetime, ttl_seconds: int) -> str:
    claims = {
        "sub": str(account.person_id),
        "typ": TOKEN_TYPE,
        "ver": account.token_version,
        "iat": int(now.timestamp()),
        "exp": int(now.timestamp()) + ttl_seconds,
    }
    return jwt.encode(claims, secret, algorithm=TOKEN_ALGORITHM)


def citizen_from_token(session: Session, token: str, *, secret: str) -> Citizen | None:
    """The citizen a token names, re-read: a reset account (newer `ver`) or a revoked
    registration stops at once."""
    try:
        claims = jwt.decode(
            token, secret, algorithms=[TOKEN_ALGORITHM], options={"require": ["exp", "sub", "typ", "ver"]}
        )
        person_id = uuid.UUID(claims["sub"])
    except (jwt.InvalidTokenError, ValueError, KeyError):
        return None
    if claims.get("typ") != TOKEN_TYPE:
        return None
    row = session.execute(
        sa.select(CitizenAccount.token_version, Person)
        .join(Person, Person.id == CitizenAccount.person_id)
        .where(CitizenAccount.person_id == person_id)
    ).one_or_none()
    if row is None:
        return None
    version, person = row
    if version != claims["ver"] or person.revoked_reason is not None:
        return None
    return Citizen(
        person_id=person.id, id_number=person.id_number, name=person.name, hukou_office=person.hukou_office
    )
