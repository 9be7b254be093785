"""The loss report's and the staff read's fast paths (issue 14) answer as the plain ones did:
the number parsed only when it is not the holder's (errors in the same order), the report
inserted with its ledger event, the audit row inserted by the read's own statement."""

import datetime as dt
import uuid

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from idguard import uow
from idguard.core.clock import FixedClock
from idguard.core.errors import InvalidField, NotFound
from idguard.core.grants import Actor, Role
from idguard.db.common import AuditEntry
from idguard.registry import lookups
from idguard.registry.lifecycle import LossReason
from idguard.registry.loss_reports import report_loss
from idguard.registry.models import Card, LossReport, Person, Staff
from tests.factories import OFFICE_A
from tests.functional.conftest import Counter, assert_problem

UNKNOWN_CARD = "6f1c2b0e-8d3a-4c1e-9a8b-1f2e3d4c5b6a"
BAD_CHECK = "110105194912310022"  # the check character of 11010519491231002 is X


def test_an_invalid_applicant_number_is_422_before_an_unknown_card_is_404(counter: Counter) -> None:
    body = {"card_id": UNKNOWN_CARD, "reason": "lost", "office": OFFICE_A, "applicant_id_number": BAD_CHECK}
    assert_problem(counter.post("/api/v1/loss-reports", body), 422, field="applicant_id_number")
    card = counter.card(counter.person())
    assert_problem(counter.report(card, applicant=BAD_CHECK), 422, field="applicant_id_number")


def _clerk(session: Session) -> Actor:
    staff = session.scalars(
        sa.select(Staff).where(Staff.role == Role.CLERK, Staff.office_code == OFFICE_A)
    ).first()
    assert staff is not None
    return Actor(staff_id=staff.id, username=staff.username, role=staff.role, office=staff.office_code)


def test_the_report_is_persistent_in_the_session_and_stored_as_answered(
    counter: Counter, session_factory: sessionmaker[Session], clock: FixedClock
) -> None:
    card = counter.card(counter.person())
    now = clock.now()
    with session_factory() as session:
        report, reported = report_loss(
            session,
            actor=_clerk(session),
            now=now,
            card_id=card["card_id"],
            reason=LossReason.STOLEN,
            office=OFFICE_A,
            applicant_id_number=f" {card['id_number'].lower()}\u3000",  # normalised as parse did
        )
        assert sa.inspect(report).persistent
        assert not session.new
        assert not session.dirty
        assert session.get(LossReport, report.report_no) is report
        assert report.by_guardian is False
        assert report.applicant_id_number == card["id_number"]
        assert report.cancelled_at is None
        assert report.cancelled_by is None
        assert reported.status.value == "reported_stolen"
        uow.commit(session)
    with session_factory() as session:
        stored = session.get(LossReport, report.report_no)
        assert stored is not None
        assert (stored.card_id, stored.reason, stored.office, stored.accepted_at) == (
            uuid.UUID(card["card_id"]),
            LossReason.STOLEN,
            OFFICE_A,
            now,
        )
        assert stored.applicant_id_number == card["id_number"]
    events = counter.events(card["card_id"])
    assert events[-1]["event"] == "reported_stolen"
    assert events[-1]["reference"] == report.report_no


def test_new_reference_is_twelve_characters_of_the_alphabet() -> None:
    refs = {lookups.new_reference("LR") for _ in range(2000)}
    assert len(refs) == 2000
    for ref in refs:
        assert ref.startswith("LR")
        assert len(ref) == 14
        assert set(ref[2:]) <= set("ABCDEFGHJKLMNPQRSTUVWXYZ23456789")
    # Every character position takes every one of the 32 symbols (no bit left out).
    for i in range(2, 14):
        assert len({ref[i] for ref in refs}) == 32


def _audit_rows(session: Session) -> list[tuple[object, ...]]:
    return [
        tuple(r)
        for r in session.execute(
            sa.select(
                AuditEntry.person_id, AuditEntry.staff_id, AuditEntry.action, AuditEntry.at, AuditEntry.detail
            )
            .where(AuditEntry.action == "person.read.test")
            .order_by(AuditEntry.id)
        )
    ]


def test_read_audited_is_person_by_number_audit_read_and_cards_of(
    counter: Counter, session_factory: sessionmaker[Session], clock: FixedClock
) -> None:
    number = counter.person()
    first = counter.card(number)
    counter.card(number, kind="replacement")
    counter.report(counter.card(counter.person()))  # someone else's card and events
    now = clock.now()
    with session_factory() as session:
        actor = _clerk(session)
        person, cards = lookups.read_audited(
            session, actor, id_number=number, now=now, action="person.read.test", detail="d"
        )
        uow.commit(session)
    with session_factory() as session:
        plain = lookups.person_by_number(session, number, now=now)
        plain_cards = lookups.cards_of(session, plain.id)
        assert person.id == plain.id
        assert person.name == plain.name
        assert [c.id for c in cards] == [c.id for c in plain_cards]
        assert first["card_id"] in {str(c.id) for c in cards}  # same time: the order is by id
        assert len(cards) == 2
        assert _audit_rows(session) == [(person.id, actor.staff_id, "person.read.test", now, "d")]


def test_read_audited_errors_leave_no_audit_row(
    counter: Counter, session_factory: sessionmaker[Session]
) -> None:
    counter.person()
    now = dt.datetime(2026, 6, 16, 3, 0, tzinfo=dt.UTC)
    unknown = "110105197001010011"  # valid, nobody's
    with session_factory() as session:
        actor = _clerk(session)
        for number, error in ((unknown, NotFound), (BAD_CHECK, InvalidField), ("123", InvalidField)):
            try:
                lookups.read_audited(session, actor, id_number=number, now=now, action="person.read.test")
            except error:
                pass
            else:
                raise AssertionError(f"{number}: no {error.__name__}")
            session.rollback()
        assert _audit_rows(session) == []


def test_a_person_without_cards_is_read_with_none(
    counter: Counter, session_factory: sessionmaker[Session]
) -> None:
    number = counter.person()
    with session_factory() as session:
        person, cards = lookups.read_audited(
            session, _clerk(session), id_number=number, now=dt.datetime.now(dt.UTC), action="person.read.test"
        )
        assert cards == []
        assert isinstance(person, Person)
        assert (
            session.scalar(sa.select(sa.func.count()).select_from(Card).where(Card.person_id == person.id))
            == 0
        )
