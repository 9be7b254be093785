"""The app factory: settings, engine and routers are built here, never at import time."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from idguard import __version__, accountability, citizens, console, logs, offline, ops, uow, watchlist
from idguard.api import errors, problems
from idguard.api.guard import MAX_BODY_BYTES, MAX_HEAD_BYTES, RequestGuard
from idguard.biometrics.fingerprints import Biometrics
from idguard.config import Environment, Settings
from idguard.core.clock import Clock, SystemClock
from idguard.core.ratelimit import RateLimiter
from idguard.db.engine import make_engine, make_sessionmaker
from idguard.demo import fingers
from idguard.demo.load import DEMO_CREDENTIALS
from idguard.ops.middleware import IdguardAPI
from idguard.registry.routes import auth, cards, found_cards, loss_reports, persons
from idguard.registry.routes import fingerprint_comparisons as fingerprints
from idguard.verification.routes import checks, health, notifications, units, verify
from idguard.verification.schemas import MAX_BATCH_BODY_BYTES
from idguard.verification.verifier import Verifier

_MIB = 1024 * 1024
DESCRIPTION = f"""
The invalid resident ID card information system (失效居民身份证信息系统).

* **Staff** (clerks, supervisors, auditors) record every event in a card's life: issue, loss
  report, replacement, found card, revocation. Get a token at `POST /api/v1/auth/token` and send
  it as `Authorization: Bearer <token>`.
* Writes accept an `Idempotency-Key` header: a retried request returns the first answer and
  changes nothing twice.
* Errors are RFC 9457 problem details (`application/problem+json`) with a stable `code` to
  branch on (every code: `GET /api/v1/problems`), `param` naming the field at fault and `errors`
  naming each bad field. JSON bodies need `Content-Type: application/json` (415 otherwise); an
  unknown query parameter is a 400 naming it.
* Limits, for every caller: the request line and headers {MAX_HEAD_BYTES // 1024} KiB (431), a
  body {MAX_BODY_BYTES // _MIB} MiB, or {MAX_BATCH_BODY_BYTES // _MIB} MiB for
  `/api/v1/verify/batch` (413); no text anywhere (body, query, path, headers) may contain NUL or
  an unpaired surrogate (422 naming the field).
"""


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Build this worker's verification index before serving; flush the check log on the way out."""
    verifier: Verifier = app.state.verifier
    await run_in_threadpool(verifier.start)
    # What the worker holds from here on for good (its modules, the app, the index as loaded: some
    # 200,000 objects) is left out of the garbage collector's full collections, which otherwise
    # walked it all now and then in a ~200 ms pause of every request in flight (issue 14: the
    # single check's p99). Objects made later are collected as ever; thawed on the way out. Only
    # the young generations are collected first: a full collection here cost every app start
    # (each test's) a walk of the whole heap, and old cyclic garbage of the start-up, if any, is
    # only kept until the worker stops.
    gc.collect(1)
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
        await run_in_threadpool(verifier.stop)
        app.state.engine.dispose()


def _propagation(settings: Settings, verifier: Verifier) -> uow.Propagate:
    """What a committed change waits for: every worker of this node (runtime/node.py, issue 17)
    and, with NATS configured, every live verifier node (scaleout/propagation.py, issue 15), each
    up to the bound; the answer's `propagation` says both: `{"workers": 2, "confirmed": 2,
    "ms": 1.1, "nodes": {"nodes": 3, "confirmed": 3, "ms": 4.2}}`. A change of units only is
    not waited for on the nodes: it reaches them on the stream."""
    if not settings.nats_url:
        return verifier.propagate
    from idguard.scaleout.propagation import wait_for_nodes  # NATS only when configured

    bound = settings.propagation_wait_ms / 1000

    def workers_and_nodes(seq: int, units: int) -> dict[str, object] | None:
        answer: dict[str, object] = dict(verifier.propagate(seq, units) or {})
        if seq:
            answer["nodes"] = wait_for_nodes(settings, seq, bound)
        return answer or None

    return workers_and_nodes


def create_app(settings: Settings | None = None, *, clock: Clock | None = None) -> FastAPI:
    settings = settings or Settings()
    logs.install()
    # FastAPI with the single check's front door before its middleware (ops/middleware.py).
    app = IdguardAPI(
        lifespan=_lifespan,
        title="idguard",
        version=__version__,
        description=DESCRIPTION,
        openapi_url="/api/v1/openapi.json",
        docs_url=None,  # served by the console with Swagger UI's files from this server (no CDN)
        redoc_url=None,
        # `POST /api/v1/verify/` is a 404 naming the path without the slash, never a redirect
        # (behind a TLS proxy the redirect pointed at http://, and a POST does not survive it).
        redirect_slashes=False,
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
        checklog_dir=settings.checklog_journal_dir,
        check_hash_key=settings.check_hash_key,
        node_dir=settings.node_directory,
        propagation_wait=settings.propagation_wait_ms / 1000,
        poll_interval=settings.index_poll_ms / 1000,
    )
    app.state.verifier.dispatcher.retention_days = settings.webhook_retention_days  # docs/webhooks.md
    # Every write that changes an answer is applied by every worker before it is answered (uow.py).
    app.state.sessionmaker.configure(info={uow.PROPAGATE: _propagation(settings, app.state.verifier)})
    errors.install(app)
    # Before routing: head and body limits (431, 413) and text the database cannot store (422).
    app.add_middleware(RequestGuard, body_limits=verify.BODY_LIMITS)
    for module in (
        problems,
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
    for feature in (watchlist, citizens, accountability, offline, console, ops):
        feature.install(app)
    if settings.env is Environment.DEVELOPMENT:  # the sign-in page lists the demo accounts
        console.use_demo(
            app.state,
            console.DemoSupport(
                accounts=DEMO_CREDENTIALS,
                live_finger=fingers.live_sample,
                enrolment=fingers.enrolment_samples,
            ),
        )
    return app
