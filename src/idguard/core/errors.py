"""Errors the domain and the services raise; the API maps each to one HTTP status."""

from __future__ import annotations


class DomainError(Exception):
    """Base of every rule-level failure. `detail` is safe to show to staff (no full id numbers).

    `code` is the stable name a program branches on (api/problems.py documents every code); a
    raise site names a more precise one where a client would act on it (`code="..."`)."""

    status = 400
    title = "Bad request"
    code = "bad_request"

    def __init__(self, detail: str, *, code: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code


class InvalidField(DomainError):
    """A request field is malformed or inconsistent; names the field."""

    status = 422
    title = "Invalid field"
    code = "invalid_field"

    def __init__(self, field: str, detail: str, *, code: str | None = None) -> None:
        super().__init__(detail, code=code)
        self.field = field


class NotFound(DomainError):
    status = 404
    title = "Not found"
    code = "not_found"


class RuleViolation(DomainError):
    """The request is well formed but a registry rule forbids it (wrong state, already replaced)."""

    status = 409
    title = "Conflict with a registry rule"
    code = "rule_violation"


class Forbidden(DomainError):
    """The caller's role or office may not perform this action."""

    status = 403
    title = "Forbidden"
    code = "forbidden"


class RecordedRefusal(RuleViolation):
    """A refusal that is itself part of the record (a failed fingerprint comparison).

    The unit of work rolls the request's changes back, then commits `records` alone, then
    answers with this error: nothing half-written, and the failed attempt still visible.
    """

    def __init__(self, detail: str, *, records: tuple[object, ...], code: str | None = None) -> None:
        super().__init__(detail, code=code)
        self.records = records


class Unavailable(DomainError):
    """The registry cannot serve this request now (a key or store it needs is unusable)."""

    status = 503
    title = "Service unavailable"
    code = "unavailable"
