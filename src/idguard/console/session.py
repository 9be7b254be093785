"""The console's session: one sealed cookie (AES-256-GCM, core/sealing.py), nothing stored on the
server.

A cookie holds who is signed in (a member of staff by id, a unit teller with the unit's API key
and operator name, or a citizen with a citizen token), the session's CSRF token, when it began and when it was last used. It is
sealed, not merely signed, because a teller's session carries the unit's API key: the browser
holds it only as ciphertext it cannot read (HttpOnly besides). Every request re-checks the
subject against the registry (a disabled account or a revoked key ends the session at once), the
idle timeout (`console_idle_minutes`) and the absolute lifetime (`console_session_hours`).

Cookie flags: HttpOnly, SameSite=Strict, Path=/, and Secure with the `__Host-` name prefix outside
development (a development server speaks plain HTTP on 127.0.0.1).
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
import secrets
from dataclasses import asdict, dataclass, replace
from typing import Literal

from starlette.requests import Request
from starlette.responses import Response

from idguard.config import Environment, Settings
from idguard.core.sealing import Sealer, SealError

Kind = Literal["anonymous", "staff", "unit", "citizen"]
_CONTEXT = "console-session/v1"
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"


@dataclass(frozen=True, slots=True)
class ConsoleSession:
    kind: Kind
    csrf: str
    started: float  # epoch seconds, by the app's clock
    seen: float
    staff_id: str | None = None
    unit_key: str | None = None
    operator: str | None = None
    lang: str | None = None  # the language chosen with ?lang=, kept for the session
    # A citizen's session holds a citizen token (citizens/accounts.py), re-checked on every
    # request as the API checks it: a reset account or a revoked registration ends it at once.
    citizen_token: str | None = None

    @classmethod
    def anonymous(cls, now: dt.datetime, lang: str | None = None) -> ConsoleSession:
        at = now.timestamp()
        return cls(kind="anonymous", csrf=secrets.token_urlsafe(32), started=at, seen=at, lang=lang)

    def signed_in(
        self,
        now: dt.datetime,
        *,
        kind: Kind,
        staff_id: str | None = None,
        unit_key: str | None = None,
        operator: str | None = None,
        citizen_token: str | None = None,
    ) -> ConsoleSession:
        """A fresh session for whoever just signed in: new CSRF token (no fixation), new start."""
        at = now.timestamp()
        return ConsoleSession(
            kind=kind,
            csrf=secrets.token_urlsafe(32),
            started=at,
            seen=at,
            staff_id=staff_id,
            unit_key=unit_key,
            operator=operator,
            lang=self.lang,
            citizen_token=citizen_token,
        )

    def touched(self, now: dt.datetime) -> ConsoleSession:
        return replace(self, seen=now.timestamp())

    def expired(self, now: dt.datetime, settings: Settings) -> bool:
        at = now.timestamp()
        return (
            at - self.seen > settings.console_idle_minutes * 60
            or at - self.started > settings.console_session_hours * 3600
        )

    def csrf_ok(self, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(presented.encode(), self.csrf.encode())


def cookie_name(settings: Settings) -> str:
    return "idguard_console" if _plain_http(settings) else "__Host-idguard_console"


def _plain_http(settings: Settings) -> bool:
    return settings.env is Environment.DEVELOPMENT


def _sealer(settings: Settings) -> Sealer:
    return Sealer(settings.derived_key("console-session"))


def load(request: Request, settings: Settings) -> ConsoleSession | None:
    """The session the request's cookie holds, or None (none, altered, or sealed under another key)."""
    raw = request.cookies.get(cookie_name(settings))
    if not raw:
        return None
    try:
        data = json.loads(_sealer(settings).open(raw, context=_CONTEXT))
        return ConsoleSession(**data)
    except (SealError, ValueError, TypeError):
        return None


def save(response: Response, session: ConsoleSession, settings: Settings) -> None:
    sealed = _sealer(settings).seal(json.dumps(asdict(session), separators=(",", ":")), context=_CONTEXT)
    response.set_cookie(
        cookie_name(settings),
        sealed,
        max_age=settings.console_session_hours * 3600,
        path="/",
        httponly=True,
        samesite="strict",
        secure=not _plain_http(settings),
    )


def clear(response: Response, settings: Settings) -> None:
    response.delete_cookie(
        cookie_name(settings),
        path="/",
        httponly=True,
        samesite="strict",
        secure=not _plain_http(settings),
    )
