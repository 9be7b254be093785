"""What accountability's routes take and answer (separate from the ORM models)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, StringConstraints

from idguard.accountability.rules import CaseStatus, Decision, Level
from idguard.accountability.transactions import MAX_ITEMS

_ITEM_EXAMPLE: dict[str, Any] = {
    "ref": "ACC-000123",
    "at": "2026-06-15T02:05:00Z",
    "id_number": "11010519491231002X",
    "purpose": "account_opening",
    "check_id": "0b9f1c1e-5d0c-4a8e-9d5e-2c1a7f0e9b11",
}


class TransactionsIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"items": [_ITEM_EXAMPLE]}]})
    items: list[dict[str, Any]] = Field(
        min_length=1,
        max_length=MAX_ITEMS,
        description=(
            f"up to {MAX_ITEMS} transactions, each `{{ref, at, id_number, purpose, check_id?}}`: `ref` your "
            "reference (1-64 characters, unique within your unit), `at` when it was performed (RFC 3339), "
            "`id_number` the customer's number, `purpose` the business type, `check_id` optionally the check "
            "you relied on. Each item is judged on its own (see the answer)."
        ),
    )


class ItemError(BaseModel):
    field: str
    detail: str


class TransactionResult(BaseModel):
    ref: str | None = Field(description="the item's ref (null if it had none)")
    status: str = Field(description="`accepted` (stored, or already stored with this content) or `rejected`")
    errors: list[ItemError] = Field(description="why it was rejected, each naming the item's field")
    classification: str | None = Field(
        description="provisional class against your checks: compliant, unchecked, checked_after, "
        "accepted_invalid, ignored_alert (final when the month is closed)"
    )


class TransactionsOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "results": [
                        {
                            "ref": "ACC-000123",
                            "status": "accepted",
                            "errors": [],
                            "classification": "compliant",
                        },
                        {
                            "ref": "ACC-000124",
                            "status": "rejected",
                            "errors": [{"field": "at", "detail": "give a time zone (RFC 3339)"}],
                            "classification": None,
                        },
                    ]
                }
            ]
        }
    )
    results: list[TransactionResult] = Field(description="one per item, in the same order")


class ComplianceRowOut(BaseModel):
    unit_code: str
    transactions: int
    compliant: int
    unchecked: int
    checked_after: int
    accepted_invalid: int
    ignored_alert: int
    violations: int = Field(description="every class but compliant")
    violation_rate: float = Field(description="violations / transactions (0.0075 = 0.75 %)")
    level: Level = Field(description="ok | early_warning | standard | excessive")


class ComplianceOut(BaseModel):
    month: str
    closed: bool = Field(
        description="true: final figures stored when the month was closed; false: provisional"
    )
    closed_at: dt.datetime | None
    items: list[ComplianceRowOut]
    next: str | None = Field(description="pass as `after` for the next page; null at the end")


class ViolationOut(BaseModel):
    ref: str
    classification: str
    at: dt.datetime


class UnitComplianceOut(BaseModel):
    month: str
    closed: bool
    closed_at: dt.datetime | None
    row: ComplianceRowOut
    violations: list[ViolationOut] = Field(description="non-compliant transactions, oldest first")
    next: str | None = Field(description="pass as `after` for more violations; null at the end")


_Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]
_Statement = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=4000)]
_Note = Annotated[str, StringConstraints(strip_whitespace=True, max_length=4000)]
_Month = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^\d{4}-\d{2}$")]


class CaseIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"month": "2026-05", "finding": "1.9 % of May's accounts opened unchecked"}]
        },
    )
    month: _Month = Field(description="YYYY-MM the case is about")
    finding: _Text = Field(description="what the supervisor found (the unit reads it)")


class ResponseIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"statement": "Our branch 12 ran without the reader for two days."}]},
    )
    statement: _Statement = Field(
        description="the unit's statement (陈述申辩); also accepted as `response` or `text`",
        validation_alias=AliasChoices("statement", "response", "text"),
    )


class DecisionIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"decision": "warning", "note": "first finding"}]}
    )
    decision: Decision = Field(description="warning | suspension | dismissed")
    note: _Note = Field(default="", description="the reasons (the unit reads them)")


class ReinstateIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"note": "appeal upheld"}]})
    note: _Note = Field(default="", description="why the unit is reinstated")


class CaseEventOut(BaseModel):
    id: int
    kind: str = Field(description="opened | response | decided | reinstated")
    at: dt.datetime
    by: str = Field(description="`supervisor` or `unit`")
    text: str
    decision: Decision | None


class CaseOut(BaseModel):
    case_no: str
    unit_code: str
    month: str
    finding: str
    status: CaseStatus
    decision: Decision | None
    opened_at: dt.datetime
    decided_at: dt.datetime | None
    history: list[CaseEventOut] = Field(description="every event, oldest first (append-only)")


class CaseOpened(BaseModel):
    case_no: str
    status: CaseStatus


class CasePage(BaseModel):
    items: list[CaseOut]
    next: str | None = Field(description="pass as `after` for the next page; null at the end")


class UnitStatusOut(BaseModel):
    code: str
    status: str = Field(description="active | suspended")
