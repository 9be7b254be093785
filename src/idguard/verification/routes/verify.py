"""Networked verification for ID-using units: single and batch checks.

These handlers are `async` on purpose: a check never waits on I/O (the index, the key ring, the
rate limiter and the check-log buffer are all in memory), so running them on the event loop
saves a thread hop per request. The one wait is the check log's journal: an answer leaves once
its checks are synced there (a group commit, a few milliseconds). The handler returns at once a
`RecordedResponse` that waits for that before it sends, so the loop serves other requests
meanwhile and what the handler built is freed while the answer waits (runtime/checklog.py).

Both routes have a fast lane (`_route_with`) in front of FastAPI's handler: the common request (a
JSON body, a good key, every field valid, no fingerprint) is answered from the raw body, which
pydantic parses and validates in one pass, without FastAPI's dependency solving, `json.loads` and
model instances. Whatever the lane does not take, FastAPI's handler (the endpoint as declared
below, which also makes the OpenAPI document) answers exactly as it would without the lane.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, cast

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.routing import APIRoute
from fastapi.security import HTTPBearer
from pydantic import TypeAdapter, ValidationError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from idguard.api.errors import PROBLEM, ApiError, field_name, problem_body
from idguard.api.schemas import Problem, problem_responses
from idguard.biometrics import fingerprints
from idguard.core.errors import InvalidField
from idguard.core.ratelimit import Admission
from idguard.verification.routes.deps import CurrentUnit, current_unit, get_verifier
from idguard.verification.runtime.checklog import LogFull
from idguard.verification.runtime.keyring import UnitView
from idguard.verification.schemas import (
    MAX_BATCH_BODY_BYTES,
    VerifyBatchIn,
    VerifyBatchItems,
    VerifyBatchOut,
    VerifyIn,
    VerifyItem,
    VerifyOut,
    as_item,
)
from idguard.verification.verifier import Item, Query, Verifier

router = APIRouter(prefix="/api/v1", tags=["verification (units)"])
_ITEM = TypeAdapter(VerifyIn)
_ITEMS = TypeAdapter(list[VerifyItem])
_LANE_ITEM = TypeAdapter(VerifyItem)
_LANE_BATCH = TypeAdapter(VerifyBatchItems)
_LANE_BEARER = HTTPBearer(auto_error=False)
INDEX_AGE = "X-Index-Age"


MAX_BATCH_FINGERPRINTS = 100  # each costs a template build and a database read (~15 ms)
# A batch larger than the unit's rate per second borrows what its bucket lacks (core/ratelimit.py),
# paid back at the rate before the unit's next check: at most this many seconds of it.
BATCH_DEBT_SECONDS = 60


def max_batch(verifier: Verifier, unit: UnitView) -> int:
    """The most checks one batch may hold for this unit: its bucket (a second of this worker's
    share of the rate) and BATCH_DEBT_SECONDS more of it borrowed. Never a refusal for a unit of
    17 checks a second or more (a full batch is 1000)."""
    share = unit.rate_limit / verifier.limiter.workers
    return max(1, int(share * (1 + BATCH_DEBT_SECONDS)))


def _item(body: VerifyIn) -> Item:
    return (
        body.id_number,
        body.name,
        body.issued_on,
        body.expires_on,
        body.purpose,
        body.operator,
        body.chip_serial,
        body.watch,
    )


def _admit(verifier: Verifier, unit: UnitView, n: int) -> Admission:
    """Take `n` of the unit's tokens (core/ratelimit.py: a batch larger than the rate borrows);
    429 with Retry-After and the RateLimit headers when the unit must wait."""
    admission = verifier.limiter.admit(unit.code, unit.rate_limit, n)
    if admission.wait:
        raise ApiError(
            429,
            f"rate limit of {unit.rate_limit} checks per second exceeded"
            + (
                ": the unit is throttled while its checks are suspected of harvesting; "
                "a supervisor at the registry clears it"
                if unit.harvesting_suspected
                else ""
            ),
            code="rate_limited",
            headers={
                "Retry-After": verifier.limiter.retry_after_header(admission.wait),
                **admission.headers(unit.rate_limit),
            },
        )
    return admission


def _not_allowed(unit: UnitView, purpose: str) -> ApiError:
    """403 naming the purpose and the ones the unit may use."""
    allowed = ", ".join(sorted(unit.purposes)) or "none"
    return ApiError(
        403,
        f"your unit may not check for purpose {purpose!r}; it may check for: {allowed}",
        code="purpose_not_allowed",
        param="purpose",
    )


def _headers(
    verifier: Verifier, unit: UnitView | None = None, admission: Admission | None = None
) -> dict[str, str]:
    headers = {INDEX_AGE: f"{verifier.follower.age:.3f}"}
    if unit is not None and admission is not None:
        headers.update(admission.headers(unit.rate_limit))
    return headers


def _check_items(verifier: Verifier, unit: UnitView, items: list[Item]) -> tuple[list[str], int]:
    """The answers and the check log's ticket for them (what `_json` waits for)."""
    try:
        return verifier.check_items(unit, items), verifier.log.last_ticket()
    except LogFull as exc:
        raise HTTPException(503, str(exc), headers={"Retry-After": "5"}) from None


class RecordedResponse(Response):
    """A verify answer that is sent once its checks are synced to the check log's journal, or a
    503 instead if they cannot be (runtime/checklog.py). The handler has returned by then, so
    what it built is freed while the answer waits: a handler waiting in its frames kept a
    batch's thousand validated items alive into the garbage collector's old generation, whose
    collections then took a tenth of the CPU under load."""

    def __init__(self, content: bytes, verifier: Verifier, ticket: int, headers: dict[str, str]) -> None:
        super().__init__(content, media_type="application/json", headers=headers)
        self._log = verifier.log
        self._ticket = ticket

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._log.recorded(self._ticket)
        except LogFull as exc:  # nothing is sent yet: the error handler answers
            raise HTTPException(503, str(exc), headers={"Retry-After": "5"}) from None
        await super().__call__(scope, receive, send)


def _json(text: str, verifier: Verifier, ticket: int, headers: dict[str, str]) -> Response:
    """A JSON answer already rendered (as JSONResponse would render it), sent once recorded."""
    return RecordedResponse(text.encode(), verifier, ticket, headers)


async def _check(verifier: Verifier, unit: UnitView, queries: list[Query]) -> list[dict[str, object]]:
    """Answer off the event loop (a fingerprint comparison reads the database); the answers
    leave once their checks are synced to the check log's journal."""

    def run() -> tuple[list[dict[str, object]], int]:
        return verifier.check(unit, queries), verifier.log.last_ticket()

    try:
        answers, ticket = await run_in_threadpool(run)
        await verifier.log.recorded(ticket)
    except LogFull as exc:
        raise HTTPException(503, str(exc), headers={"Retry-After": "5"}) from None
    return answers


async def verify(body: VerifyIn, request: Request, unit: CurrentUnit) -> Response:
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
    if body.fingerprint is None:  # the hot path: everything in memory, on the event loop
        return _verify_one(verifier, unit, _item(body))
    if body.purpose not in unit.purposes:
        raise _not_allowed(unit, body.purpose)
    admission = _admit(verifier, unit, 1)  # before the template build: a unit over its rate costs no CPU
    live = await run_in_threadpool(fingerprints.live_template, body.fingerprint)
    answers = await _check(verifier, unit, [Query(*_item(body), fingerprint=live)])
    return JSONResponse(answers[0], headers=_headers(verifier, unit, admission))


def _verify_one(verifier: Verifier, unit: UnitView, item: Item) -> Response:
    """A single check without a fingerprint (the endpoint's and the lane's)."""
    purpose = item[4]
    if purpose not in unit.purposes:
        raise _not_allowed(unit, purpose)
    admission = _admit(verifier, unit, 1)
    answers, ticket = _check_items(verifier, unit, [item])
    return _json(answers[0], verifier, ticket, _headers(verifier, unit, admission))


async def _verify_lane(request: Request) -> Response | None:
    lane = await _lane_input(request)
    if lane is None:
        return None
    unit, body = lane
    try:
        item = _LANE_ITEM.validate_json(body)
    except ValidationError:
        return None
    if item.get("fingerprint") is not None:
        return None
    return _verify_one(get_verifier(request), unit, as_item(item))


def _item_error(
    status: int, title: str, detail: str, errors: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    return {"error": {"status": status, "title": title, "detail": detail, "errors": errors or []}}


async def verify_batch(body: VerifyBatchIn, request: Request, unit: CurrentUnit) -> Response:
    """Up to 1000 checks in one call; `results` keep the order of `items`. A malformed item, or
    one with a purpose your unit may not use, gets an `error` in its place without failing the
    others. Rate limits count items: a batch of more items than your unit's rate per second is
    admitted once your allowance is full and borrows the rest, which your next checks wait for
    (paid back at your rate); a batch that would borrow more than a minute's worth is refused at
    once with 422 `batch_exceeds_rate`, saying the most you may send."""
    raw = body.items
    results: list[dict[str, Any] | None] = [None] * len(raw)
    # A batch of good items is validated in one call. Otherwise VerifyIn judges and words each
    # bad item's errors, exactly as for a single check, and the good ones are validated again as
    # a batch.
    try:
        checked: list[tuple[int, VerifyItem]] = list(enumerate(_ITEMS.validate_python(raw)))
    except ValidationError as exc:
        bad = {
            int(e["loc"][0])
            for e in exc.errors(include_url=False, include_context=False, include_input=False)
        }
        good = [i for i in range(len(raw)) if i not in bad]
        checked = list(zip(good, _ITEMS.validate_python([raw[i] for i in good]), strict=True))
        for i in sorted(bad):
            try:
                model = _ITEM.validate_python(raw[i])
            except ValidationError as item_exc:
                results[i] = _invalid(item_exc)
                continue
            # Never expected (both validate with the same types; tests hold them to it), but
            # VerifyIn has the last word: the item is checked.
            checked.append((i, cast(VerifyItem, model.model_dump())))
        checked.sort(key=lambda pair: pair[0])
    return await _answer_batch(get_verifier(request), unit, checked, results)


async def _batch_lane(request: Request) -> Response | None:
    lane = await _lane_input(request)
    if lane is None:
        return None
    unit, body = lane
    try:
        items = _LANE_BATCH.validate_json(body)["items"]
    except ValidationError:
        return None
    if any(item.get("fingerprint") is not None for item in items):
        return None
    return await _answer_batch(get_verifier(request), unit, list(enumerate(items)), [None] * len(items))


async def _answer_batch(
    verifier: Verifier,
    unit: UnitView,
    checked: list[tuple[int, VerifyItem]],
    results: list[dict[str, Any] | None],
) -> Response:
    """Answer a batch whose valid items are `checked` (position, item); `results` holds the
    errors of the others already."""
    purposes = unit.purposes
    # The admitted items, in order: their positions, their checks, and the fingerprints sent with
    # some of them (by position).
    positions: list[int] = []
    items: list[Item] = []
    samples: dict[int, str] = {}
    for i, item in checked:
        if item["purpose"] not in purposes:
            results[i] = _item_error(
                403, "Forbidden", f"your unit may not check for purpose {item['purpose']!r}"
            )
            continue
        sample = item.get("fingerprint")
        if sample is not None:
            samples[i] = sample
        positions.append(i)
        items.append(as_item(item))
    if len(samples) > MAX_BATCH_FINGERPRINTS:
        raise InvalidField(
            "items", f"at most {MAX_BATCH_FINGERPRINTS} items of a batch may carry a fingerprint"
        )
    if len(items) > max_batch(verifier, unit):
        raise ApiError(
            422,
            f"a batch of {len(items)} checks exceeds what your unit's rate of {unit.rate_limit} checks "
            f"per second admits at once: send at most {max_batch(verifier, unit)} items per batch",
            code="batch_exceeds_rate",
            param="items",
        )
    admission = _admit(verifier, unit, len(items)) if items else None
    if samples:  # template builds and database reads: off the event loop, one check call as before
        queries = await run_in_threadpool(_queries_with_samples, positions, items, samples, results)
        if queries:
            answers = await _check(verifier, unit, [q for _, q in queries])
            for (i, _), answer in zip(queries, answers, strict=True):
                results[i] = answer
        return JSONResponse({"results": results}, headers=_headers(verifier, unit, admission))
    # The common case: answers rendered as JSON text by the verifier, errors encoded here.
    texts, ticket = _check_items(verifier, unit, items) if items else ([], 0)
    if len(texts) < len(results):
        rendered = [_render(r) for r in results]
        for i, text in zip(positions, texts, strict=True):
            rendered[i] = text
        texts = rendered
    return _json(
        '{"results":[' + ",".join(texts) + "]}", verifier, ticket, _headers(verifier, unit, admission)
    )


def _invalid(exc: ValidationError) -> dict[str, Any]:
    """The error answer of an item that failed validation."""
    errors = [{"field": field_name(tuple(e["loc"])), "detail": str(e["msg"])} for e in exc.errors()]
    return _item_error(
        422, "Invalid item", "invalid fields: " + ", ".join(e["field"] for e in errors), errors
    )


def _render(value: object) -> str:
    """As JSONResponse renders."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":"))


def _queries_with_samples(
    positions: list[int], items: list[Item], samples: dict[int, str], results: list[dict[str, Any] | None]
) -> list[tuple[int, Query]]:
    """Build the live templates of a batch (off the event loop); a malformed record fails its item."""
    out = []
    for i, item in zip(positions, items, strict=True):
        sample = samples.get(i)
        try:
            live = fingerprints.live_template(sample) if sample is not None else None
        except InvalidField as exc:
            results[i] = _item_error(
                422,
                "Invalid item",
                f"invalid fields: {exc.field}",
                [{"field": exc.field, "detail": exc.detail}],
            )
            continue
        out.append((i, Query(*item, fingerprint=live)))
    return out


# --- the front door: a plain single check answered before the app's stack ---------------------

Answer = tuple[int, list[tuple[bytes, bytes]], bytes]
_JSON = b"application/json"


async def front_door(
    verifier: Verifier, now: dt.datetime, content_type: bytes, authorization: bytes, body: bytes
) -> Answer | None:
    """The answer to a plain single check, or None for FastAPI's route to answer the request.

    ops/middleware.py calls this in front of every middleware and route, for `POST
    /api/v1/verify` with nothing the request guard would refuse (api/guard.py): `front_door_check`
    makes the check, and the answer leaves once the check is recorded."""
    made = front_door_check(verifier, now, content_type, authorization, body)
    if made is None:
        return None
    answer, ticket = made
    try:
        await verifier.log.recorded(ticket)
    except LogFull as exc:
        return unavailable(str(exc))
    return answer


def front_door_check(
    verifier: Verifier, now: dt.datetime, content_type: bytes, authorization: bytes, body: bytes
) -> tuple[Answer, int] | None:
    """A plain single check made, with its check-log ticket: the answer may leave once the
    ticket is recorded (`CheckLog.recorded`, or `recorded_soon` where nothing can await; a failed
    record is answered `unavailable`). None for FastAPI's route to answer the request.

    It answers only what `_verify_lane` answers, exactly as it does (a JSON content type, a good
    key, a body the lane validates, no fingerprint), and only when the check is admitted and
    allowed: a 401, 403, 422 or 429 is FastAPI's to word, after nothing here has changed anything
    (a refused admission takes no token). The one answer of its own is the 503 of a check
    recorded in memory whose journal write failed: that check cannot be asked again.
    tests/functional/verification/test_verify_front_door.py holds it to FastAPI's answers."""
    if content_type != _JSON and content_type.partition(b";")[0].strip().lower() != _JSON:
        return None
    if authorization[:7] != b"Bearer ":
        return None
    unit = verifier.keyring.authenticate(authorization[7:].decode("latin-1"), now)
    if unit is None:
        return None
    try:
        item = _LANE_ITEM.validate_json(body)
    except ValidationError:
        return None
    if item.get("fingerprint") is not None or item["purpose"] not in unit.purposes:
        return None
    admission = verifier.limiter.admit(unit.code, unit.rate_limit, 1)
    if admission.wait:
        return None
    try:
        answers = verifier.check_items(unit, [as_item(item)])
    except Exception:  # nothing recorded: FastAPI's route meets it again and answers it
        return None
    text = answers[0].encode()
    limit = unit.rate_limit
    answer = (
        200,
        [
            (b"content-length", str(len(text)).encode()),
            (b"content-type", _JSON),
            (b"x-index-age", f"{verifier.follower.age:.3f}".encode()),
            (b"ratelimit-limit", str(limit).encode()),
            (b"ratelimit-remaining", str(admission.remaining).encode()),
            (b"ratelimit-reset", str(admission.reset).encode()),
        ],
        text,
    )
    return answer, verifier.log.last_ticket()


def unavailable(detail: str) -> Answer:
    """The 503 the error handler renders for a check that could not be recorded."""
    body = _render(problem_body(503, "Service unavailable", detail)).encode()
    headers = [
        (b"retry-after", b"5"),
        (b"content-length", str(len(body)).encode()),
        (b"content-type", PROBLEM.encode()),
    ]
    return 503, headers, body


# --- the fast lane -----------------------------------------------------------------------------


async def _lane_input(request: Request) -> tuple[UnitView, bytes] | None:
    """The unit and the raw body of a request the lane may take: a JSON content type and a
    good key. None otherwise (FastAPI's handler then answers, e.g. the 401)."""
    content_type = request.headers.get("content-type")
    if content_type is None or content_type.partition(";")[0].strip().lower() != "application/json":
        return None
    try:
        unit = await current_unit(request, await _LANE_BEARER(request))
        body = await request.body()  # kept by the request: FastAPI's handler reads it again
    except Exception:  # whatever it is, FastAPI's handler meets it again and answers it
        return None
    return unit, body


Lane = Callable[[Request], Awaitable[Response | None]]


def _route_with(lane: Lane) -> type[APIRoute]:
    """An APIRoute whose handler tries `lane` first; the lane returns None for any request it
    does not answer exactly as the declared endpoint would."""

    class LaneRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            declared = super().get_route_handler()

            async def handler(request: Request) -> Response:
                response = await lane(request)
                return response if response is not None else await declared(request)

            return handler

    return LaneRoute


def _example(status: int, title: str, detail: str, code: str) -> dict[str, Any]:
    return {
        "model": Problem,
        "content": {
            PROBLEM: {"example": problem_body(status, title, detail, code=code)},
        },
    }


_429 = {
    **_example(429, "Too many requests", "rate limit of 100 checks per second exceeded", "rate_limited"),
    "description": "over the unit's rate: retry after `Retry-After` seconds (`RateLimit-Reset` too)",
}
_503 = {
    **_example(
        503,
        "Service unavailable",
        "the check could not be recorded (journal unavailable); retry later",
        "unavailable",
    ),
    "description": "the check could not be recorded, so it was not answered: retry after "
    "`Retry-After` seconds. (A fingerprint comparison the registry cannot make is not a 503: the "
    "answer stands with `fingerprint_reason: comparison_unavailable`.)",
}
_403 = {
    **_example(
        403,
        "Forbidden",
        "your unit may not check for purpose 'hotel_checkin'; it may check for: account_opening",
        "purpose_not_allowed",
    ),
    "description": "`purpose_not_allowed`: a purpose the unit was not onboarded with (`detail` lists its own)",
}
_RATE_HEADERS = {
    "RateLimit-Limit": {"description": "the unit's checks per second", "schema": {"type": "integer"}},
    "RateLimit-Remaining": {"description": "checks left now", "schema": {"type": "integer"}},
    "RateLimit-Reset": {
        "description": "seconds until the allowance is full again",
        "schema": {"type": "integer"},
    },
    INDEX_AGE: {
        "description": "seconds since the answering index was last current",
        "schema": {"type": "string"},
    },
}

router.add_api_route(
    "/verify",
    verify,
    methods=["POST"],
    response_model=VerifyOut,
    responses={
        200: {"description": "the answer", "headers": _RATE_HEADERS},
        **problem_responses(401, 422),
        403: _403,
        429: _429,
        503: _503,
    },
    route_class_override=_route_with(_verify_lane),
)
# The request guard's body limit for the batch (api/guard.py; every other path has its default).
BODY_LIMITS = {"/api/v1/verify/batch": MAX_BATCH_BODY_BYTES}
router.add_api_route(
    "/verify/batch",
    verify_batch,
    methods=["POST"],
    response_model=VerifyBatchOut,
    responses={
        200: {"description": "one result per item", "headers": _RATE_HEADERS},
        **problem_responses(401, 422),
        429: _429,
        503: _503,
    },
    route_class_override=_route_with(_batch_lane),
)
