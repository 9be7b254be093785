"""Signing in and out: staff at /console/login (the API's password check and throttling), unit
tellers at /unit/login (the unit's API key and the teller's operator name)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from starlette.responses import Response

from idguard.api.deps import SessionDep, client_address
from idguard.console import deps
from idguard.console.web import Ctx, check_csrf, context, text
from idguard.core.ratelimit import RateLimiter
from idguard.registry.routes.auth import LOGIN_BURST, LOGIN_PER_MINUTE
from idguard.registry.staff import authenticate
from idguard.verification.routes.deps import get_verifier

router = APIRouter(include_in_schema=False)
OPERATOR_MAX = 64


def _login_page(ctx: Ctx, *, status: int = 200, error: str | None = None, username: str = "") -> Response:
    demo = deps.demo_support(ctx.request) if ctx.development else None
    if ctx.request.query_params.get("bye"):
        ctx.values.setdefault("notice", "session.signed_out")
    return ctx.render(
        "login.html",
        status=status,
        error=error,
        username=username,
        demo_accounts=demo.accounts if demo is not None else [],
    )


@router.get("/")
def home(request: Request) -> Response:
    """The console's front door: the staff sign-in page, or the signed-in person's start page."""
    ctx = context(request)
    if ctx.session.kind == "staff":
        return ctx.redirect("/console")
    if ctx.session.kind == "unit":
        return ctx.redirect("/unit")
    return _login_page(ctx)


@router.get("/console/login")
def login_page(request: Request) -> Response:
    ctx = context(request)
    return _login_page(ctx)


def _buckets(username: str, address: str) -> tuple[tuple[str, float, int], ...]:
    # The API's own buckets (registry/routes/auth.py), by the same keys: a guesser gains nothing by
    # alternating between the API and the console.
    return (
        (f"login:{username}:{address}", LOGIN_PER_MINUTE, LOGIN_BURST),
        (f"login-address:{address}", LOGIN_PER_MINUTE * 5, LOGIN_BURST * 5),
        (f"login-account:{username}", LOGIN_PER_MINUTE * 10, LOGIN_BURST * 10),
    )


@router.post("/console/login")
async def login(request: Request, db: SessionDep) -> Response:
    ctx = context(request)
    form = await check_csrf(request, ctx)
    username, password = text(form, "username")[:64], form.get("password")
    if not username or not isinstance(password, str) or not password:
        return _login_page(ctx, status=422, error="login.missing", username=username)
    limiter: RateLimiter = request.app.state.throttle
    buckets = _buckets(username, client_address(request))
    for key, per_minute, burst in buckets:
        if limiter.peek(key, per_minute / 60.0, burst=burst):
            return _login_page(ctx, status=429, error="login.throttled", username=username)
    staff = await run_in_threadpool(authenticate, db, username=username, password=password[:200])
    if staff is None:
        for key, per_minute, burst in buckets:
            limiter.take(key, per_minute / 60.0, burst=burst)
        return _login_page(ctx, status=401, error="login.wrong", username=username)
    ctx.session = ctx.session.signed_in(ctx.now, kind="staff", staff_id=str(staff.id))
    return ctx.redirect("/console")


@router.get("/unit/login")
def unit_login_page(request: Request) -> Response:
    ctx = context(request)
    if request.query_params.get("bye"):
        ctx.values.setdefault("notice", "session.signed_out")
    return ctx.render("unit_login.html", error=None, operator="")


@router.post("/unit/login")
async def unit_login(request: Request) -> Response:
    """A teller signs in with the unit's API key and their own operator name (what every check
    records as `operator`). The key is checked like the API's (in memory, constant time) and
    failures are throttled per address like staff sign-ins."""
    ctx = context(request)
    form = await check_csrf(request, ctx)
    key, operator = text(form, "api_key"), text(form, "operator")[:OPERATOR_MAX]
    if not key or not operator:
        return ctx.render("unit_login.html", status=422, error="unit_login.missing", operator=operator)
    limiter: RateLimiter = request.app.state.throttle
    bucket = f"unit-login:{client_address(request)}"
    if limiter.peek(bucket, LOGIN_PER_MINUTE * 5 / 60.0, burst=LOGIN_BURST * 5):
        return ctx.render("unit_login.html", status=429, error="login.throttled", operator=operator)
    unit = get_verifier(request).keyring.authenticate(key, ctx.now)
    if unit is None:
        limiter.take(bucket, LOGIN_PER_MINUTE * 5 / 60.0, burst=LOGIN_BURST * 5)
        return ctx.render("unit_login.html", status=401, error="unit_login.wrong", operator=operator)
    ctx.session = ctx.session.signed_in(ctx.now, kind="unit", unit_key=key, operator=operator)
    return ctx.redirect("/unit")


@router.post("/console/logout")
@router.post("/unit/logout")
async def logout(request: Request) -> Response:
    """Sign out: the session cookie is replaced by a new anonymous one (a new CSRF token)."""
    ctx = context(request)
    await check_csrf(request, ctx)
    where = "/unit/login" if request.url.path.startswith("/unit") else "/console/login"
    ctx.session = ctx.session.anonymous(ctx.now, ctx.session.lang)
    return ctx.redirect(where + "?bye=1")
