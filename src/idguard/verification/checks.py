"""The check log as units and staff read it (核查记录): a unit its own checks, supervisors and
auditors every unit's. Id numbers are stored masked and keyed-hashed (runtime/checklog.py)."""

from __future__ import annotations

import datetime as dt
import uuid

import sqlalchemy as sa
from sqlalchemy.orm import Session

from idguard.core.clock import as_utc
from idguard.core.grants import Actor, Permission
from idguard.db.paging import Page, newest_first
from idguard.verification.models import Check
from idguard.verification.runtime.keyring import UnitView


def check_history(
    session: Session,
    *,
    caller: UnitView | Actor,
    unit: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    result: str | None = None,
    after: tuple[dt.datetime, uuid.UUID] | None = None,
    limit: int = 100,
) -> Page[Check]:
    """Checks newest first; `unit` (staff only) narrows to one unit, a unit always sees its own."""
    stmt = sa.select(Check)
    if isinstance(caller, Actor):
        caller.require(Permission.READ_CHECK_LOG)
        if unit is not None:
            stmt = stmt.where(Check.unit_code == unit)
    else:
        stmt = stmt.where(Check.unit_code == caller.code)
    if since is not None:
        stmt = stmt.where(Check.at >= as_utc(since, "from"))
    if until is not None:
        stmt = stmt.where(Check.at < as_utc(until, "to"))
    if result is not None:
        stmt = stmt.where(Check.result == result)
    return newest_first(session, stmt, keys=(Check.at, Check.id), after=after, limit=limit)
