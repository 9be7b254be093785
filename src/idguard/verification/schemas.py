"""What units send and receive. The answers are minimal by design: no personal data, ever."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, NotRequired

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    PlainValidator,
    StringConstraints,
    WithJsonSchema,
    with_config,
)
from pydantic_core import PydanticCustomError, core_schema
from typing_extensions import TypedDict

from idguard.api.schemas import DATE_FAULT, CardNumber
from idguard.biometrics.fingerprints import MAX_RECORD_BASE64
from idguard.verification.rules import PURPOSES
from idguard.verification.verifier import Item

_EXAMPLE: dict[str, Any] = {
    "id_number": "11010519491231002X",
    "name": "张三",
    "issued_on": "2015-03-01",
    "expires_on": "2035-03-01",
    "purpose": "account_opening",
    "operator": "teller-0042",
}


# The item fields' types, shared by VerifyIn (the single check, and the OpenAPI document) and
# VerifyItem (the batch's items), so both validate and normalise alike.
# The id number: the one normalisation every route applies (api/schemas.py, core/idnumber.py), so a
# number in full-width digits is the same card as in ASCII, here and in the check log.
_IdNumber = CardNumber
_NAME_MAX, _PURPOSE_MAX, _OPERATOR_MAX, _CHIP_MAX = 60, 40, 64, 32
_Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=_NAME_MAX)]
# Resident identity cards were first issued in 1984: an earlier date is a typing error — and the
# index packs "long-term" as day 0, which an expiry such as 1900-01-01 must never be taken for.
FIRST_CARDS = dt.date(1984, 1, 1)


class _StrictDay:
    """A card date (an expiry: `long_term`, null allowed by its type) as `YYYY-MM-DD` only (api/schemas.py's `Day` rule: pydantic alone also takes
    `2015-03-01T00:00:00Z`, `20150301`'s Unix time and other numbers), judged in pydantic's Rust
    core with no Python call on the hot path: the text's shape first (or a `date` object from
    Python code), then pydantic's own date parsing and the 1984 bound, whose errors stay its own."""

    def __init__(self, *, long_term: bool = False) -> None:
        self.fault = "YYYY-MM-DD, or null for a long-term (长期) card" if long_term else DATE_FAULT

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        shaped = core_schema.union_schema(
            [
                core_schema.date_schema(strict=True),
                core_schema.str_schema(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"),
            ],
            custom_error_type="date",
            custom_error_message=self.fault,
        )
        return core_schema.chain_schema([shaped, core_schema.date_schema(ge=FIRST_CARDS)])


_CardDate = Annotated[dt.date, _StrictDay(), WithJsonSchema({"type": "string", "format": "date"})]
_ExpiryDate = Annotated[
    dt.date, _StrictDay(long_term=True), WithJsonSchema({"type": "string", "format": "date"})
]
_Purpose = Annotated[str, StringConstraints(min_length=1, max_length=_PURPOSE_MAX)]
_Operator = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=_OPERATOR_MAX)]
_ChipSerial = Annotated[str, StringConstraints(strip_whitespace=True, to_upper=True, max_length=_CHIP_MAX)]
_Fingerprint = Annotated[str, StringConstraints(min_length=1, max_length=MAX_RECORD_BASE64)]
MAX_BATCH_ITEMS = 1000

# The largest body of a legitimate batch, for the request guard's limit on /verify/batch
# (api/guard.py): MAX_BATCH_ITEMS items, each with every field at its longest and a fingerprint
# (base64, one byte a character), every character of the other text fields written as a JSON
# escape of a character outside the BMP (a surrogate pair, 12 bytes: the most any encoder
# writes for one character), 512 bytes of member names, dates and punctuation; then a quarter
# more for white space and encoders' habits (`\/`), rounded up to whole MiB: 30 MiB.
_ITEM_MAX_BYTES = MAX_RECORD_BASE64 + 12 * (18 + _NAME_MAX + _PURPOSE_MAX + _OPERATOR_MAX + _CHIP_MAX) + 512
_MIB = 1024 * 1024
MAX_BATCH_BODY_BYTES = -(-(MAX_BATCH_ITEMS * _ITEM_MAX_BYTES * 5 // 4) // _MIB) * _MIB


class VerifyIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [_EXAMPLE]})
    id_number: _IdNumber = Field(description="the 18-character number printed on the card")
    name: _Name
    issued_on: _CardDate = Field(description="issue date printed on the card (签发日期)")
    expires_on: _ExpiryDate | None = Field(
        description="expiry date printed on the card; null for 长期 (long-term)"
    )
    purpose: _Purpose = Field(
        description=f"business type; one of the unit's allowed purposes ({', '.join(sorted(PURPOSES))})"
    )
    operator: _Operator = Field(description="the unit's own identifier of the person at the counter")
    chip_serial: _ChipSerial | None = Field(default=None, description="from a card reader, when one is used")
    fingerprint: _Fingerprint | None = Field(
        default=None,
        description="base64 ISO/IEC 19794-2 record of a live capture, for the person-card check: the "
        "answer adds `fingerprint_match`. Compared and discarded, never stored",
    )
    watch: bool = Field(default=False, description="notify this unit when the card's status later changes")


@with_config(ConfigDict(extra="forbid"))
class VerifyItem(TypedDict):
    """A batch item: VerifyIn's fields, types and constraints as a TypedDict. A list of them
    validates in about half the time of a VerifyIn per item (no model instance is built, one
    call for the batch); the optional fields are absent when not sent (VerifyIn's defaults:
    None, None, False). tests/unit/test_verify_fast_paths.py holds the two to the same verdicts
    and values on generated items; VerifyIn still words the errors of a bad item."""

    id_number: _IdNumber
    name: _Name
    issued_on: _CardDate
    expires_on: _ExpiryDate | None
    purpose: _Purpose
    operator: _Operator
    chip_serial: NotRequired[_ChipSerial | None]
    fingerprint: NotRequired[_Fingerprint | None]
    watch: NotRequired[bool]


def as_item(item: VerifyItem) -> Item:
    """A validated item as the verifier takes it (Query's fields, without the fingerprint)."""
    return (
        item["id_number"],
        item["name"],
        item["issued_on"],
        item["expires_on"],
        item["purpose"],
        item["operator"],
        item.get("chip_serial"),
        item.get("watch", False),
    )


class VerifyOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "result": "invalid",
                    "reason": "reported_lost",
                    "check_id": "0b9f1c1e-5d0c-4a8e-9d5e-2c1a7f0e9b11",
                    "checked_at": "2026-11-27T08:00:00Z",
                }
            ]
        }
    )
    result: str = Field(
        description="valid | invalid | mismatch (no card of that number matches what was sent)"
    )
    reason: str | None = Field(
        default=None,
        description="with invalid only: reported_lost | reported_stolen | superseded | expired | revoked",
    )
    check_id: str
    checked_at: dt.datetime
    fingerprint_match: bool | None = Field(
        default=None,
        description="only when a fingerprint was sent: true / false, or null with `fingerprint_reason`",
    )
    fingerprint_reason: str | None = Field(
        default=None,
        description="why fingerprint_match is null: `card_not_valid` (the card is invalid or does not "
        "match: no comparison is made), `no_registered_fingerprints`, or `comparison_unavailable` (the "
        "registry could not make the comparison now: the validity answer stands; retry the person check)",
    )
    alerts: list[str] | None = Field(
        default=None,
        description="absent when there is nothing to say; otherwise, in this order: `blacklisted` (the "
        "holder of the checked card is on the impersonator blacklist; the result is unchanged), "
        "`person_check_required` (the holder requires the person-card check on every check of this "
        "card and no matching `fingerprint` was sent: serve them only after a matching one), "
        "`known_impersonator` (the live finger that did not match this card is a blacklisted "
        "person's). Never personal data. Recorded with the check",
        examples=[["blacklisted"]],
    )


def _json_object(value: Any) -> dict[str, Any]:
    """`dict[str, Any]` for a parsed JSON body, without pydantic's copy of every item (a JSON
    object's keys are strings already); the same error as pydantic's."""
    if isinstance(value, dict):
        return value
    raise PydanticCustomError("dict_type", "Input should be a valid dictionary")


# Each item is validated on its own by the handler (a bad item fails alone), so here an item
# need only be an object.
_BatchItem = Annotated[dict[str, Any], PlainValidator(_json_object, json_schema_input_type=dict[str, Any])]


class VerifyBatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"items": [_EXAMPLE]}]})
    items: list[_BatchItem] = Field(
        min_length=1, max_length=MAX_BATCH_ITEMS, description=f"up to {MAX_BATCH_ITEMS} checks"
    )


@with_config(ConfigDict(extra="forbid"))
class VerifyBatchItems(TypedDict):
    """VerifyBatchIn with its items as VerifyItem, for validating a whole batch from its JSON
    in one pass (the routes' fast lane; a batch with any fault goes the declared way)."""

    items: Annotated[list[VerifyItem], Field(min_length=1, max_length=MAX_BATCH_ITEMS)]


class ItemError(BaseModel):
    status: int
    title: str
    detail: str
    errors: list[dict[str, str]] = Field(default_factory=list)


class BatchResult(BaseModel):
    """Either the answer's fields, or `error` for an item that could not be checked."""

    model_config = ConfigDict(extra="allow")
    error: ItemError | None = None


class VerifyBatchOut(BaseModel):
    results: list[BatchResult] = Field(description="one per item, in the order sent")


class UnitIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "code": "ICBC-BJ",
                    "name": "工商银行北京分行",
                    "sector": "bank",
                    "purposes": ["account_opening"],
                    "rate_limit": 200,
                }
            ]
        },
    )
    code: Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^[A-Za-z0-9_.-]{2,32}$")]
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
    sector: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=40)]
    purposes: list[str] = Field(min_length=1, max_length=len(PURPOSES))
    rate_limit: int = Field(default=100, ge=1, le=100_000, description="checks per second")
    webhook_url: Annotated[str, StringConstraints(pattern=r"^https?://", max_length=300)] | None = None
    offline: bool = Field(
        default=False, description="grant offline verification (GET /api/v1/offline/snapshot …)"
    )


class HarvestingOut(BaseModel):
    since: dt.datetime = Field(description="when the unit's checks first looked like harvesting")
    reason: str = Field(description="what they looked like")


class UnitOut(BaseModel):
    code: str
    name: str
    sector: str
    purposes: list[str]
    rate_limit: int
    status: str
    webhook_url: str | None
    offline: bool = Field(default=False, description="granted offline verification")
    harvesting: HarvestingOut | None = Field(
        default=None,
        description="set while the unit is suspected of harvesting: it is throttled to 1 check per "
        "second until a supervisor clears it (POST /api/v1/units/{code}/harvesting/clear)",
    )


class UnitKeyOut(BaseModel):
    unit: UnitOut
    api_key: str | None = Field(
        description="shown once: store it now, it cannot be shown again (null when a retry under the "
        "same Idempotency-Key replays this answer: the key is never stored; rotate to get a new one)"
    )
    webhook_secret: str | None = Field(
        description="signs webhook deliveries (HMAC-SHA256), shown once at onboarding; null in a "
        "replay and in a key rotation's answer (roll it with POST /api/v1/units/{code}/webhook-secret)"
    )
    notice: str | None = Field(
        default=None, description="in a replay only: why the secrets are null and how to get new ones"
    )


class RotateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    grace_seconds: int = Field(
        default=86_400, ge=0, le=30 * 86_400, description="how long old keys keep working"
    )


class CheckOut(BaseModel):
    check_id: str
    unit: str
    operator: str
    purpose: str
    at: dt.datetime
    result: str
    reason: str | None
    id_number: str = Field(description="masked")
    fingerprint_match: bool | None = Field(
        default=None, description="the person-card comparison's verdict, when one was made"
    )


class CheckPage(BaseModel):
    items: list[CheckOut]
    next: str | None = Field(description="pass as `cursor` for the next page; null at the end")


class Health(BaseModel):
    status: str
    database: str
    ledger_seq: int | None
    extra: dict[str, Any] = Field(default_factory=dict)


# --- units after onboarding: PATCH, the webhook secret's roll, test events and resends --------

WebhookUrl = Annotated[str, StringConstraints(pattern=r"^https?://", max_length=300)]
StrictBool = Annotated[bool, Field(strict=True)]


class UnitPatch(BaseModel):
    """Only the fields sent change; `webhook_url: null` removes the webhook."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"webhook_url": "https://hooks.icbc.example/idguard"}, {"offline": True}]
        },
    )
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)] | None = None
    purposes: list[str] | None = Field(default=None, min_length=1, max_length=len(PURPOSES))
    rate_limit: int | None = Field(default=None, ge=1, le=100_000, description="checks per second")
    webhook_url: WebhookUrl | None = Field(default=None, description="null removes the webhook")
    offline: StrictBool | None = Field(
        default=None, description="grant (true) or withdraw (false) offline verification"
    )


class UnitChangedOut(BaseModel):
    unit: UnitOut
    changed: list[str] = Field(description="the fields whose value changed (empty: nothing to do)")


class RevokedOut(BaseModel):
    unit_code: str
    keys_revoked: int = Field(description="keys that stopped working now (0 when none was left)")
    revoked_at: dt.datetime
    notice: str = Field(description="what to do next")


class WebhookSecretIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"overlap_seconds": 86400}]})
    overlap_seconds: int = Field(
        default=86_400,
        ge=0,
        le=7 * 86_400,
        description="how long the secrets in use keep signing beside the new one (0: stop now)",
    )


class WebhookSecretOut(BaseModel):
    unit_code: str
    webhook_secret: str | None = Field(
        description="the new secret, shown once (null when a retry replays this answer: roll again)"
    )
    previous_expires_at: dt.datetime | None = Field(
        description="until then every delivery is also signed with the previous secret"
    )
    notice: str | None = Field(default=None, description="in a replay only: why the secret is null")


class WebhookSentOut(BaseModel):
    delivery_id: str = Field(description="the message's id, sent as the `Webhook-Id` header")
    kind: str = Field(description="test | notifications | cases")
    delivered: bool = Field(description="your endpoint answered 2xx")
    status_code: int | None = Field(description="your endpoint's HTTP status; null if it did not answer")
    error: str | None = Field(description="why there was no HTTP answer (refused, timeout, TLS, …)")
