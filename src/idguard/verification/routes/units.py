"""Onboarding ID-using units (supervisors) and their API keys."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter
from starlette.responses import Response

from idguard.api.deps import get_settings
from idguard.api.schemas import STAFF_WRITE_ERRORS, problem_responses
from idguard.registry.routes.deps import TxDep
from idguard.verification import units
from idguard.verification.models import Unit
from idguard.verification.routes.deps import get_verifier
from idguard.verification.schemas import HarvestingOut, RotateIn, UnitIn, UnitKeyOut, UnitOut

router = APIRouter(prefix="/api/v1/units", tags=["units (supervisors)"])


def _out(unit: Unit) -> UnitOut:
    return UnitOut(
        code=unit.code,
        name=unit.name,
        sector=unit.sector,
        purposes=list(unit.purposes),
        rate_limit=unit.rate_limit,
        status=unit.status.value,
        webhook_url=unit.webhook_url,
        harvesting=HarvestingOut(since=unit.harvesting_suspected_at, reason=unit.harvesting_reason or "")
        if unit.harvesting_suspected_at is not None
        else None,
    )


SECRETS = ("api_key", "webhook_secret")


def _replay_notice(code: str) -> str:
    return (
        "the API key and webhook secret were shown once, in the first answer to this request, and "
        f"are not stored; if that answer was lost, rotate the key: POST /api/v1/units/{code}/keys/rotate "
        "(with a new Idempotency-Key) answers a new key and the webhook secret"
    )


def _refresh_keys(tx: TxDep) -> None:
    # This worker applies the change at once; the others within one ledger poll.
    get_verifier(tx.request).follower.poll()


@router.post("", status_code=201, response_model=UnitKeyOut, responses=STAFF_WRITE_ERRORS)
def onboard(body: UnitIn, tx: TxDep) -> Response:
    """Onboard an ID-using unit (supervisor only). The answer holds the unit's API key — shown
    exactly once and stored only as a hash — and the secret that signs its webhook deliveries."""
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
        return UnitKeyOut(
            unit=_out(issued.unit), api_key=issued.api_key, webhook_secret=issued.webhook_secret
        )

    response = tx.write(run, body=body, shown_once=SECRETS, notice=_replay_notice(body.code))
    _refresh_keys(tx)
    return response


@router.post("/{code}/keys/rotate", status_code=201, response_model=UnitKeyOut, responses=STAFF_WRITE_ERRORS)
def rotate(code: str, body: RotateIn, tx: TxDep) -> Response:
    """Issue a new key. The unit's current keys keep working for `grace_seconds`, so it can
    deploy the new one without an outage; then they stop."""
    secret = get_settings(tx.request).secret_key

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


@router.post("/{code}/keys/revoke", status_code=200, response_model=UnitOut, responses=STAFF_WRITE_ERRORS)
def revoke(code: str, tx: TxDep) -> Response:
    """Revoke every key of the unit, effective at once (a leaked key)."""

    def run() -> UnitOut:
        return _out(units.revoke_keys(tx.session, actor=tx.actor, now=tx.now, code=code))

    response = tx.write(run, body=None, status_code=200)
    _refresh_keys(tx)
    return response


@router.get("", response_model=list[UnitOut], responses=problem_responses(401, 403))
def list_units(tx: TxDep) -> list[UnitOut]:
    """Every unit (supervisors and auditors)."""
    return [_out(u) for u in units.list_units(tx.session, actor=tx.actor)]


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
