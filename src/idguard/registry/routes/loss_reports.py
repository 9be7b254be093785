"""Loss reports (挂失申报) and their cancellation (解除挂失)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import Response

from idguard.api.schemas import STAFF_WRITE_ERRORS
from idguard.registry import loss_reports
from idguard.registry.routes.deps import BiometricsDep, TxDep
from idguard.registry.schemas import CancelIn, LossReportIn, LossReportOut

router = APIRouter(prefix="/api/v1/loss-reports", tags=["loss reports"])


@router.post("", status_code=201, response_model=LossReportOut, responses=STAFF_WRITE_ERRORS)
def report_loss(body: LossReportIn, tx: TxDep, biometrics: BiometricsDep) -> Response:
    """Accept a loss report at any office, from the holder in person (a guardian for a holder
    under 16), free of charge. The card is invalid from the moment this answers; `report_no` is
    the receipt number. A card with registered fingerprints needs the applicant's live
    `fingerprint` (422 without it), which must match one of the card's two registered fingers:
    a mismatch is refused with 409. Every comparison is recorded with office, clerk and time
    (`GET /api/v1/fingerprint-comparisons`), so repeated failures are visible."""

    def run() -> LossReportOut:
        report, card = loss_reports.report_loss(
            tx.session,
            actor=tx.actor,
            now=tx.now,
            card_id=str(body.card_id),
            reason=body.reason,
            office=body.office,
            applicant_id_number=body.applicant_id_number,
            applicant_name=body.applicant_name,
            fingerprint=body.fingerprint,
            biometrics=biometrics,
        )
        return LossReportOut.of(report, card, tx.now)

    return tx.write(run, body=body)


@router.post(
    "/{report_no}/cancel", status_code=200, response_model=LossReportOut, responses=STAFF_WRITE_ERRORS
)
def cancel(report_no: str, body: CancelIn, tx: TxDep, biometrics: BiometricsDep) -> Response:
    """Cancel a loss report: only at the office that accepted it, only while no newer card has
    been issued. The card is valid again. A card with registered fingerprints needs the holder's
    live `fingerprint`, which must match (recorded like a report's comparison; 409 on mismatch)."""

    def run() -> LossReportOut:
        report, card = loss_reports.cancel_loss_report(
            tx.session,
            actor=tx.actor,
            now=tx.now,
            report_no=report_no,
            office=body.office,
            fingerprint=body.fingerprint,
            biometrics=biometrics,
        )
        return LossReportOut.of(report, card, tx.now)

    return tx.write(run, body=body, status_code=200)
