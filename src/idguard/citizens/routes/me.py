"""The citizen's own view (`/api/v1/me`): record, cards and ledger, every check of their cards,
every staff read of their record, disputes, the protection lock, emergency reports and loss
declarations. A citizen token only; each route answers about its bearer and nobody else."""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from typing import Annotated

from fastapi import APIRouter, Query
from starlette.responses import Response

from idguard.api.paging import decode_cursor, encode_cursor
from idguard.api.schemas import problem_responses
from idguard.citizens import reports, views
from idguard.citizens.routes.deps import CitizenTx, CitizenTxDep
from idguard.citizens.schemas import (
    AccessItem,
    AccessPage,
    CheckItem,
    CheckPage,
    DeclarationCreated,
    DeclarationIn,
    DisputeIn,
    DisputeOut,
    LedgerItem,
    MeOut,
    MyCard,
    MyCards,
    MyCertificate,
    MyDeclaration,
    MyIncident,
    MyListing,
    OnlineReportIn,
    OnlineReportOut,
    ProtectionIn,
    ProtectionOut,
)
from idguard.core.clock import as_utc, today_cst
from idguard.core.errors import InvalidField, NotFound
from idguard.registry.lifecycle import effective_status
from idguard.watchlist.incidents import for_person, open_incident
from idguard.watchlist.protection import set_protection
from idguard.watchlist.rules import entry_status

router = APIRouter(prefix="/api/v1/me", tags=["citizens"])
READ_ERRORS = problem_responses(401, 422)
WRITE_ERRORS = problem_responses(401, 404, 409, 422)
_After = Annotated[
    str | None, Query(max_length=200, description="the `next` of the previous page: continue after it")
]
_Limit = Annotated[int, Query(ge=1, le=200)]


def declaration_url(declaration_no: str) -> str:
    return f"/api/v1/declarations/{declaration_no}"


def _incidents(tx: CitizenTx) -> list[MyIncident]:
    return [
        MyIncident.model_validate(item) for item in for_person(tx.session, id_number=tx.citizen.id_number)
    ]


@router.get("", response_model=MeOut, responses=READ_ERRORS)
def me(tx: CitizenTxDep) -> MeOut:
    """Your record as the registry holds it, whether you have a second factor, your loss
    declarations and travel certificates, the incidents (冒用线索) about your cards, whether
    your cards need your finger at every check (`person_check_required`), and any entry of
    yours on the impersonator blacklist (since when, until when, which office to turn to)."""

    def run() -> MeOut:
        person = views.person(tx.session, tx.citizen)
        account_second_factor = views.second_factor(tx.session, tx.citizen)
        return MeOut(
            id_number=person.id_number,
            name=person.name,
            sex=person.sex.value,
            ethnicity=person.ethnicity,
            birth_date=person.birth_date,
            address=person.address,
            hukou_office=person.hukou_office,
            revoked_reason=person.revoked_reason,
            second_factor=account_second_factor,
            declarations=[
                MyDeclaration(
                    declaration_no=d.declaration_no,
                    card_id=d.card_id,
                    published_at=d.published_at,
                    url=declaration_url(d.declaration_no),
                )
                for d in reports.declarations_of(tx.session, tx.citizen)
            ],
            travel_certificates=[
                MyCertificate(
                    certificate_no=c.certificate_no,
                    purpose=c.purpose,
                    valid_on=c.valid_on,
                    office=c.office,
                    issued_at=c.issued_at,
                )
                for c in views.certificates(tx.session, tx.citizen)
            ],
            incidents=_incidents(tx),
            person_check_required=views.protection_required(tx.session, tx.citizen),
            blacklist=[
                MyListing(
                    entry_no=e.entry_no,
                    status=entry_status(e.status, e.until, today_cst(tx.now)).value,
                    listed_on=e.listed_on,
                    until=e.until,
                    turn_to_office=person.hukou_office,
                )
                for e in views.listings(tx.session, tx.citizen)
            ],
        )

    return tx.read(run)


@router.get("/cards", response_model=MyCards, responses=READ_ERRORS)
def my_cards(tx: CitizenTxDep) -> MyCards:
    """Every card you have held, oldest first, with today's status and its ledger: every change
    with the office and the reason (staff members are not named)."""

    def run() -> MyCards:
        today = today_cst(tx.now)
        return MyCards(
            items=[
                MyCard(
                    card_id=card.id,
                    kind=card.kind,
                    temporary=card.temporary,
                    status=effective_status(card.status, card.expires_on, today),
                    issued_on=card.issued_on,
                    expires_on=card.expires_on,
                    issuing_office=card.issuing_office,
                    fingerprints_registered=card.fingerprints_registered,
                    ledger=[
                        LedgerItem(
                            seq=e.seq,
                            event=e.event.value,
                            status_before=e.status_before,
                            status_after=e.status_after,
                            office=e.office,
                            at=e.at,
                            reason=e.reason,
                            reference=e.reference,
                        )
                        for e in events
                    ],
                )
                for card, events in views.cards(tx.session, tx.citizen)
            ]
        )

    return tx.read(run)


@router.get("/checks", response_model=CheckPage, responses=READ_ERRORS)
def my_checks(tx: CitizenTxDep, after: _After = None, limit: _Limit = 50) -> CheckPage:
    """Every check of your cards and travel certificates by an ID-using unit, newest first: the
    unit's name and sector, its purpose (business type), the time, the answer (`result`,
    `reason`), whether a live finger was compared, and alerts. Pages continue with `after`; there
    is no cap within the retention, which the answer states (`retention_months`,
    `reaches_back_to`). A check appears within about a second of its answer. Dispute one that was
    not you with `POST /api/v1/me/checks/{check_id}/dispute`."""

    def run() -> CheckPage:
        page, horizon = views.checks(
            tx.session,
            citizen=tx.citizen,
            hash_key=tx.settings.check_hash_key,
            now=tx.now,
            retention_months=tx.settings.check_retention_months,
            after=decode_cursor(after) if after is not None else None,
            limit=limit,
        )
        return CheckPage(
            items=[
                CheckItem(
                    check_id=r.check_id,
                    at=r.at,
                    unit_code=r.unit_code,
                    unit_name=r.unit_name,
                    sector=r.sector,
                    purpose=r.purpose,
                    result=r.result,
                    reason=r.reason,
                    fingerprint_used=r.fingerprint_match is not None,
                    fingerprint_match=r.fingerprint_match,
                    document="certificate" if r.certificate_no is not None else "card",
                    certificate_no=r.certificate_no,
                    alerts=r.alerts.split(",") if r.alerts else [],
                )
                for r in page.rows
            ],
            next=encode_cursor(page.rows[-1].at, page.rows[-1].check_id) if page.more else None,
            retention_months=tx.settings.check_retention_months,
            reaches_back_to=horizon,
        )

    return tx.read(run)


def _encode_access(at: dt.datetime, entry_id: int) -> str:
    return base64.urlsafe_b64encode(f"{at.isoformat()}|{entry_id}".encode()).decode()


def _decode_access(cursor: str) -> tuple[dt.datetime, int]:
    try:
        at, entry_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        parsed = dt.datetime.fromisoformat(at), int(entry_id)
    except (ValueError, UnicodeDecodeError):
        raise InvalidField("after", "not a cursor returned by this endpoint") from None
    if parsed[0].tzinfo is None:
        raise InvalidField("after", "not a cursor returned by this endpoint")
    return as_utc(parsed[0], "after"), parsed[1]


@router.get("/accesses", response_model=AccessPage, responses=READ_ERRORS)
def my_accesses(tx: CitizenTxDep, after: _After = None, limit: _Limit = 50) -> AccessPage:
    """Every time a member of staff read or changed your record, newest first: when, at which
    office, in which role, and what (`person.read`, `person.cards`, `card.events`, ...). Staff
    members are never named; an auditor can see who, if you complain."""

    def run() -> AccessPage:
        page = views.accesses(
            tx.session,
            citizen=tx.citizen,
            after=_decode_access(after) if after is not None else None,
            limit=limit,
        )
        return AccessPage(
            items=[AccessItem(at=r.at, office=r.office, role=r.role, action=r.action) for r in page.rows],
            next=_encode_access(page.rows[-1].at, page.rows[-1].entry_id) if page.more else None,
        )

    return tx.read(run)


@router.post("/checks/{check_id}/dispute", status_code=201, response_model=DisputeOut, responses=WRITE_ERRORS)
def dispute(check_id: uuid.UUID, tx: CitizenTxDep, body: DisputeIn | None = None) -> Response:
    """ "This was not me": opens a `disputed_by_holder` incident for your hukou office about this
    check of your card. Consider also `PUT /api/v1/me/protection` and, if the card is gone,
    `POST /api/v1/me/loss-reports`."""

    def run() -> DisputeOut:
        check = views.own_check(
            tx.session, citizen=tx.citizen, hash_key=tx.settings.check_hash_key, check_id=check_id
        )
        if check is None:
            raise NotFound(f"no check {check_id} of your cards")
        incident_no = open_incident(
            tx.session,
            kind="disputed_by_holder",
            id_number=tx.citizen.id_number,
            unit_code=check.unit_code,
            check_id=str(check.id),
            at=tx.now,
        )
        return DisputeOut(incident_no=str(incident_no), check_id=check.id)

    return tx.write(run, body=body)


@router.put("/protection", response_model=ProtectionOut, responses=WRITE_ERRORS)
def protection(body: ProtectionIn, tx: CitizenTxDep) -> Response:
    """Your protection lock: with `person_check_required: true`, every check of your cards that
    does not come with your matching live finger carries the alert `person_check_required`, on
    every server within the index's propagation bound. `false` lifts your own lock."""

    def run() -> ProtectionOut:
        set_protection(
            tx.session,
            id_number=tx.citizen.id_number,
            required=body.person_check_required,
            reason=body.reason or "asked by the holder",
            by="holder",
            at=tx.now,
        )
        return ProtectionOut(person_check_required=body.person_check_required, at=tx.now)

    return tx.write(run, body=body, status_code=200)


@router.post("/loss-reports", status_code=201, response_model=OnlineReportOut, responses=WRITE_ERRORS)
def report_loss(body: OnlineReportIn, tx: CitizenTxDep) -> Response:
    """Emergency report (挂失申报) of your own card that is valid today: it is invalid at once,
    for every unit. Cancelling is not possible online: it needs you in person at your hukou
    office (`cancel_at_office`) with the card, and your finger where the card has fingerprints."""

    def run() -> OnlineReportOut:
        report, card = reports.report_online(
            tx.session, citizen=tx.citizen, now=tx.now, card_id=body.card_id, reason=body.reason
        )
        return OnlineReportOut(
            report_no=report.report_no,
            card_id=card.id,
            reason=report.reason,
            card_status=card.status,
            accepted_at=report.accepted_at,
            cancel_at_office=report.office,
        )

    return tx.write(run, body=body)


@router.post("/loss-declarations", status_code=201, response_model=DeclarationCreated, responses=WRITE_ERRORS)
def declare_loss(body: DeclarationIn, tx: CitizenTxDep) -> Response:
    """Publish a free loss declaration (遗失声明) for your card already reported lost or stolen:
    a public notice, signed by the registry (Ed25519), showing only your masked name and number,
    the card's dates and issuing office, and when and where it was lost. Anyone can verify it at
    `url` or offline with the public key (`GET /api/v1/declarations/keys`). One per card."""

    def run() -> DeclarationCreated:
        declaration = reports.publish_declaration(
            tx.session,
            citizen=tx.citizen,
            now=tx.now,
            card_id=body.card_id,
            lost_on=body.lost_on,
            place=body.place,
            keys=tx.keys.declarations,
        )
        return DeclarationCreated(
            declaration_no=declaration.declaration_no, url=declaration_url(declaration.declaration_no)
        )

    return tx.write(run, body=body)
