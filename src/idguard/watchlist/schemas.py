"""What the watchlist's routes take and answer (API.md part 2, "Impersonation")."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from idguard.api.schemas import IdNumberStr, Strict
from idguard.watchlist.rules import BlacklistReason, EntryStatus, IncidentKind, IncidentStatus, Outcome

_Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
_CaseNo = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=60)]


class BlacklistIn(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "id_number": "11010519491231002X",
                    "reason": "impersonation",
                    "case_no": "京公(朝)立字〔2026〕1234号",
                    "until": "2027-06-30",
                    "note": "used a reported-lost card at a bank counter",
                }
            ]
        },
    )
    id_number: IdNumberStr
    reason: BlacklistReason
    case_no: _CaseNo = Field(description="the police case reference")
    until: dt.date | None = Field(
        default=None, description="the last day the entry holds (China Standard Time); null: until lifted"
    )
    note: _Text | None = None


class LiftIn(Strict):
    reason: _Text = Field(description="why the entry is lifted (required)")


class BlacklistEventOut(BaseModel):
    action: str = Field(description="listed | lifted | expired")
    at: dt.datetime
    by: str | None = Field(description="the member of staff's id; null when the entry ended by itself")
    reason: str | None


class BlacklistEntryOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "entry_no": "BLK7Q2M4XW9PA3R",
                    "status": "active",
                    "listed_on": "2026-11-28",
                    "until": "2027-06-30",
                }
            ]
        }
    )
    entry_no: str
    status: EntryStatus = Field(description="active | lifted | expired (ended by itself after `until`)")
    listed_on: dt.date
    until: dt.date | None
    id_number: str | None = None
    reason: BlacklistReason | None = None
    case_no: str | None = None
    note: str | None = None
    history: list[BlacklistEventOut] = Field(default_factory=list, description="oldest first, append-only")


class BlacklistPage(BaseModel):
    items: list[BlacklistEntryOut] = Field(description="newest first")
    next: str | None = Field(description="pass as `after` for the next page; null at the end")


class ProtectionIn(Strict):
    person_check_required: bool
    reason: _Text


class ProtectionOut(BaseModel):
    id_number: str
    person_check_required: bool


class IncidentOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "incident_no": "INCX3K9P2M7QW4D",
                    "kind": "lost_card_presented",
                    "status": "open",
                    "opened_at": "2026-11-28T02:00:00Z",
                    "id_number": "110105********002X",
                    "unit_code": "ICBC-BJ",
                    "check_id": "0b9f1c1e-5d0c-4a8e-9d5e-2c1a7f0e9b11",
                    "office": "110105001",
                    "count": 3,
                }
            ]
        }
    )
    incident_no: str
    kind: IncidentKind
    status: IncidentStatus
    opened_at: dt.datetime
    id_number: str | None = Field(
        description="the holder's number: masked for a clerk of another office; null for a unit's harvesting"
    )
    unit_code: str | None
    check_id: str | None = Field(description="the first check that signalled it")
    office: str | None = Field(description="the owning office: the holder's household-registration office")
    count: int = Field(description="signals counted on this incident (one per card, kind, unit and day)")
    last_at: dt.datetime
    closed_at: dt.datetime | None = None
    note: str | None = None
    detail: str | None = Field(default=None, description="a harvesting suspicion's reason")


class IncidentPage(BaseModel):
    items: list[IncidentOut] = Field(description="newest first")
    next: str | None = Field(description="pass as `after` for the next page; null at the end")


class CloseIn(Strict):
    outcome: Outcome
    note: _Text


__all__ = [
    "BlacklistEntryOut",
    "BlacklistIn",
    "BlacklistPage",
    "CloseIn",
    "IncidentOut",
    "IncidentPage",
    "LiftIn",
    "ProtectionIn",
    "ProtectionOut",
]
