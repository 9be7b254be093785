"""The impersonator blacklist (冒用身份证人员黑名单): list, lift, read with history."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from starlette.responses import Response

from idguard.api.schemas import STAFF_READ_ERRORS, STAFF_WRITE_ERRORS
from idguard.registry.routes.deps import TxDep
from idguard.watchlist import blacklist
from idguard.watchlist.blacklist import Listed
from idguard.watchlist.routes import cursors
from idguard.watchlist.rules import EntryStatus
from idguard.watchlist.schemas import BlacklistEntryOut, BlacklistEventOut, BlacklistIn, BlacklistPage, LiftIn

router = APIRouter(prefix="/api/v1/blacklist", tags=["impersonation: blacklist"])


def _out(listed: Listed) -> BlacklistEntryOut:
    entry = listed.entry
    return BlacklistEntryOut(
        entry_no=entry.entry_no,
        status=listed.status,
        listed_on=entry.listed_on,
        until=entry.until,
        id_number=listed.person.id_number,
        reason=entry.reason,
        case_no=entry.case_no,
        note=entry.note,
        history=[
            BlacklistEventOut(
                action=e.action.value,
                at=e.at,
                by=None if e.staff_id is None else str(e.staff_id),
                reason=e.reason,
            )
            for e in listed.history
        ],
    )


@router.post("", status_code=201, response_model=BlacklistEntryOut, responses=STAFF_WRITE_ERRORS)
def list_person(body: BlacklistIn, tx: TxDep) -> Response:
    """List a person on the impersonator blacklist (supervisors): a person found using someone
    else's card (居民身份证法 art. 16), with the police `case_no`, a `reason` and an optional last
    day `until` (inclusive, China Standard Time; null: until lifted). The person must be
    registered (404); one active entry per person (409). From the moment this answers, every
    check of the person's own cards carries the alert `blacklisted` (on every worker within the
    bound of a loss report), and the person's registered fingers are searched whenever a live
    finger fails a person-card check (`known_impersonator`). Audited."""

    def run() -> BlacklistEntryOut:
        return _out(
            blacklist.list_person(
                tx.session,
                actor=tx.actor,
                now=tx.now,
                id_number=body.id_number,
                reason=body.reason,
                case_no=body.case_no,
                until=body.until,
                note=body.note,
            )
        )

    return tx.write(run, body=body)


@router.get("", response_model=BlacklistPage, responses=STAFF_READ_ERRORS)
def entries(
    tx: TxDep,
    status: Annotated[
        EntryStatus | None, Query(description="active | lifted | expired, as of today; all when absent")
    ] = None,
    after: Annotated[str | None, Query(max_length=200, description="the `next` of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> BlacklistPage:
    """Blacklist entries, newest first, each with its append-only history (supervisors and
    auditors). Each person shown is an audited read."""
    position = None if after is None else cursors.decode(after)
    rows, more = tx.read(
        lambda: blacklist.entries(
            tx.session, actor=tx.actor, now=tx.now, status=status, after=position, limit=limit
        )
    )
    last = rows[-1].entry if rows and more else None
    return BlacklistPage(
        items=[_out(r) for r in rows],
        next=None if last is None else cursors.encode(last.listed_at, last.entry_no),
    )


@router.post(
    "/{entry_no}/lift", status_code=200, response_model=BlacklistEntryOut, responses=STAFF_WRITE_ERRORS
)
def lift(entry_no: str, body: LiftIn, tx: TxDep) -> Response:
    """Lift an active entry (supervisors), with a `reason`: the alerts stop on every worker within
    the bound of a loss report, and the person's fingers leave the 1:N search. An entry that has
    ended (lifted, or past its last day) is a 409. Audited; the history keeps every step."""

    def run() -> BlacklistEntryOut:
        return _out(
            blacklist.lift(tx.session, actor=tx.actor, now=tx.now, entry_no=entry_no, reason=body.reason)
        )

    return tx.write(run, body=body, status_code=200)
