"""Statistics for supervisors (统计), the data the console charts: checks per sector per day,
per unit the share of person-card checks and the invalid and mismatch rates, and the units with
the most violations in a month. Aggregates only: no id number, no person."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from idguard.accountability import compliance
from idguard.accountability.rules import Ladder
from idguard.core.clock import CST
from idguard.core.errors import InvalidField
from idguard.core.grants import Actor, Permission
from idguard.verification.models import Check, Unit

MAX_DAYS = 92


def _range(since: dt.date, until: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """[since, until] as China-time days, as UTC instants [start, end)."""
    if until < since:
        raise InvalidField("to", "must not be before `from`")
    if (until - since).days + 1 > MAX_DAYS:
        raise InvalidField("to", f"at most {MAX_DAYS} days per request")
    start = dt.datetime.combine(since, dt.time(), tzinfo=CST).astimezone(dt.UTC)
    end = dt.datetime.combine(until + dt.timedelta(days=1), dt.time(), tzinfo=CST).astimezone(dt.UTC)
    return start, end


def _cst_day(session: Session) -> sa.ColumnElement[Any]:
    """The check's calendar day in China, as SQL (the two databases spell it apart)."""
    if session.get_bind().dialect.name == "postgresql":
        return sa.cast(sa.func.timezone("Asia/Shanghai", Check.at), sa.Date)
    return sa.func.date(Check.at, "+8 hours")


@dataclass(frozen=True, slots=True)
class SectorDay:
    day: dt.date
    sector: str
    checks: int


def checks_per_sector(session: Session, *, actor: Actor, since: dt.date, until: dt.date) -> list[SectorDay]:
    actor.require(Permission.READ_CHECK_LOG)
    start, end = _range(since, until)
    day = _cst_day(session).label("day")
    rows = session.execute(
        sa.select(day, Unit.sector, sa.func.count())
        .join(Unit, Unit.code == Check.unit_code)
        .where(Check.at >= start, Check.at < end)
        .group_by(day, Unit.sector)
        .order_by(day, Unit.sector)
    )
    return [
        SectorDay(d if isinstance(d, dt.date) else dt.date.fromisoformat(str(d)), sector, int(n))
        for d, sector, n in rows
    ]


def _count_if(condition: sa.ColumnElement[bool]) -> sa.ColumnElement[Any]:
    return sa.func.sum(sa.case((condition, 1), else_=0))


@dataclass(frozen=True, slots=True)
class UnitRates:
    unit_code: str
    sector: str
    checks: int
    person_checks: int  # with a fingerprint comparison (人证一致性核查 by finger)
    invalid: int
    mismatch: int

    def share(self, n: int) -> float:
        return round(n / self.checks, 6) if self.checks else 0.0


def unit_rates(session: Session, *, actor: Actor, since: dt.date, until: dt.date) -> list[UnitRates]:
    actor.require(Permission.READ_CHECK_LOG)
    start, end = _range(since, until)
    rows = session.execute(
        sa.select(
            Check.unit_code,
            Unit.sector,
            sa.func.count(),
            _count_if(Check.fingerprint_match.is_not(None)),
            _count_if(Check.result == "invalid"),
            _count_if(Check.result == "mismatch"),
        )
        .join(Unit, Unit.code == Check.unit_code)
        .where(Check.at >= start, Check.at < end)
        .group_by(Check.unit_code, Unit.sector)
        .order_by(Check.unit_code)
    )
    return [
        UnitRates(code, sector, int(n), int(p or 0), int(i or 0), int(m or 0))
        for code, sector, n, p, i, m in rows
    ]


def top_violators(
    session: Session, *, actor: Actor, month: str, ladder: Ladder, limit: int
) -> list[compliance.Row]:
    """The month's units with the most violations (then the highest rate), from the stored
    figures once the month is closed."""
    actor.require(Permission.READ_CHECK_LOG)
    rows = compliance.report(session, month=month, ladder=ladder).rows
    ranked = sorted(
        (r for r in rows if r.violations), key=lambda r: (-r.violations, -r.violation_rate, r.unit_code)
    )
    return ranked[:limit]
