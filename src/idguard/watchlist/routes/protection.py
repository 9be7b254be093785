"""Victim protection: require the person-card check on every check of a holder's cards."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from idguard.api.schemas import STAFF_WRITE_ERRORS, IdNumberStr
from idguard.registry.routes.deps import TxDep
from idguard.watchlist import protection
from idguard.watchlist.schemas import ProtectionIn, ProtectionOut

router = APIRouter(prefix="/api/v1/persons", tags=["impersonation: protection"])


@router.put(
    "/{id_number}/protection", status_code=200, response_model=ProtectionOut, responses=STAFF_WRITE_ERRORS
)
def protect(id_number: IdNumberStr, body: ProtectionIn, tx: TxDep) -> Response:
    """Victim protection (a clerk of the holder's household-registration office, or a supervisor):
    with `person_check_required: true`, every check of the holder's cards that does not carry
    the holder's matching `fingerprint` answers the alert `person_check_required` (the result is
    unchanged), on every worker within the bound of a loss report; `false` releases it. The
    holder can set it too (`PUT /api/v1/me/protection`). Recorded with its `reason`; audited."""

    def run() -> ProtectionOut:
        person, required = protection.protect(
            tx.session,
            actor=tx.actor,
            now=tx.now,
            id_number=id_number,
            required=body.person_check_required,
            reason=body.reason,
        )
        return ProtectionOut(id_number=person.id_number, person_check_required=required)

    return tx.write(run, body=body, status_code=200)
