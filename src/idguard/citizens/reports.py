"""What a citizen does about a lost card online: the emergency loss report and the public loss
declaration (遗失声明).

The emergency report makes the card invalid at once, everywhere, through the same ledger event
as a counter report (the verification index follows the ledger). Invalidation is the safe
direction, so a signed-in holder may do it without a finger; cancelling is not: it stays a
counter procedure. The report is accepted by the `online` channel (the ledger event's office)
on behalf of the holder's hukou office, which the report names as its office: so the registry's
rule "cancelled only at the office that accepted it" lets exactly the hukou office cancel it,
with the holder in person and their finger where the card has fingers (registry/loss_reports.py).
"""

from __future__ import annotations

import datetime as dt
import uuid

import sqlalchemy as sa
from sqlalchemy.orm import Session

from idguard.citizens import rules
from idguard.citizens.accounts import Citizen
from idguard.citizens.declarations import DeclarationKeys, canonical
from idguard.citizens.models import LossDeclaration
from idguard.core import idnumber
from idguard.core.clock import today_cst
from idguard.core.errors import InvalidField, NotFound, RuleViolation
from idguard.core.grants import Role
from idguard.registry import ledger
from idguard.registry import lifecycle as lifecycle_rules
from idguard.registry.lifecycle import CardStatus, EventKind, LossReason, effective_status
from idguard.registry.lookups import card_by_id, lock_card, new_reference, view
from idguard.registry.models import Card, LossReport, Office, Staff

ONLINE_OFFICE = "online"
ONLINE_OFFICE_NAME = "网上挂失 (online emergency reports)"
# The account a report accepted online is recorded as accepted by (the column needs a member of
# staff). It cannot sign in: inactive, and its password hash is no hash at all.
ONLINE_STAFF_ID = uuid.uuid5(uuid.NAMESPACE_URL, "idguard:citizens:online-channel")
ONLINE_STAFF_USERNAME = "online-channel"


def _insert_ignoring_duplicates(session: Session, table: sa.Table, values: dict[str, object]) -> None:
    """Create a fixed row once, whoever gets there first (two first reports at the same moment)."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        session.execute(pg_insert(table).values(values).on_conflict_do_nothing())
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        session.execute(sqlite_insert(table).values(values).on_conflict_do_nothing())


def ensure_online_channel(session: Session, now: dt.datetime) -> None:
    """The `online` office and its non-login account, made on the first online report."""
    if session.get(Staff, ONLINE_STAFF_ID) is not None:
        return
    _insert_ignoring_duplicates(
        session,
        Office.__table__,  # type: ignore[arg-type]
        {"code": ONLINE_OFFICE, "name": ONLINE_OFFICE_NAME, "region": "000000", "created_at": now},
    )
    _insert_ignoring_duplicates(
        session,
        Staff.__table__,  # type: ignore[arg-type]
        {
            "id": ONLINE_STAFF_ID,
            "username": ONLINE_STAFF_USERNAME,
            "password_hash": "!",  # not an argon2 hash: no password opens it
            "role": Role.CLERK,
            "office_code": ONLINE_OFFICE,
            "active": False,
            "created_at": now,
        },
    )


def _own_card(session: Session, citizen: Citizen, card_id: uuid.UUID, *, lock: bool) -> Card:
    """The citizen's own card; another person's is "not found" (nothing about it is revealed)."""
    try:
        card = lock_card(session, card_id)[0] if lock else card_by_id(session, card_id)
    except NotFound:
        card = None
    if card is None or card.person_id != citizen.person_id:
        raise NotFound(f"you have no card {card_id}")
    return card


def report_online(
    session: Session, *, citizen: Citizen, now: dt.datetime, card_id: uuid.UUID, reason: LossReason
) -> tuple[LossReport, Card]:
    """The holder's emergency report: only their own card that is valid today; invalid from the
    commit, on every worker within the follower's bound."""
    card = _own_card(session, citizen, card_id, lock=True)
    lifecycle_rules.check_can_report_loss(view(card), today_cst(now))
    ensure_online_channel(session, now)
    report = LossReport(
        report_no=new_reference("LR"),
        card_id=card.id,
        reason=reason,
        office=citizen.hukou_office,  # where it can be cancelled, in person
        applicant_id_number=citizen.id_number,
        by_guardian=False,
        accepted_by=ONLINE_STAFF_ID,
        accepted_at=now,
    )
    session.add(report)
    ledger.record(
        session,
        card,
        event=EventKind.reported(reason),
        actor=None,
        office=ONLINE_OFFICE,
        at=now,
        reason=f"{reason.value} (online, by the holder)",
        reference=report.report_no,
    )
    session.flush()
    return report, card


DECLARATION_TEXT = "本人居民身份证已遗失，已挂失申报，特此声明作废。 The holder's resident identity card is lost and reported; it is void."


def rfc3339_seconds(at: dt.datetime) -> str:
    return at.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def publish_declaration(
    session: Session,
    *,
    citizen: Citizen,
    now: dt.datetime,
    card_id: uuid.UUID,
    lost_on: dt.date,
    place: str,
    keys: DeclarationKeys,
) -> LossDeclaration:
    """A free, public, signed declaration that a card already reported lost or stolen is void,
    showing only the masked name and number. One per card."""
    card = _own_card(session, citizen, card_id, lock=True)
    today = today_cst(now)
    status = effective_status(card.status, card.expires_on, today)
    if status not in (CardStatus.REPORTED_LOST, CardStatus.REPORTED_STOLEN):
        raise RuleViolation(
            f"the card is {status.value}: report it lost or stolen first (POST /api/v1/me/loss-reports)"
        )
    if lost_on > today:
        raise InvalidField("lost_on", "the day the card was lost cannot be in the future")
    if lost_on < card.issued_on:
        raise InvalidField("lost_on", "the card was issued after that day")
    existing = session.scalar(
        sa.select(LossDeclaration.declaration_no).where(LossDeclaration.card_id == card.id)
    )
    if existing is not None:
        raise RuleViolation(f"this card's loss is already declared: {existing}")
    number = new_reference("LD")
    fields: dict[str, object] = {
        "declaration_no": number,
        "published_at": rfc3339_seconds(now),
        "name_masked": rules.mask_name(card.name),
        "id_number_masked": idnumber.mask(card.id_number),
        "issued_on": card.issued_on.isoformat(),
        "expires_on": card.expires_on.isoformat() if card.expires_on else None,
        "issuing_office": card.issuing_office,
        "card_status": status.value,
        "lost_on": lost_on.isoformat(),
        "place": place,
        "statement": DECLARATION_TEXT,
        "key_id": keys.signing_key_id,
    }
    declaration = LossDeclaration(
        declaration_no=number,
        card_id=card.id,
        person_id=citizen.person_id,
        published_at=now,
        key_id=keys.signing_key_id,
        payload=canonical(fields).decode("utf-8"),
        signature=keys.sign(fields),
    )
    session.add(declaration)
    session.flush()
    return declaration


def declaration(session: Session, declaration_no: str) -> LossDeclaration:
    found = session.get(LossDeclaration, declaration_no.strip().upper())
    if found is None:
        raise NotFound(f"no declaration {declaration_no}")
    return found


def declarations_of(session: Session, citizen: Citizen) -> list[LossDeclaration]:
    stmt = (
        sa.select(LossDeclaration)
        .where(LossDeclaration.person_id == citizen.person_id)
        .order_by(LossDeclaration.published_at)
    )
    return list(session.scalars(stmt))
