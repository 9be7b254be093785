"""The one-trip temporary identity certificate (临时身份证明): issued by station, airport and
hotel-district police to a person who cannot present a valid card, for one journey or stay on
one day; checked by units whose sector matches its purpose, each check in the check log."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from idguard.biometrics import fingerprints
from idguard.biometrics.fingerprints import Biometrics
from idguard.citizens import rules
from idguard.citizens.models import TravelCertificate, TravelPurpose
from idguard.core.clock import today_cst
from idguard.core.errors import RuleViolation
from idguard.core.grants import Actor
from idguard.db.common import AuditEntry
from idguard.registry.lifecycle import CardStatus, effective_status
from idguard.registry.lookups import acting_at, cards_of, new_reference, person_by_number
from idguard.registry.models import Person
from idguard.verification.models import Unit


class _ComparisonPurpose(StrEnum):
    # The comparison log's purpose for a certificate's finger check. biometrics.Purpose has no
    # member for it yet (only its `.value` is stored); see the cast below.
    TRAVEL_CERTIFICATE = "travel_certificate"


def issue(
    session: Session,
    *,
    actor: Actor,
    now: dt.datetime,
    id_number: str,
    office: str,
    purpose: TravelPurpose,
    valid_on: dt.date,
    fingerprint: str | None,
    biometrics: Biometrics | None,
) -> TravelCertificate:
    """Issue a certificate at `office` (a clerk's own). The person must exist, not be revoked and
    hold no valid document: no valid temporary card, and no valid card but one issued within
    the last 60 days (it may not be collected yet). Where the person has registered fingers (on
    their newest card that has them), the live finger must match one: the comparison is
    recorded either way, and a mismatch refuses the certificate."""
    live = fingerprints.live_template(fingerprint) if fingerprint is not None else None  # before locks
    acting_at(session, actor, office)
    person = person_by_number(session, id_number, now=now)
    if person.revoked_reason is not None:
        raise RuleViolation("the person's registration is revoked: no certificate can be issued")
    today = today_cst(now)
    rules.check_valid_on(valid_on, today)
    owned = cards_of(session, person.id)
    for card in owned:
        if effective_status(card.status, card.expires_on, today) is not CardStatus.VALID:
            continue
        if card.temporary:
            raise RuleViolation("the person holds a valid temporary card: no certificate is needed")
        if card.issued_on < today - rules.NOT_YET_COLLECTED:
            raise RuleViolation(
                "the person holds a valid card: a certificate is for a card that is lost, expired or "
                "not yet collected (report the card lost first)"
            )
    enrolled = [c for c in owned if c.fingerprints_registered]
    matched: bool | None = None
    if enrolled:
        newest = max(enrolled, key=lambda c: (c.issued_on, c.created_at))
        fingerprints.compare_at_counter(
            session,
            biometrics,
            newest.id,
            live,
            registered=True,
            purpose=cast(fingerprints.Purpose, _ComparisonPurpose.TRAVEL_CERTIFICATE),
            actor=actor,
            office=office,
            now=now,
        )
        matched = True
    certificate = TravelCertificate(
        certificate_no=new_reference("TC"),
        person_id=person.id,
        purpose=purpose,
        valid_on=valid_on,
        office=office,
        issued_by=actor.staff_id,
        issued_at=now,
        fingerprint_matched=matched,
    )
    session.add(certificate)
    session.add(
        AuditEntry(
            at=now,
            staff_id=actor.staff_id,
            action="citizen.travel_certificate",
            person_id=person.id,
            detail=certificate.certificate_no,
        )
    )
    session.flush()
    return certificate


class Reason(StrEnum):
    """Why a certificate check answered `invalid`."""

    EXPIRED = "expired"  # its day has passed (China Standard Time)
    NOT_YET_VALID = "not_yet_valid"  # its day has not come
    WRONG_PURPOSE = "wrong_purpose"  # issued for another kind of journey than the unit's sector serves
    REVOKED = "revoked"  # the holder's registration is revoked


def check(
    session: Session, *, certificate_no: str, name: str, unit_code: str, now: dt.datetime
) -> tuple[str, Reason | None, str, TravelCertificate | None]:
    """(result, reason, the holder's id number or "" when there is no such certificate, the
    certificate). `mismatch` when the number is unknown or the name is not the holder's (the
    answer never says which)."""
    certificate = session.get(TravelCertificate, certificate_no.strip().upper())
    if certificate is None:
        return "mismatch", None, "", None
    person = session.get(Person, certificate.person_id)
    assert person is not None  # noqa: S101 - foreign key
    if name.strip() != person.name:
        return "mismatch", None, person.id_number, certificate
    sector = session.scalar(sa.select(Unit.sector).where(Unit.code == unit_code)) or ""
    today = today_cst(now)
    reason: Reason | None = None
    if person.revoked_reason is not None:
        reason = Reason.REVOKED
    elif today > certificate.valid_on:
        reason = Reason.EXPIRED
    elif today < certificate.valid_on:
        reason = Reason.NOT_YET_VALID
    elif not rules.sector_allows(certificate.purpose.value, sector):
        reason = Reason.WRONG_PURPOSE
    return ("valid" if reason is None else "invalid"), reason, person.id_number, certificate
