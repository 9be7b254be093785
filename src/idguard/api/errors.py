"""Every error leaves as RFC 9457 problem details naming the field; never a bare 500 for bad input."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from idguard.api.problems import code_for, uri
from idguard.core.errors import DomainError, InvalidField
from idguard.core.sealing import KeyRingError

PROBLEM = "application/problem+json"
log = logging.getLogger("idguard.api")


def problem_body(
    status: int,
    title: str,
    detail: str,
    errors: list[dict[str, str]] | None = None,
    *,
    code: str | None = None,
    param: str | None = None,
) -> dict[str, Any]:
    """An RFC 9457 problem document: `code` (api/problems.py; by status when not given), its
    `type` and `doc_url`, and `param`, the field at fault (the first of `errors` when not given)."""
    code = code_for(status, code)
    body: dict[str, Any] = {
        "type": uri(code),
        "code": code,
        "title": title,
        "status": status,
        "detail": detail,
    }
    param = param or (errors[0]["field"] if errors else None)
    if param:
        body["param"] = param
    body["doc_url"] = uri(code)
    if errors:
        body["errors"] = errors
    return body


def problem(
    status: int,
    title: str,
    detail: str,
    errors: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
    *,
    code: str | None = None,
    param: str | None = None,
) -> JSONResponse:
    return JSONResponse(
        problem_body(status, title, detail, errors, code=code, param=param),
        status_code=status,
        media_type=PROBLEM,
        headers=headers,
    )


class ApiError(StarletteHTTPException):
    """An HTTP error a route raises with its own `code` (api/problems.py) and, optionally, the
    `param` at fault: `raise ApiError(403, "...", code="purpose_not_allowed", param="purpose")`."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        code: str,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status, detail, headers=headers)
        self.code = code
        self.param = param


def invalid_request(errors: list[dict[str, str]]) -> JSONResponse:
    """The 422 of a request whose fields are malformed, each named in `errors` (field, detail,
    code): FastAPI's validation errors and the request guard's (api/guard.py) alike. The answer's
    own code is the fields' code when they share one (`invalid_id_number`), else invalid_request."""
    names = ", ".join(dict.fromkeys(e["field"] for e in errors))
    codes = {e.get("code", "invalid_field") for e in errors}
    code = codes.pop() if len(codes) == 1 else "invalid_request"
    if code == "invalid_field":
        code = "invalid_request"
    return problem(422, "Invalid request", f"invalid fields: {names}", errors, code=code)


def field_name(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def _message(err: dict[str, Any]) -> str:
    # Pydantic's messages are clear but may echo the input; we never echo it (it may be an id number).
    return str(err.get("msg", "invalid value"))


# Pydantic error types (and our own PydanticCustomError names) that have a code of their own.
_FIELD_CODES = {
    "id_number": "invalid_id_number",
    "date": "invalid_date",
    "date_type": "invalid_date",
    "date_parsing": "invalid_date",
    "date_from_datetime_parsing": "invalid_date",
    "date_from_datetime_inexact": "invalid_date",
}


def _field_error(err: dict[str, Any]) -> dict[str, str]:
    return {
        "field": field_name(tuple(err["loc"])),
        "code": _FIELD_CODES.get(str(err.get("type")), "invalid_field"),
        "detail": _message(err),
    }


def _invalid_json(err: dict[str, Any]) -> JSONResponse:
    """400 saying where the JSON breaks, in words (Pydantic reports it as a field named by the
    offending character's position)."""
    where = err["loc"][-1] if err.get("loc") else None
    reason = str((err.get("ctx") or {}).get("error", "invalid JSON"))
    at = f" at character {where}" if isinstance(where, int) else ""
    return problem(
        400,
        "Body is not valid JSON",
        f"the body is not valid JSON{at}: {reason}",
        code="invalid_json",
        param="body",
    )


def install(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def _domain(_: Request, exc: DomainError) -> JSONResponse:
        if isinstance(exc, InvalidField):
            errors = [{"field": exc.field, "code": exc.code, "detail": exc.detail}]
            return problem(exc.status, exc.title, exc.detail, errors, code=exc.code)
        retry_after = getattr(exc, "retry_after", None)
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        return problem(exc.status, exc.title, exc.detail, code=exc.code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        found = exc.errors()
        broken = next((e for e in found if e.get("type") == "json_invalid"), None)
        if broken is not None:
            return _invalid_json(broken)
        return invalid_request([_field_error(e) for e in found])

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers) if exc.headers else None
        detail = str(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":  # no route: say what to check
            path = request.url.path
            detail = f"no route at {path}"
            if path.endswith("/") and len(path) > 1:
                detail += f"; without the trailing slash: {path.rstrip('/')}"
        return problem(
            exc.status_code,
            _title(exc.status_code),
            detail,
            headers=headers,
            code=getattr(exc, "code", None),
            param=getattr(exc, "param", None),
        )

    @app.exception_handler(KeyRingError)
    async def _personal_data_key(_: Request, exc: KeyRingError) -> JSONResponse:
        # Misconfiguration, not the caller's fault: the message names the key id and the setting
        # (never a value); the operator's log gets it, the caller a 503 to retry later.
        log.error("personal data could not be opened: %s", exc)
        return problem(
            503,
            "Service unavailable",
            "a record needed for this request cannot be opened with the configured keys; retry later",
            headers={"Retry-After": "60"},
            code="personal_data_key_unavailable",
        )

    @app.exception_handler(PoolTimeout)
    async def _pool_exhausted(_: Request, exc: PoolTimeout) -> JSONResponse:
        # Every pooled connection is busy (a slow or partitioned database): fail fast.
        log.error("no database connection free within the pool timeout")
        return problem(
            503,
            "Service unavailable",
            "the registry database is not answering in time; retry later",
            headers={"Retry-After": "1"},
            code="database_unavailable",
        )

    @app.exception_handler(OperationalError)
    async def _db_down(_: Request, exc: OperationalError) -> JSONResponse:
        kind = type(exc.orig).__name__
        if kind in ("DeadlockDetected", "SerializationFailure", "LockNotAvailable"):
            # Nothing was written (the transaction rolled back); the client may simply retry.
            log.warning("transaction conflict: %s", kind)
            return problem(
                409,
                "Conflict",
                "a concurrent change conflicted with this one; nothing was written, retry",
                code="concurrent_change",
            )
        log.error("database unavailable: %s", kind)
        return problem(
            503,
            "Service unavailable",
            "the registry database is unavailable; retry later",
            headers={"Retry-After": "1"},
            code="database_unavailable",
        )


def _title(status: int) -> str:
    return {
        401: "Unauthorized",
        403: "Forbidden",
        404: "Not found",
        405: "Method not allowed",
        409: "Conflict",
        413: "Content too large",
        415: "Unsupported media type",
        429: "Too many requests",
        431: "Request header fields too large",
        503: "Service unavailable",
    }.get(status, "Error")
