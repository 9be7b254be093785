"""The registry's request and response models, separate from the ORM models.

Staff answers carry personal data (they are audited reads); unit answers (verification) never do.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from idguard.api.schemas import EXAMPLE_ID, Day, IdNumberStr, Name, OfficeCode, Strict
from idguard.biometrics.fingerprints import MAX_RECORD_BASE64
from idguard.core.clock import today_cst
from idguard.core.idnumber import Sex
from idguard.registry.lifecycle import (
    CardStatus,
    FoundDisposition,
    IssueKind,
    LossReason,
    RevocationReason,
    effective_status,
)
from idguard.registry.models import Card, FoundCard, LedgerEvent, LossReport, Person


# ---- auth -------------------------------------------------------------------------------------
class TokenIn(Strict):
    username: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    password: Annotated[str, StringConstraints(min_length=1, max_length=200)]


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth2 token type, not a secret
    expires_in: int


# ---- persons ----------------------------------------------------------------------------------
class PersonIn(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "id_number": EXAMPLE_ID,
                    "name": "张三",
                    "sex": "female",
                    "ethnicity": "汉",
                    "birth_date": "1949-12-31",
                    "address": "北京市朝阳区建国路1号",
                    "hukou_office": "110105001",
                }
            ]
        },
    )
    id_number: IdNumberStr
    name: Name
    sex: Sex
    ethnicity: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=30)]
    birth_date: Day
    address: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    hukou_office: OfficeCode


class CardOut(BaseModel):
    card_id: uuid.UUID
    id_number: str
    kind: IssueKind
    temporary: bool
    status: CardStatus = Field(description="today's status; `expired` is derived from the date")
    name: str
    issued_on: dt.date
    expires_on: dt.date | None = Field(description="null for a long-term (长期) card")
    issuing_office: str
    chip_serial: str
    fingerprints_registered: bool
    superseded_by: uuid.UUID | None

    @classmethod
    def of(cls, card: Card, now: dt.datetime) -> CardOut:
        return cls(
            card_id=card.id,
            id_number=card.id_number,
            kind=card.kind,
            temporary=card.temporary,
            status=effective_status(card.status, card.expires_on, today_cst(now)),
            name=card.name,
            issued_on=card.issued_on,
            expires_on=card.expires_on,
            issuing_office=card.issuing_office,
            chip_serial=card.chip_serial,
            fingerprints_registered=card.fingerprints_registered,
            superseded_by=card.superseded_by,
        )


class PersonOut(BaseModel):
    id_number: str
    name: str
    sex: Sex
    ethnicity: str
    birth_date: dt.date
    address: str
    hukou_office: str
    revoked_reason: RevocationReason | None
    current_card: CardOut | None = Field(description="the newest regular card, whatever its status")
    temporary_card: CardOut | None = Field(description="a temporary card valid today, if any")

    @classmethod
    def of(cls, person: Person, cards: list[Card], now: dt.datetime) -> PersonOut:
        regular = [c for c in cards if not c.temporary]
        heads = [c for c in regular if c.superseded_by is None]
        newest = max(heads, key=lambda c: c.issued_on, default=None)
        today = today_cst(now)
        temporary = next(
            (
                c
                for c in cards
                if c.temporary and effective_status(c.status, c.expires_on, today) is CardStatus.VALID
            ),
            None,
        )
        return cls(
            id_number=person.id_number,
            name=person.name,
            sex=person.sex,
            ethnicity=person.ethnicity,
            birth_date=person.birth_date,
            address=person.address,
            hukou_office=person.hukou_office,
            revoked_reason=person.revoked_reason,
            current_card=CardOut.of(newest, now) if newest else None,
            temporary_card=CardOut.of(temporary, now) if temporary else None,
        )


class CardList(BaseModel):
    items: list[CardOut]


# A base64 ISO/IEC 19794-2 finger minutiae record (2005 or 2011), as a scanner produces it.
IsoRecord = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_RECORD_BASE64),
    Field(description="base64 ISO/IEC 19794-2 finger minutiae record (2005 or 2011 format)"),
]


class FingerprintIn(Strict):
    finger: int = Field(
        ge=1, le=10, description="ISO/IEC 19794-2 finger position (1 right thumb … 10 left little)"
    )
    template: IsoRecord


class IssueCardIn(Strict):
    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"kind": "first", "office": "110105001"}]}
    )
    kind: IssueKind = Field(description="first / renewal / replacement / correction")
    office: OfficeCode
    issued_on: Day | None = Field(default=None, description="admin role only (imports)")
    previous_card_id: uuid.UUID | None = Field(
        default=None,
        description="the card this one replaces; when sent, a newer card makes the request a 409",
    )
    fingerprints: list[FingerprintIn] | None = Field(
        default=None,
        description="the two fingers registered on this card, captured at the counter; each passes "
        "the quality gate or the request is refused naming the finger and what to do",
    )
    fingerprints_registered: bool | None = Field(
        default=None,
        json_schema_extra={"deprecated": True},  # OpenAPI only: pydantic's own flag warns on each read
        description="deprecated: the flag now follows the stored fingers. `true` without "
        "`fingerprints` is refused (422); otherwise ignored",
    )

    @field_validator("fingerprints_registered")
    @classmethod
    def _flag_needs_the_fingers(cls, flag: bool | None, info: ValidationInfo) -> bool | None:
        if flag and info.data.get("fingerprints") is None:
            raise PydanticCustomError(
                "fingers_required",
                "send the two fingers in `fingerprints`: a card has registered fingerprints only with them",
            )
        return flag


class TemporaryCardIn(Strict):
    office: OfficeCode


class RevocationIn(Strict):
    reason: RevocationReason
    office: OfficeCode | None = Field(default=None, description="defaults to the person's hukou office")


class RevocationOut(BaseModel):
    id_number: str
    revoked_reason: RevocationReason
    revoked_at: dt.datetime
    cards: list[CardOut]


class EventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    seq: int
    event: str
    status_before: CardStatus | None
    status_after: CardStatus
    office: str | None
    actor: uuid.UUID | None
    at: dt.datetime
    reason: str | None
    reference: str | None


class EventList(BaseModel):
    card_id: uuid.UUID
    items: list[EventOut]

    @classmethod
    def of(cls, card_id: uuid.UUID, events: list[LedgerEvent]) -> EventList:
        return cls(card_id=card_id, items=[EventOut.model_validate(e) for e in events])


# ---- loss reports -----------------------------------------------------------------------------
class LossReportIn(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "card_id": "6f1c2b0e-8d3a-4c1e-9a8b-1f2e3d4c5b6a",
                    "reason": "lost",
                    "office": "110105001",
                    "applicant_id_number": EXAMPLE_ID,
                }
            ]
        },
    )
    card_id: uuid.UUID
    reason: LossReason
    office: OfficeCode
    applicant_id_number: IdNumberStr
    applicant_name: Name | None = Field(default=None, description="checked against the registry when sent")
    fingerprint: IsoRecord | None = Field(
        default=None,
        description="live capture of one of the holder's registered fingers; required when the card "
        "has registered fingerprints, which it must match",
    )


class LossReportOut(BaseModel):
    report_no: str = Field(description="the receipt (回执) number")
    card_id: uuid.UUID
    reason: LossReason
    office: str
    by_guardian: bool
    accepted_at: dt.datetime
    cancelled_at: dt.datetime | None
    card_status: CardStatus

    @classmethod
    def of(cls, report: LossReport, card: Card, now: dt.datetime) -> LossReportOut:
        return cls(
            report_no=report.report_no,
            card_id=report.card_id,
            reason=report.reason,
            office=report.office,
            by_guardian=report.by_guardian,
            accepted_at=report.accepted_at,
            cancelled_at=report.cancelled_at,
            card_status=effective_status(card.status, card.expires_on, today_cst(now)),
        )


class CancelIn(Strict):
    office: OfficeCode
    fingerprint: IsoRecord | None = Field(
        default=None,
        description="live capture of one of the holder's registered fingers; required when the card "
        "has registered fingerprints, which it must match",
    )


# ---- found cards ------------------------------------------------------------------------------
class FinderIn(Strict):
    name: Name
    phone: Annotated[str, StringConstraints(strip_whitespace=True, max_length=30)] | None = None


class FoundCardIn(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "id_number": EXAMPLE_ID,
                    "issued_on": "2015-03-01",
                    "office": "110105001",
                    "finder": {"name": "李四", "phone": "13800000000"},
                }
            ]
        },
    )
    id_number: IdNumberStr
    issued_on: Day
    office: OfficeCode
    finder: FinderIn
    chip_serial: (
        Annotated[str, StringConstraints(strip_whitespace=True, to_upper=True, max_length=32)] | None
    ) = Field(default=None, description="read from the chip, when a reader is at hand")


class ReturnIn(Strict):
    claimant_id_number: IdNumberStr = Field(description="the owner's id number, checked against the card")
    claimant_name: Name | None = None
    office: OfficeCode | None = Field(default=None, description="defaults to the clerk's office")
    photo_ref: Annotated[str, StringConstraints(max_length=100)] | None = Field(
        default=None, description="reference of the photo taken at hand-over"
    )
    fingerprint: IsoRecord | None = Field(
        default=None,
        description="live capture of one of the claimant's fingers; required when the card has "
        "registered fingerprints, which it must match",
    )


class DestroyIn(Strict):
    office: OfficeCode | None = Field(default=None, description="defaults to the clerk's office")


class FoundCardOut(BaseModel):
    found_no: str
    card_id: uuid.UUID
    disposition: FoundDisposition
    office: str
    received_at: dt.datetime
    returned_at: dt.datetime | None
    card_status: CardStatus

    @classmethod
    def of(cls, found: FoundCard, card: Card, now: dt.datetime) -> FoundCardOut:
        return cls(
            found_no=found.found_no,
            card_id=found.card_id,
            disposition=found.disposition,
            office=found.office,
            received_at=found.received_at,
            returned_at=found.returned_at,
            card_status=effective_status(card.status, card.expires_on, today_cst(now)),
        )


class HeldLookupIn(Strict):
    """What a citizen types to ask whether their card was handed in."""

    id_number: IdNumberStr
    name: Name


class HeldLookupOut(BaseModel):
    held: bool
    office: str | None = Field(default=None, description="where to collect it, when held")
    office_name: str | None = None


# ---- problems ---------------------------------------------------------------------------------
