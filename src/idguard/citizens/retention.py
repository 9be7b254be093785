"""Retention of the check log (核查记录): checks older than the retention (IDGUARD_CHECK_RETENTION_MONTHS,
at least 24 months) are removed in small batches, each its own transaction, so the job never holds
long locks and can be stopped and started again at any point.

Each batch is found through the per-unit index (unit_code, at) that the log already has, one unit
at a time: no extra index on the hot write path. Once the check log is partitioned by month on
PostgreSQL (the scale-out issue), dropping whole old partitions replaces this (docs/citizens.md).
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Session

from idguard.citizens.models import CertificateCheck
from idguard.verification.models import Check, Unit

BATCH = 5_000


def unit_codes(session: Session) -> list[str]:
    return list(session.scalars(sa.select(Unit.code).order_by(Unit.code)))


def purge_batch(session: Session, *, unit_code: str, horizon: dt.datetime, limit: int = BATCH) -> int:
    """Delete up to `limit` of the unit's checks older than `horizon`; return how many (the
    caller commits, and calls again while it gets `limit`)."""
    ids = list(
        session.scalars(
            sa.select(Check.id).where(Check.unit_code == unit_code, Check.at < horizon).limit(limit)
        )
    )
    if not ids:
        return 0
    session.execute(sa.delete(CertificateCheck).where(CertificateCheck.check_id.in_(ids)))
    session.execute(sa.delete(Check).where(Check.id.in_(ids)))
    return len(ids)
