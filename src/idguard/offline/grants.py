"""Granting `offline` to a unit (a supervisor's decision, audited): only such a unit may download
the offline set and upload offline checks."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.orm import Session

from idguard.core.errors import NotFound
from idguard.core.grants import Actor, Permission
from idguard.db.common import AuditEntry
from idguard.offline.models import OfflineGrant
from idguard.verification.models import Unit
from idguard.verification.units import UnitFlag


def set_offline(session: Session, *, unit_code: str, offline: bool, actor: Actor, now: dt.datetime) -> bool:
    """Grant (`offline=True`) or withdraw `offline` for the unit; returns the new value. Setting
    the value it already has changes nothing and records nothing. Audited."""
    actor.require(Permission.ONBOARD_UNITS)
    if session.get(Unit, unit_code) is None:
        raise NotFound(f"no unit {unit_code}")
    grant = session.get(OfflineGrant, unit_code, with_for_update=True)
    if (grant is not None) == offline:
        return offline
    if offline:
        session.add(OfflineGrant(unit_code=unit_code, granted_at=now, granted_by=actor.staff_id))
    else:
        session.delete(grant)
    session.add(
        AuditEntry(
            at=now,
            staff_id=actor.staff_id,
            action="unit.offline" if offline else "unit.offline_withdrawn",
            detail=unit_code,
        )
    )
    session.flush()
    return offline


def has_offline(session: Session, unit_code: str) -> bool:
    return (
        session.scalar(sa.select(OfflineGrant.unit_code).where(OfflineGrant.unit_code == unit_code))
        is not None
    )


def granted(session: Session, unit_codes: Sequence[str]) -> frozenset[str]:
    """Which of `unit_codes` have `offline` (one query, for a list of units)."""
    if not unit_codes:
        return frozenset()
    return frozenset(
        session.scalars(sa.select(OfflineGrant.unit_code).where(OfflineGrant.unit_code.in_(list(unit_codes))))
    )


def _assign(session: Session, unit_code: str, offline: bool, actor: Actor, now: dt.datetime) -> bool:
    return set_offline(session, unit_code=unit_code, offline=offline, actor=actor, now=now)


# How the units routes (POST /api/v1/units, PATCH /api/v1/units/{code}) set and show `offline`
# in their own transaction: verification sits below this feature and cannot import it, so
# `install` registers this in `app.state.unit_flags`.
UNIT_FLAG = UnitFlag(assign=_assign, granted=granted)
