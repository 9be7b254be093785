"""The loss report's guarded change runs on the DBAPI cursor of the session's transaction
(issue 14: `ledger._Direct`), not through `Connection.execute`. What SQLAlchemy did on the way
must still happen: a database error is raised as SQLAlchemy raises it (wrapped, so the unit of
work's handlers see it) with nothing written; a lost connection is invalidated; listeners of
cursor executions (statement counters, tracing) still see every statement.
test_loss_report_fast_path.py holds the rows and the answer equal to the plain path's.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any
from unittest import mock

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from idguard import uow
from idguard.core.clock import FixedClock
from idguard.registry import ledger
from idguard.registry.lifecycle import CardStatus, LossReason
from idguard.registry.models import Card, LedgerHead, LossReport
from tests.functional.conftest import Counter
from tests.functional.registry.test_loss_report_fast_path import REPORT_NO, reporter


@pytest.fixture
def holders(counter: Counter) -> list[tuple[str, str]]:
    """Two adults with a valid card each: (card id, holder's number)."""
    numbers = [
        counter.person(dt.date(1990, 5, 4), name="张三"),
        counter.person(dt.date(1988, 2, 9), name="李四"),
    ]
    return [(counter.card(number)["card_id"], number) for number in numbers]


def _report(session: Session, now: dt.datetime, card_id: str, number: str) -> tuple[LossReport, Card]:
    return reporter(now, card_id, LossReason.LOST, number)(session)


def _guarded_calls() -> tuple[list[Card | None], Any]:
    calls: list[Card | None] = []
    real = ledger.record_guarded

    def spy(*args: Any, **kwargs: Any) -> Card | None:
        calls.append(real(*args, **kwargs))
        return calls[-1]

    return calls, mock.patch.object(ledger, "record_guarded", spy)


def test_a_database_error_is_raised_as_sqlalchemy_raises_it_and_nothing_is_written(
    session_factory: sessionmaker[Session], clock: FixedClock, holders: list[tuple[str, str]]
) -> None:
    """A second report under a receipt number already taken: the database refuses the row (on
    SQLite after the status, the head and the event were written in the same transaction). The
    error is SQLAlchemy's IntegrityError around the driver's (uow.py turns that into its
    'concurrent change' answer), and the rollback leaves the card and the head as they were."""
    now = clock.now()
    (first, first_number), (second, second_number) = holders
    with session_factory() as session:
        _report(session, now, first, first_number)
        uow.commit(session)
    with session_factory() as session:
        head = session.execute(sa.select(LedgerHead.seq, LedgerHead.chain)).one()
    calls, spy = _guarded_calls()
    with session_factory() as session, spy:
        with pytest.raises(sa.exc.IntegrityError) as raised:
            _report(session, now, second, second_number)
        session.rollback()
    assert not isinstance(raised.value.orig, sa.exc.SQLAlchemyError)  # the driver's own error, wrapped
    assert calls == []  # the guarded change raised: it did not fall back to the plain path
    with session_factory() as session:
        assert session.execute(sa.select(LedgerHead.seq, LedgerHead.chain)).one() == head
        assert session.get_one(Card, uuid.UUID(second)).status is CardStatus.VALID
        assert session.get_one(LossReport, REPORT_NO).card_id == uuid.UUID(first)


def test_listeners_of_cursor_executions_see_the_guarded_change(
    engine: sa.Engine,
    session_factory: sessionmaker[Session],
    clock: FixedClock,
    holders: list[tuple[str, str]],
) -> None:
    """With a `before_cursor_execute` listener the change goes through `Connection.execute`:
    the listener sees its one statement on PostgreSQL, its four on SQLite, and the report is
    written by the guarded path all the same."""
    card_id, number = holders[0]
    statements: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        if not statement.startswith("BEGIN"):
            statements.append(statement)

    calls, spy = _guarded_calls()
    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        with session_factory() as session, spy:
            _, card = _report(session, clock.now(), card_id, number)
            uow.commit(session)
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)
    assert calls == [card]
    assert card.status is CardStatus.REPORTED_LOST
    assert len(statements) == (1 if engine.dialect.name == "postgresql" else 4), statements
    with session_factory() as session:
        assert session.get_one(LossReport, REPORT_NO).card_id == uuid.UUID(card_id)


def test_a_lost_connection_is_invalidated_as_sqlalchemy_does(
    engine: sa.Engine,
    session_factory: sessionmaker[Session],
    clock: FixedClock,
    holders: list[tuple[str, str]],
) -> None:
    """PostgreSQL: the server ends the session's connection before the guarded change. The error
    says the connection was invalidated (SQLAlchemy's disconnect handling ran: the API answers
    503 and the pool drops the connection), and a new transaction works."""
    if engine.dialect.name != "postgresql":
        pytest.skip("a server that can drop the connection")
    card_id, number = holders[0]
    with session_factory() as session:
        pid = session.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
        with uow.connection(engine) as other:
            other.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        with pytest.raises(sa.exc.DBAPIError) as raised:
            _report(session, clock.now(), card_id, number)
        assert raised.value.connection_invalidated
        session.rollback()
    with session_factory() as session:
        _, card = _report(session, clock.now(), card_id, number)
        uow.commit(session)
    assert card.status is CardStatus.REPORTED_LOST
