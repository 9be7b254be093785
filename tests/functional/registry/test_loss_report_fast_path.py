"""The loss report's guarded fast path (issue 14: `loss_reports._report_at_once`, one statement on
PostgreSQL) answers and writes exactly as the plain path (lock, read, check, `ledger.record`).

Hypothesis picks the card's stored state (every stored status, expiry around today, registered
fingerprints), who applies (the holder, in any spelling of their number, a guardian, someone
else, an unregistered or invalid number), with or without a name, for which card (a child's, an
adult's, a renumbered holder's, unknown, malformed). Both paths run on the same state, each in a
transaction rolled back afterwards; the error, or the answer and every row written (the card,
the ledger event with its chain value, the head, the report), must be the same, and the fast
path must have been the one that wrote whenever its conditions hold.
"""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from unittest import mock

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session, sessionmaker

from idguard.core.clock import FixedClock, today_cst
from idguard.core.errors import DomainError, InvalidField
from idguard.registry import ledger, loss_reports
from idguard.registry.lifecycle import CardStatus, LossReason
from idguard.registry.models import Card, LedgerEvent, LedgerHead, LossReport, Person
from idguard.registry.schemas import LossReportOut
from tests.factories import OFFICE_A, actor, id_number
from tests.functional.conftest import Counter

REPORT_NO = "LRFASTPATHTEST"  # both paths draw the same receipt number, so their rows compare
STORED = [s for s in CardStatus if s is not CardStatus.EXPIRED]
ADULT_BIRTH = dt.date(1990, 5, 4)
CHILD_BIRTH = dt.date(2015, 3, 1)  # 11 on the test's day: a guardian may report for them
UNKNOWN_CARD = "6f1c2b0e-8d3a-4c1e-9a8b-1f2e3d4c5b6a"
CLERK = actor("clerk_a")


@pytest.fixture
def world(counter: Counter) -> dict[str, Any]:
    """An adult and a child, each with a card; a second adult whose number is changed below."""
    adult = counter.person(ADULT_BIRTH, name="张三")
    child = counter.person(CHILD_BIRTH, name="张小")
    other = counter.person(dt.date(1985, 1, 2), female=True, name="李四")
    return {
        "adult": adult,
        "child": child,
        "other": other,
        "cards": {
            "adult": counter.card(adult)["card_id"],
            "child": counter.card(child)["card_id"],
            "other": counter.card(other)["card_id"],
        },
    }


@contextmanager
def _plain() -> Iterator[None]:
    with mock.patch.object(loss_reports, "_report_at_once", return_value=None):
        yield


def _snapshot(session: Session, card_id: str | None, head_before: int) -> dict[str, Any]:
    key = _uuid(card_id)
    card = None
    if key is not None:
        card = session.execute(
            sa.select(Card.status, Card.updated_at, Card.expires_on).where(Card.id == key)
        ).one_or_none()
    events = session.execute(
        sa.select(*LedgerEvent.__table__.c).where(LedgerEvent.seq > head_before).order_by(LedgerEvent.seq)
    ).all()
    reports = session.execute(
        sa.select(*LossReport.__table__.c).where(LossReport.report_no == REPORT_NO)
    ).all()
    head = session.execute(sa.select(LedgerHead.seq, LedgerHead.chain)).one()
    return {
        "card": None if card is None else tuple(card),
        "events": [tuple(e) for e in events],
        "reports": [tuple(r) for r in reports],
        "head": tuple(head),
    }


def _uuid(value: str | None) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def _outcome(
    session_factory: sessionmaker[Session],
    setup: Callable[[Session], None],
    run: Callable[[Session], tuple[LossReport, Card]],
    card_id: str,
    now: dt.datetime,
) -> tuple[object, dict[str, Any]]:
    """What `run` answers (or raises) on the state `setup` makes, and every row it wrote; rolled back."""
    with session_factory() as session:
        setup(session)
        head_before = session.execute(sa.select(LedgerHead.seq)).scalar_one()
        answer: object
        try:
            report, card = run(session)
        except (DomainError, ValueError) as exc:  # ValueError: fingers flagged, no biometrics given
            answer = (type(exc).__name__, str(exc), getattr(exc, "field", None))
        else:
            assert sa.inspect(report).persistent
            assert session.get(LossReport, report.report_no) is report
            assert session.get(Card, card.id) is card  # the session's card, kept in step
            assert not session.new
            assert not session.dirty
            answer = LossReportOut.of(report, card, now).model_dump()
        rows = _snapshot(session, card_id, head_before)
        session.rollback()
    return answer, rows


@dataclass(frozen=True)
class Case:
    """One report on one state: whose card, its stored state, who applies and how."""

    which: str = "adult"  # adult, child, renumbered (the holder's number changed), unknown, malformed
    status: CardStatus = CardStatus.VALID
    expiry: int | None = None  # days from today to the card's expiry date
    fingers: bool = False
    applicant: str = "holder"
    named: str | None = None  # None, "right", "wrong"
    reason: LossReason = LossReason.LOST


def reporter(
    now: dt.datetime, card_id: str, reason: LossReason, number: str, name: str | None = None
) -> Callable[[Session], tuple[LossReport, Card]]:
    """The loss report both paths make, with the report number fixed (rows compared equal; also
    test_loss_report_direct's)."""

    def run(session: Session) -> tuple[LossReport, Card]:
        with mock.patch.object(loss_reports, "new_reference", return_value=REPORT_NO):
            return loss_reports.report_loss(
                session,
                actor=CLERK,
                now=now,
                card_id=card_id,
                reason=reason,
                office=OFFICE_A,
                applicant_id_number=number,
                applicant_name=name,
            )

    return run


def _compare(
    world: dict[str, Any], session_factory: sessionmaker[Session], now: dt.datetime, case: Case
) -> None:
    """Run `case` on the fast path and on the plain one: the same answer and the same rows, and
    the fast path wrote exactly when the report is the holder's own, plainly valid one."""
    today = today_cst(now)
    holder_key = {"renumbered": "other"}.get(case.which, case.which)
    card_id = {"unknown": UNKNOWN_CARD, "malformed": "not-a-card"}.get(case.which) or world["cards"][
        holder_key
    ]
    renumbered = id_number(dt.date(1985, 1, 3), female=True)  # the holder's new number
    holder_number = {"adult": world["adult"], "child": world["child"], "renumbered": renumbered}.get(
        case.which, world["adult"]
    )
    number = {
        "holder": holder_number,
        "holder_spelt": f"  {holder_number.lower()}\u3000",
        "card_number": world["other"] if case.which == "renumbered" else holder_number,
        "adult": world["adult"],
        "child": world["child"],
        "other": world["other"],
        "unregistered": id_number(dt.date(1970, 1, 1)),
        "future": id_number(dt.date(2030, 1, 1)),
        "bad": holder_number[:-1] + ("0" if holder_number[-1] != "0" else "1"),
    }[case.applicant]
    right = {"child": "张小", "renumbered": "李四"}.get(case.which, "张三")
    name = {None: None, "right": right, "wrong": "王五"}[case.named]

    def setup(session: Session) -> None:
        key = _uuid(card_id)
        if key is not None:
            session.execute(
                sa.update(Card.__table__)
                .where(Card.__table__.c.id == key)
                .values(
                    status=case.status,
                    expires_on=None if case.expiry is None else today + dt.timedelta(days=case.expiry),
                    fingerprints_registered=case.fingers,
                )
            )
        if case.which == "renumbered":
            session.execute(
                sa.update(Person.__table__)
                .where(Person.__table__.c.id_number == world["other"])
                .values(id_number=renumbered)
            )

    run = reporter(now, card_id, case.reason, number, name)

    guarded: list[Card | None] = []
    record_guarded = ledger.record_guarded

    def spy(*args: Any, **kwargs: Any) -> Card | None:
        guarded.append(record_guarded(*args, **kwargs))
        return guarded[-1]

    with mock.patch.object(ledger, "record_guarded", spy):
        fast = _outcome(session_factory, setup, run, card_id, now)
    with _plain():
        plain = _outcome(session_factory, setup, run, card_id, now)
    assert fast == plain, case
    eligible = (
        name is None
        and isinstance(plain[0], dict)
        and not plain[0]["by_guardian"]
        and case.which in ("adult", "child", "renumbered")
    )
    assert any(card is not None for card in guarded) == eligible, case
    if eligible:
        assert plain[1]["events"]  # and so the rows compared were written
        assert plain[1]["reports"]


def test_every_stored_state_of_the_card_is_answered_as_by_the_plain_path(
    world: dict[str, Any], session_factory: sessionmaker[Session], clock: FixedClock
) -> None:
    """Every stored status, expiry around today, with and without registered fingerprints, for
    the holder in person: the fast path's conditions are the plain path's rules."""
    for status, expiry, fingers in itertools.product(STORED, [None, -1, 0, 1], [False, True]):
        case = Case(status=status, expiry=expiry, fingers=fingers, reason=LossReason.STOLEN)
        _compare(world, session_factory, clock.now(), case)


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    case=st.builds(
        Case,
        which=st.sampled_from(["adult", "child", "renumbered", "unknown", "malformed"]),
        status=st.sampled_from([CardStatus.VALID, CardStatus.VALID, *STORED]),
        expiry=st.sampled_from([None, None, -1, 0, 1]),
        fingers=st.sampled_from([False, False, True]),
        applicant=st.sampled_from(
            [
                "holder",
                "holder_spelt",
                "card_number",
                "adult",
                "child",
                "other",
                "unregistered",
                "future",
                "bad",
            ]
        ),
        named=st.sampled_from([None, None, "right", "wrong"]),
        reason=st.sampled_from(list(LossReason)),
    )
)
def test_whoever_applies_for_whichever_card_is_answered_as_by_the_plain_path(
    world: dict[str, Any], session_factory: sessionmaker[Session], clock: FixedClock, case: Case
) -> None:
    """The holder (in any spelling of their number), a guardian, someone else, an unregistered, a
    future or an invalid number, with or without a name, for a child's, an adult's, a renumbered
    holder's, an unknown or a malformed card."""
    _compare(world, session_factory, clock.now(), case)


def test_a_card_already_in_the_session_is_the_one_answered_and_kept_in_step(
    world: dict[str, Any], session_factory: sessionmaker[Session], clock: FixedClock
) -> None:
    """The console reads the card before reporting it: the fast path updates that object (as the
    plain path's locking re-read did) instead of answering another."""
    key = uuid.UUID(world["cards"]["adult"])
    later = clock.now() + dt.timedelta(hours=1)  # the card was issued at clock.now()
    with session_factory() as session:
        before = session.get_one(Card, key)
        assert before.status is CardStatus.VALID
        _, card = loss_reports.report_loss(
            session,
            actor=CLERK,
            now=later,
            card_id=str(key),
            reason=LossReason.STOLEN,
            office=OFFICE_A,
            applicant_id_number=world["adult"],
        )
        assert card is before
        assert card.status is CardStatus.REPORTED_STOLEN
        assert card.updated_at == later
        assert not session.dirty
        session.rollback()


def test_a_new_card_object_loads_what_it_was_not_given(
    world: dict[str, Any], session_factory: sessionmaker[Session], clock: FixedClock
) -> None:
    """The card the fast path answers holds only the columns it read back; any other attribute
    (a sealed name too) loads from the row on first use, as on a card the plain path read."""
    key = uuid.UUID(world["cards"]["child"])
    with session_factory() as session:
        _, card = loss_reports.report_loss(
            session,
            actor=CLERK,
            now=clock.now(),
            card_id=str(key),
            reason=LossReason.LOST,
            office=OFFICE_A,
            applicant_id_number=world["child"],
        )
        assert sa.inspect(card).persistent
        assert "name_sealed" in sa.inspect(card).unloaded
        assert (card.id_number, card.name, card.birth_date) == (world["child"], "张小", CHILD_BIRTH)
        session.rollback()


def test_a_bad_number_for_an_unknown_card_is_still_the_422(
    session_factory: sessionmaker[Session], clock: FixedClock
) -> None:
    """The fast path finds no card and writes nothing; the plain path then parses the number first."""
    with session_factory() as session, pytest.raises(InvalidField) as error:
        loss_reports.report_loss(
            session,
            actor=CLERK,
            now=clock.now(),
            card_id=UNKNOWN_CARD,
            reason=LossReason.LOST,
            office=OFFICE_A,
            applicant_id_number="110105194912310022",
        )
    assert error.value.field == "applicant_id_number"


@pytest.mark.parametrize("zone", [dt.UTC, dt.timezone(dt.timedelta(hours=8))])
def test_the_direct_statements_send_what_connection_execute_sends(
    world: dict[str, Any],
    engine: sa.Engine,
    session_factory: sessionmaker[Session],
    clock: FixedClock,
    zone: dt.tzinfo,
) -> None:
    """Both paths write through `ledger._Statements`, so the test above cannot see its binding:
    here the same report runs on the DBAPI cursor (`_Direct.args`: SQLAlchemy's processors, a UTC
    time processed once per change) and through `Connection.execute` (which `_Statements` takes
    when a listener of cursor executions is present). The driver gets the same SQL with the same
    values, and the same rows are written; the report's time given in UTC or in China's zone."""
    now = clock.now().astimezone(zone)
    card_id = world["cards"]["adult"]

    run = reporter(now, card_id, LossReason.STOLEN, world["adult"])

    direct: list[tuple[str, Any]] = []
    args = ledger._Direct.args

    def spy(self: Any, params: dict[str, Any], memo: dict[Any, Any]) -> Any:
        direct.append((self.sql, args(self, params, memo)))
        return direct[-1][1]

    with mock.patch.object(ledger._Direct, "args", spy):
        on_cursor = _outcome(session_factory, lambda _: None, run, card_id, now)
    executed: list[tuple[str, Any]] = []

    def listen(conn: object, cursor: object, statement: str, parameters: Any, *args: object) -> None:
        if not statement.startswith("BEGIN"):
            executed.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", listen)
    try:
        through_execute = _outcome(session_factory, lambda _: None, run, card_id, now)
    finally:
        sa.event.remove(engine, "before_cursor_execute", listen)
    change = {sql for sql, _ in direct}  # the snapshot's reads are not the change's
    sent = [(sql, tuple(p) if isinstance(p, list) else p) for sql, p in executed if sql in change]
    assert len(direct) == (1 if engine.dialect.name == "postgresql" else 4)
    assert sent == direct
    assert on_cursor == through_execute
    assert on_cursor[1]["reports"]
    assert on_cursor[1]["events"]


def test_an_enum_processor_remembers_each_value_by_its_type_and_refuses_each_time() -> None:
    """`ledger._by_member`: a member and its string (equal in Python) are processed apart, each
    once; a value the processor refuses is refused every time, never kept."""
    calls: list[object] = []

    def process(value: object) -> str:
        calls.append(value)
        if value == "bad":
            raise LookupError(value)
        return f"{type(value).__name__}:{value}"

    processed = ledger._by_member(process)
    assert processed(CardStatus.VALID) == processed(CardStatus.VALID) == "CardStatus:valid"
    assert processed("valid") == "str:valid"
    for _ in range(2):
        with pytest.raises(LookupError):
            processed("bad")
    assert processed(["unhashable"]) == "list:['unhashable']"
    assert calls == [CardStatus.VALID, "valid", "bad", "bad", ["unhashable"]]
