"""The one-trip temporary identity certificate (临时身份证明): issued at a counter, checked by units."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response

from idguard import uow
from idguard.api.deps import get_clock
from idguard.api.schemas import STAFF_WRITE_ERRORS, IdNumberStr, problem_responses
from idguard.citizens import certificates
from idguard.citizens.models import CertificateCheck
from idguard.citizens.schemas import (
    CertificateCheckIn,
    CertificateCheckOut,
    TravelCertificateIn,
    TravelCertificateOut,
)
from idguard.registry.routes.deps import BiometricsDep, TxDep
from idguard.verification.routes.deps import CurrentUnit, get_verifier
from idguard.verification.runtime.checklog import CHECK_FIELDS, LogFull
from idguard.verification.verifier import check_ids, rfc3339

router = APIRouter(prefix="/api/v1", tags=["travel certificates"])


@router.post(
    "/persons/{id_number}/travel-certificates",
    status_code=201,
    response_model=TravelCertificateOut,
    responses=STAFF_WRITE_ERRORS,
)
def issue_certificate(
    id_number: IdNumberStr, body: TravelCertificateIn, tx: TxDep, biometrics: BiometricsDep
) -> Response:
    """Issue a one-trip temporary identity certificate (临时身份证明), as station, airport and
    hotel-district police do, for one journey (`rail`, `air`) or stay (`lodging`) on `valid_on`
    (today or up to 7 days ahead, China Standard Time). Only for a person who cannot present a
    valid card: the current card reported, expired, or issued in the last 60 days and not yet
    collected. Where the person has registered fingerprints, `fingerprint` (a live capture) must
    match one of them: the comparison is recorded, a mismatch refuses (409). A clerk issues at
    their own office. The holder sees it, and every check of it, in their own view."""

    def run() -> TravelCertificateOut:
        certificate = certificates.issue(
            tx.session,
            actor=tx.actor,
            now=tx.now,
            id_number=id_number,
            office=body.office,
            purpose=body.purpose,
            valid_on=body.valid_on,
            fingerprint=body.fingerprint,
            biometrics=biometrics,
        )
        return TravelCertificateOut(
            certificate_no=certificate.certificate_no,
            valid_on=certificate.valid_on,
            purpose=certificate.purpose,
            office=certificate.office,
            issued_at=certificate.issued_at,
            fingerprint_matched=certificate.fingerprint_matched,
        )

    return tx.write(run, body=body)


@router.post(
    "/verify/certificate",
    response_model=CertificateCheckOut,
    responses={**problem_responses(401, 403, 422), 429: {"description": "rate limit; see Retry-After"}},
)
async def verify_certificate(body: CertificateCheckIn, request: Request, unit: CurrentUnit) -> Response:
    """Check a one-trip temporary identity certificate (临时身份证明) presented instead of a card.
    `valid` only on its day (China Standard Time) and for its purpose, which your unit's sector
    decides: `rail` certificates at railways, `air` at airlines, `lodging` at hotels. Otherwise
    `invalid` with a `reason` (`expired`, `not_yet_valid`, `wrong_purpose`, `revoked`), or
    `mismatch` when the number is unknown or the name is not the holder's (the answer never
    says which). `purpose` is your own business type, as for a card check. Every check is
    recorded in the check log like a card check, and the holder sees it."""
    if body.purpose not in unit.purposes:
        raise HTTPException(403, f"your unit may not check for purpose {body.purpose!r}")
    verifier = get_verifier(request)
    wait = verifier.limiter.take(unit.code, unit.rate_limit, 1)
    if wait:
        raise HTTPException(
            429,
            f"rate limit of {unit.rate_limit} checks per second exceeded",
            headers={"Retry-After": verifier.limiter.retry_after_header(wait)},
        )
    now = get_clock(request).now()
    check_id = check_ids(1)[0]
    sessions = request.app.state.sessionmaker

    def run() -> tuple[str, str | None, str]:
        with uow.transaction(sessions) as session:
            result, reason, id_number, certificate = certificates.check(
                session, certificate_no=body.certificate_no, name=body.name, unit_code=unit.code, now=now
            )
            if certificate is not None:
                session.add(
                    CertificateCheck(check_id=uuid.UUID(check_id), certificate_no=certificate.certificate_no)
                )
        return result, (reason.value if reason is not None else None), id_number

    result, reason, id_number = await run_in_threadpool(run)
    # The check log's entry, built by field name: a field the log gains later is None here (it
    # has nothing to say about a certificate) rather than a shifted tuple.
    values: dict[str, object] = {
        "check_id": check_id,
        "unit_code": unit.code,
        "operator": body.operator,
        "purpose": body.purpose,
        "at": now,
        "result": result,
        "reason": reason,
        "id_number": id_number,
        "watch_on": None,
        "seq": verifier.follower.seq,
        "fingerprint_match": None,
    }
    entry = tuple(values.get(field) for field in CHECK_FIELDS)
    try:
        ticket = verifier.log.append([entry])  # type: ignore[list-item]
        await verifier.log.recorded(ticket)
    except LogFull as exc:
        raise HTTPException(503, str(exc), headers={"Retry-After": "5"}) from None
    answer: dict[str, object] = {"result": result, "check_id": check_id, "checked_at": rfc3339(now)}
    if reason is not None:
        answer["reason"] = reason
    return JSONResponse(answer)
