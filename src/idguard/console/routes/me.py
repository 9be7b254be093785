"""The citizen's console (`/me`): activation with the code from the counter, sign-in, my cards
and their ledger, who checked my card (and "this was not me"), who read my record, the
protection lock, the emergency loss report and the loss declaration with its printable page.

The same use-cases as `/api/v1/me` (citizens/, watchlist/), never the HTTP API. A citizen's
session is a console session of its own kind (`citizen`) holding a citizen token, checked on
every request exactly as the API checks a bearer token (`citizen_from_token`: a counter's reset
of the account or a revoked registration ends the session at once); staff and unit pages refuse
it, and these pages refuse theirs. Sign-in and activation are throttled in the API's own buckets,
so alternating between the API and the console gains a guesser nothing.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError
from sqlalchemy.orm import Session
from starlette.responses import RedirectResponse, Response

from idguard import uow
from idguard.api.deps import SessionDep, client_address
from idguard.api.paging import decode_cursor, encode_cursor
from idguard.citizens import accounts, reports, views
from idguard.citizens.accounts import Citizen, SignIn
from idguard.citizens.routes.accounts import BURST, PER_MINUTE
from idguard.citizens.routes.deps import CitizenKeys, keys_of
from idguard.citizens.schemas import DeclarationIn
from idguard.console.routes.common import error_values, office_names, read
from idguard.console.routes.own_writes import write_as
from idguard.console.routes.receipts import qr_svg
from idguard.console.web import ConsoleRefusal, Ctx, SignInRequired, check_csrf, context, secure, text
from idguard.core import idnumber
from idguard.core.clock import today_cst
from idguard.core.errors import DomainError, InvalidField, NotFound
from idguard.core.ratelimit import RateLimiter
from idguard.registry.lifecycle import CardStatus, LossReason, effective_status
from idguard.registry.lookups import cards_of
from idguard.registry.models import Card, LedgerEvent
from idguard.watchlist.incidents import for_person, open_incident
from idguard.watchlist.protection import set_protection
from idguard.watchlist.rules import entry_status

router = APIRouter(include_in_schema=False)
PAGE = 50  # checks and accesses per page
PUBLIC_PER_MINUTE = 30.0  # the public declaration page, per address (as the receipt page)
PUBLIC_BURST = 30
PASSWORD_MAX = 200


# ---- the citizen's session ---------------------------------------------------------------------


class CitizenSignInRequired(SignInRequired):
    """No live citizen session: the page answers with /me/login (not the staff sign-in)."""


async def to_sign_in(request: Request, exc: Exception) -> Response:
    """The exception handler of CitizenSignInRequired (registered by console.install)."""
    assert isinstance(exc, CitizenSignInRequired)  # noqa: S101 - registered for this class
    target = "/me/login" + ("?expired=1" if exc.reason else "")
    if request.headers.get("HX-Request"):
        response: Response = Response(status_code=204, headers={"HX-Redirect": target})
    else:
        response = RedirectResponse(target, status_code=303)
    return secure(response)


def citizen(request: Request, db: Session) -> tuple[Ctx, Citizen]:
    """The page's context and the signed-in citizen, re-read now (a reset account or a revoked
    registration ends the session, as it ends the API's tokens)."""
    try:
        ctx = context(request, require="citizen")
    except SignInRequired as exc:
        raise CitizenSignInRequired("citizen", exc.reason) from None
    found = accounts.citizen_from_token(
        db, ctx.session.citizen_token or "", secret=keys_of(request).token_key
    )
    if found is None:
        raise CitizenSignInRequired("citizen", "ended")
    return ctx, found


def _principal(who: Citizen) -> str:
    return f"citizen:{who.person_id}"  # the API's principal for a citizen's Idempotency-Key


def _token(ctx: Ctx, account: Any) -> str:
    # PyJWT checks expiry against the wall clock, so the token is issued by it (as the API's);
    # the console's own idle timeout and lifetime apply on top, by the app's clock.
    return accounts.issue_token(
        account,
        secret=keys_of(ctx.request).token_key,
        now=dt.datetime.now(dt.UTC),
        ttl_seconds=ctx.settings.console_session_hours * 3600,
    )


def _buckets(kind: str, account: str, address: str) -> tuple[tuple[str, float, int], ...]:
    # citizens/routes/accounts.py's buckets, by the same keys.
    return (
        (f"{kind}:{account}:{address}", PER_MINUTE, BURST),
        (f"{kind}-address:{address}", PER_MINUTE * 5, BURST * 5),
        (f"{kind}-account:{account}", PER_MINUTE * 10, BURST * 10),
    )


def _throttled(request: Request, buckets: tuple[tuple[str, float, int], ...]) -> bool:
    limiter: RateLimiter = request.app.state.throttle
    return any(limiter.peek(key, per_minute / 60.0, burst=burst) for key, per_minute, burst in buckets)


def _count_failure(request: Request, buckets: tuple[tuple[str, float, int], ...]) -> None:
    limiter: RateLimiter = request.app.state.throttle
    for key, per_minute, burst in buckets:
        limiter.take(key, per_minute / 60.0, burst=burst)


# ---- sign-in, activation, sign-out --------------------------------------------------------------


def _login_page(ctx: Ctx, *, status: int = 200, error: str | None = None, **values: Any) -> Response:
    if ctx.request.query_params.get("bye"):
        ctx.values.setdefault("notice", "session.signed_out")
    if ctx.request.query_params.get("activated"):
        ctx.values.setdefault("notice", "me.activated")
    defaults: dict[str, Any] = {"id_number": "", "otp_required": False}
    return ctx.render("me/login.html", status=status, error=error, **{**defaults, **values})


@router.get("/me/login")
def login_page(request: Request) -> Response:
    ctx = context(request)
    if ctx.session.kind == "citizen":
        return ctx.redirect("/me")
    return _login_page(ctx)


@router.post("/me/login")
async def login(request: Request) -> Response:
    """Id number and password (and the authenticator's code once the account has a second
    factor): the API's sign-in (`accounts.sign_in`) and its throttle."""
    ctx = context(request)
    form = await check_csrf(request, ctx)
    typed = text(form, "id_number")[:40]
    number = idnumber.normalised(typed) or typed
    password, otp = form.get("password"), text(form, "otp")[:10] or None
    if not number or not isinstance(password, str) or not password:
        return _login_page(ctx, status=422, error="me.login_missing", id_number=typed)
    buckets = _buckets("citizen-login", number, client_address(request))
    if _throttled(request, buckets):
        return _login_page(ctx, status=429, error="login.throttled", id_number=typed)
    keys = keys_of(request)
    sessions = request.app.state.sessionmaker

    def run() -> tuple[SignIn, str | None]:
        with uow.transaction(sessions) as session:
            outcome, account = accounts.sign_in(
                session,
                now=ctx.now,
                id_number=number,
                password=password[:PASSWORD_MAX],
                otp=otp,
                totp_sealer=keys.totp_sealer,
            )
            return outcome, (_token(ctx, account) if account is not None else None)

    outcome, token = await run_in_threadpool(run)  # argon2: tens of milliseconds of CPU
    if outcome is SignIn.OTP_REQUIRED:
        return _login_page(ctx, status=401, error="me.otp_required", id_number=typed, otp_required=True)
    if token is None:
        _count_failure(request, buckets)
        wrong = "me.otp_wrong" if outcome is SignIn.OTP_WRONG else "me.login_wrong"
        return _login_page(ctx, status=401, error=wrong, id_number=typed, otp_required=otp is not None)
    ctx.session = ctx.session.signed_in(ctx.now, kind="citizen", citizen_token=token)
    return ctx.redirect("/me")


def _activate_page(ctx: Ctx, *, status: int = 200, **values: Any) -> Response:
    defaults: dict[str, Any] = {"error": None, "error_detail": "", "error_field": "", "id_number": ""}
    return ctx.render("me/activate.html", status=status, **{**defaults, **values})


@router.get("/me/activate")
def activate_page(request: Request) -> Response:
    return _activate_page(context(request))


@router.post("/me/activate")
async def activate(request: Request) -> Response:
    """Open the account with the code printed on the counter's receipt and a password of one's
    own (`accounts.activate`: the code works once, for 72 hours). A wrong number or code counts
    towards the API's activation throttle. Then the citizen is signed in."""
    ctx = context(request)
    form = await check_csrf(request, ctx)
    typed = text(form, "id_number")[:40]
    number = idnumber.normalised(typed) or typed
    code = text(form, "activation_code")[:40]
    password, again = form.get("password"), form.get("password_again")
    if not number or not code or not isinstance(password, str) or not password:
        return _activate_page(ctx, status=422, error="me.activate_missing", id_number=typed)
    if password != again:
        return _activate_page(
            ctx, status=422, error="me.password_differs", error_field="password_again", id_number=typed
        )
    buckets = _buckets("activate", number, client_address(request))
    if _throttled(request, buckets):
        return _activate_page(ctx, status=429, error="login.throttled", id_number=typed)
    keys: CitizenKeys = keys_of(request)
    sessions = request.app.state.sessionmaker

    def run() -> str | None:
        with uow.transaction(sessions) as session:
            account = accounts.activate(
                session,
                now=ctx.now,
                id_number=number,
                activation_code=code,
                password=password[:PASSWORD_MAX],
                code_key=keys.code_key,
            )
            return _token(ctx, account) if account is not None else None

    try:
        token = await run_in_threadpool(run)
    except DomainError as exc:
        return _activate_page(ctx, status=exc.status, id_number=typed, **error_values(exc))
    if token is None:
        _count_failure(request, buckets)
        return _activate_page(ctx, status=401, error="me.activate_wrong", id_number=typed)
    ctx.session = ctx.session.signed_in(ctx.now, kind="citizen", citizen_token=token)
    return ctx.redirect("/me?activated=1")


@router.post("/me/logout")
async def logout(request: Request) -> Response:
    """Sign out: the cookie is replaced by a new anonymous session (a new CSRF token)."""
    ctx = context(request)
    await check_csrf(request, ctx)
    ctx.session = ctx.session.anonymous(ctx.now, ctx.session.lang)
    return ctx.redirect("/me/login?bye=1")


# ---- my record, cards and ledger ---------------------------------------------------------------

_NOTICES = {"activated": "me.activated", "locked": "me.locked", "unlocked": "me.unlocked"}


def _cards(db: Session, who: Citizen) -> list[tuple[Card, list[LedgerEvent]]]:
    """The citizen's cards, oldest first, each with its ledger — what `views.cards` answers, with
    the ledger read by card (the `card_id` index) instead of by person: ledger_events has no
    index on person_id, so on the demo's 90,000 events views.cards' query walked the whole
    ledger (370 ms on SQLite; the page rendered in 520 ms p50, now a few)."""
    owned = cards_of(db, who.person_id)
    events: dict[uuid.UUID, list[LedgerEvent]] = {c.id: [] for c in owned}
    if owned:
        stmt = sa.select(LedgerEvent).where(LedgerEvent.card_id.in_(list(events))).order_by(LedgerEvent.seq)
        for event in db.scalars(stmt):
            events[event.card_id].append(event)
    return [(card, events[card.id]) for card in owned]


def _home_values(ctx: Ctx, db: Session, who: Citizen) -> dict[str, Any]:
    today = today_cst(ctx.now)
    person = views.person(db, who)
    declarations = reports.declarations_of(db, who)
    declared = {d.card_id: d.declaration_no for d in declarations}
    cards: list[dict[str, Any]] = []
    codes: list[str | None] = [person.hukou_office]
    for card, events in _cards(db, who):
        status = effective_status(card.status, card.expires_on, today)
        cards.append(
            {
                "card": card,
                "status": status.value,
                "events": events,
                "declaration": declared.get(card.id),
                "may_report": status is CardStatus.VALID,
                "may_declare": status in (CardStatus.REPORTED_LOST, CardStatus.REPORTED_STOLEN)
                and card.id not in declared,
            }
        )
        codes += [card.issuing_office, *(e.office for e in events)]
    offices = office_names(db, codes)
    return {
        "person": person,
        "cards": cards,
        "offices": offices,
        "locked": views.protection_required(db, who),
        "second_factor": views.second_factor(db, who),
        "declarations": declarations,
        "incidents": for_person(db, id_number=who.id_number),
        "listings": [(e, entry_status(e.status, e.until, today).value) for e in views.listings(db, who)],
        "today": today.isoformat(),
    }


def _home(ctx: Ctx, db: Session, who: Citizen, *, status: int = 200, **values: Any) -> Response:
    for name, key in _NOTICES.items():
        if ctx.request.query_params.get(name):
            ctx.values.setdefault("notice", key)
    reported = ctx.request.query_params.get("reported", "")[:32]
    defaults: dict[str, Any] = {"error": None, "error_detail": "", "error_field": "", "error_card": ""}
    page = read(ctx, db, lambda: _home_values(ctx, db, who))
    return ctx.render(
        "me/home.html", status=status, who=who, reported=reported, **{**defaults, **page, **values}
    )


@router.get("/me")
def home(request: Request, db: SessionDep) -> Response:
    """My record, the protection lock, every card with its status and ledger (offices, never the
    staff member), the emergency report and the loss declaration of each card."""
    ctx, who = citizen(request, db)
    return _home(ctx, db, who)


async def _home_error(ctx: Ctx, db: Session, who: Citizen, exc: DomainError, card: str = "") -> Response:
    return await run_in_threadpool(
        lambda: _home(ctx, db, who, status=exc.status, error_card=card, **error_values(exc))
    )


@router.post("/me/protection")
async def protection(request: Request, db: SessionDep) -> Response:
    """The holder's own lock (`PUT /api/v1/me/protection`): every check of my cards needs my
    matching live finger, or it carries the alert `person_check_required`."""
    ctx, who = await run_in_threadpool(citizen, request, db)
    form = await check_csrf(request, ctx)
    required = text(form, "required") == "1"

    def run() -> str:
        set_protection(
            db,
            id_number=who.id_number,
            required=required,
            reason="asked by the holder (console)",
            by="holder",
            at=ctx.now,
        )
        return json.dumps({"person_check_required": required})

    try:
        await run_in_threadpool(write_as, ctx, db, _principal(who), run, form=form)
    except DomainError as exc:
        return await _home_error(ctx, db, who, exc)
    return ctx.redirect("/me?locked=1" if required else "/me?unlocked=1")


def _card_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise ConsoleRefusal(404, "error.no_card") from None


@router.post("/me/cards/{card_id}/loss-report")
async def report_loss(card_id: str, request: Request, db: SessionDep) -> Response:
    """The emergency report (挂失申报) of my own valid card: invalid at once, for every unit;
    cancelling needs me in person at my hukou office."""
    ctx, who = await run_in_threadpool(citizen, request, db)
    form = await check_csrf(request, ctx)
    card = _card_id(card_id)
    try:
        reason = LossReason(text(form, "reason"))
    except ValueError:
        exc = InvalidField("reason", "lost or stolen")
        return await _home_error(ctx, db, who, exc, card_id)

    def run() -> str:
        report, _ = reports.report_online(db, citizen=who, now=ctx.now, card_id=card, reason=reason)
        return json.dumps({"report_no": report.report_no})

    try:
        answer = await run_in_threadpool(write_as, ctx, db, _principal(who), run, form=form)
    except DomainError as exc:
        return await _home_error(ctx, db, who, exc, card_id)
    return ctx.redirect("/me?reported=" + str(json.loads(answer)["report_no"]))


@router.post("/me/cards/{card_id}/declaration")
async def declare(card_id: str, request: Request, db: SessionDep) -> Response:
    """Publish the free loss declaration (遗失声明) of my reported card; it ends on its printable
    page, whose QR code opens the public page that verifies the registry's signature."""
    ctx, who = await run_in_threadpool(citizen, request, db)
    form = await check_csrf(request, ctx)
    try:
        body = DeclarationIn.model_validate(
            {"card_id": card_id, "lost_on": text(form, "lost_on"), "place": text(form, "place")}
        )
    except ValidationError as exc:
        field = str(exc.errors()[0]["loc"][0])
        bad = InvalidField(field, exc.errors()[0]["msg"])
        return await _home_error(ctx, db, who, bad, card_id)
    keys = keys_of(request)

    def run() -> str:
        made = reports.publish_declaration(
            db,
            citizen=who,
            now=ctx.now,
            card_id=body.card_id,
            lost_on=body.lost_on,
            place=body.place,
            keys=keys.declarations,
        )
        return json.dumps({"declaration_no": made.declaration_no})

    try:
        answer = await run_in_threadpool(write_as, ctx, db, _principal(who), run, form=form)
    except DomainError as exc:
        return await _home_error(ctx, db, who, exc, card_id)
    return ctx.redirect("/me/declarations/" + str(json.loads(answer)["declaration_no"]))


# ---- who checked my card; "this was not me" ----------------------------------------------------


@router.get("/me/checks")
def checks(request: Request, db: SessionDep) -> Response:
    """Every check of my cards by an ID-using unit, newest first, within the retention; each can
    be disputed ("this was not me")."""
    ctx, who = citizen(request, db)
    after_text = request.query_params.get("after", "")[:200]

    def run() -> dict[str, Any]:
        after = decode_cursor(after_text) if after_text else None
        page, horizon = views.checks(
            db,
            citizen=who,
            hash_key=ctx.settings.check_hash_key,
            now=ctx.now,
            retention_months=ctx.settings.check_retention_months,
            after=after,
            limit=PAGE,
        )
        disputed = {
            str(i["check_id"]): str(i["incident_no"])
            for i in for_person(db, id_number=who.id_number)
            if i["kind"] == "disputed_by_holder" and i["check_id"]
        }
        last = page.rows[-1] if page.rows else None
        return {
            "rows": page.rows,
            "disputed": disputed,
            "horizon": horizon,
            "next": encode_cursor(last.at, last.check_id) if page.more and last is not None else None,
        }

    try:
        values = read(ctx, db, run)
    except DomainError as exc:
        raise ConsoleRefusal(422, "error.invalid") from exc
    dispute_no = request.query_params.get("disputed", "")[:40]
    return ctx.render("me/checks.html", who=who, dispute_no=dispute_no, **values)


@router.post("/me/checks/{check_id}/dispute")
async def dispute(check_id: str, request: Request, db: SessionDep) -> Response:
    """ "This was not me": a `disputed_by_holder` incident for my hukou office about this check."""
    ctx, who = await run_in_threadpool(citizen, request, db)
    form = await check_csrf(request, ctx)
    try:
        wanted = uuid.UUID(check_id)
    except ValueError:
        raise ConsoleRefusal(404, "me.no_check") from None

    def run() -> str:
        check = views.own_check(db, citizen=who, hash_key=ctx.settings.check_hash_key, check_id=wanted)
        if check is None:
            raise NotFound(f"no check {wanted} of your cards")
        number = open_incident(
            db,
            kind="disputed_by_holder",
            id_number=who.id_number,
            unit_code=check.unit_code,
            check_id=str(check.id),
            at=ctx.now,
        )
        return json.dumps({"incident_no": str(number)})

    try:
        answer = await run_in_threadpool(write_as, ctx, db, _principal(who), run, form=form)
    except NotFound:
        raise ConsoleRefusal(404, "me.no_check") from None
    except DomainError as exc:
        raise ConsoleRefusal(exc.status, "error.rule_detail", detail=exc.detail) from None
    return ctx.redirect("/me/checks?disputed=" + str(json.loads(answer)["incident_no"]))


# ---- who read my record -------------------------------------------------------------------------


def _access_cursor(at: dt.datetime, entry_id: int) -> str:
    return base64.urlsafe_b64encode(f"{at.isoformat()}|{entry_id}".encode()).decode()


def _access_after(cursor: str) -> tuple[dt.datetime, int]:
    try:
        at, entry_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        parsed = dt.datetime.fromisoformat(at), int(entry_id)
    except (ValueError, UnicodeDecodeError):
        raise ConsoleRefusal(422, "error.invalid") from None
    if parsed[0].tzinfo is None:
        raise ConsoleRefusal(422, "error.invalid")
    return parsed[0].astimezone(dt.UTC), parsed[1]


@router.get("/me/accesses")
def accesses(request: Request, db: SessionDep) -> Response:
    """Every time a member of staff read or changed my record: when, which office, which role,
    what. Never the staff member's name (an auditor can see who, on a complaint)."""
    ctx, who = citizen(request, db)
    after_text = request.query_params.get("after", "")[:200]
    after = _access_after(after_text) if after_text else None
    page = read(ctx, db, lambda: views.accesses(db, citizen=who, after=after, limit=PAGE))
    last = page.rows[-1] if page.rows else None
    offices = office_names(db, [r.office for r in page.rows])
    return ctx.render(
        "me/accesses.html",
        who=who,
        rows=page.rows,
        offices=offices,
        next=_access_cursor(last.at, last.entry_id) if page.more and last is not None else None,
    )


# ---- loss declarations: the citizen's printable page and the public, verifying page --------------


def declaration_url(request: Request, number: str) -> str:
    return f"{str(request.base_url).rstrip('/')}/declaration/{number}"


def _declaration_values(ctx: Ctx, db: Session, number: str) -> tuple[uuid.UUID, dict[str, Any]]:
    """(its holder's record id, what both pages show): the signed fields, and whether the
    signature verifies with a listed key — checked here, as anyone can check it offline."""
    try:
        found = reports.declaration(db, number[:32])
    except NotFound:
        raise ConsoleRefusal(404, "me.no_declaration") from None
    fields: dict[str, Any] = {**json.loads(found.payload), "signature": found.signature}
    office = str(fields.get("issuing_office") or "")
    url = declaration_url(ctx.request, found.declaration_no)
    return found.person_id, {
        "d": fields,
        "number": found.declaration_no,
        "verified": keys_of(ctx.request).declarations.verify(fields),
        "office_name": office_names(db, [office]).get(office, office),
        "published_at": dt.datetime.fromisoformat(str(fields["published_at"]).replace("Z", "+00:00")),
        "lost_on": dt.date.fromisoformat(str(fields["lost_on"])),
        "issued_on": dt.date.fromisoformat(str(fields["issued_on"])),
        "expires_on": dt.date.fromisoformat(str(fields["expires_on"])) if fields.get("expires_on") else None,
        "url": url,
        "json_url": f"/api/v1/declarations/{found.declaration_no}",
    }


@router.get("/me/declarations/{number}")
def my_declaration(number: str, request: Request, db: SessionDep) -> Response:
    """My declaration, printable, with the QR code of its public page."""
    ctx, who = citizen(request, db)
    holder, values = _declaration_values(ctx, db, number)
    if holder != who.person_id:  # another person's: as if there were none
        raise ConsoleRefusal(404, "me.no_declaration")
    return ctx.render("me/declaration.html", who=who, qr=qr_svg(values["url"]), **values)


@router.get("/declaration/{number}")
def public_declaration(number: str, request: Request, db: SessionDep) -> Response:
    """Public: what a declaration's QR code opens. The masked name and number only, the signed
    fields, and whether the registry's signature verifies."""
    ctx = context(request)
    limiter: RateLimiter = request.app.state.throttle
    if limiter.take(f"declaration:{client_address(request)}", PUBLIC_PER_MINUTE / 60.0, burst=PUBLIC_BURST):
        raise ConsoleRefusal(429, "error.throttled")
    _, values = _declaration_values(ctx, db, number)
    return ctx.render("me/public_declaration.html", **values)
