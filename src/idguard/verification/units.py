"""Onboarding ID-using units and managing their API keys."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from idguard import uow
from idguard.core.errors import InvalidField, NotFound, RuleViolation
from idguard.core.grants import Actor, Permission
from idguard.db.common import AuditEntry
from idguard.verification.models import RegistryVersion, Unit, UnitKey
from idguard.verification.rules import PURPOSES, UnitStatus, new_api_key

DEFAULT_ROTATION_GRACE = dt.timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class IssuedKey:
    unit: Unit
    api_key: str  # shown once, never stored
    webhook_secret: str


def webhook_secret(secret_key: str, unit_code: str) -> str:
    """The unit's webhook signing secret, derived from the service secret (nothing to store)."""
    return hmac.new(secret_key.encode(), f"webhook:{unit_code}".encode(), hashlib.sha256).hexdigest()


def _bump(session: Session) -> None:
    """Tell every verification worker that units or keys changed (they poll this counter, and
    are woken to apply it before the answer: uow.changed)."""
    version = session.execute(
        sa.update(RegistryVersion)
        .where(RegistryVersion.name == "units")
        .values(version=RegistryVersion.version + 1)
        .returning(RegistryVersion.version)
    ).scalar_one()
    uow.changed(session, units_version=int(version))


def _add_key(session: Session, unit_code: str, now: dt.datetime) -> str:
    key, prefix, digest = new_api_key()
    session.add(UnitKey(unit_code=unit_code, prefix=prefix, key_hash=digest, created_at=now))
    return key


def onboard(
    session: Session,
    *,
    actor: Actor | None,
    now: dt.datetime,
    secret_key: str,
    code: str,
    name: str,
    sector: str,
    purposes: list[str],
    rate_limit: int,
    webhook_url: str | None = None,
) -> IssuedKey:
    """Onboard a unit (supervisor only; `actor=None` is the CLI run by an operator)."""
    if actor is not None:
        actor.require(Permission.ONBOARD_UNITS)
    unknown = sorted(set(purposes) - PURPOSES)
    if unknown:
        raise InvalidField("purposes", f"unknown purposes {unknown}; known: {sorted(PURPOSES)}")
    if not purposes:
        raise InvalidField("purposes", "a unit needs at least one purpose")
    if session.get(Unit, code) is not None:
        raise RuleViolation(f"unit {code} already exists")
    unit = Unit(
        code=code,
        name=name,
        sector=sector,
        purposes=sorted(set(purposes)),
        rate_limit=rate_limit,
        status=UnitStatus.ACTIVE,
        webhook_url=webhook_url,
        created_at=now,
        updated_at=now,
    )
    session.add(unit)
    session.flush()
    key = _add_key(session, code, now)
    session.add(
        AuditEntry(at=now, staff_id=actor.staff_id if actor else None, action="unit.onboard", detail=code)
    )
    _bump(session)
    session.flush()
    return IssuedKey(unit=unit, api_key=key, webhook_secret=webhook_secret(secret_key, code))


def suspect_harvesting(session: Session, *, now: dt.datetime, code: str, reason: str) -> bool:
    """Mark the unit suspected of harvesting (the verifier does, from its checks): every worker
    throttles it within a poll. Audited and logged for supervisors; False if already marked."""
    unit = session.get(Unit, code, with_for_update={"key_share": True})
    if unit is None or unit.harvesting_suspected_at is not None:
        return False
    unit.harvesting_suspected_at = now
    unit.harvesting_reason = reason[:200]
    unit.updated_at = now
    session.add(
        AuditEntry(
            at=now, staff_id=None, action="unit.harvesting_suspected", detail=f"{code}: {reason}"[:200]
        )
    )
    _bump(session)
    session.flush()
    return True


def clear_harvesting(session: Session, *, actor: Actor, now: dt.datetime, code: str) -> Unit:
    """A supervisor has looked into it: the unit's own rate applies again."""
    actor.require(Permission.ONBOARD_UNITS)
    unit = _unit(session, code)
    if unit.harvesting_suspected_at is None:
        raise RuleViolation(f"unit {code} is not suspected of harvesting")
    session.add(
        AuditEntry(
            at=now,
            staff_id=actor.staff_id,
            action="unit.harvesting_cleared",
            detail=f"{code}: was {unit.harvesting_reason}"[:200],
        )
    )
    unit.harvesting_suspected_at = None
    unit.harvesting_reason = None
    unit.updated_at = now
    _bump(session)
    session.flush()
    return unit


def list_units(session: Session, *, actor: Actor) -> list[Unit]:
    """Every unit, by code (supervisors, auditors, admins)."""
    actor.require(Permission.READ_UNITS)
    return list(session.scalars(sa.select(Unit).order_by(Unit.code)))


def _unit(session: Session, code: str) -> Unit:
    unit = session.get(Unit, code)
    if unit is None:
        raise NotFound(f"no unit {code}")
    return unit


def rotate_key(
    session: Session,
    *,
    actor: Actor | None,
    now: dt.datetime,
    secret_key: str,
    code: str,
    grace: dt.timedelta = DEFAULT_ROTATION_GRACE,
) -> IssuedKey:
    """A new key; the keys in use keep working until `now + grace`, then stop."""
    if actor is not None:
        actor.require(Permission.ONBOARD_UNITS)
    unit = _unit(session, code)
    live = session.scalars(
        sa.select(UnitKey).where(UnitKey.unit_code == code, UnitKey.revoked_at.is_(None))
    ).all()
    for old in live:
        if old.expires_at is None or old.expires_at > now + grace:
            old.expires_at = now + grace
    key = _add_key(session, code, now)
    session.add(
        AuditEntry(at=now, staff_id=actor.staff_id if actor else None, action="unit.rotate_key", detail=code)
    )
    _bump(session)
    session.flush()
    return IssuedKey(unit=unit, api_key=key, webhook_secret=webhook_secret(secret_key, code))


def revoke_keys(session: Session, *, actor: Actor | None, now: dt.datetime, code: str) -> Unit:
    """Revoke every key of the unit, effective at once (a compromised key)."""
    if actor is not None:
        actor.require(Permission.ONBOARD_UNITS)
    unit = _unit(session, code)
    session.execute(
        sa.update(UnitKey)
        .where(UnitKey.unit_code == code, UnitKey.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    session.add(
        AuditEntry(at=now, staff_id=actor.staff_id if actor else None, action="unit.revoke_keys", detail=code)
    )
    _bump(session)
    session.flush()
    return unit


def suspend(session: Session, *, actor: Actor, now: dt.datetime, code: str, reason: str) -> Unit:
    """Suspend the unit (a supervisor's decision on an accountability case): every key of it
    stops on every worker within one poll of the `units` version, answering 401 with a problem
    detail that says so (routes/deps.py). Its keys are kept, not revoked: reinstating restores
    them. Audited."""
    actor.require(Permission.ONBOARD_UNITS)
    unit = session.get(Unit, code, with_for_update={"key_share": True})
    if unit is None:
        raise NotFound(f"no unit {code}")
    if unit.status is UnitStatus.SUSPENDED:
        raise RuleViolation(f"unit {code} is already suspended")
    unit.status = UnitStatus.SUSPENDED
    unit.updated_at = now
    session.add(
        AuditEntry(at=now, staff_id=actor.staff_id, action="unit.suspend", detail=f"{code}: {reason}"[:200])
    )
    _bump(session)
    session.flush()
    return unit


def reinstate(session: Session, *, actor: Actor, now: dt.datetime, code: str, reason: str) -> Unit:
    """Lift a suspension: the unit's keys (those neither revoked nor expired) work again on every
    worker within one poll. Audited."""
    actor.require(Permission.ONBOARD_UNITS)
    unit = session.get(Unit, code, with_for_update={"key_share": True})
    if unit is None:
        raise NotFound(f"no unit {code}")
    if unit.status is not UnitStatus.SUSPENDED:
        raise RuleViolation(f"unit {code} is not suspended")
    unit.status = UnitStatus.ACTIVE
    unit.updated_at = now
    session.add(
        AuditEntry(at=now, staff_id=actor.staff_id, action="unit.reinstate", detail=f"{code}: {reason}"[:200])
    )
    _bump(session)
    session.flush()
    return unit
