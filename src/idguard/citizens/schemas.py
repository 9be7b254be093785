"""Requests and answers of the citizens' routes (separate from the tables)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from idguard.api.schemas import EXAMPLE_ID, IdNumberStr, Name, OfficeCode, Strict
from idguard.citizens.models import TravelPurpose
from idguard.core.grants import Role
from idguard.registry.lifecycle import CardStatus, IssueKind, LossReason, RevocationReason
from idguard.registry.schemas import IsoRecord

_Password = Annotated[str, StringConstraints(min_length=1, max_length=200)]
_Otp = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^[0-9]{6}$")]


# --- accounts ----------------------------------------------------------------------------------


class ActivationCodeOut(BaseModel):
    activation_code: str = Field(
        description="printed on the receipt; one use; letters and digits, dashes optional"
    )
    expires_at: dt.datetime


class ActivateIn(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "id_number": EXAMPLE_ID,
                    "activation_code": "7K3M-Q9XD-2HRT-B4WZ",
                    "password": "a long passphrase of yours",
                }
            ]
        },
    )
    id_number: IdNumberStr
    activation_code: Annotated[str, StringConstraints(min_length=1, max_length=40)]
    password: _Password = Field(description="at least 10 characters, not a common password")


class ActivateOut(BaseModel):
    id_number: str = Field(description="masked")
    activated_at: dt.datetime
    second_factor: bool


class CitizenTokenIn(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"id_number": EXAMPLE_ID, "password": "...", "otp": "123456"}]},
    )
    id_number: IdNumberStr
    password: _Password
    otp: _Otp | None = Field(default=None, description="the authenticator app's code, once TOTP is set up")


class CitizenTokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"  # noqa: S105 - the OAuth2 token type, not a secret
    expires_in: int


class TotpEnrolOut(BaseModel):
    secret: str = Field(description="base32; type it into an authenticator app, or use the URI")
    otpauth_uri: str
    notice: str = (
        "confirm with POST /api/v1/me/totp/confirm and a code from the app; until then nothing changes"
    )


class TotpConfirmIn(Strict):
    otp: _Otp


class TotpOut(BaseModel):
    second_factor: bool


# --- own data ----------------------------------------------------------------------------------


class LedgerItem(BaseModel):
    seq: int
    event: str
    status_before: CardStatus | None
    status_after: CardStatus
    office: str | None
    at: dt.datetime
    reason: str | None
    reference: str | None


class MyCard(BaseModel):
    card_id: uuid.UUID
    kind: IssueKind
    temporary: bool
    status: CardStatus = Field(description="today's status")
    issued_on: dt.date
    expires_on: dt.date | None
    issuing_office: str
    fingerprints_registered: bool
    ledger: list[LedgerItem] = Field(description="every change of the card, oldest first")


class MyCards(BaseModel):
    items: list[MyCard]


class MyDeclaration(BaseModel):
    declaration_no: str
    card_id: uuid.UUID
    published_at: dt.datetime
    url: str


class MyCertificate(BaseModel):
    certificate_no: str
    purpose: TravelPurpose
    valid_on: dt.date
    office: str
    issued_at: dt.datetime


class MyIncident(BaseModel):
    incident_no: str
    kind: str
    status: str
    opened_at: dt.datetime | None = None
    unit_code: str | None = None
    check_id: str | None = None
    count: int = Field(default=1, description="how many times the signal was seen (one incident a day)")


class MyListing(BaseModel):
    entry_no: str
    status: str = Field(description="active / expired / lifted")
    listed_on: dt.date
    until: dt.date | None = Field(description="its last day; null: until lifted")
    turn_to_office: str = Field(description="your hukou office, which handles reviews")


class MeOut(BaseModel):
    id_number: str
    name: str
    sex: str
    ethnicity: str
    birth_date: dt.date
    address: str
    hukou_office: str
    revoked_reason: RevocationReason | None
    second_factor: bool
    declarations: list[MyDeclaration]
    travel_certificates: list[MyCertificate]
    incidents: list[MyIncident] = Field(description="incidents (冒用线索) about the holder's cards")
    person_check_required: bool = Field(
        description="every check of your cards needs your live finger (your lock, or the police's)"
    )
    blacklist: list[MyListing] = Field(description="your entries on the impersonator blacklist, if any")


class CheckItem(BaseModel):
    check_id: uuid.UUID
    at: dt.datetime
    unit_code: str
    unit_name: str
    sector: str
    purpose: str
    result: str = Field(description="valid / invalid / mismatch")
    reason: str | None
    fingerprint_used: bool = Field(description="whether the unit compared a live finger")
    fingerprint_match: bool | None
    document: str = Field(description="`card`, or `certificate` for a one-trip travel certificate")
    certificate_no: str | None
    alerts: list[str]


class CheckPage(BaseModel):
    items: list[CheckItem]
    next: str | None = Field(description="pass as `after` for the next (older) page; null at the end")
    retention_months: int
    reaches_back_to: dt.datetime = Field(description="checks older than this are no longer kept")


class AccessItem(BaseModel):
    at: dt.datetime
    office: str | None = Field(description="the office of the member of staff (null: a national role)")
    role: Role
    action: str = Field(description="e.g. person.read, person.cards, card.events, citizen.activation_code")


class AccessPage(BaseModel):
    items: list[AccessItem]
    next: str | None


class DisputeIn(Strict):
    note: Annotated[str, StringConstraints(strip_whitespace=True, max_length=500)] | None = None


class DisputeOut(BaseModel):
    incident_no: str
    check_id: uuid.UUID


class ProtectionIn(Strict):
    person_check_required: bool
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)] | None = (
        None
    )


class ProtectionOut(BaseModel):
    person_check_required: bool
    at: dt.datetime


# --- lost cards ----------------------------------------------------------------------------------


class OnlineReportIn(Strict):
    card_id: uuid.UUID
    reason: LossReason


class OnlineReportOut(BaseModel):
    report_no: str
    card_id: uuid.UUID
    reason: LossReason
    card_status: CardStatus
    accepted_at: dt.datetime
    cancel_at_office: str = Field(
        description="cancelling needs you in person at this office (your hukou office), with the card"
    )


class DeclarationIn(Strict):
    card_id: uuid.UUID
    lost_on: dt.date
    place: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]


class DeclarationCreated(BaseModel):
    declaration_no: str
    url: str


class DeclarationOut(BaseModel):
    """Every field but `signature` is signed (canonical JSON: keys sorted, no spaces, UTF-8)."""

    declaration_no: str
    published_at: str
    name_masked: str
    id_number_masked: str
    issued_on: str
    expires_on: str | None
    issuing_office: str
    card_status: str
    lost_on: str
    place: str
    statement: str
    key_id: str
    signature: str = Field(description="Ed25519, base64")


class DeclarationKeyOut(BaseModel):
    key_id: str
    algorithm: str = "Ed25519"
    public_key: str = Field(description="base64 of the raw 32-byte public key")
    signing: bool = Field(description="new declarations are signed with this key; the others only verify")


class DeclarationKeysOut(BaseModel):
    keys: list[DeclarationKeyOut]


# --- travel certificates -------------------------------------------------------------------------


class TravelCertificateIn(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"office": "110105001", "purpose": "rail", "valid_on": "2026-06-15"}]
        },
    )
    office: OfficeCode
    purpose: TravelPurpose = Field(description="rail / air / lodging")
    valid_on: dt.date = Field(description="the one day it is valid (China Standard Time)")
    fingerprint: IsoRecord | None = Field(
        default=None, description="live capture; required where the person has registered fingers"
    )


class TravelCertificateOut(BaseModel):
    certificate_no: str
    valid_on: dt.date
    purpose: TravelPurpose
    office: str
    issued_at: dt.datetime
    fingerprint_matched: bool | None


class CertificateCheckIn(Strict):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "certificate_no": "TCABCDEFGHJKMN",
                    "name": "张三",
                    "purpose": "ticketing",
                    "operator": "gate-7",
                }
            ]
        },
    )
    certificate_no: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=32)]
    name: Name
    purpose: Annotated[str, StringConstraints(min_length=1, max_length=40)] = Field(
        description="your unit's business type, one of its allowed purposes"
    )
    operator: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]


class CertificateCheckOut(BaseModel):
    result: str = Field(description="valid / invalid / mismatch")
    reason: str | None = Field(
        default=None, description="with invalid: expired / not_yet_valid / wrong_purpose / revoked"
    )
    check_id: uuid.UUID
    checked_at: dt.datetime
