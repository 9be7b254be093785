"""Offices, staff accounts and authentication."""

from __future__ import annotations

import datetime as dt
import uuid
from functools import lru_cache

import jwt
import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.orm import Session

from idguard.core.errors import InvalidField, RuleViolation
from idguard.core.grants import Actor, Role, bound_to_office
from idguard.db.common import AuditEntry
from idguard.registry.lookups import require_office
from idguard.registry.models import Office, Staff

_hasher = PasswordHasher()
TOKEN_ALGORITHM = "HS256"  # noqa: S105 - an algorithm name, not a secret


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    # Verified against when the username is unknown, so both paths cost one argon2 verification.
    return _hasher.hash("no-such-account")


def add_office(session: Session, *, now: dt.datetime, code: str, name: str, region: str) -> Office:
    if session.get(Office, code) is not None:
        raise RuleViolation(f"office {code} already exists")
    if len(region) != 6 or not region.isdigit():
        raise InvalidField("region", "a region is a 6-digit GB/T 2260 code")
    office = Office(code=code, name=name, region=region, created_at=now)
    session.add(office)
    session.flush()
    return office


def add_staff(
    session: Session,
    *,
    now: dt.datetime,
    username: str,
    password: str,
    role: Role,
    office: str | None,
) -> Staff:
    if bound_to_office(role) and office is None:
        raise InvalidField("office", "a clerk is bound to one office")
    if office is not None:
        require_office(session, office)
    if len(password) < 8:
        raise InvalidField("password", "a password has at least 8 characters")
    if session.scalar(sa.select(Staff.id).where(Staff.username == username)) is not None:
        raise RuleViolation(f"user {username} already exists")
    staff = Staff(
        username=username,
        password_hash=_hasher.hash(password),
        role=role,
        office_code=office,
        created_at=now,
    )
    session.add(staff)
    session.flush()
    session.add(AuditEntry(at=now, staff_id=None, action="staff.add", detail=f"{username} {role.value}"))
    return staff


def authenticate(session: Session, *, username: str, password: str) -> Staff | None:
    """Return the active account, or None; timing does not reveal whether the username exists."""
    staff = session.scalar(sa.select(Staff).where(Staff.username == username))
    stored = staff.password_hash if staff is not None and staff.active else _dummy_hash()
    try:
        _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return None
    return staff if staff is not None and staff.active else None


def issue_token(staff: Staff, *, secret: str, now: dt.datetime, ttl_seconds: int) -> str:
    claims = {
        "sub": str(staff.id),
        "role": staff.role.value,
        "iat": int(now.timestamp()),
        "exp": int(now.timestamp()) + ttl_seconds,
        "typ": "staff",
    }
    return jwt.encode(claims, secret, algorithm=TOKEN_ALGORITHM)


def actor_from_token(session: Session, token: str, *, secret: str) -> Actor | None:
    """The acting staff member for a bearer token, re-read so a disabled account stops at once."""
    try:
        claims = jwt.decode(token, secret, algorithms=[TOKEN_ALGORITHM], options={"require": ["exp", "sub"]})
        staff_id = uuid.UUID(claims["sub"])
    except (jwt.InvalidTokenError, ValueError, KeyError):
        return None
    if claims.get("typ") != "staff":  # a citizen's token is never a staff token (citizens/tokens.py)
        return None
    staff = session.get(Staff, staff_id)
    if staff is None or not staff.active:
        return None
    return Actor(staff_id=staff.id, username=staff.username, role=staff.role, office=staff.office_code)
