"""Bugs and regressions the lifecycle machine (test_lifecycle_machine.py) found or covers, one
deterministic test each, so a failure names the rule instead of a shrunk example."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from idguard import uow
from idguard.core.errors import (
    RuleViolation,
)
from idguard.core.grants import Actor
from idguard.core.idnumber import Sex
from idguard.registry import cards as card_service
from idguard.registry import found_cards, loss_reports
from idguard.registry import persons as person_service
from idguard.registry.lifecycle import CardStatus, FoundDisposition, IssueKind, LossReason, RevocationReason
from idguard.registry.models import Card, LedgerEvent
from tests.factories import NOW, OFFICE_A, actor, id_number

# Known bugs the machine steps around (see the strict xfail tests at the end of this file).


def commit(session_factory: sessionmaker[Session], service: Callable[..., Any], **kwargs: Any) -> Any:
    with session_factory() as session:
        result = service(session, now=NOW, **kwargs)
        uow.commit(session)
        return result


def registered(session_factory: sessionmaker[Session], birth: dt.date = dt.date(1990, 5, 4)) -> str:
    number = id_number(birth)
    commit(
        session_factory,
        person_service.register_person,
        actor=actor("clerk_a"),
        id_number=number,
        name="张三",
        sex=Sex.MALE,
        ethnicity="汉",
        birth_date=birth,
        address="北京",
        hukou_office=OFFICE_A,
    )
    return number


def test_second_reissue_on_one_day_supersedes_the_newest_card(
    session_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Regression: before efb44bd the newest card was chosen by (issue date, card id), so on a
    # same-day re-issue a random UUID decided, and half the time the superseded card was
    # "superseded" again while the valid one collided with the new card (IntegrityError). These
    # ids make the older card sort after the newer one (a misprint corrected twice the same day).
    ids = iter([uuid.UUID(int=2**128 - 1), uuid.UUID(int=1), uuid.UUID(int=2)])
    monkeypatch.setattr(card_service, "uuid", SimpleNamespace(uuid4=lambda: next(ids), UUID=uuid.UUID))
    number = registered(session_factory)
    issue = {"actor": actor("clerk_a"), "id_number": number, "office": OFFICE_A}
    first = commit(session_factory, card_service.issue_card, kind=IssueKind.FIRST, **issue)
    second = commit(session_factory, card_service.issue_card, kind=IssueKind.CORRECTION, **issue)
    third = commit(session_factory, card_service.issue_card, kind=IssueKind.CORRECTION, **issue)
    assert first.id == uuid.UUID(int=2**128 - 1)  # the ids above were really used
    with session_factory() as session:
        stored = {c.id: c for c in session.scalars(sa.select(Card))}
    assert stored[second.id].superseded_by == third.id
    assert stored[second.id].status is CardStatus.SUPERSEDED
    assert stored[first.id].superseded_by == second.id


def test_cancel_is_refused_after_the_person_is_revoked(session_factory: sessionmaker[Session]) -> None:
    clerk_a = actor("clerk_a")
    number = registered(session_factory)
    card = commit(
        session_factory,
        card_service.issue_card,
        actor=clerk_a,
        id_number=number,
        kind=IssueKind.FIRST,
        office=OFFICE_A,
    )
    report, _ = commit(
        session_factory,
        loss_reports.report_loss,
        actor=clerk_a,
        card_id=str(card.id),
        reason=LossReason.LOST,
        office=OFFICE_A,
        applicant_id_number=number,
    )
    # The holder dies while the card is reported lost; revocation leaves invalid cards as they are.
    commit(
        session_factory,
        person_service.revoke_person,
        actor=clerk_a,
        id_number=number,
        reason=RevocationReason.DECEASED,
    )
    with session_factory() as session, pytest.raises(RuleViolation):
        loss_reports.cancel_loss_report(
            session, actor=clerk_a, now=NOW, report_no=report.report_no, office=OFFICE_A
        )


def test_cancel_of_an_old_temporary_card_is_refused(session_factory: sessionmaker[Session]) -> None:
    clerk_a = actor("clerk_a")
    number = registered(session_factory)
    temporary = {"actor": clerk_a, "id_number": number, "office": OFFICE_A}
    old = commit(session_factory, card_service.issue_temporary_card, **temporary)
    report, _ = commit(
        session_factory,
        loss_reports.report_loss,
        actor=clerk_a,
        card_id=str(old.id),
        reason=LossReason.LOST,
        office=OFFICE_A,
        applicant_id_number=number,
    )
    new = commit(session_factory, card_service.issue_temporary_card, **temporary)
    with session_factory() as session, pytest.raises(RuleViolation, match="newer card"):
        loss_reports.cancel_loss_report(
            session, actor=clerk_a, now=NOW, report_no=report.report_no, office=OFFICE_A
        )
    # Superseded like a lost regular card: it keeps its reason, and the ledger says why it changed.
    with session_factory() as session:
        stored = session.get(Card, old.id)
        assert stored is not None
        assert (stored.status, stored.superseded_by) == (CardStatus.REPORTED_LOST, new.id)
        last = session.scalars(
            sa.select(LedgerEvent).where(LedgerEvent.card_id == old.id).order_by(LedgerEvent.seq.desc())
        ).first()
        assert last is not None
        assert (last.event, last.status_before, last.status_after) == (
            "superseded",
            CardStatus.REPORTED_LOST,
            CardStatus.REPORTED_LOST,
        )


def test_found_lost_card_of_a_revoked_person_is_destroyed(session_factory: sessionmaker[Session]) -> None:
    clerk_a = actor("clerk_a")
    number = registered(session_factory)
    card = commit(
        session_factory,
        card_service.issue_card,
        actor=clerk_a,
        id_number=number,
        kind=IssueKind.FIRST,
        office=OFFICE_A,
    )
    commit(
        session_factory,
        loss_reports.report_loss,
        actor=clerk_a,
        card_id=str(card.id),
        reason=LossReason.STOLEN,
        office=OFFICE_A,
        applicant_id_number=number,
    )
    commit(
        session_factory,
        person_service.revoke_person,
        actor=clerk_a,
        id_number=number,
        reason=RevocationReason.DECEASED,
    )
    found, stored = commit(
        session_factory,
        found_cards.hand_in,
        actor=clerk_a,
        id_number=number,
        issued_on=card.issued_on,
        office=OFFICE_A,
        finder_name="拾得人",
        finder_phone=None,
    )
    assert found.disposition is FoundDisposition.DESTROYED
    assert stored.status is CardStatus.DESTROYED


def held_lost_card(session_factory: sessionmaker[Session], clerk_a: Actor, number: str) -> tuple[Card, str]:
    """A first card, reported lost, then handed in by a finder and held: (the card, found_no)."""
    card = commit(
        session_factory,
        card_service.issue_card,
        actor=clerk_a,
        id_number=number,
        kind=IssueKind.FIRST,
        office=OFFICE_A,
    )
    commit(
        session_factory,
        loss_reports.report_loss,
        actor=clerk_a,
        card_id=str(card.id),
        reason=LossReason.LOST,
        office=OFFICE_A,
        applicant_id_number=number,
    )
    found, _ = commit(
        session_factory,
        found_cards.hand_in,
        actor=clerk_a,
        id_number=number,
        issued_on=card.issued_on,
        office=OFFICE_A,
        finder_name="拾得人",
        finder_phone=None,
    )
    assert found.disposition is FoundDisposition.HELD
    return card, found.found_no


def test_found_card_replaced_since_it_was_handed_in_is_not_returned(
    session_factory: sessionmaker[Session],
) -> None:
    clerk_a = actor("clerk_a")
    number = registered(session_factory)
    _, found_no = held_lost_card(session_factory, clerk_a, number)
    # The owner did not wait for the finder: a replacement card is issued meanwhile.
    commit(
        session_factory,
        card_service.issue_card,
        actor=clerk_a,
        id_number=number,
        kind=IssueKind.REPLACEMENT,
        office=OFFICE_A,
    )
    with session_factory() as session, pytest.raises(RuleViolation, match="newer card"):
        found_cards.return_to_owner(
            session, actor=clerk_a, now=NOW, found_no=found_no, office=OFFICE_A, claimant_id_number=number
        )


def test_found_lost_card_is_not_returned_after_the_owner_is_revoked(
    session_factory: sessionmaker[Session],
) -> None:
    # Revocation leaves a card reported lost as it is (only valid cards become revoked), so the held
    # card is still "reported_lost". Handed in after the revocation it would be destroyed, and its
    # loss report can no longer be cancelled: it must not be given back either (here: to anyone
    # presenting the deceased's id number).
    clerk_a = actor("clerk_a")
    number = registered(session_factory)
    _, found_no = held_lost_card(session_factory, clerk_a, number)
    commit(
        session_factory,
        person_service.revoke_person,
        actor=clerk_a,
        id_number=number,
        reason=RevocationReason.DECEASED,
    )
    with session_factory() as session, pytest.raises(RuleViolation):
        found_cards.return_to_owner(
            session, actor=clerk_a, now=NOW, found_no=found_no, office=OFFICE_A, claimant_id_number=number
        )
