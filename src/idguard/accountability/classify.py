"""Classifying transactions against the unit's own check log, in SQL, set-based.

One expression (`classification`) judges a transaction row from its columns: it is used in an
`INSERT … SELECT` (bench, bulk loads) and in an `UPDATE … SET classification = …` over many rows
at once (the API's batches, the CLI's batches, closing a month). Per row the database makes one
descent of `ix_checks_unit_code_id_hash_at` for the latest check at or before `at` (a scalar
subquery with ORDER BY at DESC LIMIT 1: PostgreSQL runs it as a backward index scan, SQLite
likewise), and, only when there is none, one more for a check after it. No Python loop per row.

The rules (API.md part 2; the readings chosen are in docs/accountability.md):
- the checks considered are the SAME unit's checks of the same number (keyed hash) with
  `window_start <= check.at <= at` (a check at exactly `at` counts as before it; one exactly
  a window before counts);
- latest such check `valid` without alerts → compliant; `valid` with an alert
  (person_check_required, blacklisted, known_impersonator) → ignored_alert; `invalid` or
  `mismatch` (with or without alerts) → accepted_invalid;
- none: a check in `at < check.at <= window_end` → checked_after; else unchecked.
"""

from __future__ import annotations

from typing import Any, cast

import sqlalchemy as sa

from idguard.accountability.models import Transaction
from idguard.accountability.rules import TxClass
from idguard.verification.models import Check

_checks = cast(sa.Table, Check.__table__)
_tx = cast(sa.Table, Transaction.__table__)


def classification(
    unit_code: sa.ColumnElement[Any],
    id_hash: sa.ColumnElement[Any],
    at: sa.ColumnElement[Any],
    window_start: sa.ColumnElement[Any],
    window_end: sa.ColumnElement[Any],
) -> sa.ColumnElement[str]:
    """The class (a TxClass value) of a transaction whose columns are given, as SQL."""
    c = _checks.alias("c")
    same = sa.and_(c.c.unit_code == unit_code, c.c.id_hash == id_hash)
    before = (
        sa.select(
            sa.case(
                (
                    sa.and_(c.c.result == "valid", c.c.alerts.is_(None)),
                    sa.literal(TxClass.COMPLIANT.value),
                ),
                (c.c.result == "valid", sa.literal(TxClass.IGNORED_ALERT.value)),
                else_=sa.literal(TxClass.ACCEPTED_INVALID.value),
            )
        )
        .where(same, c.c.at <= at, c.c.at >= window_start)
        .order_by(c.c.at.desc())
        .limit(1)
        .correlate_except(c)
        .scalar_subquery()
    )
    a = _checks.alias("a")
    after = (
        sa.select(sa.literal(1))
        .where(a.c.unit_code == unit_code, a.c.id_hash == id_hash, a.c.at > at, a.c.at <= window_end)
        .correlate_except(a)
        .exists()
    )
    # COALESCE evaluates its arguments left to right and stops at the first non-null (both
    # databases): the "after" probe runs only for transactions with no check before them.
    return sa.func.coalesce(
        before,
        sa.case((after, sa.literal(TxClass.CHECKED_AFTER.value)), else_=sa.literal(TxClass.UNCHECKED.value)),
        type_=sa.String(24),
    )


def of_transactions() -> sa.ColumnElement[str]:
    """`classification` of the `transactions` row being updated."""
    return classification(_tx.c.unit_code, _tx.c.id_hash, _tx.c.at, _tx.c.window_start, _tx.c.window_end)


def classify_where(*conditions: sa.ColumnElement[bool]) -> sa.Update:
    """UPDATE transactions SET classification = … WHERE conditions: one statement for them all."""
    return sa.update(_tx).where(*conditions).values(classification=of_transactions())
