"""Networked verification for ID-using units: single and batch checks.

These handlers are `async` on purpose: a check never waits on I/O (the index, the key ring, the
rate limiter and the check-log buffer are all in memory), so running them on the event loop
saves a thread hop per request.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import TypeAdapter, ValidationError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse

from idguard.api.deps import CurrentUnit, get_verifier
from idguard.api.errors import field_name
from idguard.api.schemas import problem_responses
from idguard.api.verify_schemas import VerifyBatchIn, VerifyBatchOut, VerifyIn, VerifyOut
from idguard.domain.errors import InvalidField
from idguard.fingerprints import Template
from idguard.services import fingerprints
from idguard.services.checklog import LogFull
from idguard.services.keyring import UnitView
from idguard.services.verify import Query, Verifier

router = APIRouter(prefix="/api/v1", tags=["verification (units)"])
_ITEM = TypeAdapter(VerifyIn)
INDEX_AGE = "X-Index-Age"


MAX_BATCH_FINGERPRINTS = 100  # each costs a template build and a database read (~15 ms)


def _query(item: VerifyIn, live: Template | None = None) -> Query:
    return Query(
        id_number=item.id_number,
        name=item.name,
        issued_on=item.issued_on,
        expires_on=item.expires_on,
        purpose=item.purpose,
        operator=item.operator,
        chip_serial=item.chip_serial,
        watch=item.watch,
        fingerprint=live,
    )


def _admit(verifier: Verifier, unit: UnitView, n: int) -> None:
    wait = verifier.limiter.take(unit.code, unit.rate_limit, n)
    if wait:
        raise HTTPException(
            429,
            f"rate limit of {unit.rate_limit} checks per second exceeded",
            headers={"Retry-After": verifier.limiter.retry_after_header(wait)},
        )


def _headers(verifier: Verifier) -> dict[str, str]:
    return {INDEX_AGE: f"{verifier.follower.age:.3f}"}


def _answer(verifier: Verifier, unit: UnitView, queries: list[Query]) -> list[dict[str, object]]:
    try:
        return [a.as_dict() for a in verifier.check(unit, queries)]
    except LogFull as exc:
        raise HTTPException(503, str(exc), headers={"Retry-After": "5"}) from None


@router.post(
    "/verify",
    response_model=VerifyOut,
    responses={**problem_responses(401, 403, 422), 429: {"description": "rate limit; see Retry-After"}},
)
async def verify(body: VerifyIn, request: Request, unit: CurrentUnit) -> JSONResponse:
    """Check the card in front of you. Send what is printed on it; the answer is `valid`,
    `invalid` with a `reason`, or `mismatch` (nothing matches a card of that number — the answer
    never says which field). No personal data is ever returned. Every check is recorded against
    your unit, the `operator` and the `purpose`, which must be one your unit is allowed.

    Person-card check (人证一致性核查): send the holder's live `fingerprint` and, when the card is
    valid and has registered fingerprints, the answer adds `fingerprint_match` true/false (the
    sample is compared with both registered fingers and discarded, never stored). Otherwise
    `fingerprint_match` is null and `fingerprint_reason` says why. A malformed record is a 422
    naming the part of the record at fault.

    `watch: true` subscribes you to this card: later status changes reach you as notifications.
    The `X-Index-Age` header says how many seconds old the answering index may be (normally
    well under 0.1 s; larger if the registry database is unreachable)."""
    verifier = get_verifier(request)
    if body.purpose not in unit.purposes:
        raise HTTPException(403, f"your unit may not check for purpose {body.purpose!r}")
    if body.fingerprint is None:  # the hot path: everything in memory, on the event loop
        _admit(verifier, unit, 1)
        return JSONResponse(_answer(verifier, unit, [_query(body)])[0], headers=_headers(verifier))
    _admit(verifier, unit, 1)  # before the template build: a unit over its rate costs no CPU
    live = await run_in_threadpool(fingerprints.live_template, body.fingerprint)
    answers = await run_in_threadpool(_answer, verifier, unit, [_query(body, live)])
    return JSONResponse(answers[0], headers=_headers(verifier))


def _item_error(
    status: int, title: str, detail: str, errors: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    return {"error": {"status": status, "title": title, "detail": detail, "errors": errors or []}}


@router.post(
    "/verify/batch",
    response_model=VerifyBatchOut,
    responses={**problem_responses(401, 422), 429: {"description": "rate limit; see Retry-After"}},
)
async def verify_batch(body: VerifyBatchIn, request: Request, unit: CurrentUnit) -> JSONResponse:
    """Up to 1000 checks in one call; `results` keep the order of `items`. A malformed item, or
    one with a purpose your unit may not use, gets an `error` in its place without failing the
    others. Rate limits count items."""
    verifier = get_verifier(request)
    results: list[dict[str, Any] | None] = [None] * len(body.items)
    admitted: list[tuple[int, VerifyIn]] = []
    for i, raw in enumerate(body.items):
        try:
            item = _ITEM.validate_python(raw)
        except ValidationError as exc:
            errors = [{"field": field_name(tuple(e["loc"])), "detail": str(e["msg"])} for e in exc.errors()]
            results[i] = _item_error(
                422, "Invalid item", "invalid fields: " + ", ".join(e["field"] for e in errors), errors
            )
            continue
        if item.purpose not in unit.purposes:
            results[i] = _item_error(
                403, "Forbidden", f"your unit may not check for purpose {item.purpose!r}"
            )
            continue
        admitted.append((i, item))
    with_samples = sum(1 for _, item in admitted if item.fingerprint is not None)
    if with_samples > MAX_BATCH_FINGERPRINTS:
        raise InvalidField(
            "items", f"at most {MAX_BATCH_FINGERPRINTS} items of a batch may carry a fingerprint"
        )
    if admitted:
        _admit(verifier, unit, len(admitted))
    queries = (
        await run_in_threadpool(_queries_with_samples, admitted, results)
        if with_samples
        else [(i, _query(item)) for i, item in admitted]
    )
    if queries:
        check = [q for _, q in queries]
        answers = (
            await run_in_threadpool(_answer, verifier, unit, check)
            if with_samples
            else _answer(verifier, unit, check)
        )
        for (i, _), answer in zip(queries, answers, strict=True):
            results[i] = answer
    return JSONResponse({"results": results}, headers=_headers(verifier))


def _queries_with_samples(
    admitted: list[tuple[int, VerifyIn]], results: list[dict[str, Any] | None]
) -> list[tuple[int, Query]]:
    """Build the live templates of a batch (off the event loop); a malformed record fails its item."""
    out = []
    for i, item in admitted:
        try:
            live = fingerprints.live_template(item.fingerprint) if item.fingerprint is not None else None
        except InvalidField as exc:
            results[i] = _item_error(
                422,
                "Invalid item",
                f"invalid fields: {exc.field}",
                [{"field": exc.field, "detail": exc.detail}],
            )
            continue
        out.append((i, _query(item, live)))
    return out
