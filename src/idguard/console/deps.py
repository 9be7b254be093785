"""Who is signed in to the console, re-checked on every request, and the demo hook.

Staff: the session names a staff id; the account is re-read so a disabled account stops at once
(as the API's tokens do), and every page then asks the same GRANTS as the API (`Actor.require`).
Unit tellers: the session holds the unit's API key (sealed), checked against the worker's key
ring on every request, so a revoked or expired key, or a suspended unit, ends the session.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy.orm import Session
from starlette.requests import Request

from idguard.console.web import ConsoleRefusal, Ctx, SignInRequired, context
from idguard.core.grants import Actor, Permission
from idguard.registry.models import Staff
from idguard.verification.routes.deps import get_verifier
from idguard.verification.runtime.keyring import UnitView


@dataclass(frozen=True, slots=True)
class DemoSupport:
    """What the console shows and does in development only, given by the composition root (the
    demo package sits above the console): the demo accounts listed on the sign-in page, and a
    demo person's live finger for the "demo capture" button."""

    accounts: Sequence[tuple[str, str, str, str | None]]  # username, password, role, office
    live_finger: Callable[[str], str]  # id number -> base64 ISO/IEC 19794-2 record
    # id number -> the two (finger position, base64 record) captures the demo enrols on a card
    enrolment: Callable[[str], list[tuple[int, str]]] | None = None


def use_demo(app_state: object, support: DemoSupport) -> None:
    """Register the demo hook (app.state); only consulted when IDGUARD_ENV=development."""
    app_state.console_demo = support  # type: ignore[attr-defined]


def demo_support(request: Request) -> DemoSupport | None:
    support = getattr(request.app.state, "console_demo", None)
    return support if isinstance(support, DemoSupport) else None


def staff(request: Request, db: Session, *, permission: Permission | None = None) -> Ctx:
    """The page's context with the signed-in member of staff as `ctx.actor`; SignInRequired
    without a live staff session; ConsoleRefusal 403 when the role lacks `permission`."""
    ctx = context(request, require="staff")
    try:
        staff_id = uuid.UUID(ctx.session.staff_id or "")
    except ValueError:
        raise SignInRequired("staff") from None
    account = db.get(Staff, staff_id)
    if account is None or not account.active:
        raise SignInRequired("staff")
    ctx.actor = Actor(
        staff_id=account.id, username=account.username, role=account.role, office=account.office_code
    )
    if permission is not None and not ctx.actor.may(permission):
        raise ConsoleRefusal(403, "error.forbidden", role=account.role.value)
    return ctx


def unit(request: Request) -> tuple[Ctx, UnitView]:
    """The page's context and the teller's unit, checked against the key ring now."""
    ctx = context(request, require="unit")
    view = get_verifier(request).keyring.authenticate(ctx.session.unit_key or "", ctx.now)
    if view is None:
        raise SignInRequired("unit", "key")
    return ctx, view
