"""Offline verification's request and response models."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, Field, StringConstraints

from idguard.api.schemas import EXAMPLE_ID, CardNumber, FieldError, Strict
from idguard.offline.uploads import MAX_ITEMS


class OfflineIn(Strict):
    offline: bool = Field(description="true: the unit may download the offline set; false: withdrawn")


class OfflineOut(BaseModel):
    unit_code: str
    offline: bool


class PublicKeyOut(BaseModel):
    key_id: str
    public_key: str = Field(description="the raw 32-byte Ed25519 public key, base64")
    signing: bool = Field(description="the key new files are signed with")


class KeysOut(BaseModel):
    algorithm: Literal["Ed25519"] = "Ed25519"
    keys: list[PublicKeyOut]


Operator = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
Purpose = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=40)]
ChipSerial = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=32)]


class OfflineCheckIn(Strict):
    check_id: uuid.UUID = Field(
        description="the reader's id of the check (a UUID): uploads are idempotent by it"
    )
    at: AwareDatetime = Field(description="when the reader answered, RFC 3339 with a zone")
    id_number: CardNumber = Field(examples=[EXAMPLE_ID])
    result: Literal["valid", "invalid"]
    version: int = Field(ge=0, description="the set's version (X-Offline-Version) the answer was given at")
    operator: Operator = "offline-reader"
    chip_serial: ChipSerial | None = Field(
        default=None,
        description="the serial the reader read from the card's chip: identifies the card, so a "
        "check of a card reported lost or stolen opens an incident as it would online",
    )
    purpose: Purpose | None = Field(
        default=None, description="one of your unit's purposes; may be left out when it has only one"
    )


class OfflineChecksIn(Strict):
    items: list[OfflineCheckIn] = Field(min_length=1, max_length=MAX_ITEMS)


class OfflineCheckResult(BaseModel):
    check_id: uuid.UUID
    status: Literal["recorded", "duplicate", "rejected"]
    errors: list[FieldError] = Field(default_factory=list)


class OfflineChecksOut(BaseModel):
    results: list[OfflineCheckResult]
