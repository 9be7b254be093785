"""Every error code a client can meet, documented where the client can read it.

Each problem answer carries a stable `code` (what a program branches on), `type`, a URI that
names the code (`/api/v1/problems/<code>`, a reference relative to the service: it resolves on a
closed network too), `doc_url` (the same page), and `param` when one request field is at fault.
`GET /api/v1/problems` lists the catalogue below and `GET /api/v1/problems/{code}` describes one
code; docs/errors.md is the same catalogue for readers of the repository (a test keeps the two
equal). A code is never renamed or reused: a new meaning gets a new code.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel

PREFIX = "/api/v1/problems/"


@dataclass(frozen=True)
class Code:
    status: int
    title: str
    meaning: str  # when it happens, and what the client should do


CODES: dict[str, Code] = {
    # 400
    "bad_request": Code(400, "Bad request", "The request cannot be served as sent; `detail` says why."),
    "invalid_json": Code(
        400,
        "Body is not valid JSON",
        "The body could not be parsed as JSON; `detail` gives the position (in characters) and what was expected there. Send a JSON "
        "document (`Content-Type: application/json`).",
    ),
    "unknown_parameter": Code(
        400,
        "Unknown query parameter",
        "The query names a parameter this route does not take (a misspelt filter or cursor "
        "would otherwise be ignored silently, restarting a listing at its first page). "
        "`detail` lists the parameters the route takes; `param` names the first unknown one.",
    ),
    # 401
    "unauthorized": Code(
        401,
        "Credentials missing or not accepted",
        "Send `Authorization: Bearer <token>`: a staff token from `POST /api/v1/auth/token` on "
        "staff routes, a unit's API key on unit routes. `detail` says what was wrong.",
    ),
    # 403
    "forbidden": Code(
        403, "Forbidden", "Your role, office or unit may not do this; `detail` says which rule."
    ),
    "purpose_not_allowed": Code(
        403,
        "Purpose not allowed for this unit",
        "The unit may not check for this `purpose`; `detail` lists the purposes it was onboarded "
        "with (a supervisor can change them).",
    ),
    # 404, 405
    "not_found": Code(
        404, "Not found", "No such resource, or no such route (check the path, without a trailing slash)."
    ),
    "method_not_allowed": Code(405, "Method not allowed", "The route exists but not with this HTTP method."),
    # 409
    "rule_violation": Code(
        409,
        "Conflict with a registry rule",
        "Well formed, but a registry rule forbids it now (a card in the wrong state, a report "
        "already cancelled); `detail` names the rule. Nothing was written.",
    ),
    "fingerprint_mismatch": Code(
        409,
        "Fingerprint does not match",
        "The live finger did not match the card's registered fingers. Nothing was done but the "
        "comparison, which is recorded; `detail` says how many comparisons failed in 24 hours.",
    ),
    "concurrent_change": Code(
        409,
        "A concurrent change conflicted",
        "Another request changed the same records at the same moment; nothing was written. Retry "
        "(with the same Idempotency-Key).",
    ),
    # 413, 415
    "body_too_large": Code(
        413, "Content too large", "The body exceeds the route's limit; `detail` gives it."
    ),
    "unsupported_media_type": Code(
        415,
        "Unsupported media type",
        "The body's Content-Type is not one the route takes; `detail` lists them (JSON routes "
        "take `application/json`).",
    ),
    # 422
    "invalid_request": Code(
        422,
        "Invalid request",
        "One or more fields are invalid; `errors` names each (`field`, `detail`, `code`) and "
        "`param` the first. Nothing was written.",
    ),
    "invalid_text": Code(
        422,
        "Text the registry cannot store",
        "A text value (body, query, path or header) holds a NUL character, an unpaired surrogate "
        "or percent-encoded bytes that are not UTF-8; `errors` names each such field.",
    ),
    "invalid_field": Code(
        422, "Invalid field", "A field is malformed or inconsistent with another; `param` names it."
    ),
    "invalid_id_number": Code(
        422,
        "Invalid id number",
        "Not a valid citizen identity number (GB 11643-1999): 18 characters, the last a digit or "
        "X (x is accepted), a real birth date, a known region, a matching check character.",
    ),
    "batch_exceeds_rate": Code(
        422,
        "Batch larger than the unit's rate admits",
        "A batch may borrow at most a minute of the unit's rate (checks per second) beyond a "
        "second's worth; `detail` gives the most items this unit may send in one batch.",
    ),
    "invalid_date": Code(422, "Invalid date", "Dates are `YYYY-MM-DD` only: no time, no offset, no number."),
    "invalid_time": Code(
        422, "Invalid time", "Times are RFC 3339 with a time zone (`2026-11-28T09:30:00+08:00`)."
    ),
    "unknown_office": Code(
        422, "Unknown office", "The office code is not one of the registry's police offices."
    ),
    "invalid_fingerprint": Code(
        422,
        "Invalid fingerprint record",
        "The fingerprint is not a valid ISO/IEC 19794-2 (2005 or 2011) single-finger record in "
        "base64; `param` names the part at fault.",
    ),
    "poor_capture": Code(
        422,
        "Poor fingerprint capture",
        "The capture is too poor to use; `detail` says what to do (wipe, press, again).",
    ),
    # 429, 431
    "rate_limited": Code(
        429, "Too many requests", "Slow down: retry after the seconds in `Retry-After` (RateLimit-Reset too)."
    ),
    "headers_too_large": Code(
        431, "Request header fields too large", "The request line and headers exceed 16 KiB."
    ),
    # 503
    "unavailable": Code(503, "Service unavailable", "Retry after the seconds in `Retry-After`."),
    "database_unavailable": Code(
        503,
        "Registry database unavailable",
        "The registry database is unavailable or slow; retry after `Retry-After`.",
    ),
    "index_behind": Code(
        503,
        "Server behind a change",
        "A change to the registry (a loss report, a revocation, a suspension) was acknowledged, "
        "and this server has not applied it yet and cannot reach the database to catch up. It "
        "answers this instead of an answer that may be stale; retry after `Retry-After`.",
    ),
    "personal_data_key_unavailable": Code(
        503,
        "Personal data key unavailable",
        "A sealed record this request needs does not open with the keys in `IDGUARD_DATA_KEYS` "
        "(its key id is missing or another key has that id). The server logs the key id; retry "
        "after `Retry-After` once the operator has restored the key.",
    ),
    "idempotent_answer_unreadable": Code(
        503,
        "Stored answer unreadable",
        "The stored answer of this Idempotency-Key cannot be read (its key was rotated away); "
        "check whether the first request took effect, then use a new key.",
    ),
    "fingerprints_unreadable": Code(
        503,
        "Registered fingerprints unreadable",
        "The card's registered fingerprints cannot be read; nothing was done. Contact the "
        "registry's operators (the incident is logged with the card).",
    ),
}

# The code of an answer that names none, by status.
BY_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "rule_violation",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "rate_limited",
    431: "headers_too_large",
    503: "unavailable",
}


def code_for(status: int, code: str | None = None) -> str:
    return code or BY_STATUS.get(status, "bad_request" if status < 500 else "unavailable")


def uri(code: str) -> str:
    return PREFIX + code


class ProblemCode(BaseModel):
    code: str
    status: int
    title: str
    meaning: str
    type: str


def _described(code: str, entry: Code) -> ProblemCode:
    return ProblemCode(
        code=code, status=entry.status, title=entry.title, meaning=entry.meaning, type=uri(code)
    )


router = APIRouter(prefix="/api/v1/problems", tags=["errors"])


@router.get("", response_model=list[ProblemCode])
def list_codes() -> list[ProblemCode]:
    """Every error `code` an answer can carry, with its status and what to do about it. Public."""
    return [_described(code, entry) for code, entry in CODES.items()]


@router.get("/{code}", response_model=ProblemCode, responses={404: {"description": "no such code"}})
def describe(code: str) -> ProblemCode:
    """What one error `code` means (the page an answer's `type` and `doc_url` point to). Public."""
    entry = CODES.get(code)
    if entry is None:
        raise HTTPException(404, f"no error code {code!r}: GET /api/v1/problems lists them")
    return _described(code, entry)


def markdown() -> str:
    """docs/errors.md: the catalogue for readers of the repository."""
    lines = [
        "# Error codes",
        "",
        "<!-- Generated from src/idguard/api/problems.py (markdown()); tests/functional/test_problems.py keeps it equal. -->",
        "",
        "Every error answer is an RFC 9457 problem document (`application/problem+json`):",
        "",
        "```json",
        '{"type": "/api/v1/problems/invalid_request", "code": "invalid_request", "title": "Invalid request",',
        ' "status": 422, "detail": "invalid fields: id_number", "param": "id_number",',
        ' "doc_url": "/api/v1/problems/invalid_request",',
        ' "errors": [{"field": "id_number", "code": "invalid_id_number", "detail": "..."}]}',
        "```",
        "",
        "Branch on `code` (stable, never reused); show `detail` to people; `param` names the field at",
        "fault when there is one, and `errors` every field of a 422. `type` and `doc_url` resolve on the",
        "service itself (`GET /api/v1/problems/{code}`), so they work on a closed network.",
        "",
        "| code | status | title | meaning and what to do |",
        "|---|---|---|---|",
    ]
    for code, entry in CODES.items():
        lines.append(f"| `{code}` | {entry.status} | {entry.title} | {entry.meaning} |")
    return "\n".join(lines) + "\n"
