"""The record of on-site fingerprint comparisons (比对记录), so repeated failures are visible."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from idguard.api.paging import decode_cursor, encode_cursor
from idguard.api.schemas import STAFF_READ_ERRORS, OfficeCode
from idguard.biometrics.fingerprints import Purpose
from idguard.registry.comparisons import list_comparisons
from idguard.registry.routes.deps import TxDep

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
    next: str | None = Field(description="pass as `after` for the next page; null at the end")


@router.get("/fingerprint-comparisons", response_model=ComparisonPage, responses=STAFF_READ_ERRORS)
def comparisons(
    tx: TxDep,
    card_id: uuid.UUID | None = None,
    office: OfficeCode | None = None,
    matched: bool | None = None,
    since: Annotated[dt.datetime | None, Query(alias="from", description="RFC 3339, inclusive")] = None,
    after: Annotated[str | None, Query(max_length=200, description="the `next` of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> ComparisonPage:
    """Every on-site comparison (loss reports, found cards' returns), newest first, matched or
    not: filter `matched=false` to see failures by card or office. A clerk sees their own
    office's comparisons; supervisors and auditors see all, and only they see the scores (a
    score is a hill-climbing signal). Id numbers are masked; no fingerprint data is ever
    returned. The read itself is audited."""
    page = tx.read(
        lambda: list_comparisons(
            tx.session,
            actor=tx.actor,
            now=tx.now,
            card_id=card_id,
            office=office,
            matched=matched,
            since=since,
            after=decode_cursor(after) if after is not None else None,
            limit=limit,
        )
    )
    return ComparisonPage(
        items=[
            ComparisonOut(
                comparison_id=r.comparison.id,
                card_id=r.comparison.card_id,
                id_number=r.id_masked,
                purpose=Purpose(r.comparison.purpose),
                office=r.comparison.office,
                clerk=r.clerk,
                at=r.comparison.at,
                matched=r.comparison.matched,
                score=r.score,
            )
            for r in page.rows
        ],
        next=encode_cursor(page.rows[-1].comparison.at, page.rows[-1].comparison.id) if page.more else None,
    )
