"""The app factory: settings, engine and routers are built here, never at import time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from idguard import __version__, logs
from idguard.api import errors
from idguard.biometrics.fingerprints import Biometrics
from idguard.config import Settings
from idguard.core.clock import Clock, SystemClock
from idguard.core.ratelimit import RateLimiter
from idguard.db.engine import make_engine, make_sessionmaker
from idguard.registry.routes import auth, cards, found_cards, loss_reports, persons
from idguard.registry.routes import fingerprint_comparisons as fingerprints
from idguard.verification.routes import checks, health, notifications, units, verify
from idguard.verification.verifier import Verifier

DESCRIPTION = """
The invalid resident ID card information system (失效居民身份证信息系统).

* **Staff** (clerks, supervisors, auditors) record every event in a card's life: issue, loss
  report, replacement, found card, revocation. Get a token at `POST /api/v1/auth/token` and send
  it as `Authorization: Bearer <token>`.
* Writes accept an `Idempotency-Key` header: a retried request returns the first answer and
  changes nothing twice.
* Errors are RFC 9457 problem details (`application/problem+json`) whose `errors` name each bad
  field.
"""


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Build this worker's verification index before serving; flush the check log on the way out."""
    verifier: Verifier = app.state.verifier
    await run_in_threadpool(verifier.start)
    try:
        yield
    finally:
        await run_in_threadpool(verifier.stop)
        app.state.engine.dispose()


def create_app(settings: Settings | None = None, *, clock: Clock | None = None) -> FastAPI:
    settings = settings or Settings()
    logs.install()
    app = FastAPI(
        lifespan=_lifespan,
        title="idguard",
        version=__version__,
        description=DESCRIPTION,
        openapi_url="/api/v1/openapi.json",
        docs_url="/api/v1/docs",
        redoc_url=None,
    )
    engine = make_engine(settings)
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessionmaker = make_sessionmaker(engine)
    app.state.clock = clock or SystemClock()
    app.state.biometrics = Biometrics.from_settings(settings)
    app.state.throttle = RateLimiter(settings.workers)  # logins and the public lookup
    app.state.verifier = Verifier(
        engine,
        app.state.sessionmaker,
        secret_key=settings.secret_key,
        clock=app.state.clock,
        biometrics=app.state.biometrics,
        workers=settings.workers,
    )
    errors.install(app)
    for module in (
        health,
        auth,
        verify,
        checks,
        notifications,
        units,
        persons,
        cards,
        loss_reports,
        found_cards,
        fingerprints,
    ):
        app.include_router(module.router)
    return app
