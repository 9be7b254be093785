"""What every console page shares: the template environment, the request's context (language,
session, who is signed in), the security headers, and the one way a page is answered.

Security headers on every console answer: a Content-Security-Policy that allows scripts, styles
and images from this server only (no inline script anywhere: htmx is configured by a meta tag and
runs without eval), frame-ancestors 'none' with X-Frame-Options DENY (clickjacking), no-store
caching (pages hold personal data), nosniff and no referrer.
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from idguard.config import Environment as Env
from idguard.config import Settings
from idguard.console import i18n, session
from idguard.console.session import ConsoleSession
from idguard.core.clock import Clock
from idguard.core.grants import Actor

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
}
HTMX = "htmx-2.0.11.min.js"  # vendored from the npm registry (htmx.org 2.0.11, 0BSD)


@cache
def templates() -> Environment:
    return Environment(
        loader=PackageLoader("idguard.console", "templates"),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


class SignInRequired(Exception):
    """No session, or it ended: the page answers with the sign-in page of `where`."""

    def __init__(self, where: str, reason: str | None = None) -> None:
        super().__init__(where)
        self.where = where
        self.reason = reason


@dataclass
class Ctx:
    """One console request: its settings, time, session, language and who is signed in."""

    request: Request
    settings: Settings
    now: dt.datetime
    session: ConsoleSession
    t: i18n.Translator
    actor: Actor | None = None
    values: dict[str, Any] = field(default_factory=dict)

    @property
    def development(self) -> bool:
        return self.settings.env is Env.DEVELOPMENT

    def render(self, template: str, status: int = 200, **values: Any) -> Response:
        html = (
            templates()
            .get_template(template)
            .render(
                _=self.t,
                t=self.t,
                lang=self.t.lang,
                csrf=self.session.csrf,
                csrf_field=session.CSRF_FIELD,
                actor=self.actor,
                session=self.session,
                development=self.development,
                htmx=HTMX,
                form_key=new_form_key,
                path=self.request.url.path,
                # The language links reload this page; after a form's POST, the start page.
                here=self.request.url.path if self.request.method == "GET" else "/",
                **self.values,
                **values,
            )
        )
        response = HTMLResponse(html, status_code=status)
        return self.finish(response)

    def redirect(self, url: str) -> Response:
        return self.finish(RedirectResponse(url, status_code=303))

    def finish(self, response: Response) -> Response:
        secure(response)
        session.save(response, self.session.touched(self.now), self.settings)
        return response


def new_form_key() -> str:
    """A write form's own key: its submissions are one idempotent write (routes/common.write)."""
    return secrets.token_urlsafe(16)


def secure(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def now_of(request: Request) -> dt.datetime:
    clock: Clock = request.app.state.clock
    return clock.now()


def language(request: Request, current: ConsoleSession | None) -> tuple[str, str | None]:
    """(the page's language, the choice to remember): ?lang= first, then the session's choice,
    then Accept-Language."""
    chosen = i18n.supported(request.query_params.get("lang"))
    if chosen is not None:
        return chosen, chosen
    if current is not None and current.lang is not None:
        return current.lang, current.lang
    return i18n.negotiate(request.headers.get("accept-language")), None


def context(request: Request, *, require: str | None = None) -> Ctx:
    """The request's context. `require` ("staff" or "unit") refuses an absent, expired or other
    kind of session with SignInRequired; otherwise an anonymous session is begun if none is
    valid (the sign-in forms need its CSRF token)."""
    settings = settings_of(request)
    now = now_of(request)
    current = session.load(request, settings)
    reason = None
    if current is not None and current.kind != "anonymous" and current.expired(now, settings):
        current, reason = None, "expired"
    lang, remembered = language(request, current)
    if require is not None and (current is None or current.kind != require):
        raise SignInRequired(require, reason)
    if current is None:
        current = ConsoleSession.anonymous(now, remembered)
    elif remembered is not None and current.lang != remembered:
        current = ConsoleSession(**{**_fields(current), "lang": remembered})
    ctx = Ctx(request=request, settings=settings, now=now, session=current, t=i18n.Translator(lang))
    if reason is not None:
        ctx.values["notice"] = "session.expired"
    return ctx


def _fields(s: ConsoleSession) -> dict[str, Any]:
    return {name: getattr(s, name) for name in s.__slots__}


async def check_csrf(request: Request, ctx: Ctx) -> FormData:
    """The submitted form, once its CSRF token (field or header) matches the session's; a
    mismatch is a 403 page (ConsoleRefusal)."""
    form = await request.form()
    # Uploaded files are spooled to temporary files: close them when the response is sent (the
    # exit stack FastAPI keeps for the request, as it does for its own form parameters).
    stack = request.scope.get("fastapi_middleware_astack")
    if stack is not None:
        stack.push_async_callback(form.close)
    presented = form.get(session.CSRF_FIELD)
    token = presented if isinstance(presented, str) else request.headers.get(session.CSRF_HEADER)
    if not ctx.session.csrf_ok(token):
        raise ConsoleRefusal(403, "error.csrf")
    return form


class ConsoleRefusal(Exception):
    """A page refused (403 CSRF or permission, 404): answered as an HTML error page."""

    def __init__(self, status: int, message: str, **values: object) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.values = values


def sign_in_page(where: str) -> str:
    return "/unit/login" if where == "unit" else "/console/login"


def text(form: FormData, name: str) -> str:
    """A text field of a submitted form, stripped ('' when absent or a file)."""
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


async def upload(form: FormData, name: str) -> bytes | None:
    """The bytes of an uploaded file field, or None when no file was chosen."""
    value = form.get(name)
    if not isinstance(value, UploadFile) or not value.filename:
        return None
    return await value.read()
