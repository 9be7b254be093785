"""The record of on-site fingerprint comparisons (比对记录), so repeated failures are visible."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from idguard.api.deps import TxDep
from idguard.api.paging import decode_cursor, encode_cursor
from idguard.api.schemas import STAFF_READ_ERRORS, OfficeCode
from idguard.biometrics.fingerprints import Purpose
from idguard.biometrics.models import FingerprintComparison
from idguard.core.errors import Forbidden, InvalidField
from idguard.core.grants import Permission, Role
from idguard.core.idnumber import mask
from idguard.db.common import AuditEntry
from idguard.registry.models import Card, Staff

router = APIRouter(prefix="/api/v1", tags=["fingerprints"])


class ComparisonOut(BaseModel):
    comparison_id: uuid.UUID
    card_id: uuid.UUID
    id_number: str = Field(description="the card's id number, masked")
    purpose: Purpose
    office: str
    clerk: str = Field(description="username of the clerk who made the comparison")
    at: dt.datetime
    matched: bool
    score: float | None = Field(
        description="MCC similarity 0..1 against the configured threshold; supervisors and auditors only"
    )


class ComparisonPage(BaseModel):
    items: list[ComparisonOut]
    next: str | None = Field(description="pass as `cursor` for the next page; null at the end")


@router.get("/fingerprint-comparisons", response_model=ComparisonPage, responses=STAFF_READ_ERRORS)
def comparisons(
    tx: TxDep,
    card_id: uuid.UUID | None = None,
    office: OfficeCode | None = None,
    matched: bool | None = None,
    since: Annotated[dt.datetime | None, Query(alias="from", description="RFC 3339, inclusive")] = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> ComparisonPage:
    """Every on-site comparison (loss reports, found cards' returns), newest first, matched or
    not: filter `matched=false` to see failures by card or office. A clerk sees their own
    office's comparisons; supervisors and auditors see all, and only they see the scores (a
    score is a hill-climbing signal). Id numbers are masked; no fingerprint data is ever
    returned. The read itself is audited."""
    actor, session = tx.actor, tx.session
    actor.require(Permission.REGISTRY_READ)
    stmt = (
        sa.select(FingerprintComparison, Card.id_number, Staff.username)
        .join(Card, Card.id == FingerprintComparison.card_id)
        .join(Staff, Staff.id == FingerprintComparison.staff_id)
    )
    if actor.role is Role.CLERK:
        if office is not None and office != actor.office:
            raise Forbidden(f"a clerk sees only the comparisons of office {actor.office}")
        office = actor.office
    if office is not None:
        stmt = stmt.where(FingerprintComparison.office == office)
    if card_id is not None:
        stmt = stmt.where(FingerprintComparison.card_id == card_id)
    if matched is not None:
        stmt = stmt.where(FingerprintComparison.matched.is_(matched))
    if since is not None:
        if since.tzinfo is None:
            raise InvalidField("from", "give a time zone (RFC 3339)")
        stmt = stmt.where(FingerprintComparison.at >= since)
    if cursor is not None:
        at, row_id = decode_cursor(cursor)
        stmt = stmt.where(
            sa.or_(
                FingerprintComparison.at < at,
                sa.and_(FingerprintComparison.at == at, FingerprintComparison.id < row_id),
            )
        )
    order = (FingerprintComparison.at.desc(), FingerprintComparison.id.desc())
    rows = session.execute(stmt.order_by(*order).limit(limit + 1)).all()
    page, more = rows[:limit], len(rows) > limit
    show_score = actor.role in (Role.SUPERVISOR, Role.AUDITOR)
    session.add(
        AuditEntry(
            at=tx.now,
            staff_id=actor.staff_id,
            action="fingerprint_comparisons.list",
            detail=f"card={card_id} office={office} matched={matched} rows={len(page)}",
        )
    )
    session.commit()
    return ComparisonPage(
        items=[
            ComparisonOut(
                comparison_id=c.id,
                card_id=c.card_id,
                id_number=mask(number),
                purpose=Purpose(c.purpose),
                office=c.office,
                clerk=username,
                at=c.at,
                matched=c.matched,
                score=c.score if show_score else None,
            )
            for c, number, username in page
        ],
        next=encode_cursor(page[-1][0].at, page[-1][0].id) if more else None,
    )
