"""Monthly compliance (合规): per unit, counts per class, violation rate and level.

A month is *open* until it is closed; its figures are computed from the transactions as they
stand (provisional: a transaction's class can still change while a check after it may arrive).
Closing (`close_month`: `idguard compliance close YYYY-MM`, or the first read once the month can
be closed, i.e. its end plus the check window has passed) re-classifies the month's transactions
in one statement, aggregates them in one GROUP BY, and stores one `compliance_months` row per unit
and a `closed_months` row. From then on every read answers from the stored rows — a primary-key
range read — and the month takes no new transactions.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from idguard.accountability.classify import classify_where
from idguard.accountability.models import ClosedMonth, ComplianceMonth, Transaction
from idguard.accountability.rules import VIOLATIONS, Ladder, Level, TxClass, closable_at, violation_rate
from idguard.core.errors import RuleViolation
from idguard.db.common import AuditEntry
from idguard.verification.models import Unit

CLASS_COLUMNS = tuple(c.value for c in TxClass)


@dataclass(frozen=True, slots=True)
class Row:
    unit_code: str
    transactions: int
    counts: dict[str, int]  # per TxClass value
    violation_rate: float
    level: Level

    @property
    def violations(self) -> int:
        return sum(self.counts[c.value] for c in VIOLATIONS)


@dataclass(frozen=True, slots=True)
class Report:
    month: str
    closed: bool
    closed_at: dt.datetime | None
    rows: list[Row]


def row_dict(r: Row) -> dict[str, object]:
    """A row as the compliance routes answer it."""
    return {
        "unit_code": r.unit_code,
        "transactions": r.transactions,
        **r.counts,
        "violations": r.violations,
        "violation_rate": r.violation_rate,
        "level": r.level.value,
    }


def items_json(rows: Sequence[Row]) -> str:
    return json.dumps([row_dict(r) for r in rows], separators=(",", ":"), ensure_ascii=False)


def _row(unit_code: str, counts: dict[str, int], ladder: Ladder) -> Row:
    total = sum(counts.values())
    violations = sum(counts[c.value] for c in VIOLATIONS)
    return Row(unit_code, total, counts, violation_rate(total, violations), ladder.level(total, violations))


def _live_counts(session: Session, month: str, unit_code: str | None) -> dict[str, dict[str, int]]:
    """{unit: {class: count}} for the month, from the transactions, in one GROUP BY."""
    stmt = (
        sa.select(Transaction.unit_code, Transaction.classification, sa.func.count())
        .where(Transaction.month == month)
        .group_by(Transaction.unit_code, Transaction.classification)
    )
    if unit_code is not None:
        stmt = stmt.where(Transaction.unit_code == unit_code)
    counts: dict[str, dict[str, int]] = {}
    for code, cls, n in session.execute(stmt):
        per = counts.setdefault(code, dict.fromkeys(CLASS_COLUMNS, 0))
        if cls is not None:
            per[TxClass(cls).value] += int(n)
    return counts


def _units(session: Session, unit_code: str | None) -> list[str]:
    stmt = sa.select(Unit.code).order_by(Unit.code)
    if unit_code is not None:
        stmt = stmt.where(Unit.code == unit_code)
    return list(session.scalars(stmt))


def live(session: Session, *, month: str, ladder: Ladder, unit_code: str | None = None) -> list[Row]:
    """Every unit's row (or one unit's), computed now: units with no transactions have zeros."""
    counts = _live_counts(session, month, unit_code)
    return [
        _row(code, counts.get(code, dict.fromkeys(CLASS_COLUMNS, 0)), ladder)
        for code in _units(session, unit_code)
    ]


def is_closed(session: Session, month: str) -> ClosedMonth | None:
    return session.get(ClosedMonth, month)


def close_month(
    session: Session,
    *,
    month: str,
    now: dt.datetime,
    window: dt.timedelta,
    ladder: Ladder,
    ladder_text: str,
    staff_id: uuid.UUID | None,
) -> ClosedMonth:
    """Freeze the month: re-classify its transactions (checks made after a transaction, up to a
    window later, are in by now), store one row per unit. Refused before `closable_at` and for a
    month already closed. `staff_id` None: the system (CLI operator or the first read)."""
    if now < closable_at(month, window):
        raise RuleViolation(
            f"month {month} cannot be closed before {closable_at(month, window).isoformat()} "
            "(its end plus the check window: checks made after its last transactions still count)"
        )
    if session.get(ClosedMonth, month) is not None:
        raise RuleViolation(f"month {month} is already closed")
    # Claim the month first: a concurrent close waits on this row (PostgreSQL) or the write
    # lock (SQLite), then fails on the primary key instead of storing the rows twice.
    closed = ClosedMonth(
        month=month,
        closed_at=now,
        closed_by=staff_id,
        units=0,
        transactions=0,
        window_hours=int(window.total_seconds() // 3600),
        ladder=ladder_text[:200],
        items_json="[]",
    )
    session.add(closed)
    session.flush()
    session.execute(
        classify_where(Transaction.month == month), execution_options={"synchronize_session": False}
    )
    rows = live(session, month=month, ladder=ladder)
    if rows:
        session.execute(
            sa.insert(ComplianceMonth),
            [
                {
                    "month": month,
                    "unit_code": r.unit_code,
                    "transactions": r.transactions,
                    **r.counts,
                    "violation_rate": r.violation_rate,
                    "level": r.level,
                }
                for r in rows
            ],
        )
    closed.units = len(rows)
    closed.transactions = sum(r.transactions for r in rows)
    closed.items_json = items_json(rows)
    session.add(AuditEntry(at=now, staff_id=staff_id, action="compliance.close", detail=month))
    session.flush()
    return closed


def stored(
    session: Session,
    *,
    month: str,
    unit_code: str | None = None,
    after: str | None = None,
    limit: int | None = None,
) -> list[Row]:
    """The month's frozen rows, by unit code: plain column tuples (no ORM objects), since the
    whole month for every unit is read at once (10,000 units well within 200 ms)."""
    c = ComplianceMonth
    stmt = (
        sa.select(
            c.unit_code,
            c.transactions,
            *(getattr(c, name) for name in CLASS_COLUMNS),
            c.violation_rate,
            c.level,
        )
        .where(c.month == month)
        .order_by(c.unit_code)
    )
    if unit_code is not None:
        stmt = stmt.where(c.unit_code == unit_code)
    if after is not None:
        stmt = stmt.where(c.unit_code > after)
    if limit is not None:
        stmt = stmt.limit(limit)
    width = len(CLASS_COLUMNS)
    return [
        Row(r[0], r[1], dict(zip(CLASS_COLUMNS, r[2 : 2 + width], strict=True)), r[2 + width], r[3 + width])
        for r in session.execute(stmt)
    ]


def report(session: Session, *, month: str, ladder: Ladder, unit_code: str | None = None) -> Report:
    """The month: stored rows once closed, else computed now (provisional)."""
    closed = session.get(ClosedMonth, month)
    if closed is not None:
        return Report(month, True, closed.closed_at, stored(session, month=month, unit_code=unit_code))
    return Report(month, False, None, live(session, month=month, ladder=ladder, unit_code=unit_code))


def violations_page(
    session: Session,
    *,
    unit_code: str,
    month: str,
    after: tuple[dt.datetime, int] | None,
    limit: int,
) -> tuple[list[Any], tuple[dt.datetime, int] | None]:
    """The unit's non-compliant transactions of the month, oldest first (by `at`, then id);
    and the keys to continue after, None at the end."""
    stmt = (
        sa.select(Transaction.id, Transaction.ref, Transaction.classification, Transaction.at)
        .where(
            Transaction.unit_code == unit_code,
            Transaction.month == month,
            Transaction.classification.in_(sorted(c.value for c in VIOLATIONS)),
        )
        .order_by(Transaction.at, Transaction.id)
        .limit(limit + 1)
    )
    if after is not None:
        stmt = stmt.where(
            sa.or_(Transaction.at > after[0], sa.and_(Transaction.at == after[0], Transaction.id > after[1]))
        )
    rows: Sequence[Any] = session.execute(stmt).all()
    more = len(rows) > limit
    rows = rows[:limit]
    return list(rows), ((rows[-1].at, rows[-1].id) if more else None)
