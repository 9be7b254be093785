"""Schema pieces every feature's routes share: field types, strict input models, and the problem
details (RFC 9457) every error answers with. Each feature keeps its own request and response models
(registry/schemas.py, verification/schemas.py), separate from the ORM models.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

IdNumberStr = Annotated[
    str, StringConstraints(strip_whitespace=True, to_upper=True, min_length=18, max_length=18)
]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=60)]
OfficeCode = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=12)]

EXAMPLE_ID = "11010519491231002X"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FieldError(BaseModel):
    field: str
    detail: str


class Problem(BaseModel):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
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
