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

from idguard.core.errors import DomainError, InvalidField

PROBLEM = "application/problem+json"
log = logging.getLogger("idguard.api")


def problem_body(
    status: int, title: str, detail: str, errors: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
    }
    if errors:
        body["errors"] = errors
    return body


def problem(
    status: int,
    title: str,
    detail: str,
    errors: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        problem_body(status, title, detail, errors), status_code=status, media_type=PROBLEM, headers=headers
    )


def invalid_request(errors: list[dict[str, str]]) -> JSONResponse:
    """The 422 of a request whose fields are malformed, each named in `errors` (field, detail):
    FastAPI's validation errors and the request guard's (api/guard.py) alike."""
    names = ", ".join(dict.fromkeys(e["field"] for e in errors))
    return problem(422, "Invalid request", f"invalid fields: {names}", errors)


def field_name(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def _message(err: dict[str, Any]) -> str:
    # Pydantic's messages are clear but may echo the input; we never echo it (it may be an id number).
    return str(err.get("msg", "invalid value"))


def install(app: FastAPI) -> None:
    @app.exception_handler(DomainError)
    async def _domain(_: Request, exc: DomainError) -> JSONResponse:
        errors = [{"field": exc.field, "detail": exc.detail}] if isinstance(exc, InvalidField) else None
        return problem(exc.status, exc.title, exc.detail, errors)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return invalid_request(
            [{"field": field_name(tuple(e["loc"])), "detail": _message(e)} for e in exc.errors()]
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers) if exc.headers else None
        return problem(exc.status_code, _title(exc.status_code), str(exc.detail), headers=headers)

    @app.exception_handler(PoolTimeout)
    async def _pool_exhausted(_: Request, exc: PoolTimeout) -> JSONResponse:
        # Every pooled connection is busy (a slow or partitioned database): fail fast.
        log.error("no database connection free within the pool timeout")
        return problem(
            503,
            "Service unavailable",
            "the registry database is not answering in time; retry later",
            headers={"Retry-After": "1"},
        )

    @app.exception_handler(OperationalError)
    async def _db_down(_: Request, exc: OperationalError) -> JSONResponse:
        kind = type(exc.orig).__name__
        if kind in ("DeadlockDetected", "SerializationFailure", "LockNotAvailable"):
            # Nothing was written (the transaction rolled back); the client may simply retry.
            log.warning("transaction conflict: %s", kind)
            return problem(
                409, "Conflict", "a concurrent change conflicted with this one; nothing was written, retry"
            )
        log.error("database unavailable: %s", kind)
        return problem(
            503,
            "Service unavailable",
            "the registry database is unavailable; retry later",
            headers={"Retry-After": "1"},
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
