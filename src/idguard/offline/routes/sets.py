"""The offline set for units granted `offline`: snapshot, deltas, the public keys, and the upload
of checks made offline (docs/offline.md)."""

from __future__ import annotations

import logging
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.responses import Response

from idguard.api.deps import get_clock
from idguard.api.schemas import FieldError, problem_responses
from idguard.core.errors import InvalidField
from idguard.offline import grants, uploads
from idguard.offline.schemas import (
    KeysOut,
    OfflineCheckResult,
    OfflineChecksIn,
    OfflineChecksOut,
    PublicKeyOut,
)
from idguard.offline.service import AheadOfRegistry, Gone, OfflineService, SignedFile
from idguard.verification.routes.deps import CurrentUnit, get_verifier
from idguard.verification.runtime.checklog import LogFull, Signal
from idguard.verification.runtime.keyring import UnitView

logger = logging.getLogger("idguard.offline")
router = APIRouter(prefix="/api/v1/offline", tags=["offline verification"])
VERSION = "X-Offline-Version"
GENERATION = "X-Offline-Generation"
OCTETS = "application/octet-stream"
_FILE: dict[int | str, dict[str, Any]] = {
    200: {"content": {OCTETS: {"schema": {"type": "string", "format": "binary"}}}}
}


def get_offline(request: Request) -> OfflineService:
    service: OfflineService = request.app.state.offline
    return service


def offline_unit(request: Request, unit: CurrentUnit) -> UnitView:
    """The calling unit, if a supervisor granted it `offline`; 403 otherwise. (Its own short
    session: a request's session would hold SQLite's lock while the set is built.)"""
    with request.app.state.sessionmaker() as session:
        granted = grants.has_offline(session, unit.code)
    if not granted:
        raise HTTPException(
            403,
            f"unit {unit.code} is not granted offline verification; a supervisor grants it "
            f'(PATCH /api/v1/units/{unit.code} with {{"offline": true}})',
        )
    return unit


OfflineUnit = Annotated[UnitView, Depends(offline_unit)]


def _file(signed: SignedFile) -> Response:
    return Response(
        signed.data,
        media_type=OCTETS,
        headers={
            VERSION: str(signed.version),
            GENERATION: str(signed.generation),
            "Cache-Control": "no-store",
        },
    )


@router.get(
    "/snapshot",
    response_class=Response,
    responses={**_FILE, **problem_responses(401, 403)},
)
def snapshot(request: Request, unit: OfflineUnit) -> Response:
    """The signed set of every valid card at a version (`X-Offline-Version`, a ledger position),
    as `application/octet-stream`. Keep it with `idguard offline fetch` (which verifies it), then
    fetch deltas after its version. The set answers exactly for every card ever issued (keyed by
    id number, chip serial and expiry date); a key no card has (a forged chip serial) passes with
    probability 2^-k, k in the file's header. The file names no one: without a card's chip
    serial nothing in it can be looked up (docs/offline.md). Snapshots are rebuilt now and then,
    so the version may trail the registry; the deltas bring it up to date."""
    return _file(get_offline(request).snapshot())


@router.get(
    "/deltas",
    response_class=Response,
    responses={
        **_FILE,
        **problem_responses(401, 403, 422),
        410: {"description": "too old (or of an older generation of the set): fetch a snapshot"},
    },
)
def deltas(
    request: Request,
    unit: OfflineUnit,
    after: Annotated[int, Query(ge=0, description="the version your set is at (X-Offline-Version)")],
) -> Response:
    """The signed changes since version `after`: every card whose validity changed, 9 bytes
    each, from `after` to the registry's current version (`X-Offline-Version`). A reader applies
    a delta only to the version it starts from. 410 when the changes since `after` are no longer
    served as a delta (a snapshot is smaller, or the set's salt changed): fetch a snapshot."""
    try:
        return _file(get_offline(request).delta(after))
    except Gone as exc:
        raise HTTPException(410, str(exc)) from None
    except AheadOfRegistry as exc:
        raise InvalidField("after", str(exc)) from None


@router.get("/keys", response_model=KeysOut)
def keys(request: Request) -> KeysOut:
    """The Ed25519 public keys that sign snapshots and deltas (public). A file's header names
    its key (`key_id`); its last 64 bytes are the signature of everything before them."""
    return KeysOut(
        keys=[
            PublicKeyOut(key_id=k.key_id, public_key=k.public_key, signing=k.signing)
            for k in get_offline(request).keys.public()
        ]
    )


def _owners(request: Request, ids: list[uuid.UUID]) -> dict[uuid.UUID, str]:
    with request.app.state.sessionmaker() as session:
        return uploads.recorded_owners(session, ids)


def _signals(
    request: Request, unit_code: str, items: list[uploads.OfflineCheck], outcomes: list[uploads.Outcome]
) -> list[Signal]:
    with request.app.state.sessionmaker() as session:
        return uploads.incident_signals(session, unit_code, items, outcomes)


@router.post(
    "/checks",
    response_model=OfflineChecksOut,
    responses={**problem_responses(401, 403, 422), 503: {"description": "the check log is full; retry"}},
)
async def upload_checks(body: OfflineChecksIn, request: Request, unit: OfflineUnit) -> OfflineChecksOut:
    """Upload the checks your reader made offline (up to 1000 per call): each is recorded in the
    check log like any check — in your unit's history (GET /api/v1/checks), in accountability and
    in the holder's own view — with its own `at`, `operator` and `purpose`. Idempotent per
    `check_id`: one already recorded for your unit is answered `duplicate`. An item breaking a
    rule (a purpose your unit may not use, a time in the future, another unit's check id) is
    `rejected` with `errors` naming the field; the others are recorded. A check of a card that
    was reported lost or stolen at the check's time, or of a listed person's card, opens an
    incident as it would have online (send `chip_serial`: it identifies the card)."""
    items = [
        uploads.OfflineCheck(
            check_id=i.check_id,
            at=i.at,
            id_number=i.id_number,
            result=i.result,
            version=i.version,
            operator=i.operator,
            purpose=i.purpose,
            chip_serial=i.chip_serial,
        )
        for i in body.items
    ]
    owners = await run_in_threadpool(_owners, request, [i.check_id for i in items])
    outcomes, entries = uploads.plan(unit, items, owners, get_clock(request).now())
    if entries:
        log = get_verifier(request).log
        signals = await run_in_threadpool(_signals, request, unit.code, items, outcomes)
        request.app.state.offline_uploads.expect(entries)
        try:
            await log.recorded(log.append(entries, signals))
        except LogFull as exc:
            raise HTTPException(503, str(exc), headers={"Retry-After": "5"}) from None
        # Durable already (the journal); written to the database now, so a retry of this upload
        # finds them there and is answered `duplicate` (the write itself skips ids already there).
        try:
            await run_in_threadpool(log.flush)
        except Exception:  # the writer retries; the checks are safe in the journal
            logger.warning("offline checks: the check log could not be written now; it retries")
    return OfflineChecksOut(
        results=[
            OfflineCheckResult(
                check_id=o.check_id,
                status=o.status,
                errors=[FieldError(field=f, detail=d) for f, d in o.errors],
            )
            for o in outcomes
        ]
    )
