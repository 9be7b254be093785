"""What a citizen reads about themselves: the record, cards and ledger, every check of their
cards (the check log, found by the keyed hash it stores), and every staff read of their record
(the audit log, without the staff member's name)."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from idguard.citizens.accounts import Citizen
from idguard.citizens.models import CertificateCheck, CitizenAccount, TravelCertificate
from idguard.citizens.rules import retention_horizon
from idguard.core.grants import Role
from idguard.db.common import AuditEntry
from idguard.db.paging import Page, newest_first
from idguard.registry.lookups import cards_of
from idguard.registry.models import Card, LedgerEvent, Person, Staff
from idguard.verification.models import Check, PersonFlags, Unit
from idguard.verification.runtime.checklog import id_hash
from idguard.watchlist.models import BlacklistEntry


def person(session: Session, citizen: Citizen) -> Person:
    found = session.get(Person, citizen.person_id)
    assert found is not None  # noqa: S101 - the token was checked against it
    return found


def protection_required(session: Session, citizen: Citizen) -> bool:
    """Whether the holder's cards need the person-card check (their lock, or the police's)."""
    return bool(
        session.scalar(
            sa.select(PersonFlags.person_check_required).where(PersonFlags.person_id == citizen.person_id)
        )
    )


def listings(session: Session, citizen: Citizen) -> list[BlacklistEntry]:
    """The holder's own blacklist entries (冒用身份证人员黑名单), newest first: a listed person sees
    that they are listed, since when, until when, and which office to turn to."""
    stmt = (
        sa.select(BlacklistEntry)
        .where(BlacklistEntry.person_id == citizen.person_id)
        .order_by(BlacklistEntry.listed_at.desc())
    )
    return list(session.scalars(stmt))


def second_factor(session: Session, citizen: Citizen) -> bool:
    return bool(
        session.scalar(
            sa.select(CitizenAccount.totp_enabled).where(CitizenAccount.person_id == citizen.person_id)
        )
    )


def cards(session: Session, citizen: Citizen) -> list[tuple[Card, list[LedgerEvent]]]:
    """Every card of the citizen, oldest first, each with its ledger, oldest first."""
    owned = cards_of(session, citizen.person_id)
    events: dict[uuid.UUID, list[LedgerEvent]] = {c.id: [] for c in owned}
    # By card: ledger_events is indexed on card_id (the follower's and the timeline's key), not on
    # person_id (an index the loss report would pay for on every append).
    stmt = sa.select(LedgerEvent).where(LedgerEvent.card_id.in_(list(events))).order_by(LedgerEvent.seq)
    for event in session.scalars(stmt):
        events.setdefault(event.card_id, []).append(event)
    return [(card, events[card.id]) for card in owned]


def certificates(session: Session, citizen: Citizen) -> list[TravelCertificate]:
    stmt = (
        sa.select(TravelCertificate)
        .where(TravelCertificate.person_id == citizen.person_id)
        .order_by(TravelCertificate.issued_at.desc())
    )
    return list(session.scalars(stmt))


@dataclass(frozen=True, slots=True)
class CheckRow:
    check_id: uuid.UUID
    at: dt.datetime
    unit_code: str
    unit_name: str
    sector: str
    purpose: str
    result: str
    reason: str | None
    fingerprint_match: bool | None
    alerts: str | None
    certificate_no: str | None


def checks(
    session: Session,
    *,
    citizen: Citizen,
    hash_key: str,
    now: dt.datetime,
    retention_months: int,
    after: tuple[dt.datetime, uuid.UUID] | None,
    limit: int,
) -> tuple[Page[CheckRow], dt.datetime]:
    """Every check of the citizen's id number within retention, newest first (one index range:
    ix_checks_id_hash_at_id), and the retention horizon the answer reaches back to."""
    horizon = retention_horizon(now, retention_months)
    stmt = (
        sa.select(
            Check.id,
            Check.at,
            Check.unit_code,
            Unit.name,
            Unit.sector,
            Check.purpose,
            Check.result,
            Check.reason,
            Check.fingerprint_match,
            Check.alerts,
            CertificateCheck.certificate_no,
        )
        .join(Unit, Unit.code == Check.unit_code)
        .outerjoin(CertificateCheck, CertificateCheck.check_id == Check.id)
        .where(Check.id_hash == id_hash(hash_key, citizen.id_number), Check.at >= horizon)
    )
    if after is not None:
        # Redundant with the keyset condition, but a plain range on `at` is an index condition,
        # so a later page starts its backward scan at the cursor instead of filtering its way
        # past every newer check (a heap fetch each).
        stmt = stmt.where(Check.at <= after[0])
    page = newest_first(session, stmt, keys=(Check.at, Check.id), after=after, limit=limit, scalars=False)
    return Page(rows=[CheckRow(*row) for row in page.rows], more=page.more), horizon


@dataclass(frozen=True, slots=True)
class AccessRow:
    entry_id: int
    at: dt.datetime
    action: str
    role: Role
    office: str | None


def accesses(
    session: Session, *, citizen: Citizen, after: tuple[dt.datetime, int] | None, limit: int
) -> Page[AccessRow]:
    """Every staff action recorded on the citizen's record (reads and writes), newest first: when,
    which office, which role, what. The member of staff is never named."""
    stmt = (
        sa.select(AuditEntry.id, AuditEntry.at, AuditEntry.action, Staff.role, Staff.office_code)
        .join(Staff, Staff.id == AuditEntry.staff_id)
        .where(AuditEntry.person_id == citizen.person_id)
    )
    page = newest_first(
        session, stmt, keys=(AuditEntry.at, AuditEntry.id), after=after, limit=limit, scalars=False
    )
    return Page(rows=[AccessRow(*row) for row in page.rows], more=page.more)


def own_check(session: Session, *, citizen: Citizen, hash_key: str, check_id: uuid.UUID) -> Check | None:
    """One check of the citizen's id number, or None (another person's check is not theirs)."""
    check = session.scalars(sa.select(Check).where(Check.id == check_id).limit(1)).first()  # key (id, at)
    if check is None or check.id_hash != id_hash(hash_key, citizen.id_number):
        return None
    return check
