"""Loss reports (挂失申报) and their cancellation (解除挂失)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from idguard.biometrics import fingerprints
from idguard.biometrics.fingerprints import Biometrics
from idguard.core import idnumber
from idguard.core.clock import today_cst
from idguard.core.errors import NotFound, RuleViolation
from idguard.core.grants import Actor
from idguard.registry import ledger
from idguard.registry import lifecycle as rules
from idguard.registry.lifecycle import CardStatus, EventKind, LossReason
from idguard.registry.lookups import (
    acting_at,
    lock_card,
    new_reference,
    person_by_number,
    view,
)
from idguard.registry.models import Card, LossReport, Person


def report_loss(
    session: Session,
    *,
    actor: Actor,
    now: dt.datetime,
    card_id: str,
    reason: LossReason,
    office: str,
    applicant_id_number: str,
    applicant_name: str | None = None,
    fingerprint: str | None = None,
    biometrics: Biometrics | None = None,
) -> tuple[LossReport, Card]:
    """Accept a loss report at any office (就近办理); the card is invalid from the commit.

    Only the holder in person, or a registered adult guardian for a holder under 16. A card with
    registered fingerprints needs a live capture that matches one of them, whoever applies (a
    guardian brings the child to give the finger): the comparison is recorded either way, and a
    mismatch refuses the report (FingerprintMismatch).

    The holder in person, with no name or finger to compare, is checked and written at once
    (`_report_at_once`); anything else, and every refusal, takes the plain path below.
    """
    live = fingerprints.live_template(fingerprint) if fingerprint is not None else None  # before locks
    acting_at(session, actor, office)
    today = today_cst(now)
    if fingerprint is None and applicant_name is None:
        done = _report_at_once(
            session,
            actor=actor,
            now=now,
            today=today,
            card_id=card_id,
            reason=reason,
            office=office,
            applicant_id_number=applicant_id_number,
        )
        if done is not None:
            return done
    card, holder = _lock_card_after_parse(session, card_id, applicant_id_number, today)
    applicant_number = idnumber.normalise(applicant_id_number)
    if applicant_number != holder.id_number or applicant_number[6:14] > f"{today:%Y%m%d}":
        # The holder's own number (the common case) was parsed when the person was registered,
        # and its region and past birth date stay valid; any other number is parsed here.
        applicant_number = idnumber.parse(applicant_id_number, today=today, field="applicant_id_number").value
    by_guardian = applicant_number != holder.id_number
    applicant: Person = holder
    if by_guardian:
        rules.check_guardian_may_report(holder_birth_date=holder.birth_date, today=today)
        try:
            applicant = person_by_number(session, applicant_number, now=now)
        except NotFound:
            raise RuleViolation("the guardian is not registered in the citizen identity system") from None
        rules.check_guardian(
            birth_date=applicant.birth_date, revoked=applicant.revoked_reason is not None, today=today
        )
    if applicant_name is not None and applicant_name != applicant.name:
        raise RuleViolation("the applicant's name does not match the registry")
    rules.check_can_report_loss(view(card), today)
    fingerprints.compare_at_counter(
        session,
        biometrics,
        card.id,
        live,
        registered=card.fingerprints_registered,
        purpose=fingerprints.Purpose.LOSS_REPORT,
        actor=actor,
        office=office,
        now=now,
    )
    report = _new_report(card.id, reason, office, applicant_number, by_guardian, actor, now)
    ledger.record(  # the report is inserted with the event (one statement on PostgreSQL)
        session,
        card,
        event=EventKind.reported(reason),
        actor=actor,
        office=office,
        at=now,
        reason=reason.value,
        reference=report.report_no,
        with_row=report,
    )
    session.flush()
    return report, card


def _new_report(
    card_id: uuid.UUID,
    reason: LossReason,
    office: str,
    applicant_number: str,
    by_guardian: bool,
    actor: Actor,
    now: dt.datetime,
) -> LossReport:
    """The report row, as either path inserts it with the ledger event (every column set)."""
    return ledger.built(
        LossReport,
        {
            "report_no": new_reference("LR"),
            "card_id": card_id,
            "reason": reason,
            "office": office,
            "applicant_id_number": applicant_number,
            "by_guardian": by_guardian,
            "accepted_by": actor.staff_id,
            "accepted_at": now,
            "cancelled_at": None,
            "cancelled_by": None,
        },
    )


_cards = cast(sa.Table, Card.__table__)
_persons = cast(sa.Table, Person.__table__)
# The common report as one guarded change (ledger.record_guarded): the holder in person, without
# a name to compare or a finger to capture. Each condition is the plain path's rule for it; a
# card that fails any of them (or a number that is not the holder's) takes the plain path, which
# raises the error it always did.
_REPORTABLE = ledger.Guard(
    sa.and_(
        # The applicant is the holder: their number (normalised) is the holder's.
        _cards.c.person_id
        == sa.select(_persons.c.id)
        .where(_persons.c.id_number == sa.bindparam("holder_number"))
        .scalar_subquery(),
        # Valid today (rules.check_can_report_loss; the status is the guard's `before`).
        sa.or_(_cards.c.expires_on.is_(None), _cards.c.expires_on >= sa.bindparam("today", type_=sa.Date)),
        # No registered fingerprints: no comparison is needed (fingerprints.compare_at_counter).
        sa.not_(_cards.c.fingerprints_registered),
    ),
    returning=("expires_on", "issued_on", "temporary", "fingerprints_registered", "superseded_by"),
)


_REPORTED = {reason: EventKind.reported(reason) for reason in LossReason}


def _report_at_once(
    session: Session,
    *,
    actor: Actor,
    now: dt.datetime,
    today: dt.date,
    card_id: str,
    reason: LossReason,
    office: str,
    applicant_id_number: str,
) -> tuple[LossReport, Card] | None:
    """The report of a holder in person, checked and written by one guarded change (one statement
    on PostgreSQL, no locking read first): the same rows and answer as the plain path, or None,
    having written nothing, when any rule is not plainly met (tests/functional/registry/
    test_loss_report_fast_path.py holds the two equal)."""
    try:
        key = uuid.UUID(card_id)
    except ValueError:
        return None
    number = idnumber.normalise(applicant_id_number)
    iso = today.isoformat()  # YYYY-MM-DD: the compact form without strftime's cost
    if number[6:14] > iso[:4] + iso[5:7] + iso[8:]:  # a birth date after today: parsed (and refused) below
        return None
    report = _new_report(key, reason, office, number, False, actor, now)
    card = ledger.record_guarded(
        session,
        _REPORTABLE,
        {"holder_number": number, "today": today},
        card_id=key,
        before=CardStatus.VALID,
        event=_REPORTED[reason],
        actor=actor,
        office=office,
        at=now,
        reason=reason.value,
        reference=report.report_no,
        with_row=report,
    )
    if card is None:
        return None
    session.flush()
    return report, card


def _lock_card_after_parse(
    session: Session, card_id: str, applicant_id_number: str, today: dt.date
) -> tuple[Card, Person]:
    """`lock_card`, answering as if the applicant's number had been parsed first: for a card
    that does not exist an invalid number is still the 422 it was before (parsing only after the
    lock lets the holder's own number skip it)."""
    try:
        return lock_card(session, card_id)
    except NotFound:
        idnumber.parse(applicant_id_number, today=today, field="applicant_id_number")
        raise


def cancel_loss_report(
    session: Session,
    *,
    actor: Actor,
    now: dt.datetime,
    report_no: str,
    office: str,
    fingerprint: str | None = None,
    biometrics: Biometrics | None = None,
) -> tuple[LossReport, Card]:
    """解除挂失: only at the accepting office, only while no newer card exists; the card is valid
    again. A card with registered fingerprints is made valid again only for a holder whose live
    finger matches (whoever holds a lost card must not be able to revalidate it); the comparison
    is recorded either way."""
    live = fingerprints.live_template(fingerprint) if fingerprint is not None else None  # before locks
    acting_at(session, actor, office)
    report = session.get(LossReport, report_no)
    if report is None:
        raise NotFound(f"no loss report {report_no}")
    card, holder = lock_card(session, report.card_id)
    session.refresh(report)  # re-read under the card lock: another clerk may have cancelled it
    if holder.revoked_reason is not None:
        raise RuleViolation("the holder's registration is revoked: the card stays invalid")
    rules.check_can_cancel_report(
        report_office=report.office,
        office=office,
        report_cancelled=report.cancelled_at is not None,
        card=view(card),
        newer_card_exists=card.superseded_by is not None,
    )
    fingerprints.compare_at_counter(
        session,
        biometrics,
        card.id,
        live,
        registered=card.fingerprints_registered,
        purpose=fingerprints.Purpose.LOSS_REPORT_CANCEL,
        actor=actor,
        office=office,
        now=now,
    )
    report.cancelled_at = now
    report.cancelled_by = actor.staff_id
    ledger.record(
        session,
        card,
        event=EventKind.LOSS_REPORT_CANCELLED,
        actor=actor,
        office=office,
        at=now,
        reference=report.report_no,
    )
    session.flush()
    return report, card


def get_report(session: Session, report_no: str) -> LossReport:
    report = session.get(LossReport, report_no)
    if report is None:
        raise NotFound(f"no loss report {report_no}")
    return report
