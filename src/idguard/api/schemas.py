"""Schema pieces every feature's routes share: field types, strict input models, and the problem
details (RFC 9457) every error answers with. Each feature keeps its own request and response models
(registry/schemas.py, verification/schemas.py), separate from the ORM models.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    StringConstraints,
    WithJsonSchema,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

from idguard.core import idnumber


def _folded(value: str) -> str:
    """A number written with compatibility characters (full-width digits) in the one form every
    route uses (core.idnumber.normalise); ASCII as it is (already stripped and upper-cased)."""
    return value if value.isascii() else idnumber.normalise(value)


# An id number in a staff request (body, path or query): 18 characters, normalised as everywhere;
# the registry's services then judge it in full (idnumber.parse: form, check character, date,
# region), naming the fault.
IdNumberStr = Annotated[
    str,
    StringConstraints(strip_whitespace=True, to_upper=True, min_length=18, max_length=18),
    AfterValidator(_folded),
]


_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
DATE_FAULT = "a date is YYYY-MM-DD: no time, no offset, no number"


def _day(value: object) -> object:
    """A date only as `YYYY-MM-DD` (pydantic alone also takes `2026-06-15T00:00:00Z` and a
    Unix time at midnight); a date object from Python code passes as it is."""
    if isinstance(value, str) and _DAY.fullmatch(value):
        return value
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    raise PydanticCustomError("date", DATE_FAULT)


# A calendar date in a request: YYYY-MM-DD only (a real date; 2026-02-30 is refused too).
Day = Annotated[dt.date, BeforeValidator(_day), WithJsonSchema({"type": "string", "format": "date"})]


def _long_term(value: object) -> object:
    if value is None or (isinstance(value, str) and _DAY.fullmatch(value)):
        return value
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    raise PydanticCustomError("date", "YYYY-MM-DD, or null for a long-term (长期) card")


# An expiry date: YYYY-MM-DD, or null for a long-term (长期) card; anything else (a word such as
# "长期", a time) says so.
ExpiryDay = Annotated[
    dt.date | None,
    BeforeValidator(_long_term),
    WithJsonSchema({"anyOf": [{"type": "string", "format": "date"}, {"type": "null"}]}),
]


def _normalised_card_number(value: object) -> str:
    number = idnumber.normalised(value) if isinstance(value, str) else None
    if number is None:
        raise PydanticCustomError("id_number", idnumber.SHAPE_FAULT)
    return number


class _CardNumber:
    """The schema of CardNumber: pydantic's own string check (strip, then the ASCII form) first,
    in Rust, which takes nearly every number as sent; only a value it refuses reaches the Python
    normaliser (core.idnumber.normalised: NFKC for non-ASCII text, strip, upper case, the same
    form), which folds full-width digits and a lower-case x and refuses the rest. One error
    either way, naming the field. (pydantic matches the pattern before upper-casing, so the
    first check alone would refuse a lower-case x.)"""

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.union_schema(
            [
                core_schema.str_schema(strip_whitespace=True, to_upper=True, pattern=idnumber.SHAPE),
                core_schema.no_info_plain_validator_function(_normalised_card_number),
            ],
            mode="left_to_right",
            custom_error_type="id_number",
            custom_error_message=idnumber.SHAPE_FAULT,
        )

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"type": "string", "pattern": idnumber.SHAPE}


# An id number as printed on a card, in the shape checked on the verification hot path (no region
# table, no date): 17 digits and a check digit or X, normalised like IdNumberStr. A number as
# printed costs pydantic's string check alone; full-width digits are folded; any other is refused.
CardNumber = Annotated[str, _CardNumber()]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=60)]
OfficeCode = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=12)]

EXAMPLE_ID = "11010519491231002X"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FieldError(BaseModel):
    field: str
    code: str = Field("invalid_field", description="stable code of this field's fault (GET /api/v1/problems)")
    detail: str


class Problem(BaseModel):
    """RFC 9457 problem details, with a stable `code` to branch on (GET /api/v1/problems)."""

    type: str = Field(description="URI of the code's description: /api/v1/problems/<code>")
    code: str
    title: str
    status: int
    detail: str
    param: str | None = Field(None, description="the request field at fault, when there is one")
    doc_url: str
    errors: list[FieldError] = Field(default_factory=list)


_PROBLEM_DESCRIPTIONS = {
    401: "no or invalid bearer token",
    403: "the role or office may not do this",
    404: "unknown resource",
    409: "a registry rule forbids this (the rule is in `detail`)",
    422: "a field is invalid (each bad field is named in `errors`)",
}


def problem_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the problem answers a route can give."""
    return {code: {"model": Problem, "description": _PROBLEM_DESCRIPTIONS[code]} for code in codes}


STAFF_WRITE_ERRORS = problem_responses(401, 403, 404, 409, 422)
STAFF_READ_ERRORS = problem_responses(401, 403, 404, 422)
