"""Errors the domain and the services raise; the API maps each to one HTTP status."""

from __future__ import annotations


class DomainError(Exception):
    """Base of every rule-level failure. `detail` is safe to show to staff (no full id numbers)."""

    status = 400
    title = "Bad request"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidField(DomainError):
    """A request field is malformed or inconsistent; names the field."""

    status = 422
    title = "Invalid field"

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(detail)
        self.field = field


class NotFound(DomainError):
    status = 404
    title = "Not found"


class RuleViolation(DomainError):
    """The request is well formed but a registry rule forbids it (wrong state, already replaced)."""

    status = 409
    title = "Conflict with a registry rule"


class Forbidden(DomainError):
    """The caller's role or office may not perform this action."""

    status = 403
    title = "Forbidden"
