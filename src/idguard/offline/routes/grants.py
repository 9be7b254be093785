"""Granting `offline` to a unit (supervisors)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from idguard.api.schemas import STAFF_WRITE_ERRORS
from idguard.offline import grants
from idguard.offline.schemas import OfflineIn, OfflineOut
from idguard.registry.routes.deps import TxDep

router = APIRouter(prefix="/api/v1/units", tags=["offline verification"])


@router.put("/{code}/offline", status_code=200, response_model=OfflineOut, responses=STAFF_WRITE_ERRORS)
def set_offline(code: str, body: OfflineIn, tx: TxDep) -> Response:
    """Grant (`{"offline": true}`) or withdraw (`false`) offline verification for a unit
    (supervisor only; audited). A unit with it may download the signed set of valid cards and
    its deltas (GET /api/v1/offline/snapshot, /deltas) and upload the checks it made offline;
    without it those routes answer 403. Setting the value the unit already has changes nothing."""

    def run() -> OfflineOut:
        value = grants.set_offline(
            tx.session, unit_code=code, offline=body.offline, actor=tx.actor, now=tx.now
        )
        return OfflineOut(unit_code=code, offline=value)

    return tx.write(run, body=body, status_code=200)
