"""Test data: valid id numbers, the standard world of offices and staff, tokens."""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from dataclasses import dataclass

import sqlalchemy as sa

from idguard.config import Environment, Settings
from idguard.core.grants import Actor, Role
from idguard.core.idnumber import check_character
from idguard.registry.models import Office, Staff
from idguard.registry.staff import _hasher, issue_token

NOW = dt.datetime(2026, 6, 15, 2, 0, tzinfo=dt.UTC)  # 10:00 in Beijing
SECRET = "test-secret-key-0123456789abcdef"
# What the service signs staff tokens with, given SECRET (config.Settings.token_key).
TOKEN_KEY = Settings(database_url="sqlite://", env=Environment.TEST, secret_key=SECRET).token_key
# What the check log keys its id-number hashes with, given SECRET (config.Settings.check_hash_key).
CHECK_HASH_KEY = Settings(database_url="sqlite://", env=Environment.TEST, secret_key=SECRET).check_hash_key
PASSWORD = "correct horse battery"

_sequence = itertools.count(1)


def id_number(birth: dt.date, *, female: bool = False, region: str = "110105") -> str:
    """A valid GB 11643 number, unique within the test run."""
    n = next(_sequence) % 500
    seq = 2 * n + (0 if female else 1)
    body = f"{region}{birth:%Y%m%d}{seq:03d}"
    return body + check_character(body)


OFFICE_A = "110105001"
OFFICE_B = "310101002"


@dataclass(frozen=True)
class StaffSpec:
    username: str
    role: Role
    office: str | None
    id: uuid.UUID


STAFF = [
    StaffSpec("clerk_a", Role.CLERK, OFFICE_A, uuid.UUID(int=1)),
    StaffSpec("clerk_b", Role.CLERK, OFFICE_B, uuid.UUID(int=2)),
    StaffSpec("supervisor", Role.SUPERVISOR, None, uuid.UUID(int=3)),
    StaffSpec("auditor", Role.AUDITOR, None, uuid.UUID(int=4)),
    StaffSpec("admin", Role.ADMIN, None, uuid.UUID(int=5)),
]

_password_hash: list[str] = []


def seed_world(connection: sa.Connection) -> None:
    """Two offices and one account per role (argon2 hash computed once per run)."""
    if not _password_hash:
        _password_hash.append(_hasher.hash(PASSWORD))
    connection.execute(
        sa.insert(Office),
        [
            {"code": OFFICE_A, "name": "朝阳区建国门派出所", "region": "110105", "created_at": NOW},
            {"code": OFFICE_B, "name": "黄浦区外滩派出所", "region": "310101", "created_at": NOW},
        ],
    )
    connection.execute(
        sa.insert(Staff),
        [
            {
                "id": s.id,
                "username": s.username,
                "password_hash": _password_hash[0],
                "role": s.role,
                "office_code": s.office,
                "active": True,
                "created_at": NOW,
            }
            for s in STAFF
        ],
    )


def actor(username: str) -> Actor:
    spec = next(s for s in STAFF if s.username == username)
    return Actor(staff_id=spec.id, username=spec.username, role=spec.role, office=spec.office)


def token(username: str) -> str:
    spec = next(s for s in STAFF if s.username == username)
    staff = Staff(id=spec.id, username=spec.username, role=spec.role, office_code=spec.office)
    # JWT expiry is checked against the real clock, not the test clock.
    return issue_token(staff, secret=TOKEN_KEY, now=dt.datetime.now(dt.UTC), ttl_seconds=3600)


def auth(username: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(username)}"}
