"""The product app plus one no-op route, for the HTTP baseline of bench/verify (part 2).

`create` is a uvicorn app factory (`uvicorn --factory _bench_app:create --app-dir bench`): the
server is exactly `idguard serve`'s app, built from the same IDGUARD_* environment, with
`POST /bench/noop` added. The no-op route is the floor every request pays in this process (ASGI
server, Starlette routing, a JSONResponse of the same shape as a verify answer) and nothing else:
it neither reads the body nor authenticates, so `verify / noop` is what verification itself costs.
It lives here, never in the product.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.responses import JSONResponse

from idguard.app import create_app

# Same keys and roughly the same length as a verify answer, so serialising it costs the same.
_ANSWER = {
    "result": "valid",
    "check_id": "0b9f1c1e-5d0c-4a8e-9d5e-2c1a7f0e9b11",
    "checked_at": "2026-06-15T02:00:00.000000Z",
}


def add_noop(app: FastAPI) -> FastAPI:
    """Add `POST /bench/noop` (also used in-process by bench/verify part 5)."""

    @app.post("/bench/noop", include_in_schema=False)
    async def noop() -> JSONResponse:
        return JSONResponse(_ANSWER, headers={"X-Index-Age": "0.000"})

    return app


def create() -> FastAPI:
    return add_noop(create_app())
