"""GET /api/v1/statistics/…: aggregates for supervisors and auditors (the console's charts)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from idguard.accountability import statistics
from idguard.accountability.routes.compliance import _close_if_due, _row
from idguard.accountability.routes.deps import ladder
from idguard.accountability.rules import parse_month
from idguard.accountability.schemas import ComplianceRowOut
from idguard.api.schemas import problem_responses
from idguard.registry.routes.deps import TxDep

router = APIRouter(prefix="/api/v1/statistics", tags=["statistics (supervisors)"])

_From = Annotated[dt.date, Query(alias="from", description="first day (China Standard Time), YYYY-MM-DD")]
_To = Annotated[
    dt.date, Query(alias="to", description=f"last day, inclusive; at most {statistics.MAX_DAYS} days")
]


class SectorDayOut(BaseModel):
    day: dt.date
    sector: str
    checks: int


class SectorDays(BaseModel):
    items: list[SectorDayOut] = Field(description="by day, then sector; days without checks are absent")


@router.get("/checks-per-sector", response_model=SectorDays, responses=problem_responses(401, 403, 422))
def checks_per_sector(tx: TxDep, since: _From, until: _To) -> SectorDays:
    """Checks per sector (bank, hotel, railway, …) per day, from `from` to `to` inclusive."""
    rows = statistics.checks_per_sector(tx.session, actor=tx.actor, since=since, until=until)
    return SectorDays(items=[SectorDayOut(day=r.day, sector=r.sector, checks=r.checks) for r in rows])


class UnitRatesOut(BaseModel):
    unit_code: str
    sector: str
    checks: int
    person_checks: int = Field(description="checks with a live fingerprint (the person-card check)")
    person_check_share: float = Field(description="person_checks / checks")
    invalid: int
    invalid_rate: float
    mismatch: int
    mismatch_rate: float


class UnitRatesPage(BaseModel):
    items: list[UnitRatesOut] = Field(description="units with checks in the range, by code")


@router.get("/units", response_model=UnitRatesPage, responses=problem_responses(401, 403, 422))
def unit_rates(tx: TxDep, since: _From, until: _To) -> UnitRatesPage:
    """Per unit over the days: checks, the share of person-card checks (with a fingerprint),
    and the invalid and mismatch rates. A high mismatch rate is a harvesting or data-quality
    signal; a low person-card share where the sector needs it is an accountability one."""
    rows = statistics.unit_rates(tx.session, actor=tx.actor, since=since, until=until)
    return UnitRatesPage(
        items=[
            UnitRatesOut(
                unit_code=r.unit_code,
                sector=r.sector,
                checks=r.checks,
                person_checks=r.person_checks,
                person_check_share=r.share(r.person_checks),
                invalid=r.invalid,
                invalid_rate=r.share(r.invalid),
                mismatch=r.mismatch,
                mismatch_rate=r.share(r.mismatch),
            )
            for r in rows
        ]
    )


class TopViolators(BaseModel):
    month: str
    items: list[ComplianceRowOut] = Field(description="most violations first")


@router.get("/top-violators", response_model=TopViolators, responses=problem_responses(401, 403, 422))
def top_violators(
    request: Request,
    tx: TxDep,
    month: Annotated[str, Query(max_length=7, description="YYYY-MM")],
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> TopViolators:
    """The units with the most non-compliant transactions in the month (then the highest rate)."""
    month = parse_month(month)
    _close_if_due(request, tx.session, month)
    rows = statistics.top_violators(
        tx.session, actor=tx.actor, month=month, ladder=ladder(request), limit=limit
    )
    return TopViolators(month=month, items=[_row(r) for r in rows])
