"""Onboarding ID-using units (supervisors), their API keys, later changes (PATCH) and their
webhook: the signing secret's roll, a test event, a resend (the unit itself or a supervisor)."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable, Mapping
from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, Body, Request
from pydantic import BaseModel
from sqlalchemy.orm import Session
from starlette.responses import Response

from idguard.api.deps import SessionDep, get_clock, get_settings, refusal_json, respond
from idguard.api.schemas import STAFF_WRITE_ERRORS, problem_responses
from idguard.core.errors import Forbidden, InvalidField, NotFound
from idguard.core.grants import Actor, Permission
from idguard.core.sealing import Sealer
from idguard.registry.routes.deps import TxDep
from idguard.uow import IDEMPOTENCY_HEADER, Idempotency, UnitOfWork
from idguard.verification import units
from idguard.verification.models import Unit, UnitKey
from idguard.verification.routes.deps import CurrentCaller, get_verifier
from idguard.verification.runtime.keyring import UnitView
from idguard.verification.runtime.webhooks import Sent
from idguard.verification.schemas import (
    HarvestingOut,
    RevokedOut,
    RotateIn,
    UnitChangedOut,
    UnitIn,
    UnitKeyOut,
    UnitOut,
    UnitPatch,
    WebhookSecretIn,
    WebhookSecretOut,
    WebhookSentOut,
)

router = APIRouter(prefix="/api/v1/units", tags=["units (supervisors)"])

OFFLINE = "offline"


def _flags(request: Request) -> Mapping[str, units.UnitFlag]:
    """The unit flags other features registered (offline verification's `offline`)."""
    flags: Mapping[str, units.UnitFlag] = getattr(request.app.state, "unit_flags", {})
    return flags


def _offline_of(request: Request, session: Session, codes: list[str]) -> frozenset[str]:
    flag = _flags(request).get(OFFLINE)
    return flag.granted(session, codes) if flag is not None else frozenset()


def _set_offline(request: Request, tx: TxDep, code: str, value: bool) -> bool:
    flag = _flags(request).get(OFFLINE)
    if flag is None:
        raise InvalidField(OFFLINE, "offline verification is not installed in this service")
    before = code in flag.granted(tx.session, [code])
    return flag.assign(tx.session, code, value, tx.actor, tx.now) != before


def _out(unit: Unit, offline: bool = False) -> UnitOut:
    return UnitOut(
        code=unit.code,
        name=unit.name,
        sector=unit.sector,
        purposes=list(unit.purposes),
        rate_limit=unit.rate_limit,
        status=unit.status.value,
        webhook_url=unit.webhook_url,
        offline=offline,
        harvesting=HarvestingOut(since=unit.harvesting_suspected_at, reason=unit.harvesting_reason or "")
        if unit.harvesting_suspected_at is not None
        else None,
    )


SECRETS = ("api_key", "webhook_secret")


def _replay_notice(code: str) -> str:
    return (
        "the API key and webhook secret were shown once, in the first answer to this request, and "
        f"are not kept in the stored answer; if that answer was lost, rotate the key: POST "
        f"/api/v1/units/{code}/keys/rotate, and roll the webhook secret: POST "
        f"/api/v1/units/{code}/webhook-secret (each with a new Idempotency-Key)"
    )


def _refresh_keys(tx: TxDep) -> None:
    # This worker applies the change at once; the others within one ledger poll.
    get_verifier(tx.request).follower.poll()


@router.post("", status_code=201, response_model=UnitKeyOut, responses=STAFF_WRITE_ERRORS)
def onboard(body: UnitIn, tx: TxDep) -> Response:
    """Onboard an ID-using unit (supervisor only). The answer holds the unit's API key — shown
    exactly once and stored only as a hash — and the secret that signs its webhook deliveries
    (random, shown once, kept sealed). `"offline": true` also grants offline verification."""
    secret = get_settings(tx.request).secret_key

    def run() -> UnitKeyOut:
        issued = units.onboard(
            tx.session,
            actor=tx.actor,
            now=tx.now,
            secret_key=secret,
            code=body.code,
            name=body.name,
            sector=body.sector,
            purposes=body.purposes,
            rate_limit=body.rate_limit,
            webhook_url=body.webhook_url,
        )
        offline = body.offline and _set_offline(tx.request, tx, body.code, True)
        return UnitKeyOut(
            unit=_out(issued.unit, offline), api_key=issued.api_key, webhook_secret=issued.webhook_secret
        )

    response = tx.write(run, body=body, shown_once=SECRETS, notice=_replay_notice(body.code))
    _refresh_keys(tx)
    return response


@router.post("/{code}/keys/rotate", status_code=201, response_model=UnitKeyOut, responses=STAFF_WRITE_ERRORS)
def rotate(code: str, tx: TxDep, body: Annotated[RotateIn | None, Body()] = None) -> Response:
    """Issue a new key. The unit's current keys keep working for `grace_seconds` (the body is
    optional: 86400, one day, by default), so it can deploy the new one without an outage; then
    they stop. The webhook secret is not changed (roll it: POST …/webhook-secret)."""
    secret = get_settings(tx.request).secret_key
    body = body or RotateIn()

    def run() -> UnitKeyOut:
        issued = units.rotate_key(
            tx.session,
            actor=tx.actor,
            now=tx.now,
            secret_key=secret,
            code=code,
            grace=dt.timedelta(seconds=body.grace_seconds),
        )
        return UnitKeyOut(
            unit=_out(issued.unit), api_key=issued.api_key, webhook_secret=issued.webhook_secret
        )

    response = tx.write(run, body=body, shown_once=SECRETS, notice=_replay_notice(code))
    _refresh_keys(tx)
    return response


@router.post("/{code}/keys/revoke", status_code=200, response_model=RevokedOut, responses=STAFF_WRITE_ERRORS)
def revoke(code: str, tx: TxDep) -> Response:
    """Revoke every key of the unit, effective at once (a leaked key). The unit itself stays
    onboarded: issue it a new key with POST …/keys/rotate."""

    def run() -> RevokedOut:
        working = tx.session.scalar(  # the keys that still worked (not revoked, not expired)
            sa.select(sa.func.count()).where(
                UnitKey.unit_code == code,
                UnitKey.revoked_at.is_(None),
                sa.or_(UnitKey.expires_at.is_(None), UnitKey.expires_at > tx.now),
            )
        )
        units.revoke_keys(tx.session, actor=tx.actor, now=tx.now, code=code)
        return RevokedOut(
            unit_code=code,
            keys_revoked=int(working or 0),
            revoked_at=tx.now,
            notice=f"no key of unit {code} works any more; issue a new one: POST /api/v1/units/{code}/keys/rotate",
        )

    response = tx.write(run, body=None, status_code=200)
    _refresh_keys(tx)
    return response


@router.get("", response_model=list[UnitOut], responses=problem_responses(401, 403))
def list_units(tx: TxDep) -> list[UnitOut]:
    """Every unit (supervisors and auditors)."""
    found = units.list_units(tx.session, actor=tx.actor)
    offline = _offline_of(tx.request, tx.session, [u.code for u in found])
    return [_out(u, u.code in offline) for u in found]


@router.patch("/{code}", status_code=200, response_model=UnitChangedOut, responses=STAFF_WRITE_ERRORS)
def update(code: str, body: UnitPatch, tx: TxDep) -> Response:
    """Change a unit after onboarding (supervisor only): `webhook_url` (null removes it), `name`,
    `purposes`, `rate_limit`, and `offline` (grant or withdraw offline verification). Only the
    fields sent change, in one transaction, audited with the fields' names; a field set to the
    value it has changes nothing, so a retry is harmless (and an Idempotency-Key replays the
    first answer). `changed` lists what changed. Every worker applies it within one poll."""
    sent = body.model_fields_set

    def run() -> UnitChangedOut:
        fields = {name: getattr(body, name) for name in units.MUTABLE_FIELDS if name in sent}
        if OFFLINE in sent and body.offline is None:
            raise InvalidField(OFFLINE, "true or false")
        unit, changed = units.update_unit(tx.session, actor=tx.actor, now=tx.now, code=code, changes=fields)
        if body.offline is not None and _set_offline(tx.request, tx, code, body.offline):
            changed.append(OFFLINE)
        return UnitChangedOut(
            unit=_out(unit, code in _offline_of(tx.request, tx.session, [code])), changed=changed
        )

    response = tx.write(run, body=body, status_code=200)
    _refresh_keys(tx)
    return response


@router.post(
    "/{code}/harvesting/clear", status_code=200, response_model=UnitOut, responses=STAFF_WRITE_ERRORS
)
def clear_harvesting(code: str, tx: TxDep) -> Response:
    """Lift the harvesting throttle (supervisors), after looking into the unit's checks
    (`GET /api/v1/checks?unit=…`). Audited; the unit's own rate applies again on every worker."""

    def run() -> UnitOut:
        return _out(units.clear_harvesting(tx.session, actor=tx.actor, now=tx.now, code=code))

    response = tx.write(run, body=None, status_code=200)
    _refresh_keys(tx)
    return response


# --- webhooks: the unit itself (its own key) or a supervisor -----------------------------------


def _authorize(caller: UnitView | Actor, code: str) -> None:
    """The unit itself (its own key), or a supervisor (who onboards units)."""
    if isinstance(caller, UnitView):
        if caller.code != code:
            raise Forbidden(f"a unit's key acts only for its own unit ({caller.code})")
    else:
        caller.require(Permission.ONBOARD_UNITS)


class _CallerTx:
    """The unit of work of a webhook request: the unit itself, by its key, or a supervisor. Its
    Idempotency-Key is the caller's own (a unit's keys share one namespace)."""

    def __init__(self, request: Request, session: Session, caller: UnitView | Actor, code: str) -> None:
        _authorize(caller, code)
        self.request = request
        self.session = session
        self.actor = caller if isinstance(caller, Actor) else None
        self.principal = f"staff/{caller.staff_id}" if isinstance(caller, Actor) else f"unit/{code}"
        self.now = get_clock(request).now()
        self.uow = UnitOfWork(session, self.now, Sealer(get_settings(request).idempotency_key))

    def write(
        self, fn: Callable[[], BaseModel], *, body: BaseModel | None, shown_once: str, notice: str
    ) -> Response:
        key = self.request.headers.get(IDEMPOTENCY_HEADER)
        idempotency = None
        if key is not None:
            text = f"{self.request.method} {self.request.url.path}\n".encode() + (
                body.model_dump_json().encode() if body is not None else b""
            )
            idempotency = Idempotency.of(self.principal, key, text)

        def stored(answer: str) -> str:
            kept = json.loads(answer)
            kept[shown_once] = None
            kept["notice"] = notice
            return json.dumps(kept, separators=(",", ":"), ensure_ascii=False)

        answer = self.uow.write(
            lambda: fn().model_dump_json(),
            status=201,
            idempotency=idempotency,
            refusal_body=refusal_json,
            stored=stored,
        )
        return respond(answer)


@router.post(
    "/{code}/webhook-secret",
    status_code=201,
    response_model=WebhookSecretOut,
    responses=STAFF_WRITE_ERRORS,
)
def roll_webhook_secret(
    code: str,
    request: Request,
    session: SessionDep,
    caller: CurrentCaller,
    body: Annotated[WebhookSecretIn | None, Body()] = None,
) -> Response:
    """Roll the secret that signs your webhook deliveries: the answer holds a new random secret,
    shown once. For `overlap_seconds` (default 86400, one day) every delivery is signed with
    both, `Idguard-Signature: t=…,v1=<new>,v1=<old>`, so you deploy the new secret without
    rejecting anything; then only the new one signs. Call it with your unit's API key, or a
    supervisor does. An Idempotency-Key replays the answer without the secret (roll again if
    that answer was lost)."""
    body = body or WebhookSecretIn()
    tx = _CallerTx(request, session, caller, code)
    secret_key = get_settings(request).secret_key

    def run() -> WebhookSecretOut:
        rolled = units.roll_webhook_secret(
            session,
            actor=tx.actor,
            now=tx.now,
            secret_key=secret_key,
            code=code,
            overlap=dt.timedelta(seconds=body.overlap_seconds),
            by_unit=tx.actor is None,
        )
        return WebhookSecretOut(
            unit_code=code,
            webhook_secret=rolled.webhook_secret,
            previous_expires_at=rolled.previous_expire_at,
        )

    notice = (
        "the new webhook secret was shown once, in the first answer to this request, and is not kept "
        f"in the stored answer; roll again (POST /api/v1/units/{code}/webhook-secret with a new "
        "Idempotency-Key) if that answer was lost"
    )
    return tx.write(run, body=body, shown_once="webhook_secret", notice=notice)


def _sent(sent: Sent) -> WebhookSentOut:
    return WebhookSentOut(
        delivery_id=str(sent.delivery_id),
        kind=sent.kind,
        delivered=sent.result.ok,
        status_code=sent.result.status_code,
        error=sent.result.error,
    )


@router.post(
    "/{code}/webhook/test",
    status_code=200,
    response_model=WebhookSentOut,
    responses=problem_responses(401, 403, 404, 409),
)
def send_test_event(
    code: str, request: Request, session: SessionDep, caller: CurrentCaller
) -> WebhookSentOut:
    """POST a test event to your webhook now, signed like every delivery:
    `{"unit": "…", "test": true, "items": [], "sent_at": "…"}`. The answer says what your
    endpoint answered; the attempt is in your delivery log (GET /api/v1/notifications/deliveries)
    with its `delivery_id`. 409 when the unit has no `webhook_url`."""
    _authorize(caller, code)
    session.close()  # the caller's read ends here: on SQLite it would hold the lock the send needs
    return _sent(get_verifier(request).dispatcher.send_now(code))


@router.post(
    "/{code}/webhook/deliveries/{delivery_id}/resend",
    status_code=200,
    response_model=WebhookSentOut,
    responses=problem_responses(401, 403, 404, 409),
)
def resend_delivery(
    code: str, delivery_id: str, request: Request, session: SessionDep, caller: CurrentCaller
) -> WebhookSentOut:
    """Send one of your webhook messages again, now: the same body and `Webhook-Id` (so you
    can deduplicate), with a fresh timestamp and signatures. Use it after fixing your endpoint:
    if it is the batch being retried and it succeeds, delivery moves on at once instead of
    waiting for the next retry. `delivery_id` is from your delivery log."""
    _authorize(caller, code)
    try:
        message_id = uuid.UUID(delivery_id)
    except ValueError:
        raise NotFound(f"no webhook delivery {delivery_id} of unit {code}") from None
    session.close()
    return _sent(get_verifier(request).dispatcher.send_now(code, resend=message_id))
