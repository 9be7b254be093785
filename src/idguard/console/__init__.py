"""The web console: server-rendered pages for clerks, supervisors, auditors, unit tellers and citizens.

Jinja2 templates and vendored static files (htmx, the stylesheet, Swagger UI's files from the
`fastapi-offline` package): nothing is loaded from another host. Pages call the features' use-cases
directly through the one unit of work, and ask the same GRANTS as the API. docs/console.md
describes the pages, the session and the security headers.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Request
from starlette.responses import RedirectResponse, Response
from starlette.staticfiles import StaticFiles

from idguard.console.deps import DemoSupport, use_demo
from idguard.console.routes import (
    accountability,
    activation,
    audit,
    auth,
    cards,
    docs,
    found,
    me,
    registry,
    teller,
    teller_more,
    units,
)
from idguard.console.routes import receipts as receipt_pages
from idguard.console.routes import watchlist as watchlist_pages
from idguard.console.web import ConsoleRefusal, SignInRequired, context, secure, sign_in_page

__all__ = ["DemoSupport", "install", "use_demo"]


def _static_dir() -> Path:
    return Path(str(resources.files("idguard.console").joinpath("static")))


async def _sign_in(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SignInRequired)  # noqa: S101 - registered for this class
    target = sign_in_page(exc.where) + ("?expired=1" if exc.reason else "")
    if request.headers.get("HX-Request"):
        response: Response = Response(status_code=204, headers={"HX-Redirect": target})
    else:
        response = RedirectResponse(target, status_code=303)
    return secure(response)


async def _refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ConsoleRefusal)  # noqa: S101 - registered for this class
    ctx = context(request)
    return ctx.render("error.html", status=exc.status, message=exc.message, message_values=exc.values)


def install(app: FastAPI) -> None:
    """Add the console's pages and static files to the app."""
    app.mount("/static/swagger-ui", StaticFiles(directory=docs.swagger_dir()), name="swagger-ui")
    app.mount("/static", StaticFiles(directory=_static_dir()), name="console-static")
    pages = (auth, registry, cards, found, receipt_pages, teller, units, audit, docs)
    for module in (*pages, me, activation, teller_more, watchlist_pages, accountability):
        app.include_router(module.router)
    app.add_exception_handler(SignInRequired, _sign_in)
    app.add_exception_handler(ConsoleRefusal, _refused)
    app.add_exception_handler(me.CitizenSignInRequired, me.to_sign_in)  # a citizen: /me/login
