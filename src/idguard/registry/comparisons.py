"""The comparison log (比对记录) as staff read it: every on-site fingerprint comparison, matched
or not, with the card's number masked and the clerk's name. An audited read."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from idguard.biometrics.models import FingerprintComparison
from idguard.core.clock import as_utc
from idguard.core.errors import Forbidden
from idguard.core.grants import Actor, Permission
from idguard.core.idnumber import mask
from idguard.db.common import AuditEntry
from idguard.db.paging import newest_first
from idguard.registry.models import Card, Staff


@dataclass(frozen=True, slots=True)
class ComparisonRow:
    comparison: FingerprintComparison
    id_masked: str
    clerk: str
    score: float | None  # None unless the reader may see scores


@dataclass(frozen=True, slots=True)
class ComparisonPage:
    rows: list[ComparisonRow]
    more: bool


def list_comparisons(
    session: Session,
    *,
    actor: Actor,
    now: dt.datetime,
    card_id: uuid.UUID | None = None,
    office: str | None = None,
    matched: bool | None = None,
    since: dt.datetime | None = None,
    after: tuple[dt.datetime, uuid.UUID] | None = None,
    limit: int = 100,
) -> ComparisonPage:
    """Newest first. A member of staff bound to an office sees that office's comparisons only;
    scores only for those who may read them."""
    actor.require(Permission.REGISTRY_READ)
    stmt = (
        sa.select(FingerprintComparison, Card.id_number, Staff.username)
        .join(Card, Card.id == FingerprintComparison.card_id)
        .join(Staff, Staff.id == FingerprintComparison.staff_id)
    )
    if not actor.may(Permission.ALL_OFFICES):
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
        stmt = stmt.where(FingerprintComparison.at >= as_utc(since, "from"))
    page = newest_first(
        session,
        stmt,
        keys=(FingerprintComparison.at, FingerprintComparison.id),
        after=after,
        limit=limit,
        scalars=False,
    )
    show_score = actor.may(Permission.READ_COMPARISON_SCORES)
    session.add(
        AuditEntry(
            at=now,
            staff_id=actor.staff_id,
            action="fingerprint_comparisons.list",
            detail=f"card={card_id} office={office} matched={matched} rows={len(page.rows)}",
        )
    )
    return ComparisonPage(
        rows=[
            ComparisonRow(c, mask(number), username, c.score if show_score else None)
            for c, number, username in page.rows
        ],
        more=page.more,
    )
